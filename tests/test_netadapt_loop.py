"""NetAdapt loop: schedule and selection, the run directory, worker failures, bad input, and end to end
on a tiny model: resume after kill -9 mid-iteration, the same chosen sequence with 1 worker, 2 workers
and Ray."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import tfmobile  # noqa: F401
from netadapt_tiny import tiny_splits, tiny_spec
from conftest import REPO, process_alive, run_cli, whole_line_written
from netadapt_tasks import sleepy_task
from tfmobile.errors import UserError
from tfmobile.netadapt import loop
from tfmobile.netadapt.history import RunDir
from tfmobile.netadapt.workers import LocalPool, WorkerFailure

# ------------------------------------------------------------------------------------------------
# pure pieces
# ------------------------------------------------------------------------------------------------


def test_the_default_schedule_followed_exactly_reaches_half_within_ten_iterations():
    # a model that lands exactly on each budget: the defaults must get it from 1.0 to 0.5 in <= 10 iterations,
    # with every step smaller than the one before and no budget below the target
    search = loop.LoopConfig.of(target=0.5).search
    value, budgets = 1.0, []
    for i in range(1, 11):
        budgets.append(loop.budget_for(search, i, 1.0, value, 0.5))
        value = budgets[-1]
    assert value == 0.5 and min(budgets) == 0.5
    steps = [a - b for a, b in zip([1.0] + budgets, budgets) if b > 0.5]
    assert len(steps) >= 5 and all(later < earlier for earlier, later in zip(steps, steps[1:]))
    assert loop.estimate_iterations(search, 1, 1.0, 1.0, 0.5) == len(budgets) - budgets.count(0.5) + 1


def test_a_saving_is_asked_of_the_lut_at_the_median_rate_of_the_steps_not_at_its_scale():
    from tfmobile.netadapt.iteration import predicted_budget

    # before a step is saved: the prediction scaled like the measurement (predicted / measured = 0.8)
    assert predicted_budget(0.09, 0.1, 0.08, [(0.1, 0.08)], 0.006) == pytest.approx((0.072, 0.8))
    # mbv2 a1.0 32x32 after 12 iterations: the LUT's fixed-cost error leaves predicted / measured at 0.55, but
    # every step saved about 1.1 LUT units per measured unit: 0.004 ms asked for is 0.0044 in the LUT
    path, m, p = [(0.1054, 0.0813)], 0.1054, 0.0813
    for k in range(12):
        m, p = m - 0.0035, p - 0.0035 * (1.05 + 0.01 * (k % 3))
        path.append((m, p))
    budget, per_unit = predicted_budget(m - 0.004, m, p, path, 0.006)
    assert per_unit == pytest.approx(1.06) and budget == pytest.approx(p - 0.004 * 1.06)
    assert p / m < 0.6   # the ratio would have asked for about half of that
    # one pick the LUT misjudged (0.0142 ms measured for 0.0032 predicted, rate 0.23) does not set the rate of
    # a run whose other steps saved 0.8 LUT units per ms; the cumulative rate would be 0.36
    path = [(0.0979, 0.0870), (0.0883, 0.0793), (0.0741, 0.0761), (0.0705, 0.0732), (0.0658, 0.0694)]
    per_unit = predicted_budget(0.061, 0.0658, 0.0694, path, 0.0059)[1]
    assert 0.78 < per_unit < 0.82
    assert (0.0870 - 0.0694) / (0.0979 - 0.0658) < 0.6
    # a saving below half a first step is mostly noise, and a step measured slower saved nothing: the ratio again
    assert predicted_budget(0.09, 0.098, 0.07, [(0.1, 0.08), (0.098, 0.07)], 0.006)[1] == pytest.approx(0.07 / 0.098)
    assert predicted_budget(0.09, 0.101, 0.07, [(0.1, 0.08), (0.101, 0.07)], 0.006)[1] == pytest.approx(0.07 / 0.101)


def test_selection_ratio_accuracy_and_an_exact_tie():
    # dyadic values: the two ratios are equal exactly, not by floating-point luck
    cur = {"predicted": 8.0, "val_accuracy": 0.75}
    props = [{"group": "a", "predicted": 7.0, "val_accuracy": 0.5},     # -0.25 per 1 saved
             {"group": "b", "predicted": 4.0, "val_accuracy": 0.0},     # -0.75 / 4 = -0.1875
             {"group": "c", "predicted": 6.0, "val_accuracy": 0.375},   # -0.375 / 2 = -0.1875: tie with b
             {"group": "d", "predicted": 8.0, "val_accuracy": 1.0}]     # saves nothing: never picked by ratio
    assert loop.metric("ratio", props[1], cur) == loop.metric("ratio", props[2], cur)
    assert loop.choose("ratio", props, cur)["group"] == "b"             # the tie goes to the earlier group
    assert loop.choose("ratio", props[2:] + props[:2], cur)["group"] == "c"
    assert loop.choose("accuracy", props, cur)["group"] == "d"
    assert loop.metric("ratio", props[3], cur) == float("-inf")
    assert loop.choose("ratio", [], cur) is None


def test_parse_target():
    assert loop.parse_target("0.5", "latency") == (0.5, None)
    assert loop.parse_target("256KB", "peak_sram") == (None, 256 * 1024)
    assert loop.parse_target("0.4ms", "latency") == (None, 0.4)
    assert loop.parse_target("2M", "macs") == (None, 2e6)
    for bad, kind in (("1.5", "latency"), ("abc", "latency"), ("10ms", "flash"), ("3KB", "latency")):
        with pytest.raises(UserError):
            loop.parse_target(bad, kind)


def test_zoo_start_model_has_bn_momentum_0_9_and_the_data_classes():
    # Keras' BN momentum 0.999 left the start model at chance in eval mode after an epoch of the full
    # benchmark (train 0.54, validation 0.10): the zoo start's built BatchNorm layers use 0.9
    import tensorflow as tf

    from tfmobile import models
    from tfmobile.netadapt.start import start_spec

    cfg = loop.LoopConfig.of(model="mbv1", alpha=0.25, resolution=32, target=0.5)
    model = models.build(start_spec(cfg.start, classes=3))
    bns = [ly for ly in model.layers if isinstance(ly, tf.keras.layers.BatchNormalization)]
    assert bns and {ly.momentum for ly in bns} == {0.9}
    assert model.output_shape[-1] == 3
    with pytest.raises(UserError, match="bn_momentum"):
        loop.LoopConfig.of(target=0.5, bn_momentum=0.999 + 0.001).check()


def test_final_stage_fine_tunes_or_trains_the_found_architecture_from_scratch(tiny_checkpoint, tmp_path):
    import numpy as np

    from tfmobile import models, train
    from tfmobile.netadapt import final

    ckpt = train.load_checkpoint(tiny_checkpoint)
    cfg = _cfg(tiny_checkpoint, long_epochs=3, long_lr=1e-4, lr=2e-3)
    model, epochs, lr, _ = final.final_training(cfg, 2, tiny_checkpoint, train.checkpoint_spec(tiny_checkpoint))
    assert (epochs, lr) == (3, 1e-4)
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), ckpt.get_weights()))
    cfg = cfg.replace(final="from_scratch")
    model, epochs, lr, what = final.final_training(cfg, 2, tiny_checkpoint, train.checkpoint_spec(tiny_checkpoint))
    assert (epochs, lr) == (2 + 3, 2e-3) and "from scratch" in what
    assert models.spec_of(model).to_dict() == models.spec_of(ckpt).to_dict()       # the same architecture,
    assert not all(np.array_equal(a, b) for a, b in zip(model.get_weights(), ckpt.get_weights()))  # new weights
    with pytest.raises(UserError, match="--final"):
        loop.run(_cfg(tiny_checkpoint, final="scratch"), str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_run_dir_refuses_another_run_and_overwrites_nothing(tmp_path):
    d = RunDir(tmp_path / "run")
    man = d.open({"seed": 0}, resume=False)
    d.append_history({"iteration": 1, "measured": 1.0, "predicted": 1.0, "val_accuracy": 0.5})
    before = {p: open(os.path.join(d.path, p), "rb").read() for p in ("run.json", "history.jsonl")}
    with pytest.raises(UserError, match="already holds"):
        RunDir(d.path).open({"seed": 0}, resume=False)
    with pytest.raises(UserError, match="another run"):
        RunDir(d.path).open({"seed": 1}, resume=True)
    with pytest.raises(UserError, match="no NetAdapt run"):
        RunDir(tmp_path / "empty").open({"seed": 0}, resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("keep")
    with pytest.raises(UserError, match="not empty"):
        RunDir(tmp_path / "other").open({"seed": 0}, resume=False)
    assert {p: open(os.path.join(d.path, p), "rb").read() for p in before} == before
    assert RunDir(d.path).open({"seed": 0}, resume=True)["run_id"] == man["run_id"]
    with pytest.raises(ValueError):   # an iteration is never repeated or skipped
        d.append_history({"iteration": 1})
    assert [h["iteration"] for h in d.history()] == [1]


# ------------------------------------------------------------------------------------------------
# worker failures (a light task function: no TensorFlow in the workers)
# ------------------------------------------------------------------------------------------------
def _kill_when_started(path, timeout=60):
    t0 = time.time()
    while not os.path.exists(path):
        assert time.time() - t0 < timeout, "worker never started"
        time.sleep(0.05)
    pid = int(open(path).read().split()[0])
    os.kill(pid, signal.SIGKILL)
    return pid


def test_local_pool_worker_killed_mid_task_is_retried_once(tmp_path):
    import threading

    logs, results = [], {}
    pool = LocalPool(2, log=logs.append, fn=sleepy_task)
    tasks = {n: {"name": n, "dir": str(tmp_path)} for n in ("a", "victim", "b")}
    killer = threading.Thread(target=_kill_when_started, args=(str(tmp_path / "victim.pid"),))
    killer.start()
    try:
        pool.run(tasks, lambda k, r: results.__setitem__(k, r))
    finally:
        killer.join()
        pool.close()
    assert set(results) == {"a", "victim", "b"}
    pids = open(tmp_path / "victim.pid").read().split()
    assert len(pids) == 2 and pids[0] != pids[1]          # run again, in a fresh worker
    assert any("victim" in m and "SIGKILL" in m and "retrying" in m for m in logs)


def test_local_pool_stops_with_a_clear_line_after_two_failures(tmp_path):
    pool = LocalPool(1, fn=sleepy_task)
    with pytest.raises(WorkerFailure, match=r"proposal x failed 2 times; last: raised RuntimeError: boom"):
        pool.run({"x": {"name": "x", "dir": str(tmp_path), "fail": True}}, lambda k, r: None)
    pool = LocalPool(1, fn=sleepy_task, timeout=3)
    t0 = time.time()
    with pytest.raises(WorkerFailure, match="timed out after 3 s"):   # a hung worker: no silent wait
        pool.run({"h": {"name": "h", "dir": str(tmp_path), "hang": True}}, lambda k, r: None)
    assert time.time() - t0 < 120   # two attempts of 3 s, plus two worker start-ups (TensorFlow imports)
    assert pool.procs == []


def test_workers_die_with_the_driver(tmp_path):
    """kill -9 of the driver: its proposal workers do not outlive it."""
    code = ("import sys, time\nsys.path[:0] = [%r, %r]\nfrom netadapt_tasks import sleepy_task\n"
            "from tfmobile.netadapt.workers import LocalPool\n"
            "if __name__ == '__main__':\n"
            "    p = LocalPool(2, fn=sleepy_task)\n"
            "    p.run({n: {'name': n, 'dir': %r, 'hang': True} for n in 'ab'}, lambda k, r: None)\n"
            % (os.path.dirname(__file__), REPO, str(tmp_path)))
    script = tmp_path / "driver.py"
    script.write_text(code)
    driver = subprocess.Popen([sys.executable, str(script)], cwd=REPO)
    t0 = time.time()
    while not all(whole_line_written(tmp_path / f"{n}.pid") for n in "ab"):   # the file alone: read empty once
        assert time.time() - t0 < 60 and driver.poll() is None
        time.sleep(0.05)
    pids = [int((tmp_path / f"{n}.pid").read_text().split()[0]) for n in "ab"]
    driver.kill()
    driver.wait()
    t0 = time.time()
    while any(process_alive(p) for p in pids):
        assert time.time() - t0 < 10, "a worker outlived its driver"
        time.sleep(0.05)




# ------------------------------------------------------------------------------------------------
# a tiny start model
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from tfmobile import models, train

    out = tmp_path_factory.mktemp("tiny")
    splits = tiny_splits()
    train.fit(models.build(tiny_spec()), splits, str(out), epochs=2, batch_size=32, lr=1e-2, tensorboard=False,
              verbose=0)
    return os.path.join(out, "checkpoint")


TINY = ["--subset", "--limit", "300", "--batch_size", "32", "--short_steps", "4", "--short_lr", "1e-2",
        "--resource", "macs", "--long_epochs", "0", "--qat_epochs", "0", "--notflm", "--final", "fine_tune"]


def _cfg(checkpoint, **kw):
    base = dict(checkpoint=checkpoint, subset=True, limit=300, batch_size=32, short_steps=4, short_lr=1e-2,
                resource="macs", target=0.6, long_epochs=0, qat_epochs=0, tflm=False, final="fine_tune")
    base.update(kw)
    return loop.LoopConfig.of(**base)


# ------------------------------------------------------------------------------------------------
# bad input: one line, nothing of an earlier run touched
# ------------------------------------------------------------------------------------------------
def test_bad_inputs_are_one_line_errors(tmp_path, tiny_checkpoint):
    from tfmobile import models, train

    # a LUT of another device / thread count
    lut = tmp_path / "lut.json"
    lut.write_text(json.dumps({"lut_version": 1, "devices": {"Other CPU | arm64 | litert | 4 | x": {
        "device": {}, "overhead_ms": 0.01, "entries": {}}}}))
    with pytest.raises(UserError, match="another device or thread count"):
        loop.run(_cfg(tiny_checkpoint, resource="latency", lut=str(lut)), tmp_path / "o1")
    # a checkpoint without a spec
    nospec = tmp_path / "nospec"
    nospec.mkdir()
    (nospec / "checkpoint.json").write_text(json.dumps({"compression": None, "epoch": 1, "metrics": {}}))
    with pytest.raises(UserError, match="no spec.json"):
        loop.run(_cfg(str(nospec)), tmp_path / "o2")
    # an unreachable Ray cluster (port 1: nothing listens)
    with pytest.raises(UserError, match="unreachable"):
        loop.run(_cfg(tiny_checkpoint, ray_address="127.0.0.1:1"), tmp_path / "o3")
    assert not any((tmp_path / d).exists() for d in ("o1", "o2", "o3"))
    # a target above the start
    with pytest.raises(UserError, match="not below the start"):
        loop.run(_cfg(tiny_checkpoint, target=None, target_value=1e12), tmp_path / "o4")
    # a spec with nothing to shrink (every group at one channel step)
    flat = tmp_path / "flat"
    train.save_checkpoint(models.build(tiny_spec((8, 8, 8))), str(flat))
    with pytest.raises(UserError, match="no shrinkable channel group"):
        loop.run(_cfg(str(flat)), tmp_path / "o5")
    assert not (tmp_path / "o5" / "iterations").exists()


def test_cli_bad_input_exit_2_and_resume_of_another_run_overwrites_nothing(tmp_path, tiny_checkpoint):
    out = tmp_path / "run"
    RunDir(out).open({"someone": "else"}, resume=False)
    RunDir(out).write({"measured": 1.0, "predicted": 1.0, "val_accuracy": 0.5}, "start", "start.json")  # a result
    before = (out / "run.json").read_bytes()
    r = run_cli("pipelines.netadapt", "--checkpoint", tiny_checkpoint, "--target", "0.6", "--output_dir", out,
                "--resume", *TINY, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "another run" in lines[0] and "Traceback" not in r.stderr
    # nothing but run.json (and the driver lock, RunDir.lock's .lock, which holds no data)
    assert (out / "run.json").read_bytes() == before and sorted(os.listdir(out)) == [".lock", "run.json", "start"]
    r = run_cli("pipelines.netadapt", "--checkpoint", tiny_checkpoint, "--target", "1.5", "--output_dir",
                tmp_path / "x", *TINY, timeout=300)
    assert r.returncode == 2 and "error: --target 1.5" in r.stderr and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------
# end to end on the tiny model
# ------------------------------------------------------------------------------------------------
def _sequence(out):
    rows = [json.loads(ln) for ln in open(os.path.join(out, "history.jsonl"))]
    return [(h["iteration"], h["chosen"], h["width"], round(h["val_accuracy"], 6),
             [(p["group"], p["width"], round(p["val_accuracy"], 6)) for p in h["proposals"]]) for h in rows]


@pytest.mark.slow
def test_resume_after_kill_mid_iteration_and_same_sequence_with_2_workers(tmp_path, tiny_checkpoint):
    args = ["--checkpoint", tiny_checkpoint, "--target", "0.65", *TINY]
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.netadapt", *args, "--output_dir", str(out)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    # kill -9 once the first proposal of iteration 2 is recorded and the second is running
    first = None
    t0 = time.time()
    while first is None:
        assert proc.poll() is None and time.time() - t0 < 900, "the run ended before iteration 2"
        d = out / "iterations" / "002" / "proposals"
        done = sorted(d.glob("*.json")) if d.is_dir() else []
        if done:
            first = done[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    mtime = first.stat().st_mtime_ns
    hist_before = (out / "history.jsonl").read_text()
    assert [json.loads(ln)["iteration"] for ln in hist_before.splitlines()] == [1]
    r = run_cli("pipelines.netadapt", *args, "--output_dir", out, "--resume", "--json", timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"iteration 2: 1 of \d proposals already done \(resumed\)", r.stderr)
    assert first.stat().st_mtime_ns == mtime                  # the finished proposal was not redone
    rep = json.loads(r.stdout)
    seq = _sequence(out)
    assert [s[0] for s in seq] == list(range(1, len(seq) + 1)) and len(seq) >= 2
    assert (out / "history.jsonl").read_text().startswith(hist_before)
    accs = {p[2] for s in seq for p in s[4]}
    assert len(accs) > 1                                      # selection is not decided by ties alone
    assert rep["status"] == "met" and rep["final"]["accuracy"] > 0
    for f in ("report.md", "report.json", "netadapt.png", "final/spec.json", "final/tflite/netadapt_int8.tflite"):
        assert (out / f).is_file(), f
    # the same seed with 2 workers: the same chosen sequence
    out2 = tmp_path / "two"
    r2 = run_cli("pipelines.netadapt", *args, "--output_dir", out2, "--workers", "2", "--baselines", "0.25",
                 "--baselines_dir", tmp_path / "shared", "--json", timeout=1200)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert _sequence(out2) == seq
    # the width-multiplier baseline: trained with the same budget, exported, measured with the final model
    rep2 = json.loads(r2.stdout)
    (b,) = rep2["baselines"]
    assert b["alpha"] == 0.25 and b["epochs"] == rep2["start"]["train_epochs"] and os.path.isfile(b["path"])
    assert b["path"].startswith(str(tmp_path / "shared")) and b["measured"] > rep2["final"]["measured"]
    assert rep2["comparison"]["points"] == 1


@pytest.mark.slow
def test_ray_gives_the_same_sequence(tmp_path, tiny_checkpoint):
    pytest.importorskip("ray")
    args = ["--checkpoint", tiny_checkpoint, "--target", "0.65", *TINY]
    a, b = tmp_path / "local", tmp_path / "ray"
    r = run_cli("pipelines.netadapt", *args, "--output_dir", a, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("pipelines.netadapt", *args, "--output_dir", b, "--ray_address", "local", timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Ray at local" in r.stderr
    assert _sequence(b) == _sequence(a)


@pytest.mark.slow
def test_ray_task_killed_is_retried(tmp_path):
    ray = pytest.importorskip("ray")
    from tfmobile.netadapt.workers import RayPool
    import threading

    import netadapt_tasks
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(netadapt_tasks)   # Ray workers do not have tests/ on their path
    logs, results = [], {}
    pool = RayPool("local", log=logs.append, fn=sleepy_task)
    try:
        killer = threading.Thread(target=_kill_when_started, args=(str(tmp_path / "victim.pid"), 120))
        killer.start()
        pool.run({n: {"name": n, "dir": str(tmp_path)} for n in ("a", "victim")},
                 lambda k, r: results.__setitem__(k, r))
        killer.join()
    finally:
        ray.shutdown()
    assert set(results) == {"a", "victim"}
    assert any("victim" in m and "retrying" in m for m in logs)


def test_measurements_use_the_cpu_clock_at_one_thread_and_interleave(tmp_path):
    from tfmobile import convert, models
    from tfmobile.netadapt.measure import interleaved, measure_tflite

    small = convert.to_tflite(models.build(tiny_spec((8, 8, 8))), "int8")
    big = convert.to_tflite(models.build(tiny_spec((16, 48, 48))), "int8")
    settings = {"backend": "litert", "threads": 1, "runs": 60, "warmup": 5}
    m = measure_tflite(small, "latency", settings)
    assert m["clock"] == "cpu" and m["value"] == m["cpu_median_ms"] > 0 and m["runs"] == 60
    assert {"median_ms", "p90_ms", "std_ms", "cv"} <= set(m)           # the spread is kept
    both = interleaved({"small": small, "big": big}, settings, rounds=3)
    assert both["small"]["runs"] == both["big"]["runs"] == 60 and both["big"]["rounds"] == 3
    assert both["big"]["value"] > both["small"]["value"]               # 6x the channels costs more
    assert measure_tflite(big, "flash", settings)["value"] == len(big)
    assert measure_tflite(small, "peak_sram", settings)["value"] == convert.measure_arena(small)["arena_bytes"]


def _session(tmp_path, checkpoint, measurer=None, **kw):
    from tfmobile import data
    from tfmobile.netadapt.state import RunData, Session

    cfg = _cfg(checkpoint, **kw)
    splits = tiny_splits()
    return Session(cfg, RunDir(tmp_path / "run"), measurer=measurer, log=lambda m: None,
                   data=RunData(splits, cfg.data_config((32, 32, 3)),
                                data.sample_images(splits.x_train, (32, 32, 3), n=20)))


def test_a_plan_proposes_for_each_group_the_widest_width_meeting_the_budget(tmp_path, tiny_checkpoint):
    from tfmobile.models.surgery import groups, shrink
    from tfmobile.netadapt import iteration
    from tfmobile.netadapt.resource import resource
    from tfmobile.netadapt.state import Point, Start

    session = _session(tmp_path, tiny_checkpoint)    # macs: counted on the spec
    spec = tiny_spec()
    macs = resource(spec, "macs")
    start = Start(Point(0, spec, tiny_checkpoint, macs, macs, 0.5), {}, 2, 0.6 * macs)
    plan = iteration.plan_iteration(session, start, start.point, 1)
    assert plan["budget"] == pytest.approx(0.94 * macs) and plan["current_predicted"] == macs
    assert plan["proposals"], "no group can meet a 6 % step"
    by_name = {g.name: g for g in groups(spec)}
    for p in plan["proposals"]:
        g = by_name[p["group"]]
        assert p["width"] < g.width and p["predicted"] == resource(shrink(spec, g, p["width"]), "macs")
        assert p["predicted"] <= plan["budget"]
        wider = p["width"] + g.channel_step
        if wider < g.width:   # one step wider would not meet the budget: the widest that does
            assert resource(shrink(spec, g, wider), "macs") > plan["budget"]


def test_a_latency_above_the_wider_model_is_measured_again(tmp_path, tiny_checkpoint):
    from tfmobile.netadapt import iteration

    class Device:   # the measuring device's answers, in order (the loop's int8 model is real)
        def __init__(self, values):
            self.values, self.models = list(values), []

        def measure(self, tflite, kind, spec_json=None):
            self.models.append(tflite)
            return {"kind": kind, "value": self.values.pop(0)}

    session = _session(tmp_path, tiny_checkpoint, resource="latency")
    session.measurer = Device([2.0, 1.2, 1.0])
    m = iteration.measure(session, tiny_checkpoint, "iterations/001", not_above=1.5)
    assert m["value"] == 1.2 and m["repeats"] == [2.0, 1.2, 1.0] and session.measurer.values == []
    written = (tmp_path / "run" / "iterations" / "001" / "model_int8.tflite").read_bytes()
    assert session.measurer.models == [written] * 3 and written[4:8] == b"TFL3"
    assert m["predicted"] > 0 and os.path.isfile(session.lut)          # predicted by this run's own LUT
    session.measurer = Device([1.4])
    assert iteration.measure(session, tiny_checkpoint, "iterations/002", not_above=1.5)["value"] == 1.4
    assert "repeats" not in session.run_dir.read("iterations/002", "measurement.json")
    session.measurer = Device([])   # measured once: read back from the run directory, not measured again
    assert iteration.measure(session, tiny_checkpoint, "iterations/001", not_above=1.5)["value"] == 1.2


def test_latency_loop_end_to_end_two_iterations_and_resume_after_kill(tmp_path):
    """The real thing on a small model: its own LUT built, int8 conversion, LiteRT measurement; killed in
    iteration 2, resumed; a target it cannot reach in --max_iterations 2, so exactly two iterations run.
    Groups of 64 channels and 10 % steps: at the tiny model's 8-24 channels (~10 us) the LUT's noise under
    load sometimes left no group able to meet the second budget."""
    from tfmobile import models, train

    checkpoint = str(tmp_path / "start")
    train.save_checkpoint(models.build(tiny_spec((16, 64, 64))), checkpoint)
    args = ["--checkpoint", checkpoint, "--target", "0.3", "--max_iterations", "2", "--delta0", "0.1",
            "--subset", "--limit",
            "300", "--batch_size", "32", "--short_steps", "4", "--short_lr", "1e-2", "--resource", "latency",
            "--bench_runs", "20", "--bench_warmup", "2", "--long_epochs", "0", "--qat_epochs", "0", "--notflm",
            "--final", "fine_tune"]
    out = tmp_path / "latency"
    log = open(tmp_path / "first_run.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.netadapt", *args, "--output_dir", str(out)],
                            cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.DEVNULL,
                            stderr=log, start_new_session=True)
    first, t0 = None, time.time()
    while first is None:   # kill -9 once the first proposal of iteration 2 is recorded
        assert proc.poll() is None and time.time() - t0 < 300, (
            "the run ended before iteration 2:\n" + "".join(open(tmp_path / "first_run.log").readlines()[-8:]))
        d = out / "iterations" / "002" / "proposals"
        done = sorted(d.glob("*.json")) if d.is_dir() else []
        first = done[0] if done else None
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    log.close()
    proc.wait()
    mtime, plan = first.stat().st_mtime_ns, (out / "iterations" / "002" / "plan.json").read_bytes()
    lut_before = json.loads((out / "lut.json").read_text())
    assert [json.loads(ln)["iteration"] for ln in (out / "history.jsonl").read_text().splitlines()] == [1]
    r = run_cli("pipelines.netadapt", *args, "--output_dir", out, "--resume", "--json", timeout=600)
    assert r.returncode == 2, r.stderr[-3000:]          # target not met in two iterations: the report is written
    assert re.search(r"iteration 2: \d of \d proposals already done \(resumed\)", r.stderr)
    assert first.stat().st_mtime_ns == mtime and (out / "iterations" / "002" / "plan.json").read_bytes() == plan
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "max_iterations" and [h["iteration"] for h in rep["iterations"]] == [1, 2]
    previous = rep["start"]["measured"]
    for h in rep["iterations"]:   # each budget starts from the measurement before it (noisy: not the start's)
        m = h["measurement"]
        assert m["kind"] == "latency" and m["clock"] == "cpu" and m["runs"] == 20 and m["value"] > 0
        assert h["budget"] < previous and h["predicted"] <= h["budget_predicted"]
        previous = h["measured"]
        assert (out / "iterations" / f"{h['iteration']:03d}" / "model_int8.tflite").read_bytes()[4:8] == b"TFL3"
    lut = json.loads((out / "lut.json").read_text())
    (device,) = lut["devices"].values()
    assert device["entries"] and set(lut_before["devices"]) == set(lut["devices"])
