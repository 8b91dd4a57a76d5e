"""python -m pipelines.inspect: table, --json, --save_spec / --spec round trip, one-line errors."""
import json

import pytest

from conftest import run_cli_cases

def _one_json(stdout):
    lines = [l for l in stdout.splitlines() if l.strip()]
    assert len(lines) == 1, stdout[-2000:]
    return json.loads(lines[0])


def test_table_for_the_issue_example(cli):
    r = cli("pipelines.inspect", "--model", "mbv2", "--alpha", "0.35", "--resolution", "96",
                "--classes", "10")
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert out.splitlines()[0].split()[:6] == ["layer", "type", "output", "params", "MACs", "act"]
    assert "Conv2D" in out and "DepthwiseConv2D" in out and "(fused)" in out
    for label in ("params:", "MACs:", "flash (int8 est):", "peak activations:"):
        assert label in out
    assert "Traceback" not in r.stderr


def test_json_save_spec_and_edited_spec(tmp_path, cli):
    spec_file = tmp_path / "sq.json"
    r = cli("pipelines.inspect", "--model", "squeezenet1_1", "--resolution", "32", "--classes",
                "10", "--bypass", "complex", "--json", "--save_spec", spec_file)
    assert r.returncode == 0, r.stderr[-2000:]
    d = _one_json(r.stdout)
    for key in ("model", "params", "macs", "peak_activation_bytes", "flash_bytes", "layers"):
        assert key in d
    assert d["macs"] == sum(l["macs"] for l in d["layers"]) > 0
    assert d["params"] == sum(l["params"] for l in d["layers"]) > 0
    for layer in d["layers"]:
        assert {"name", "type", "output_shape", "params", "macs"} <= set(layer)
    assert any(l["name"] == "fire2_bypass_conv" for l in d["layers"])

    spec = json.loads(spec_file.read_text())
    assert spec["family"] == "squeezenet1_1"
    fire3 = next(b for b in spec["blocks"] if b["name"] == "fire3")
    fire3["squeeze"] = 8
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(spec))
    r = cli("pipelines.inspect", "--spec", edited, "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    e = _one_json(r.stdout)
    squeeze = next(l for l in e["layers"] if l["name"] == "fire3_squeeze")
    assert squeeze["output_shape"][-1] == 8
    assert e["macs"] < d["macs"] and e["params"] < d["params"]


BAD_INPUT = [
    (["--model", "resnet50"], "known models:"),
    (["--model", "mbv2", "--alpha", "0"], "alpha must be a positive number"),
    (["--model", "mbv2", "--resolution", "8"], "too small"),
    (["--model", "shufflenet_v1", "--groups", "5"], "groups must be one of 1, 2, 3, 4, 8"),
    (["--model", "mbv2", "--groups", "3"], "--groups applies only to shufflenet_v1"),
    (["--model", "squeezenet1_0", "--bypass", "sideways"], "bypass must be one of"),
    (["--spec", "MALFORMED"], "malformed spec JSON"),
    (["--spec", "NOSUCHFILE"], "cannot read spec file"),
    (["--spec", "NOTASPEC"], "model spec is missing field(s): name, input_shape, blocks"),
    (["--model", "mbv2", "--minimalistic"], "--minimalistic applies only to mbv3"),
    (["--spec", "NOSUCHFILE", "--model", "mbv2"], "--spec brings its own architecture; drop --model"),
]


def test_bad_input_is_one_line_exit_2(tmp_path):
    """Every case in one child interpreter (conftest.run_cli_cases): one error line, exit 2, nothing on stdout."""
    malformed, notaspec = tmp_path / "bad.json", tmp_path / "notaspec.json"
    malformed.write_text('{"family": "mbv2", "blocks": [')
    notaspec.write_text('{"family": "mbv2"}')
    paths = {"MALFORMED": str(malformed), "NOTASPEC": str(notaspec), "NOSUCHFILE": str(tmp_path / "missing.json")}
    results = run_cli_cases("pipelines.inspect", [[paths.get(a, a) for a in args] for args, _ in BAD_INPUT])
    for (args, needle), r in zip(BAD_INPUT, results):
        assert r.returncode == 2, (args, r.returncode, r.stderr[-2000:])
        assert "Traceback" not in r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0], (args, r.stderr[-2000:])
        assert r.stdout == "", args
        if "known models:" in needle:
            for name in ("mbv1", "mbv2", "shufflenet_v1", "shufflenet_v2", "squeezenet1_0"):
                assert name in errors[0]


@pytest.mark.parametrize("change, needle", [
    (lambda d: d.update(input_shape=[100000, 100000, 3]), "is above the largest resolution, 1024x1024"),
    (lambda d: d["blocks"][1].update(filters=10 ** 7), "filters must be a positive integer up to 16384"),
])
def test_spec_too_large_to_build_is_refused_before_building(tmp_path, cli, change, needle):
    from tfmobile import models

    spec = models.get_spec("mbv2", alpha=0.35, input_shape=(32, 32, 3), classes=10).to_dict()
    change(spec)
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(spec))
    p = cli("pipelines.inspect", "--spec", path, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], p.stderr[-2000:]
