"""Before the loop: the checks that need no work, the workers and the run directory, the data, and the
start point (trained or copied, measured, validated: start/start.json)."""
import os

from tfmobile.errors import UserError
from tfmobile.netadapt.config import UNITS, parse_constraints
from tfmobile.netadapt.measure import LocalMeasurer, RayMeasurer
from tfmobile.netadapt.state import Point, RunData, Start
from tfmobile.netadapt.workers import LocalPool, RayPool, load_splits


def check(cfg, output_dir):
    """UserError for a run that cannot start: bad values, an output path that cannot be written, a checkpoint
    NetAdapt cannot use, another device's LUT, an unreachable Ray cluster (before anything is written)."""
    from tfmobile import data
    from tfmobile.io import check_writable

    cfg.check()
    check_writable(output_dir, directory=True, what="--output_dir")
    data.check_output_outside_data(output_dir, cfg.data.data_dir)
    if cfg.execution.baselines_dir:
        check_writable(cfg.execution.baselines_dir, directory=True, what="--baselines_dir")
    if cfg.measurement.lut and not os.path.exists(cfg.measurement.lut):
        check_writable(cfg.measurement.lut, what="--lut")
    if cfg.data.data_dir and not os.path.isdir(cfg.data.data_dir):
        raise UserError(f"--data_dir {cfg.data.data_dir} is not a directory")
    if cfg.start.checkpoint:
        check_checkpoint(cfg.start.checkpoint)
    else:
        from tfmobile import models
        if cfg.start.model not in models.available():
            raise UserError(f"unknown --model {cfg.start.model!r}; one of {', '.join(models.available())}")
    lut = cfg.measurement.lut
    if cfg.search.resource == "latency" and lut and os.path.exists(lut):
        from tfmobile.bench.lut import check_device
        check_device(lut, "litert", cfg.measurement.threads, source=f"LUT {lut}")
    if cfg.execution.ray_address:
        from tfmobile.netadapt.workers import check_ray_address
        check_ray_address(cfg.execution.ray_address)


def check_checkpoint(path):
    """A float checkpoint with its architecture whose weights load (a truncated file is refused here)."""
    from tfmobile import train

    info = train.checkpoint_info(path)
    if not os.path.isfile(os.path.join(info["path"], "spec.json")):
        raise UserError(f"checkpoint {info['path']} has no spec.json: NetAdapt needs the architecture "
                        "(a checkpoint written by tfmobile.train)")
    if info["compression"]:
        raise UserError(f"checkpoint {info['path']} is a {info['compression']} checkpoint; NetAdapt "
                        "starts from a float one (QAT comes after the loop)")
    train.load_checkpoint(path)


def open_workers(session):
    """The proposal pool and the measuring device (Ray: one actor measures everything)."""
    cfg, ex = session.cfg, session.cfg.execution
    if ex.ray_address:
        session.pool = RayPool(ex.ray_address, threads=cfg.fine_tune.worker_threads, timeout=ex.proposal_timeout,
                               log=session.log)
        session.measurer = RayMeasurer(session.pool.ray, cfg.measurement.bench_settings())
        session.pool.put_splits(session.data.splits)
    else:
        session.pool = LocalPool(ex.workers, timeout=ex.proposal_timeout, log=session.log,
                                 temp_dir=session.run_dir.scratch_dir())
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
    from tfmobile.models.surgery import groups

    cfg = session.cfg
    spec = start_spec(cfg.start)
    data_config = cfg.data_config(spec.input_shape)
    splits = load_splits(data_config)
    if not cfg.start.checkpoint and splits.num_classes != spec.classes:   # a zoo start fits the data
        spec = start_spec(cfg.start, splits.num_classes)
    if splits.num_classes != spec.classes:
        raise UserError(f"the start model has {spec.classes} classes but the data has {splits.num_classes}")
    if not any(g.width > g.channel_step for g in groups(spec, channel_step=cfg.search.channel_multiple)):
        raise UserError(f"{spec.name} has no shrinkable channel group (every group is at its minimum width)")
    check_reachable(cfg, spec)
    check_final_budget(cfg)
    if cfg.final.baselines:   # a grid point the baseline network cannot take: refused before any training
        from tfmobile.netadapt.final import check_baseline_grid

        check_baseline_grid(cfg, spec, tuple(spec.input_shape), splits.num_classes)
    session.data = RunData.of(splits, data_config)
    return spec


