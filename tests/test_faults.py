"""Faults and edges (issue 14): output paths, signals, checkpoint crash windows, bounds, file modes.

Each test reproduces one probed case that used to end in a traceback, a stray process, a silently
wrong result or a late failure. The signal tests run real CLIs on tiny models and signal them while
their child process (TFLM runtime, LiteRT benchmark worker) is alive.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import tfmobile  # noqa: F401
from tfmobile.errors import UserError

from conftest import REPO, run_cli
from test_android import phone  # noqa: F401  (fixture: a fake adb device)
from test_bench import tiny_tflite
from test_train import _tiny_model, splits  # noqa: F401  (splits: the tiny training data fixture)


@pytest.fixture(scope="module")
def tiny():
    return tiny_tflite()


def _one_error_line(p):
    """Exit 2 and a single ``error:`` line, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr[-2000:]
    return errors[0]


@pytest.fixture
def unwritable(tmp_path):
    """A directory in which no file can be created (sysfs when running as root, who ignores modes)."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        yield str(d)
        d.chmod(0o755)
        return
    try:
        fd, probe = tempfile.mkstemp(dir="/sys")
    except OSError:
        yield "/sys"
        return
    os.close(fd)
    os.remove(probe)
    pytest.skip("no directory here that root cannot write to")


# ------------------------------------------------------------------------------------------------
# output paths: checked before the work, any OSError is one line
# ------------------------------------------------------------------------------------------------
INSPECT = ("pipelines.inspect", "--model", "mbv2", "--alpha", "0.35", "--resolution", "32", "--classes", "10")


def test_inspect_save_spec_is_a_directory(tmp_path):
    line = _one_error_line(run_cli(*INSPECT, "--save_spec", tmp_path))
    assert "is a directory" in line and str(tmp_path) in line


def test_inspect_save_spec_under_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    line = _one_error_line(run_cli(*INSPECT, "--save_spec", tmp_path / "f" / "sub" / "s.json"))
    assert "not a directory" in line


def test_benchmark_out_is_a_directory_fails_before_benchmarking(tiny, tmp_path):
    p = run_cli("pipelines.benchmark", "--tflite", tiny, "--runs", "5", "--out", tmp_path)
    assert "is a directory" in _one_error_line(p)
    assert "benchmarking" not in p.stderr          # refused before the (slow) measurement


@pytest.mark.parametrize("cli", ["pipelines.train", "pipelines.run"])
def test_output_dir_is_a_file(cli, tmp_path):
    (tmp_path / "f").write_text("x")
    p = run_cli(cli, "--output_dir", tmp_path / "f", "--epochs", "1", "--steps_per_epoch", "1")
    assert "is not a directory" in _one_error_line(p)


@pytest.mark.parametrize("args, work", [
    (("pipelines.benchmark", "--tflite", "TINY", "--runs", "5", "--out", "DIR/r.json"), "benchmarking"),
    (("pipelines.lut", "build", "--tflite", "TINY", "--runs", "5", "--lut", "DIR/lut.json"), "configuration"),
    (("pipelines.run", "--epochs", "1", "--steps_per_epoch", "1", "--output_dir", "DIR/run"), "float training"),
])
def test_unwritable_output_fails_before_the_work(args, work, tiny, unwritable):
    args = [a.replace("TINY", tiny).replace("DIR", unwritable) for a in args]
    p = run_cli(*args)
    line = _one_error_line(p)
    assert "cannot write" in line and unwritable in line
    assert work not in p.stderr


def test_any_os_error_in_a_cli_is_one_line(tmp_path):
    code = ("from pipelines import _cli\n"
            "def main(argv):\n"
            "    open(%r, 'w')\n"
            "_cli.run(main)\n" % str(tmp_path))
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert _one_error_line(p) == f"error: is a directory: {tmp_path}"


# ------------------------------------------------------------------------------------------------
# signals: SIGTERM cleans up like Ctrl-C; children die with the parent, kill -9 included
# ------------------------------------------------------------------------------------------------
def _children(pid, needle):
    """Pids of processes whose parent is ``pid`` and whose command line contains ``needle``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and needle in cmd:
            found.append(int(entry))
    return found


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_and_signal(args, needle, sig, env_extra=None, timeout=240, settle_s=0.0):
    """Start ``python args``, wait until its child ``needle`` runs (``settle_s`` more), signal the parent.

    Returns (parent Popen after exit, child pid, stderr text).
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    p = subprocess.Popen([sys.executable, *map(str, args)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    child = None
    try:
        while child is None:
            if p.poll() is not None:
                pytest.fail(f"exited ({p.returncode}) before its {needle} child was seen: {p.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {needle} child after {timeout} s")
            kids = _children(p.pid, needle)
            child = kids[0] if kids else None
            time.sleep(0.02)
        time.sleep(settle_s)
        # the child running now (a parent that starts children in a loop may have moved on to a new one)
        live = [k for k in _children(p.pid, needle) if _alive(k)]
        child = live[-1] if live else child
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p, child, err


def _gone(pid, within_s=10.0):
    """Whether ``pid`` ended within ``within_s``; a survivor is killed so that no test leaves a stray."""
    deadline = time.monotonic() + within_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        return False
    return True


EXPORT_TFLM = ("-m", "pipelines.export", "--model", "mbv2", "--alpha", "0.35", "--resolution", "32", "--int8", "--tflm",
               "--num_calibration", "2", "--num_verify", "2")


def test_sigterm_during_tflm_export_cleans_up(tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    p, child, err = _start_and_signal((*EXPORT_TFLM, "--output_dir", out), "_tflm_child", signal.SIGTERM,
                                      env_extra={"TMPDIR": str(tmp)})
    assert p.returncode == 143, err[-2000:]
    assert "Traceback" not in err and "terminated" in err
    assert _gone(child), "the _tflm_child process outlived its parent"
    left = os.listdir(out) if out.exists() else []
    assert not [n for n in left if n.endswith(".tmp")], left
    assert not [n for n in os.listdir(tmp) if n.startswith("tfmobile_tflm_")]


def test_tflm_child_dies_with_a_killed_parent(tiny, tmp_path):
    # the parent runs TFLM children until it is killed, so there is always a busy child to outlive it
    # however fast the machine; each runs 100,000 inferences (7 s here), far longer than the 1 s a
    # child killed by PR_SET_PDEATHSIG is given to go
    code = ("import sys, numpy as np, tfmobile\n"
            "from tfmobile.convert import tflm\n"
            "model = open(sys.argv[1], 'rb').read()\n"
            "while True:\n"
            "    tflm.tflm_run(model, np.zeros((100000, 16, 16, 3), np.int8), 1 << 20)\n")
    # settle: past its first output line (an orphan dies of a broken pipe only while it still writes)
    p, child, _ = _start_and_signal(("-c", code, tiny), "_tflm_child", signal.SIGKILL,
                                    env_extra={"TMPDIR": str(tmp_path)}, settle_s=3.0)
    assert p.returncode == -signal.SIGKILL
    assert _gone(child, within_s=1), "the _tflm_child process outlived its parent (kill -9)"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_benchmark_worker_dies_with_its_parent(sig, tiny):
    p, child, err = _start_and_signal(("-m", "pipelines.benchmark", "--tflite", tiny, "--runs", "100000000",
                                       "--warmup", "0"), "tfmobile.bench._worker", sig)
    assert p.returncode == (143 if sig == signal.SIGTERM else -signal.SIGKILL), err[-2000:]
    assert _gone(child), f"the benchmark worker outlived its parent ({signal.Signals(sig).name})"


# ------------------------------------------------------------------------------------------------
# checkpoint crash windows (pipelines.train --resume)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_epochs(splits, tmp_path_factory):  # noqa: F811
    """A training output dir with a checkpoint at epoch 3 (and its metrics)."""
    from tfmobile import train

    out = str(tmp_path_factory.mktemp("ckpt") / "run")
    _, m = train.fit(_tiny_model(), splits, out, epochs=3, batch_size=32, verbose=0, steps_per_epoch=2,
                     tensorboard=False)
    return out, m


def _copy(src, tmp_path):
    dst = str(tmp_path / "run")
    shutil.copytree(src, dst)
    return dst


def test_history_survives_a_kill_between_checkpoint_and_history(three_epochs, splits, tmp_path):  # noqa: F811
    """kill -9 after the checkpoint's rename, before history.json: resume keeps epochs 1-3's figures."""
    from tfmobile import train

    src, m3 = three_epochs
    out = _copy(src, tmp_path)
    os.remove(os.path.join(out, "history.json"))
    _, m = train.fit(_tiny_model(), splits, out, epochs=4, batch_size=32, verbose=0, steps_per_epoch=2,
                     resume=True, tensorboard=False)
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3, 4]
    assert m["history"][:3] == m3["history"]
    with open(os.path.join(out, "history.json")) as f:
        assert [h["epoch"] for h in json.load(f)] == [1, 2, 3, 4]


def test_unfinished_checkpoint_is_removed_and_said(splits, tmp_path, capsys):  # noqa: F811
    """kill -9 during the first save: the temp dir goes, and resume says it starts from scratch."""
    from tfmobile import train

    out = tmp_path / "run"
    stale = out / ".checkpoint.k1ll3d"
    stale.mkdir(parents=True)
    (stale / "weights.h5").write_bytes(b"\x89HDF\r\n half a file")
    _, m = train.fit(_tiny_model(), splits, str(out), epochs=1, batch_size=32, verbose=0, steps_per_epoch=1,
                     resume=True, tensorboard=False)
    assert "no complete checkpoint; starting from epoch 0" in capsys.readouterr().err
    assert not stale.exists()
    assert m["resumed_from_epoch"] == 0 and train.checkpoint_info(str(out))["epoch"] == 1


def test_resume_with_fewer_epochs_than_the_checkpoint_is_refused(three_epochs, splits, tmp_path):  # noqa: F811
    from tfmobile import train

    out = _copy(three_epochs[0], tmp_path)
    with open(os.path.join(out, "metrics.json"), "rb") as f:
        before = f.read()
    with pytest.raises(UserError, match="at epoch 3, beyond --epochs 2"):
        train.fit(_tiny_model(), splits, out, epochs=2, batch_size=32, verbose=0, steps_per_epoch=2, resume=True)
    with open(os.path.join(out, "metrics.json"), "rb") as f:
        assert f.read() == before


# ------------------------------------------------------------------------------------------------
# bounds and data
# ------------------------------------------------------------------------------------------------
def test_one_class_dataset_is_refused():
    from tfmobile import data

    full = data.load_fashion_mnist(subset=True)
    keep = full.y_train == 3
    one = data.ImageData(full.x_train[keep], full.y_train[keep], full.x_test, full.y_test, source="one class")
    with pytest.raises(UserError, match="at least 2 classes"):
        data.train_val_split(one, 0.1)


def test_resolution_is_bounded_and_the_bound_said():
    p = run_cli("pipelines.export", "--model", "mbv3_small", "--int8", "--resolution", "100000", timeout=300)
    line = _one_error_line(p)
    assert "100000" in line and "<= 1024" in line


@pytest.mark.parametrize("field, where", [("overhead_cpu_ms", "device"), ("cpu_ms", "entry"), ("ms", "entry")])
def test_lut_values_are_validated_on_load(field, where, tmp_path):
    from tfmobile.bench.lut import load_lut

    dev = {"device": {}, "overhead_ms": 0.01, "overhead_cpu_ms": 0.01,
           "entries": {"CONV_2D|k": {"op": "CONV_2D", "ms": 0.2, "cpu_ms": 0.2, "min_ms": 0.1}}}
    (dev if where == "device" else dev["entries"]["CONV_2D|k"])[field] = "0.2"
    path = tmp_path / "lut.json"
    path.write_text(json.dumps({"lut_version": 1, "devices": {"cpu | x86_64": dev}}))
    with pytest.raises(UserError, match=f"corrupt LUT .*{field}"):
        load_lut(str(path))


def test_lut_predict_with_a_missing_lut_file(tiny, tmp_path):
    from tfmobile.bench.lut import predict_detail

    missing = str(tmp_path / "nope.json")
    with pytest.raises(UserError, match=f"^LUT file not found: {missing}$"):
        predict_detail(tiny, missing)


def test_unavailable_cpus_are_named(tiny):
    from tfmobile import bench

    bad = max(os.sched_getaffinity(0)) + 97
    with pytest.raises(UserError, match=rf"cpus {bad}: CPU {bad} is not available"):
        bench.measure(tiny, runs=1, warmup=0, cpus=[bad])


def test_android_app_is_checked_before_the_model_is_pushed(tiny, phone, tmp_path):  # noqa: F811
    from tfmobile import bench

    env, _ = phone
    with pytest.raises(UserError, match="is not installed"):
        bench.measure(tiny, backend="android", apk=str(tmp_path / "missing.apk"), runs=1, warmup=0)
    device_dir = os.path.join(env["FAKE_ADB_HOME"], "fs", "data", "local", "tmp", "tfmobile")
    assert not os.path.exists(os.path.join(device_dir, os.path.basename(tiny)))


# ------------------------------------------------------------------------------------------------
# files: shared artifacts follow the umask
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_io_files_follow_the_umask(tmp_path, umask_022):
    from tfmobile.io import write_json

    path = tmp_path / "new" / "metrics.json"
    write_json(path, {"a": 1})
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert oct(path.parent.stat().st_mode & 0o777) == oct(0o755)
    os.umask(0o027)
    write_json(path, {"a": 2})
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)


def test_checkpoint_files_follow_the_umask(tmp_path, umask_022):
    from tfmobile import train

    model = _tiny_model()
    optimizer = train.make_optimizer(1e-3, 10)
    optimizer.build(model.trainable_variables)
    ckpt = train.save_checkpoint(model, tmp_path / "checkpoint", optimizer=optimizer)
    assert oct(os.stat(ckpt).st_mode & 0o777) == oct(0o755)
    names = sorted(os.listdir(ckpt))
    assert names == ["checkpoint.json", "optimizer.npz", "spec.json", "weights.h5"]
    for name in names:
        assert oct(os.stat(os.path.join(ckpt, name)).st_mode & 0o777) == oct(0o644), name


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    from tfmobile.io import StagedWriter

    with StagedWriter() as staged:
        staged.add(tmp_path / "a.bin", b"a")
        staged.add(tmp_path / "b.json", "{}\n")
        assert not (tmp_path / "a.bin").exists()         # staged: not in place before the block ends
    assert (tmp_path / "a.bin").read_bytes() == b"a" and (tmp_path / "b.json").read_text() == "{}\n"
    with pytest.raises(RuntimeError):
        with StagedWriter() as staged:
            staged.add(tmp_path / "c.bin", b"c")
            raise RuntimeError("failed half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json"]     # no c.bin, no temporary left
