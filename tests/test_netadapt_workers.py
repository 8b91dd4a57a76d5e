"""The proposal pools' temporary files (nothing left after a killed worker, Ctrl-C / SIGTERM of the
driver, or the end of a run) and Ray results delivered like local ones (checkpoint on disk, no bytes)."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

import tfmobile  # noqa: F401
from netadapt_tiny import tiny_splits
from conftest import REPO, process_alive, whole_line_written
from tfmobile.netadapt.workers import LocalPool, stage_checkpoint


# ------------------------------------------------------------------------------------------------
# task functions (run in the workers: module-level, no TensorFlow)
# ------------------------------------------------------------------------------------------------
def temp_task(task):
    """What a proposal leaves in its worker's temporary directory: its scratch directory (removed when
    it finishes) and loose files (as TensorFlow's autograph modules, never removed)."""
    scratch = tempfile.mkdtemp(prefix="tfmobile_proposal_")
    fd, loose = tempfile.mkstemp(prefix="__autograph_generated_file", suffix=".py")
    os.close(fd)
    marker = os.path.join(task["dir"], f"{task['name']}.pid")
    first = not os.path.exists(marker)
    with open(marker, "a") as f:
        f.write(f"{os.getpid()} {scratch} {loose}\n")
    time.sleep(60 if (task["name"] == "victim" and first) or task.get("hang") else 0.2)
    shutil.rmtree(scratch)
    with open("/proc/self/environ", "rb") as f:   # the environment this process started with
        started_with = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    return {"name": task["name"], "temp_dir": tempfile.gettempdir(),
            "tmpdir_at_start": started_with.get(b"TMPDIR", b"").decode()}


def checkpoint_task(task):
    """A proposal's checkpoint: written to output_dir if given, else returned as bytes (as on Ray)."""
    files = {"spec.json": b'{"name": "%s"}' % task["group"].encode(), "weights.h5": bytes(range(256)) * 4}
    if task.get("output_dir"):
        stage_checkpoint(files, os.path.join(task["output_dir"], "checkpoint"))
        return {"group": task["group"], "checkpoint": os.path.join(task["output_dir"], "checkpoint")}
    return {"group": task["group"], "files": files}


def _attempts(marker_dir, name):
    """[(pid, scratch dir, loose file)] of each attempt of task ``name``."""
    path = os.path.join(marker_dir, f"{name}.pid")
    return [tuple(line.split()) for line in open(path).read().splitlines()]


def _wait_for(paths, timeout=60, alive=None):
    t0 = time.time()
    while not all(whole_line_written(p) for p in paths):
        assert time.time() - t0 < timeout, f"never appeared: {paths}"
        assert alive is None or alive(), "the driver ended early"
        time.sleep(0.05)




# ------------------------------------------------------------------------------------------------
# local pool
# ------------------------------------------------------------------------------------------------
TINY_DATA = {"data_dir": None, "subset": True, "limit": 300, "val_fraction": 0.1, "seed": 0,
             "input_shape": [32, 32, 3]}   # tiny_splits() as a task's "data"


def _small_mbv1(widths=None):
    """mbv1 a0.25 32x32 cut to stem, block_1, block_2 and top (optionally with those widths): proposals in seconds."""
    from tfmobile import models

    d = models.get_spec("mbv1", alpha=0.25, input_shape=(32, 32, 3), classes=10, bn_momentum=0.5).to_dict()
    d["blocks"] = [b for b in d["blocks"] if b["name"] in ("stem", "block_1", "block_2", "top")]
    for b, w in zip(d["blocks"], widths or ()):
        b["filters"] = w
    return models.ModelSpec.from_dict(d)


def _trained(spec, output_dir, **fit_kw):
    """``spec`` trained one epoch on tiny_splits(); its checkpoint directory."""
    from tfmobile import models, train

    kw = dict(epochs=1, batch_size=32, lr=1e-2, tensorboard=False, verbose=0, **fit_kw)
    train.fit(models.build(spec), tiny_splits(), str(output_dir), **kw)
    return str(output_dir / "checkpoint")


def test_a_killed_workers_temp_files_go_with_it_and_close_leaves_none(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    results, logs = {}, []
    pool = LocalPool(2, log=logs.append, fn=temp_task)

    def kill_victim():
        _wait_for([str(marks / "victim.pid")])
        os.kill(int(_attempts(marks, "victim")[0][0]), signal.SIGKILL)

    killer = threading.Thread(target=kill_victim)
    killer.start()
    try:
        pool.run({n: {"name": n, "dir": str(marks)} for n in ("a", "victim", "b")},
                 lambda k, r: results.__setitem__(k, r))
        killer.join()
        assert set(results) == {"a", "victim", "b"} and any("victim" in m and "retrying" in m for m in logs)
        pool_dir = pool.temp_dir
        for r in results.values():   # every worker had a temporary directory of its own, in the pool's,
            # set from its start (before TensorFlow is imported by the netadapt package)
            assert r["temp_dir"] == r["tmpdir_at_start"] and os.path.dirname(r["temp_dir"]) == pool_dir
        assert "TMPDIR" not in os.environ or os.path.dirname(os.environ["TMPDIR"]) != pool_dir
        (killed_pid, killed_scratch, killed_loose), retry = _attempts(marks, "victim")
        assert retry[0] != killed_pid
        assert not os.path.exists(killed_scratch) and not os.path.exists(killed_loose)   # gone with its worker
        assert os.path.exists(retry[2])   # a live worker's files stay until the pool closes
    finally:
        killer.join()
        pool.close()
    assert not os.path.exists(pool_dir)
    for name in ("a", "victim", "b"):
        for _, scratch, loose in _attempts(marks, name):
            assert not os.path.exists(scratch) and not os.path.exists(loose)
    pool.close()   # a second close (the loop's finally after run's own clean-up) is harmless


def test_sigterm_of_the_driver_leaves_no_temp_files_and_its_scratch_is_wiped_at_start(tmp_path):
    marks, scratch_root = tmp_path / "marks", tmp_path / "run" / ".tmp"
    marks.mkdir()
    stale = scratch_root / "worker_old" / "tfmobile_proposal_old"   # what a kill -9 of a driver leaves
    stale.mkdir(parents=True)
    (stale / "weights.h5").write_bytes(b"x")
    code = ("import sys\nsys.path[:0] = [%r, %r]\n"
            "from tfmobile.process import terminate_on_sigterm\n"
            "from tfmobile.netadapt.workers import LocalPool\n"
            "from test_netadapt_workers import temp_task\n"
            "if __name__ == '__main__':\n"
            "    terminate_on_sigterm()\n"
            "    pool = LocalPool(2, fn=temp_task, temp_dir=%r)\n"
            "    try:\n"
            "        pool.run({n: {'name': n, 'dir': %r, 'hang': True} for n in 'ab'}, lambda k, r: None)\n"
            "    finally:\n"
            "        pool.close()\n"
            % (os.path.dirname(__file__), REPO, str(scratch_root), str(marks)))
    script = tmp_path / "driver.py"
    script.write_text(code)
    driver = subprocess.Popen([sys.executable, str(script)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for([str(marks / "a.pid"), str(marks / "b.pid")], alive=lambda: driver.poll() is None)
        attempts = [_attempts(marks, n)[0] for n in "ab"]
        assert not (scratch_root / "worker_old").exists()
        assert all(os.path.dirname(os.path.dirname(s)) == str(scratch_root) for _, s, _ in attempts)
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert "Terminated" in err, err[-2000:]
    assert not scratch_root.exists()
    for pid, scratch, loose in attempts:
        assert not os.path.exists(scratch) and not os.path.exists(loose)
        t0 = time.time()
        while process_alive(int(pid)):
            assert time.time() - t0 < 10, "a worker outlived the pool"
            time.sleep(0.05)


def test_a_worker_whose_driver_died_before_it_started_exits_at_once():
    """The driver's pid is handed to each worker: one adopted by a sub-reaper (not init) before it asked
    to die with its parent still sees that its parent is gone, and ends instead of running on."""
    code = ("import sys, time\nsys.path.insert(0, %r)\nfrom tfmobile.process import die_with_parent\n"
            "die_with_parent(parent_pid=int(sys.argv[1]))\nprint('running on', flush=True)\ntime.sleep(30)\n" % REPO)
    with subprocess.Popen([sys.executable, "-c", code, str(os.getpid())], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout.readline().strip() == "running on"   # its parent is the one it was given
        finally:
            child.kill()
    # given another pid than its parent's, as when the driver died and a sub-reaper adopted it
    orphan = subprocess.run([sys.executable, "-c", code, str(os.getppid())], capture_output=True, text=True,
                            timeout=60)
    assert orphan.returncode == 143 and "running on" not in orphan.stdout


# ------------------------------------------------------------------------------------------------
# checkpoints from Ray
# ------------------------------------------------------------------------------------------------
def test_stage_checkpoint_replaces_the_directory_whole_or_not_at_all(tmp_path):
    ckpt = tmp_path / "proposals" / "g" / "checkpoint"
    (tmp_path / "proposals" / "g" / "checkpoint.incoming").mkdir(parents=True)   # a killed earlier staging
    (tmp_path / "proposals" / "g" / "checkpoint.incoming" / "weights.h5").write_bytes(b"half")
    stage_checkpoint({"spec.json": b"{}", "weights.h5": b"new weights"}, str(ckpt))
    assert sorted(os.listdir(ckpt)) == ["spec.json", "weights.h5"] and (ckpt / "weights.h5").read_bytes() == b"new weights"
    assert os.listdir(ckpt.parent) == ["checkpoint"]
    with pytest.raises(ValueError):   # fails while staging: the old checkpoint is untouched
        stage_checkpoint({"spec.json": b"other", "../escape": b"x"}, str(ckpt))
    assert (ckpt / "spec.json").read_bytes() == b"{}" and os.listdir(ckpt.parent) == ["checkpoint"]
    stage_checkpoint({"checkpoint.json": b"{}"}, str(ckpt))   # a retry's files replace the old set
    assert os.listdir(ckpt) == ["checkpoint.json"]


@pytest.mark.slow
def test_ray_results_arrive_with_their_checkpoint_on_disk(tmp_path):
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    from tfmobile.netadapt.workers import RayPool

    cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Ray workers do not have tests/ on their path
    results = {}
    pool = RayPool("local", fn=checkpoint_task)
    try:
        tasks = {g: {"group": g, "output_dir": str(tmp_path / "proposals" / g)} for g in ("g1", "g2")}
        pool.run(tasks, lambda k, r: results.__setitem__(k, r))
    finally:
        ray.shutdown()
    assert set(results) == {"g1", "g2"}
    for g, r in results.items():
        assert "files" not in r and r["checkpoint"] == str(tmp_path / "proposals" / g / "checkpoint")
        assert (tmp_path / "proposals" / g / "checkpoint" / "spec.json").read_bytes() == b'{"name": "%s"}' % g.encode()
        assert sorted(os.listdir(tmp_path / "proposals" / g)) == ["checkpoint"]


# ------------------------------------------------------------------------------------------------
# BatchNorm re-estimation before a proposal is scored
# ------------------------------------------------------------------------------------------------
def test_bn_reestimation_takes_the_batches_statistics_and_leaves_every_weight():
    import numpy as np
    import tf_keras as keras

    from tfmobile.netadapt.workers import reestimate_batchnorm

    inputs = keras.Input((4, 4, 3))
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(bn(inputs))))
    bn.gamma.assign([2.0, 0.5, 1.5])
    bn.beta.assign([0.1, -0.2, 0.3])
    before = [w.copy() for w in model.get_weights()]
    mean, std = np.array([3.0, -1.0, 0.5], np.float32), np.array([2.0, 0.5, 1.0], np.float32)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((64, 4, 4, 3)) * std + mean).astype(np.float32) for _ in range(20)]
    bn.moving_mean.assign([9.0, 9.0, 9.0])            # a parent's statistics, far from these data's

    assert reestimate_batchnorm(model, iter(batches)) == 20
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, atol=0.03)
    np.testing.assert_allclose(bn.moving_variance.numpy(), std ** 2, rtol=0.03)
    assert bn.momentum == 0.99                         # restored
    after = dict(zip([w.name for w in model.weights], model.get_weights()))
    for w, old in zip(model.weights, before):
        if "moving" not in w.name:                     # kernels, bias, gamma, beta: frozen
            np.testing.assert_array_equal(after[w.name], old)


