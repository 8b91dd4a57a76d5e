"""benchmarks/mcu_fit.py's own measurements, acceptance and committed files (issue 20), on real tiny
int8 models and a report.json made of them. Run in a child process: the benchmark defines absl flags
that pipelines modules imported by other tests define too."""
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPT = r"""
import json, os, sys
import mcu_fit as m
from netadapt_tiny import tiny_spec
from tfmobile import convert, data, evaluation, models
from tfmobile.errors import UserError
from tfmobile.models import surgery

tmp = sys.argv[1]
d = data.load_fashion_mnist(None, subset=True)
x, y = d.x_test[:200], d.y_test[:200]
specs = {"final": surgery.with_resolution(tiny_spec(), 24), "narrow": tiny_spec(widths=(8, 16, 16)),
         "wide": tiny_spec(widths=(16, 32, 32))}
paths, out = {}, {}
for name, spec in specs.items():
    paths[name] = os.path.join(tmp, name + ".tflite")
    with open(paths[name], "wb") as f:
        f.write(convert.to_tflite(models.build(spec), "int8", io="int8", num_calibration=4))
cache = os.path.join(tmp, "measured")
rows = {name: m.measure(p, x, y, cache) for name, p in paths.items()}
out["rows"] = rows
out["reference"] = {name: {"accuracy": evaluation.evaluate_tflite(p, x, y)["accuracy"],
                           "arena_bytes": convert.measure_arena(open(p, "rb").read())["arena_bytes"],
                           "flash_bytes": os.path.getsize(p)} for name, p in paths.items()}
out["cached_again"] = m.measure(paths["final"], x, y, cache) == rows["final"]
out["cache_files"] = sorted(os.listdir(cache))
grid = [rows["narrow"], rows["wide"]]
arena = sorted(r["arena_bytes"] for r in grid)
out["best_both_fit"] = m.best_fitting(grid, arena[1], 10 ** 9)["path"]
out["best_one_fits"] = m.best_fitting(grid, arena[0], 10 ** 9)["path"]
out["best_none_fit"] = m.best_fitting(grid, arena[0] - 1, 10 ** 9)
out["best_flash_bound"] = m.best_fitting(grid, 10 ** 9, rows["narrow"]["flash_bytes"])["path"]
errors = []
for text in ("0.5/256KB", "64KB", "64ms/256KB"):
    try:
        m.parse_fit(text)
    except UserError as e:
        errors.append(str(e))
out["parse"] = [m.parse_fit("64KB/256KB"), m.parse_fit("32KB/128KB"), errors]

final = dict(rows["final"], tflm_accuracy=0.125, tflm_n=len(y))   # stand-ins: not the LiteRT values
base = dict(rows["narrow"], tflm_accuracy=0.25, tflm_n=len(y), alpha=0.25)
out["written"] = m.write_artifacts(os.path.join(tmp, "mcu"), final, base)
out["files"] = sorted(os.listdir(os.path.join(tmp, "mcu")))
out["manifest"] = json.load(open(out["written"]))
out["baseline_bytes_equal"] = open(os.path.join(tmp, "mcu", out["manifest"]["baseline"]), "rb").read() == \
    open(paths["narrow"], "rb").read()
out["netadapt_bytes_equal"] = open(os.path.join(tmp, "mcu", "netadapt_int8.tflite"), "rb").read() == \
    open(paths["final"], "rb").read()
m.write_artifacts(os.path.join(tmp, "mcu_alone"), final, None)
out["manifest_alone"] = json.load(open(os.path.join(tmp, "mcu_alone", "manifest.json")))

report = {"mcu": {"final": {"tflite": paths["final"]},
                  "grid": [{"alpha": 0.25, "resolution": 32, "tflite": paths["narrow"]},
                           {"alpha": 0.5, "resolution": 32, "tflite": paths["wide"]},
                           {"alpha": 1.0, "resolution": 40, "tflite": None, "trained": False, "arena_bytes": 10 ** 6,
                            "flash_bytes": 10 ** 6, "why_untrained": "its untrained int8 model exceeds peak_sram"}],
                  "best_fitting": {"alpha": 0.25, "tflite": paths["narrow"]}, "gain_points": 0.0}}
out["run"] = m.measure_run(report, arena[0], 10 ** 9, x, y, cache)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mcu_fit")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "benchmarks"),
                                                       os.path.join(REPO, "tests")]))
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp)], capture_output=True, text=True, env=env,
                       timeout=900, cwd=str(tmp))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1]), tmp


def test_own_measurements_are_the_projects_functions_and_cached(bench):
    out, tmp = bench
    for name, row in out["rows"].items():
        assert row == dict(row, **out["reference"][name]), name
        assert row["n"] == 200 and len(row["sha256"]) == 64
    assert out["rows"]["final"]["resolution"] == 24 and out["rows"]["wide"]["resolution"] == 32
    assert out["rows"]["narrow"]["arena_bytes"] < out["rows"]["wide"]["arena_bytes"]
    assert out["cached_again"] and len(out["cache_files"]) == 3


def test_best_fitting_grid_point_by_measured_arena_and_flash(bench):
    out, _ = bench
    rows = out["rows"]
    most_accurate = max([rows["narrow"], rows["wide"]], key=lambda r: (r["accuracy"], -r["arena_bytes"]))
    assert out["best_both_fit"] == most_accurate["path"]
    assert out["best_one_fits"] == rows["narrow"]["path"]
    assert out["best_flash_bound"] == rows["narrow"]["path"]
    assert out["best_none_fit"] is None


def test_fit_pairs_parse_to_bytes_and_refuse_the_rest(bench):
    out, _ = bench
    assert out["parse"][0] == [65536, 262144] and out["parse"][1] == [32768, 131072]
    assert len(out["parse"][2]) == 3
    assert "not a fraction" in out["parse"][2][0] and "ARENA/FLASH" in out["parse"][2][1]
    assert "not a unit of peak_sram" in out["parse"][2][2]


def test_manifest_is_the_issues_and_the_files_are_copied(bench):
    out, _ = bench
    rows = out["rows"]
    assert out["files"] == ["baseline_a0.25_r32_int8.tflite", "manifest.json", "netadapt_int8.tflite"]
    net, base = "netadapt_int8.tflite", "baseline_a0.25_r32_int8.tflite"
    assert out["manifest"] == {
        "netadapt": net, "baseline": base,
        "resolution": {net: 24, base: 32},
        "accuracy": {net: rows["final"]["accuracy"], base: rows["narrow"]["accuracy"]},
        "tflm_accuracy": {net: 0.125, base: 0.25},
        "arena_bytes": {net: rows["final"]["arena_bytes"], base: rows["narrow"]["arena_bytes"]}}
    assert out["netadapt_bytes_equal"] and out["baseline_bytes_equal"]
    assert out["manifest_alone"]["baseline"] is None and list(out["manifest_alone"]["resolution"]) == [net]


def test_measure_run_on_a_report(bench):
    out, _ = bench
    run, rows = out["run"], out["rows"]
    assert run["final"]["tflm_n"] == 200 and 0.0 <= run["final"]["tflm_accuracy"] <= 1.0
    assert run["best_fitting"]["path"] == rows["narrow"]["path"] and run["best_fitting"]["tflm_n"] == 200
    assert [g["fits"] for g in run["grid"]] == [True, False, False]
    untrained = run["grid"][2]       # measured untrained by the run, not trained: kept as reported, no accuracy
    assert (untrained["trained"], untrained["accuracy"], untrained["arena_bytes"]) == (False, None, 10 ** 6)
    assert run["best_fitting_agrees_with_report"]


def _acceptance():
    """The benchmark's acceptance function, loaded without its flags."""
    import ast

    path = os.path.join(REPO, "benchmarks", "mcu_fit.py")
    tree = ast.parse(open(path).read())
    wanted = {"_points", "_criterion", "acceptance"}
    code = ast.Module([n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted], [])
    scope = {}
    exec(compile(code, path, "exec"), scope)
    return scope["acceptance"]


