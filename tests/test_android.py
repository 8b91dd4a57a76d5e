"""Host runner (python -m android_bench.run / backend android) end to end against tests/fake_adb.

fake_adb plays the phone: it keeps a device file system, package list and logcat under
$FAKE_ADB_HOME, and on `am start` runs the model with LiteRT on this host (real numbers) and logs the
app's JSON line. No Android SDK or phone exists here; these tests check the runner's protocol and
its error handling, not phone latency.
"""
import json
import os
import sys

import pytest

import tfmobile  # noqa: F401
from tfmobile.errors import UserError

from test_bench import FAKE_BM, FAKE_BM_PROFILE, RECORDED_AVG_MS, TINY_OPS, tiny_tflite

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE_ADB = os.path.join(HERE, "fake_adb")
SCHEMA = ("backend", "threads", "runs", "init_ms", "mean_ms", "median_ms", "p90_ms", "std_ms", "min_ms", "cv")


@pytest.fixture(scope="module")
def tiny():
    return tiny_tflite()


@pytest.fixture
def phone(tmp_path, monkeypatch):
    """Environment of a fake device with an APK on disk; returns (env dict, apk path)."""
    home = tmp_path / "adb_home"
    home.mkdir()
    apk = tmp_path / "app-release.apk"
    apk.write_bytes(b"PK\x03\x04 stand-in apk: fake_adb records the install, it cannot run it")
    env = {"FAKE_ADB_HOME": str(home), "TFMOBILE_ADB": FAKE_ADB, "FAKE_ADB_DEVICES": "emulator-5554",
           # the pushed copy of fake_benchmark_model finds its recorded op profile here
           "FAKE_BENCHMARK_MODEL_PROFILE": FAKE_BM_PROFILE,
           # fake_adb's shebang is python3: make it this interpreter (it needs ai_edge_litert)
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    for k in ("FAKE_ADB_DISCONNECT_ON", "FAKE_ADB_APP_HANG", "TFMOBILE_BENCH_APK",
              "TFMOBILE_BENCHMARK_MODEL_ANDROID", "TFMOBILE_BENCHMARK_MODEL"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env, str(apk)


def _run(cli, *args):
    p = cli("android_bench.run", *args)
    return p


def _saved_results(home):
    """The result files the (fake) app wrote on the device, oldest first."""
    d = os.path.join(home, "fs/sdcard/Android/data/org.tfmobile.bench/files/results")
    paths = sorted((os.path.join(d, f) for f in os.listdir(d)), key=os.path.getmtime)
    return [json.load(open(p)) for p in paths]


def _assert_summarizes(r, times):
    """The runner's statistics are those of the app's own per-run times (computed here with numpy)."""
    import numpy as np
    assert r["runs"] == len(times)
    assert r["median_ms"] == pytest.approx(float(np.median(times)))
    assert r["mean_ms"] == pytest.approx(float(np.mean(times)))
    assert r["min_ms"] == min(times) and r["max_ms"] == max(times)
    assert r["std_ms"] == pytest.approx(float(np.std(times, ddof=1)))


def test_app_mode_end_to_end(cli, tiny, phone):
    env, apk = phone
    p = _run(cli, "--tflite", tiny, "--serial", "emulator-5554", "--apk", apk, "--runs", "12", "--warmup", "2",
             "--threads", "1", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    for k in SCHEMA:
        assert k in r
    assert r["num_ops"] == len(TINY_OPS)
    assert r["device"]["model"] == "fake_adb host stand-in" and r["serial"] == "emulator-5554"
    # the app was installed, the model pushed, the result file written where the app writes it
    home = env["FAKE_ADB_HOME"]
    assert "org.tfmobile.bench" in open(os.path.join(home, "packages.txt")).read()
    assert os.path.isfile(os.path.join(home, "fs/data/local/tmp/tfmobile", os.path.basename(tiny)))
    (saved,) = _saved_results(home)
    # the app got the requested settings, and the runner reports the app's own measurements
    assert saved["status"] == "ok" and saved["runs"] == 12 and len(saved["warmup_ms"]) == 2
    assert saved["threads"] == 1 and saved["delegate"] == "XNNPACK" == r["delegate"]
    assert saved["model"] == "/data/local/tmp/tfmobile/" + os.path.basename(tiny)
    _assert_summarizes(r, saved["times_ms"])
    assert r["init_ms"] == saved["init_ms"] and r["first_ms"] == saved["warmup_ms"][0]
    # second run: already installed, no --apk needed
    p = _run(cli, "--tflite", tiny, "--runs", "5", "--warmup", "0", "--delegate", "CPU", "--json")
    assert p.returncode == 0, p.stderr
    second = _saved_results(home)[-1]
    assert second["delegate"] == "CPU" and second["runs"] == 5 and second["warmup_ms"] == []
    _assert_summarizes(json.loads(p.stdout), second["times_ms"])


def test_long_result_is_pulled_from_the_app_file(tiny, phone):
    """> 3500 chars of JSON: the log line is a summary; the runner pulls the file with every run."""
    from tfmobile.bench import measure
    env, apk = phone
    r = measure(tiny, backend="android", runs=600, warmup=1, apk=apk, warn=False)
    (saved,) = _saved_results(env["FAKE_ADB_HOME"])
    assert len(saved["times_ms"]) == 600
    _assert_summarizes(r, saved["times_ms"])


def test_binary_mode_with_pushed_benchmark_model(cli, tiny, phone):
    p = _run(cli, "--tflite", tiny, "--mode", "binary", "--binary", FAKE_BM, "--runs", "8", "--warmup", "1",
             "--taskset", "2", "--op_profiling", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    # the pushed stand-in ran on the device with --num_runs=8, and its recorded op profile came back
    assert r["runs"] == 8 and 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
    assert [row["node_type"] for row in r["op_profile"]] == TINY_OPS
    assert [row["avg_ms"] for row in r["op_profile"]] == RECORDED_AVG_MS


def test_pipelines_benchmark_android_backend(cli, tiny, phone):
    env, apk = phone
    p = cli("pipelines.benchmark", "--tflite", tiny, "--backend", "android", "--apk", apk, "--runs", "5", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    # measured by the (fake) phone's app: its device, its saved per-run times
    assert r["device"]["model"] == "fake_adb host stand-in"
    (saved,) = _saved_results(env["FAKE_ADB_HOME"])
    _assert_summarizes(r, saved["times_ms"])


def _fails(p, needle):
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stdout == "" and "Traceback" not in p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and needle in last, last


def test_no_adb(cli, tiny, phone, monkeypatch):
    monkeypatch.setenv("TFMOBILE_ADB", "/nonexistent/adb")
    _fails(_run(cli, "--tflite", tiny), "adb not found")


def test_no_device(cli, tiny, phone, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_DEVICES", "")
    _fails(_run(cli, "--tflite", tiny), "no Android device connected")


def test_unknown_serial_and_offline_device(cli, tiny, phone, monkeypatch):
    _fails(_run(cli, "--tflite", tiny, "--serial", "R58M000"), "device R58M000 not found")
    monkeypatch.setenv("FAKE_ADB_DEVICES", "emulator-5554:offline")
    _fails(_run(cli, "--tflite", tiny, "--serial", "emulator-5554"), "offline")


@pytest.mark.parametrize("when", ["push", "am start", "logcat -d"])
def test_device_disconnects_mid_run(cli, tiny, phone, monkeypatch, when):
    _, apk = phone
    monkeypatch.setenv("FAKE_ADB_DISCONNECT_ON", when)
    _fails(_run(cli, "--tflite", tiny, "--apk", apk), "disconnected")


def test_missing_apk(cli, tiny, phone, tmp_path):
    _fails(_run(cli, "--tflite", tiny, "--apk", str(tmp_path / "nope.apk")), "is not installed")


def test_missing_binary(cli, tiny, phone, tmp_path):
    _fails(_run(cli, "--tflite", tiny, "--mode", "binary"), "no Android benchmark_model binary")
    _fails(_run(cli, "--tflite", tiny, "--mode", "binary", "--binary", str(tmp_path / "bm")), "not found")


def test_corrupt_tflite(cli, phone, tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"this is not a flatbuffer at all")
    _fails(_run(cli, "--tflite", str(bad)), "not a TFLite model")
    _fails(_run(cli, "--tflite", str(tmp_path / "missing.tflite")), "no such .tflite")


def test_timeout_when_app_never_reports(cli, tiny, phone, monkeypatch):
    _, apk = phone
    monkeypatch.setenv("FAKE_ADB_APP_HANG", "1")
    _fails(_run(cli, "--tflite", tiny, "--apk", apk, "--timeout", "1.5"), "no result from the benchmark app")


def test_app_error_is_reported(cli, tiny, phone):
    _, apk = phone
    _fails(_run(cli, "--tflite", tiny, "--apk", apk, "--delegate", "GPU"), "GPU delegate unavailable")


def test_find_result_and_schema_mapping():
    from tfmobile.bench.android import app_result_to_schema, find_result
    line = ('11-23 14:50:01.123  4242  4242 I TfmobileBench: {"tfmobile_bench":1,"run_id":"abc","status":"ok",'
            '"threads":2,"runs":3,"warmup":1,"init_ms":5.0,"warmup_ms":[9.0],"times_ms":[1.0,2.0,3.0]}')
    other = line.replace('"abc"', '"zzz"')
    r = find_result("--------- beginning of main\n" + other + "\n" + line, "abc")
    assert r["run_id"] == "abc"
    assert find_result(other, "abc") is None
    s = app_result_to_schema(r)
    assert s["mean_ms"] == 2.0 and s["median_ms"] == 2.0 and s["threads"] == 2 and s["first_ms"] == 9.0
    with pytest.raises(UserError, match="malformed"):
        app_result_to_schema({"status": "ok"})