def test_a_proposal_scored_after_bn_reestimation_only(tmp_path):
    """--short_steps 0: scored right after the transfer (and the re-estimation); with --bn_batches the
    moving statistics, and so the score, differ; the trained weights are the same in both."""
    import numpy as np

    from tfmobile import train
    from tfmobile.models.surgery import groups, shrink
    spec = _small_mbv1((8, 24, 24))
    cfg = TINY_DATA
    splits = tiny_splits()
    parent = _trained(spec, tmp_path / "parent")
    group = [g for g in groups(spec) if g.name != "stem"][0]
    narrow = shrink(spec, group, group.widths()[0])
    tasks = {}
    for n in (0, 4):
        tasks[n] = {"group": group.name, "width": group.widths()[0], "spec": narrow.to_json(indent=None),
                "parent": parent, "data": cfg, "steps": 0, "bn_batches": n,
                "batch_size": 32, "lr": 1e-2, "seed": 0, "augment": True, "shift": 0.0, "threads": 1,
                "output_dir": str(tmp_path / f"bn{n}")}
    results = {}
    pool = LocalPool(1)   # run_proposal sets TensorFlow's threads: a fresh process, as in a run
    try:
        pool.run(tasks, results.__setitem__)
    finally:
        pool.close()
    for n in tasks:
        assert results[n]["bn_batches"] == n and results[n]["train_accuracy"] is None
    models_ = {n: train.load_checkpoint(results[n]["checkpoint"]) for n in results}
    assert results[0]["val_accuracy"] == train.evaluate(models_[0], splits.x_val, splits.y_val)
    # the score follows the re-estimated statistics: the outputs differ (the top-1 of a near-chance model on 30
    # validation images can coincide: 4/30 for both once)
    from tfmobile.data import make_dataset

    x_val = np.concatenate([x.numpy() for x, _ in make_dataset(splits.x_val, splits.y_val, (32, 32, 3), 256)])
    outputs = {n: m(x_val, training=False).numpy() for n, m in models_.items()}
    assert not np.allclose(outputs[0], outputs[4], atol=1e-4)
    assert results[4]["val_accuracy"] == train.evaluate(models_[4], splits.x_val, splits.y_val)
    moving = {n: [w.numpy() for w in m.weights if "moving" in w.name] for n, m in models_.items()}
    assert any(not np.allclose(a, b) for a, b in zip(moving[0], moving[4]))
    trained = {n: [w.numpy() for w in m.weights if "moving" not in w.name] for n, m in models_.items()}
    for a, b in zip(trained[0], trained[4]):
        np.testing.assert_array_equal(a, b)