def test_acceptance_verdicts_follow_the_measurements():
    acceptance = _acceptance()
    final = {"arena_bytes": 65536, "flash_bytes": 262144, "accuracy": 0.9012, "tflm_accuracy": 0.9002,
             "n": 10000, "tflm_n": 10000}
    base = {"accuracy": 0.8862, "tflm_accuracy": 0.8860}
    ok = acceptance(final, base, 65536, 262144)
    assert ok["all_pass"], ok
    assert ok["tflm_top1_points"]["value"] == 90.02 and ok["tflm_litert_gap_points"]["value"] == 0.1
    assert ok["gain_points_over_best_fitting_grid"]["value"] == 1.5
    assert ok["gain_points_over_best_fitting_grid"]["tflm_value"] == 1.42
    breaks = {"arena_bytes": dict(final, arena_bytes=65537), "flash_bytes": dict(final, flash_bytes=262145),
              "tflm_top1_points": dict(final, tflm_accuracy=0.8999, accuracy=0.8999),
              "tflm_litert_gap_points": dict(final, tflm_accuracy=0.9001),
              "test_images": dict(final, tflm_n=1000)}
    for criterion, bad in breaks.items():
        verdict = acceptance(bad, base, 65536, 262144)
        assert not verdict[criterion]["pass"] and not verdict["all_pass"], criterion
        assert [k for k, c in verdict.items() if k != "all_pass" and not c["pass"]] in (
            [criterion], [criterion, "gain_points_over_best_fitting_grid"]), criterion
    low_gain = acceptance(final, dict(base, accuracy=0.8863), 65536, 262144)
    assert not low_gain["gain_points_over_best_fitting_grid"]["pass"]
    nothing_fits = acceptance(final, None, 65536, 262144)
    assert nothing_fits["gain_points_over_best_fitting_grid"] == {"value": None, "limit": 1.5, "pass": False}
    assert not acceptance(dict(final, tflm_accuracy=None), base, 65536, 262144)["tflm_top1_points"]["pass"]
