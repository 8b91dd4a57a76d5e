"""The ``android`` backend: benchmark a .tflite on a phone through adb.

Two ways to run it on the device:

* ``mode="app"`` (default): our app (android_bench/, package ``org.tfmobile.bench``). The runner
  installs the APK if the package is missing, pushes the model to ``/data/local/tmp/tfmobile/``,
  clears logcat, starts ``BenchmarkActivity`` with intent extras (model, threads, runs, warmup,
  delegate, run_id), polls ``logcat -d -s TfmobileBench`` until the JSON line of this run_id
  appears (or the timeout passes), and pulls the app's result file when the log line was too long
  to carry every per-run time.
* ``mode="binary"``: an Android build of TFLite's ``benchmark_model`` is pushed and run with
  ``adb shell [taskset MASK] benchmark_model --graph=...``; its output is parsed like the host tool's.

Every failure (no adb, no device, device gone mid-run, missing APK/binary, app error, timeout) is a
one-line UserError; the CLIs turn it into ``error: ...`` and exit status 2.
"""
import json
import os
import shlex
import shutil
import subprocess
import time
import uuid

from tfmobile.convert import flatbuffer
from tfmobile.bench.stats import summarize
from tfmobile.errors import UserError

PACKAGE = "org.tfmobile.bench"
ACTIVITY = f"{PACKAGE}/.BenchmarkActivity"
LOG_TAG = "TfmobileBench"
DEVICE_DIR = "/data/local/tmp/tfmobile"
RESULT_DIR = f"/sdcard/Android/data/{PACKAGE}/files/results"
DELEGATES = ("CPU", "XNNPACK", "GPU", "NNAPI")
ENV_ADB = "TFMOBILE_ADB"
ENV_APK = "TFMOBILE_BENCH_APK"
ENV_ANDROID_BINARY = "TFMOBILE_BENCHMARK_MODEL_ANDROID"
DEFAULT_APK = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "android_bench", "app", "build", "outputs", "apk", "release", "app-release.apk")

_GONE = ("not found", "offline", "no devices", "unauthorized", "device still authorizing", "closed",
         "no emulators", "protocol fault", "connection reset", "cannot connect")


class Adb:
    """Thin adb wrapper: every failure becomes a one-line UserError."""

    def __init__(self, adb=None, serial=None, timeout=60):
        exe = adb or os.environ.get(ENV_ADB) or "adb"
        path = exe if os.path.sep in exe else shutil.which(exe)
        if not path or not os.path.isfile(path):
            raise UserError(f"adb not found ({exe}): install Android platform-tools or pass --adb / set {ENV_ADB}")
        if not os.access(path, os.X_OK):
            raise UserError(f"adb is not executable: {path}")
        self.exe = path
        self.serial = serial
        self.timeout = timeout

    def run(self, *args, timeout=None, check=True, device=True):
        cmd = [self.exe] + (["-s", self.serial] if device and self.serial else []) + [str(a) for a in args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"adb {args[0]} timed out after {timeout or self.timeout:.0f} s "
                            f"(device {self.serial} unresponsive?)") from None
        except OSError as e:
            raise UserError(f"cannot run adb ({self.exe}): {e.strerror}") from None
        if check and p.returncode != 0:
            text = (p.stderr.strip() or p.stdout.strip() or f"exit status {p.returncode}")
            line = [ln for ln in text.splitlines() if ln.strip()][-1].strip()
            if any(g in text.lower() for g in _GONE):
                raise UserError(f"device {self.serial or ''} disconnected or unavailable "
                                f"during 'adb {args[0]}': {line}".replace("device  ", "device "))
            raise UserError(f"adb {' '.join(str(a) for a in args[:2])} failed: {line}")
        return p

    def devices(self):
        out = self.run("devices", device=False).stdout
        devs = []
        for line in out.splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 2:
                devs.append((parts[0], parts[1]))
        return devs

    def pick(self, serial=None):
        """Select ``serial`` (or the only attached device); UserError if absent or not ready."""
        devs = self.devices()
        ready = [s for s, st in devs if st == "device"]
        if serial is None:
            if not devs:
                raise UserError("no Android device connected (adb devices lists none)")
            if len(ready) != 1:
                raise UserError(f"{len(ready)} ready devices ({', '.join(s for s, _ in devs)}): pass --serial")
            serial = ready[0]
        states = dict(devs)
        if serial not in states:
            listed = ", ".join(f"{s} ({st})" for s, st in devs) or "none"
            raise UserError(f"device {serial} not found; adb devices lists: {listed}")
        if states[serial] != "device":
            raise UserError(f"device {serial} is {states[serial]}, not ready")
        self.serial = serial
        return serial

    def shell(self, command, timeout=None, check=True):
        return self.run("shell", command, timeout=timeout, check=check)