def test_a_proposal_distilled_from_the_start_model_trains_toward_its_soft_targets(tmp_path):
    """--short_distill: the same proposal, seed and steps, with and without the start model as teacher, ends
    with other weights; a teacher that cannot be loaded is an error of the task (so it is really read)."""
    import numpy as np

    from tfmobile import train
    from tfmobile.models.surgery import groups, shrink
    spec, cfg = _small_mbv1(), TINY_DATA
    parent = _trained(spec, tmp_path / "parent")
    group = [g for g in groups(spec) if g.name != "stem"][0]
    base = {"group": group.name, "width": group.widths()[0], "spec": shrink(spec, group, group.widths()[0])
            .to_json(indent=None), "parent": parent, "data": cfg, "steps": 3, "bn_batches": 0, "batch_size": 32,
            "lr": 1e-2, "seed": 0, "augment": False, "shift": 0.0, "threads": 1}
    tasks = {"plain": dict(base, output_dir=str(tmp_path / "plain")),
             "distilled": dict(base, output_dir=str(tmp_path / "distilled"), teacher=parent, distill=1.0,
                               temperature=4.0)}
    results = {}
    pool = LocalPool(1)
    try:
        pool.run(tasks, results.__setitem__)
        with pytest.raises(Exception, match="no_teacher_here"):
            pool.run({"bad": dict(tasks["distilled"], teacher=str(tmp_path / "no_teacher_here"),
                                  output_dir=str(tmp_path / "bad"))}, results.__setitem__)
    finally:
        pool.close()
    weights = {k: train.load_checkpoint(r["checkpoint"]).get_weights() for k, r in results.items()}
    assert any(not np.allclose(a, b) for a, b in zip(weights["plain"], weights["distilled"]))


