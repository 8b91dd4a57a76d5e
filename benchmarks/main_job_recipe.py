"""One float training run of the main job's model on the shipped subset with a given recipe:
prints one JSON object (Keras top-1 on the 1000 test images, training accuracy per tenth of the run).

    python benchmarks/main_job_recipe.py                          # the main job's recipe, seed 0
    python benchmarks/main_job_recipe.py --resolution 32 --lr 1e-2 --clipnorm 0   # the previous one

How the main job's recipe (tfmobile.main_job.MAIN_JOB_*) was chosen: docs/training.md, "Training
length and the main job's recipe". Float only (no QAT, no export) so that a comparison costs ~2.5
minutes a run here; the chosen recipe was then checked end to end with main_job_user_data.py.
"""
import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # left at None: the main job's recipe (tfmobile.main_job.MAIN_JOB_*, main_job_lr of the batch)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--alpha", type=float, default=0.35)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=2550)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--clipnorm", type=float, default=None, help="0: no clipping")
    ap.add_argument("--shift", type=float, default=None)
    ap.add_argument("--label_smoothing", type=float, default=0.0)
    ap.add_argument("--warmup", type=float, default=0.033, help="warm-up, fraction of the steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import tfmobile  # noqa: F401
    import tensorflow as tf
    import tf_keras as keras
    from tfmobile import data, main_job, models, train

    for name, value in (("resolution", main_job.MAIN_JOB_RESOLUTION), ("lr", main_job.main_job_lr(args.batch_size)),
                        ("clipnorm", main_job.MAIN_JOB_CLIPNORM), ("shift", main_job.MAIN_JOB_SHIFT)):
        if getattr(args, name) is None:
            setattr(args, name, value)
    keras.utils.set_random_seed(args.seed)
    res = args.resolution
    _, splits = main_job.load_splits(res)
    spec = models.get_spec("mbv2", input_shape=(res, res, 3), alpha=args.alpha, classes=splits.num_classes,
                           bn_momentum=0.9)
    model = models.build(spec)
    train_ds = data.make_dataset(splits.x_train, splits.y_train, (res, res, 3), args.batch_size, training=True,
                                 augment=data.default_augment(splits.source), seed=args.seed,
                                 shift=args.shift).repeat()
    opt = train.make_optimizer(args.lr, args.steps, warmup_steps=int(args.warmup * args.steps),
                               clipnorm=args.clipnorm or None)
    if args.label_smoothing:
        n = splits.num_classes
        loss = lambda y, p: keras.losses.categorical_crossentropy(  # noqa: E731
            tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), n), p, label_smoothing=args.label_smoothing)
        model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    else:
        train.compile_model(model, opt)
    t = time.time()
    hist = model.fit(train_ds, steps_per_epoch=args.steps // 10, epochs=10, verbose=0)
    seconds = time.time() - t
    test = data.make_dataset(splits.x_test, splits.y_test, (res, res, 3), 256)
    acc = model.evaluate(test, verbose=0)[1]
    print(json.dumps({**vars(args), "test_top1_keras": round(float(acc), 4),
                      "train_accuracy_per_tenth": [round(a, 3) for a in hist.history["accuracy"]],
                      "train_seconds": round(seconds, 1), "load_after": list(__import__("os").getloadavg())}))


if __name__ == "__main__":
    main()