def check_final_budget(cfg):
    """from_scratch and rewind train with the start's budget: a --checkpoint that records no training (and no
    --long_epochs to add) would leave them 0 epochs, an untrained final model; said before the hour of search."""
    if cfg.final.mode == "fine_tune" or not cfg.start.checkpoint:
        return
    from tfmobile import train
    from tfmobile.netadapt.final import budget_epochs

    if budget_epochs(cfg, train.checkpoint_info(cfg.start.checkpoint).get("epoch", 0)) < 1:
        raise UserError(f"--final {cfg.final.mode} trains the found architecture with the start's budget, but "
                        "--checkpoint records no training epochs and --long_epochs is 0: give --epochs (the passes "
                        "it was trained) or --final fine_tune")


def smallest_reachable(spec, search):
    """The smallest model the loop can reach from ``spec``: every channel group at its minimum width and, with
    ``--resolution_step``, the lowest resolution its steps reach above ``surgery.lowest_resolution``."""
    from tfmobile.models.surgery import groups, shrink

    small = spec
    for g in groups(spec, channel_step=search.channel_multiple):
        small = shrink(small, g.name, g.widths()[-1], channel_step=search.channel_multiple)
    if search.resolution_step:
        from tfmobile.models.surgery import lowest_resolution, with_resolution

        resolution = int(spec.input_shape[0])
        steps = (resolution - lowest_resolution(small)) // search.resolution_step
        if steps > 0:
            small = with_resolution(small, resolution - steps * search.resolution_step)
    return small


def _show(value, kind):
    return f"{value:.4g} {UNITS[kind]}" if kind == "latency" else f"{int(round(value))} {UNITS[kind]}"


def check_reachable(cfg, spec):
    """UserError, before the start is trained, for a ``--resolution_step`` the start's input cannot take and
    for a limit that even the smallest model the loop can reach misses (judged on the spec's prediction, so
    latency, which needs this host's LUT, is left to the loop; a fraction is of the start's prediction)."""
    from tfmobile.netadapt.resource import resource

    step, resolution = cfg.search.resolution_step, int(spec.input_shape[0])
    if step and step >= resolution:
        raise UserError(f"--resolution_step {step} must be smaller than the start's resolution {resolution}")
    s = cfg.search
    limits = {s.resource: (s.target, True) if s.target is not None else (s.target_value, False),
              **parse_constraints(cfg)}
    checked = {kind: limit for kind, limit in limits.items() if kind != "latency"}
    if not checked:
        return
    smallest = smallest_reachable(spec, s)
    for kind, (value, is_fraction) in checked.items():
        limit = value * resource(spec, kind) if is_fraction else value
        need = resource(smallest, kind)
        if need > limit:
            raise UserError(f"{kind}: the smallest model the loop can reach needs {_show(need, kind)} > limit "
                            f"{_show(limit, kind)}")