def device_info(adb):
    props = {}
    for key, prop in (("manufacturer", "ro.product.manufacturer"), ("model", "ro.product.model"),
                      ("soc", "ro.soc.model"), ("board", "ro.board.platform"), ("sdk", "ro.build.version.sdk"),
                      ("abi", "ro.product.cpu.abi")):
        props[key] = adb.shell(f"getprop {prop}").stdout.strip()
    props["serial"] = adb.serial
    return props


def _push(adb, local, remote):
    adb.run("push", local, remote, timeout=max(adb.timeout, 300))


def _quote(s):
    return shlex.quote(str(s))


def measure_android(tflite_path, serial=None, mode="app", threads=1, runs=50, warmup=10, delegate="XNNPACK",
                    binary=None, apk=None, adb=None, timeout=300.0, taskset=None, poll_s=0.5, op_profiling=False):
    """Benchmark ``tflite_path`` on an Android device; the common result schema (+ ``device``)."""
    flatbuffer.read_tflite(tflite_path)            # corrupt / missing model: fail before touching the device
    if mode not in ("app", "binary"):
        raise UserError(f"android mode must be 'app' or 'binary', got {mode!r}")
    delegate = str(delegate).upper()
    if delegate not in DELEGATES:
        raise UserError(f"unknown delegate {delegate!r}; choose one of {', '.join(DELEGATES)}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise UserError(f"timeout must be a positive number of seconds, got {timeout!r}")
    local_binary = _local_binary(binary) if mode == "binary" else None   # before touching the device
    a = Adb(adb, serial)
    a.pick(serial)
    info = device_info(a)
    if mode == "app":
        _ensure_app(a, apk)            # before pushing anything: a missing app fails with nothing left behind
    a.shell(f"mkdir -p {DEVICE_DIR}")
    remote_model = f"{DEVICE_DIR}/{os.path.basename(tflite_path)}"
    _push(a, tflite_path, remote_model)
    if mode == "binary":
        res = _run_binary(a, remote_model, local_binary, threads, runs, warmup, timeout, taskset, delegate,
                          op_profiling)
    else:
        res = _run_app(a, remote_model, threads, runs, warmup, delegate, timeout, poll_s)
    res["device"] = dict(info, backend="android", threads=threads, delegate=delegate, mode=mode)
    res["serial"] = a.serial
    res["remote_model"] = remote_model
    return res


def _local_binary(binary):
    """The host path of the Android benchmark_model to push (UserError if none or missing)."""
    from tfmobile.bench import benchmark_model as bm

    local = binary or os.environ.get(ENV_ANDROID_BINARY) or os.environ.get(bm.ENV_BINARY)
    if not local:
        raise UserError("no Android benchmark_model binary: pass --binary or set "
                        f"{ENV_ANDROID_BINARY} (bazel build --config=android_arm64 "
                        "//tensorflow/lite/tools/benchmark:benchmark_model)")
    if not os.path.isfile(local):
        raise UserError(f"benchmark_model binary not found: {local}")
    return local


def _run_binary(a, remote_model, local, threads, runs, warmup, timeout, taskset, delegate, op_profiling):
    from tfmobile.bench import benchmark_model as bm

    remote_bin = f"{DEVICE_DIR}/benchmark_model"
    _push(a, local, remote_bin)
    a.shell(f"chmod 755 {remote_bin}")
    extra = []
    if delegate == "GPU":
        extra.append("--use_gpu=true")
    elif delegate == "NNAPI":
        extra.append("--use_nnapi=true")
    elif delegate == "CPU":
        extra.append("--use_xnnpack=false")
    args = bm.command(remote_model, threads, runs, warmup, op_profiling, extra)
    cmd = (f"taskset {_quote(taskset)} " if taskset else "") + " ".join([remote_bin] + [_quote(x) for x in args])
    p = a.shell(cmd, timeout=timeout, check=False)
    text = p.stdout + "\n" + p.stderr
    if p.returncode != 0:
        if any(g in p.stderr.lower() for g in _GONE) and p.stderr.lstrip().lower().startswith(("error", "adb")):
            raise UserError(f"device {a.serial} disconnected during the benchmark: "
                            f"{p.stderr.strip().splitlines()[-1]}")
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errs = [ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower()]
        raise UserError(f"benchmark_model on {a.serial} exited with status {p.returncode}: "
                        f"{(errs or lines or ['no output'])[-1]}")
    res = bm.parse_output(text)
    res.update({"threads": threads, "warmup": warmup, "mode": "binary"})
    res.setdefault("runs", runs)
    return res


def _installed(a):
    out = a.shell(f"pm list packages {PACKAGE}").stdout
    return any(line.strip() == f"package:{PACKAGE}" for line in out.splitlines())


def _ensure_app(a, apk):
    """Install the benchmark app from ``apk`` if the device lacks it (UserError if it cannot)."""
    if _installed(a):
        return
    apk = apk or os.environ.get(ENV_APK) or DEFAULT_APK
    if not os.path.isfile(apk):
        raise UserError(f"benchmark app {PACKAGE} is not installed on {a.serial} and the APK {apk} does not "
                        "exist: build it (android_bench/README.md) or pass --apk")
    p = a.run("install", "-r", "-g", apk, timeout=max(a.timeout, 300), check=True)
    if "Success" not in p.stdout:
        raise UserError(f"installing {apk} failed: {(p.stdout.strip().splitlines() or ['no output'])[-1]}")


def _run_app(a, remote_model, threads, runs, warmup, delegate, timeout, poll_s):
    run_id = uuid.uuid4().hex[:12]
    a.run("logcat", "-c")
    start = a.shell(" ".join(["am", "start", "-W", "-n", ACTIVITY, "--es", "model", _quote(remote_model),
                              "--ei", "threads", str(threads), "--ei", "runs", str(runs), "--ei", "warmup",
                              str(warmup), "--es", "delegate", delegate, "--es", "run_id", run_id]))
    if "Error" in start.stdout or "Error" in start.stderr:
        msg = [ln for ln in (start.stdout + start.stderr).splitlines() if "Error" in ln][0].strip()
        raise UserError(f"cannot start {ACTIVITY} on {a.serial}: {msg}")
    deadline = time.monotonic() + timeout
    result = None
    while result is None:
        out = a.run("logcat", "-d", "-s", f"{LOG_TAG}:I").stdout
        result = find_result(out, run_id)
        if result is None:
            if time.monotonic() > deadline:
                raise UserError(f"no result from the benchmark app on {a.serial} after {timeout:g} s "
                                f"(logcat tag {LOG_TAG}, run {run_id})")
            time.sleep(poll_s)
    if result.get("status") != "ok":
        raise UserError(f"benchmark app failed on {a.serial}: {result.get('error', 'unknown error')}")
    if "times_ms" not in result:  # long result: the log line is a summary, the file has every run
        result = _pull_result(a, result.get("result_file") or f"{RESULT_DIR}/{run_id}.json")
    return app_result_to_schema(result)


def find_result(logcat_text, run_id):
    """The app's JSON result for ``run_id`` in ``logcat -d`` output, or None."""
    for line in logcat_text.splitlines():
        if LOG_TAG not in line or run_id not in line or "{" not in line:
            continue
        try:
            obj = json.loads(line[line.index("{"):])
        except json.JSONDecodeError:
            continue
        if obj.get("run_id") == run_id:
            return obj
    return None


def _pull_result(a, remote):
    import tempfile
    with tempfile.TemporaryDirectory(prefix="tfmobile_adb_") as tmp:
        local = os.path.join(tmp, "result.json")
        a.run("pull", remote, local)
        try:
            with open(local) as f:
                return json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"unreadable result file {remote} from {a.serial}: {e}") from None


def app_result_to_schema(r):
    """The app's JSON (see android_bench/README.md) in the common result schema."""
    try:
        times = [float(x) for x in r["times_ms"]]
        res = {"threads": int(r["threads"]), "runs": len(times), "warmup": int(r["warmup"]),
               "init_ms": float(r["init_ms"])}
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"malformed result from the benchmark app (field {e})") from None
    if not times:
        raise UserError("the benchmark app reported no timed runs")
    res.update(summarize(times))
    warm = r.get("warmup_ms") or []
    res["first_ms"] = float(warm[0]) if warm else times[0]
    res["delegate"] = r.get("delegate")
    res["app_runtime"] = r.get("runtime")
    res["mode"] = "app"
    if r.get("device"):
        res["app_device"] = r["device"]
    return res