def test_a_worker_that_reuses_its_parent_and_resized_data_scores_as_a_fresh_one(tmp_path):
    """One worker runs proposal A, then B, then A again: the second A (parent model and resized images taken
    from the worker's caches) ends with the same weights and score as the first; once the parent's checkpoint
    is replaced on disk, the same task starts from the new parent."""
    import numpy as np

    from tfmobile import train
    from tfmobile.models.surgery import groups, shrink
    spec, cfg = _small_mbv1(), TINY_DATA
    parent = _trained(spec, tmp_path / "parent")

    def task(group, out):
        g = [x for x in groups(spec) if x.name == group][0]
        return {"group": g.name, "width": g.widths()[0], "spec": shrink(spec, g, g.widths()[0]).to_json(indent=None),
                "parent": parent, "data": cfg, "steps": 3, "bn_batches": 2, "batch_size": 32, "lr": 1e-2,
                "seed": 0, "augment": True, "shift": 0.0, "threads": 1, "output_dir": str(tmp_path / out)}

    results = {}
    pool = LocalPool(1)
    try:
        for key, group in (("A", "block_1"), ("B", "block_2"), ("A again", "block_1")):
            pool.run({key: task(group, key.replace(" ", "_"))}, results.__setitem__)
        other = _trained(spec, tmp_path / "other", seed=1)
        shutil.rmtree(parent)
        shutil.copytree(other, parent)
        pool.run({"new parent": task("block_1", "new_parent")}, results.__setitem__)
    finally:
        pool.close()
    assert len({r["pid"] for r in results.values()}) == 1   # one process: the caches were there to use
    weights = {k: train.load_checkpoint(r["checkpoint"]).get_weights() for k, r in results.items()}
    assert results["A again"]["val_accuracy"] == results["A"]["val_accuracy"]
    for a, b in zip(weights["A"], weights["A again"]):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(weights["A"], weights["new parent"]))