def start_point(session, spec):
    """The start: trained (or copied from --checkpoint), measured and validated once; its target checked."""
    from tfmobile.netadapt import iteration

    checkpoint = start_checkpoint(session, spec)

    def evaluate():
        from tfmobile import train

        m = iteration.measure(session, checkpoint, "start", spec)
        model = train.load_checkpoint(checkpoint)
        several = {"resources": m["resources"]} if "resources" in m else {}
        return {"spec": spec.to_dict(), "checkpoint": checkpoint, "measured": m["value"], "measurement": m,
                **several, "predicted": m["predicted"],
                "val_accuracy": train.evaluate(model, session.data.splits.x_val, session.data.splits.y_val),
                **start_training(session.cfg, len(session.data.splits.x_train),
                                 train.checkpoint_info(checkpoint).get("epoch", 0))}

    s = session.run_dir.step(os.path.join("start", "start.json"), evaluate)
    primary = session.cfg.search.resource
    resources = dict(s.get("resources") or {primary: s["measured"]})
    target = session.cfg.target_of(s["measured"])
    limits = {primary: target, **{kind: value * resources[kind] if is_fraction else value
                                  for kind, (value, is_fraction) in parse_constraints(session.cfg).items()}}
    start = Start(Point(0, spec, s["checkpoint"], s["measured"], s["predicted"], s["val_accuracy"], resources),
                  s["measurement"], s["train_epochs"], target, limits)
    unit = UNITS[primary]
    if len(limits) > 1 and all(resources[kind] <= limit for kind, limit in limits.items()):
        raise UserError("the start already meets every limit (" + ", ".join(
            f"{kind} {_show(resources[kind], kind)} <= {_show(limit, kind)}" for kind, limit in limits.items())
            + "): nothing to do (lower limits with --resume reuse the trained start)")
    if len(limits) == 1 and start.target >= start.point.measured:
        raise UserError(f"target {start.target:.4g} {unit} is not below the start's measured "
                        f"{start.point.measured:.4g} {unit}: nothing to do (a lower --target with --resume "
                        "reuses the trained start)")
    session.log(f"start {spec.name}: measured {start.point.measured:.4g} {unit} (predicted "
                f"{start.point.predicted:.4g}), val top-1 {start.point.val_accuracy:.4f}; target {start.target:.4g} {unit}"
                + ("".join(f"; {kind} {_show(resources[kind], kind)}, limit {_show(limit, kind)}"
                           for kind, limit in limits.items() if kind != primary)))
    return start


def start_schedule(cfg, n_train):
    """The zoo start's training length: ``--epochs`` passes, or (not given) the main job's step-based
    schedule for the data (``data.default_schedule``: at least its minimum of optimizer steps)."""
    from tfmobile import data

    return data.default_schedule(n_train, batch_size=cfg.fine_tune.batch_size, epochs=cfg.start.epochs)


def start_training(cfg, n_train, checkpoint_epochs):
    """start.json's record of the start training. ``train_epochs`` counts passes over the training images
    (the unit of ``--epochs`` and of the baselines' budget: an epoch of a small set's schedule is several
    passes); ``train_steps`` and ``train_schedule`` are the zoo start's optimizer steps (None for a
    --checkpoint, trained elsewhere)."""
    if cfg.start.checkpoint:
        return {"train_epochs": checkpoint_epochs, "train_steps": None, "train_schedule": None}
    schedule = start_schedule(cfg, n_train)
    return {"train_epochs": checkpoint_epochs * schedule.passes_per_epoch,
            "train_steps": checkpoint_epochs * schedule.steps_per_epoch, "train_schedule": schedule.to_dict()}


def start_checkpoint(session, spec):
    """start/checkpoint: a copy of --checkpoint, or the zoo model trained for --epochs or the data's
    step-based schedule (resumed)."""
    from tfmobile import models, train

    cfg = session.cfg.start
    checkpoint = session.run_dir.sub("start", train.CHECKPOINT_DIR)
    done = train.checkpoint_info(checkpoint).get("epoch", 0) if os.path.isfile(
        os.path.join(checkpoint, "checkpoint.json")) else None
    if cfg.checkpoint:
        if done is None:   # the copy is written whole (atomically): there, it is complete
            info = train.checkpoint_info(cfg.checkpoint)
            train.save_checkpoint(train.load_checkpoint(cfg.checkpoint), checkpoint,
                                  extra={"epoch": info.get("epoch", 0), "metrics": info.get("metrics", {})})
        return checkpoint
    schedule = start_schedule(session.cfg, len(session.data.splits.x_train))
    if done is not None and done >= schedule.epochs:
        return checkpoint
    ft = session.cfg.fine_tune
    session.log(f"resuming the start training of {spec.name} from epoch {done} of {schedule.epochs}" if done else
                f"training the start model {spec.name}: {schedule.describe()}")
    train.fit_or_load(lambda: models.build(spec), session.data.splits, session.run_dir.sub("start"),
                      epochs=cfg.epochs, lr=cfg.lr, batch_size=ft.batch_size, seed=ft.seed, verbose=2)
    return checkpoint
