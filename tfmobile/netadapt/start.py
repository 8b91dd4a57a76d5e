"""Before the loop: the checks that need no work, the workers and the run directory, the data, and the
start point (trained or copied, measured, validated: start/start.json)."""
import os

from tfmobile.errors import UserError
from tfmobile.netadapt.config import UNITS
from tfmobile.netadapt.measure import LocalMeasurer, RayMeasurer
from tfmobile.netadapt.state import Point, RunData, Start
from tfmobile.netadapt.workers import LocalPool, RayPool, load_splits


def check(cfg):
    """UserError for a run that cannot start: bad values, a checkpoint NetAdapt cannot use, another device's LUT,
    an unreachable Ray cluster (before anything is written)."""
    cfg.check()
    if cfg.start.checkpoint:
        from tfmobile import train

        info = train.checkpoint_info(cfg.start.checkpoint)
        if not os.path.isfile(os.path.join(info["path"], "spec.json")):
            raise UserError(f"checkpoint {info['path']} has no spec.json: NetAdapt needs the architecture "
                            "(a checkpoint written by tfmobile.train)")
        if info["compression"]:
            raise UserError(f"checkpoint {info['path']} is a {info['compression']} checkpoint; NetAdapt "
                            "starts from a float one (QAT comes after the loop)")
    if cfg.final.baselines and not cfg.start.checkpoint:
        from tfmobile import models
        if cfg.start.model not in models.available():
            raise UserError(f"unknown --model {cfg.start.model!r}")
    lut = cfg.measurement.lut
    if cfg.search.resource == "latency" and lut and os.path.exists(lut):
        from tfmobile.bench.lut import check_device
        check_device(lut, "litert", cfg.measurement.threads, source=f"LUT {lut}")
    if cfg.execution.ray_address:
        from tfmobile.netadapt.workers import check_ray_address
        check_ray_address(cfg.execution.ray_address)


def open_workers(session):
    """The proposal pool and the measuring device (Ray: one actor measures everything)."""
    cfg, ex = session.cfg, session.cfg.execution
    if ex.ray_address:
        session.pool = RayPool(ex.ray_address, threads=cfg.fine_tune.worker_threads, timeout=ex.proposal_timeout,
                               log=session.log)
        session.measurer = RayMeasurer(session.pool.ray, cfg.measurement.bench_settings())
    else:
        session.pool = LocalPool(ex.workers, timeout=ex.proposal_timeout, log=session.log)
        session.measurer = LocalMeasurer(cfg.measurement.bench_settings())


def start_spec(start_cfg, classes=10):
    """The start architecture: the checkpoint's, or the zoo model's (BN momentum ``bn_momentum``)."""
    from tfmobile import models, train

    if start_cfg.checkpoint:
        return train.checkpoint_spec(start_cfg.checkpoint)
    r = start_cfg.resolution
    return models.get_spec(start_cfg.model, input_shape=(r, r, 3), alpha=start_cfg.alpha, classes=classes,
                           bn_momentum=start_cfg.bn_momentum)


def load_data(session):
    """The run's data (shared with Ray's workers) and the start spec fitted to its classes."""
    from tfmobile import data
    from tfmobile.models.surgery import groups

    cfg = session.cfg
    spec = start_spec(cfg.start)
    data_config = cfg.data_config(spec.input_shape)
    splits = load_splits(data_config)
    if isinstance(session.pool, RayPool):
        session.pool.put_splits(splits)
    if not cfg.start.checkpoint and splits.num_classes != spec.classes:   # a zoo start fits the data
        spec = start_spec(cfg.start, splits.num_classes)
    if splits.num_classes != spec.classes:
        raise UserError(f"the start model has {spec.classes} classes but the data has {splits.num_classes}")
    if not any(g.width > g.channel_step for g in groups(spec)):
        raise UserError(f"{spec.name} has no shrinkable channel group (every group is at its minimum width)")
    session.data = RunData(splits, data_config,
                           data.sample_images(splits.x_train, tuple(spec.input_shape), seed=cfg.fine_tune.seed))
    return spec


def start_point(session, spec):
    """The start: trained (or copied from --checkpoint), measured and validated once; its target checked."""
    from tfmobile.netadapt import iteration

    checkpoint = start_checkpoint(session, spec)

    def evaluate():
        from tfmobile import train

        m = iteration.measure(session, checkpoint, "start", spec)
        model = train.load_checkpoint(checkpoint)
        return {"spec": spec.to_dict(), "checkpoint": checkpoint, "measured": m["value"], "measurement": m,
                "predicted": m["predicted"],
                "val_accuracy": train.evaluate(model, session.data.splits.x_val, session.data.splits.y_val),
                "train_epochs": train.checkpoint_info(checkpoint).get("epoch", 0)}

    s = session.run_dir.step(os.path.join("start", "start.json"), evaluate)
    start = Start(Point(0, spec, s["checkpoint"], s["measured"], s["predicted"], s["val_accuracy"]),
                  s["measurement"], s["train_epochs"], session.cfg.target_of(s["measured"]))
    unit = UNITS[session.cfg.search.resource]
    if start.target >= start.point.measured:
        raise UserError(f"target {start.target:.4g} {unit} is not below the start's measured "
                        f"{start.point.measured:.4g} {unit}: nothing to do")
    session.log(f"start {spec.name}: measured {start.point.measured:.4g} {unit} (predicted "
                f"{start.point.predicted:.4g}), val top-1 {start.point.val_accuracy:.4f}; target {start.target:.4g} {unit}")
    return start


def start_checkpoint(session, spec):
    """start/checkpoint: a copy of --checkpoint, or the zoo model trained for --epochs (resumed)."""
    from tfmobile import models, train

    cfg = session.cfg.start
    checkpoint = session.run_dir.sub("start", train.CHECKPOINT_DIR)
    if os.path.isfile(os.path.join(checkpoint, "checkpoint.json")):
        return checkpoint
    if cfg.checkpoint:
        info = train.checkpoint_info(cfg.checkpoint)
        train.save_checkpoint(train.load_checkpoint(cfg.checkpoint), checkpoint,
                              extra={"epoch": info.get("epoch", 0), "metrics": info.get("metrics", {})})
    else:
        ft = session.cfg.fine_tune
        session.log(f"training the start model {spec.name} for {cfg.epochs} epochs")
        train.fit(models.build(spec), session.data.splits, session.run_dir.sub("start"), epochs=cfg.epochs,
                  lr=cfg.lr, batch_size=ft.batch_size, seed=ft.seed, resume=True, verbose=2)
    return checkpoint
