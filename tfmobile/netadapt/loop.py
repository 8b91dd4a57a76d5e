"""The NetAdapt loop (Yang et al. 2018; MobileNetV3 §3.2): measured resource down, accuracy kept.

    cfg = LoopConfig.of(model="mbv2", alpha=1.0, resolution=32, epochs=10, target=0.5)
    report = run(cfg, "runs/na")             # resumable: run(cfg, "runs/na", resume=True)

``search`` is the algorithm (docs/netadapt.md shows it next to the paper's box); its steps are in
``iteration``, the start in ``start``, what comes after in ``final``. Every step that takes time
leaves its file in the run directory (``history.RunDir``), so a resumed run redoes nothing.
"""
import contextlib
import dataclasses
import os
import time

from tfmobile.errors import UserError
from tfmobile.netadapt import iteration, start as start_mod
from tfmobile.netadapt.config import RETARGETABLE, UNITS, LoopConfig, parse_target  # noqa: F401  (the package's API)
from tfmobile.netadapt.history import RunDir
from tfmobile.netadapt.iteration import budget_for, choose, delta, estimate_iterations, metric  # noqa: F401  (tests, benchmarks)
from tfmobile.netadapt.state import Session, log_stderr


class TargetNotMet(UserError):
    """No group can shrink further and the target was never met (the best reached is reported)."""


def search(session, start, point):
    """From ``point`` (the start, or the last finished iteration's pick) until every limit is met.

    Iteration i: budget_i = max(target, measured - delta_i) of the resource furthest from its limit ->
    one proposal per channel group (and the input resolution) that meets it and keeps the limits already
    met (shrink, transfer, short-term fine-tune, validate) -> pick the best by --select -> measure the
    pick for real, every constrained resource. Returns (status, last point).
    """
    search_cfg = session.cfg.search
    while not iteration.all_hold(session, start, point):
        i = point.iteration + 1
        if i > search_cfg.max_iterations:
            return "max_iterations", point
        started = time.time(), time.process_time()
        plan = session.run_dir.step(os.path.join("iterations", f"{i:03d}", "plan.json"),
                                    lambda: iteration.plan_iteration(session, start, point, i))
        if not plan["proposals"]:
            return "no_shrinkable_group", point
        point = dataclasses.replace(point, predicted=plan.get("current_predicted", point.predicted))
        rows = iteration.run_proposals(session, point, i, plan, progress_log(session, start, point, i, plan),
                                       teacher=start.point.checkpoint)
        pick = iteration.pick(search_cfg.select, rows, point, plan)
        point = iteration.record_iteration(session, i, point, plan, rows, pick, started)
    return "met", point


def progress_log(session, start, point, i, plan):
    """The per-proposal progress line (with an ETA from the schedule's estimate of the iterations left)."""
    search_cfg, unit = session.cfg.search, UNITS[session.cfg.search.resource]
    first, now = iteration.resources_of(session, start.point), iteration.resources_of(session, point)
    total = i - 1 + max(estimate_iterations(search_cfg, i, first[kind], now[kind], limit)
                        for kind, limit in iteration.limits_of(session, start).items())
    n, t0 = len(plan["proposals"]), time.time()

    def progress(done, todo, group, result):
        n_new = len(done) - (n - len(todo))
        eta = (time.time() - t0) / max(n_new, 1) * (n - len(done) + n * max(total - i, 0))
        session.log(f"iteration {i}/~{total}, proposal {len(done)}/{n} ({group} -> {result['width']}: val "
                    f"{result['val_accuracy']:.4f}), current {point.measured:.4g} {unit}, target "
                    f"{start.target:.4g} {unit}, ETA {_duration(eta)}")
    return progress


def resumed_point(session, start):
    """Where the search continues: the last finished iteration's pick, else the start."""
    history = session.run_dir.history()
    return iteration.point_of(session, history[-1]) if history else start.point


def _limits_text(values):
    return ", ".join(f"{kind} {value:.4g} {UNITS[kind]}" for kind, value in values.items())


def _duration(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@contextlib.contextmanager
def searched(cfg, output_dir, resume=False, log=log_stderr):
    """The run up to the end of its search, its directory still locked and its workers open: yields (session,
    start, status, last point, manifest); the workers close on the way out. ``run`` adds the final stage; a
    study of the search itself (benchmarks/netadapt_ranking.py) works on the session inside."""
    start_mod.check(cfg, output_dir)
    session = Session(cfg, RunDir(output_dir, log=log), log=log)
    spec = start_mod.load_data(session)   # every check that needs the data, before anything is written
    try:
        start_mod.open_workers(session)   # then the workers: a Ray cluster that refuses us writes nothing
        with session.run_dir.lock():
            manifest = session.run_dir.open(cfg.fingerprint(), resume, free_until_first_iteration=RETARGETABLE,
                                            defaults=LoopConfig.absent_fingerprint())
            start = start_mod.start_point(session, spec)
            status, point = search(session, start, resumed_point(session, start))
            yield session, start, status, point, manifest
    finally:
        if session.pool is not None:
            session.pool.close()


def run(cfg, output_dir, resume=False, log=log_stderr):
    """The whole NetAdapt job; returns the report dict (also written as report.json / report.md).

    Raises TargetNotMet (a UserError: one line, exit 2) after writing the report when no group
    can shrink further and the target was never met.
    """
    from tfmobile.netadapt import final

    started = time.time(), time.process_time()
    with searched(cfg, output_dir, resume, log) as (session, start, status, point, manifest):
        report = final.finish(cfg, session.run_dir, status, start, point.checkpoint, session.data,
                              session.measurer, log=log, run_id=manifest["run_id"],
                              workers=session.pool.describe(), started=started)
    if status != "met" and len(start.limits) > 1:
        raise TargetNotMet(f"limits {_limits_text(start.limits)} not all met ({status}): reached "
                           f"{_limits_text(point.resources)} at iteration {point.iteration}; report in "
                           f"{os.path.join(session.run_dir.path, 'report.md')}")
    if status != "met":
        best = report["reached"]
        raise TargetNotMet(f"target {start.target:.4g} {UNITS[cfg.search.resource]} not met ({status}): best "
                           f"reached {best['measured']:.4g} at iteration {best['iteration']}; report in "
                           f"{os.path.join(session.run_dir.path, 'report.md')}")
    return report
