"""NetAdapt under several constraints (issue 20): the driving resource, proposals that break a limit already
met, the run's end when every limit holds, resume, resolution proposals, and the bad input of --constraint /
--resolution_step. Counted or spec-predicted kinds (macs, params, flash, peak_sram) on the tiny model, so
nothing is timed."""
import json
import os

import pytest

import tfmobile  # noqa: F401
from netadapt_tiny import tiny_splits, tiny_spec
from tfmobile.errors import UserError
from tfmobile.netadapt import iteration, loop
from tfmobile.netadapt.config import LoopConfig, parse_constraints
from tfmobile.netadapt.history import RunDir
from tfmobile.netadapt.state import Point, Start

BASE = dict(subset=True, limit=300, batch_size=32, short_steps=2, short_lr=1e-2, long_epochs=0, qat_epochs=0,
            final="fine_tune",
            tflm=False)


def _session(tmp_path, **settings):
    from tfmobile import data
    from tfmobile.netadapt.state import RunData, Session

    cfg = LoopConfig.of(**{**BASE, **settings})
    splits = tiny_splits()
    return Session(cfg, RunDir(tmp_path / "run"), log=lambda m: None,
                   data=RunData(splits, cfg.data_config((32, 32, 3)),
                                data.sample_images(splits.x_train, (32, 32, 3), n=20)))


def _start(spec, resources, limits, primary):
    point = Point(0, spec, "unused", resources[primary], resources[primary], 0.5, dict(resources))
    return Start(point, {}, 1, limits[primary], dict(limits))


def _checkpoint(path, widths=(16, 24, 24)):
    from tfmobile import models, train

    train.save_checkpoint(models.build(tiny_spec(widths)), str(path))
    return str(path)


# ------------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------------
def test_constraints_parse_with_the_units_of_their_kind_and_are_in_the_fingerprint():
    cfg = LoopConfig.of(resource="peak_sram", target_value=65536.0,
                        constraint=("flash=256KB", "latency=0.05ms", "macs=0.5", "peak_sram=64KB"))
    # the primary repeated with the same limit is no contradiction (dropped); the rest in their order
    assert parse_constraints(cfg) == {"flash": (262144.0, False), "latency": (0.05, False), "macs": (0.5, True)}
    fp = cfg.fingerprint()
    assert fp["constraint"] == ["flash=256KB", "latency=0.05ms", "macs=0.5", "peak_sram=64KB"]
    assert fp["resolution_step"] == 0 and fp["baseline_resolutions"] == []
    assert LoopConfig.of(resolution_step=8).fingerprint()["resolution_step"] == 8
    for bad, says in ((("foo=1",), "unknown resource 'foo'"), (("latency=64KB",), "kb is not a unit of latency"),
                      (("flash=1KB", "flash=2KB"), "constrained twice"), (("flash256KB",), "expected kind=value"),
                      (("peak_sram=32KB",), "contradicts --resource peak_sram"), (("flash=1.5",), "(0, 1)")):
        with pytest.raises(UserError, match=says.replace("(", r"\(").replace(")", r"\)")):
            cfg.replace(constraint=bad).check()
    with pytest.raises(UserError, match="--resolution_step"):
        cfg.replace(resolution_step=-8).check()
    # latency as a constraint is measured interleaved with the current model (the default), or alone
    cfg.replace(constraint=("latency=0.5",), measure_pick="single").check()
    with pytest.raises(UserError, match="--baseline_resolutions"):
        cfg.replace(baseline_resolutions=(32, 0)).check()
    # the teacher takes the start's input; a found model at a lower one could not be distilled
    with pytest.raises(UserError, match="--distill and --resolution_step"):
        cfg.replace(distill=0.5, resolution_step=8).check()
    with pytest.raises(UserError, match="--short_distill and --resolution_step"):
        cfg.replace(short_distill=0.5, resolution_step=8).check()
    with pytest.raises(UserError, match=r"--short_distill must be in \[0, 1\]"):
        cfg.replace(short_distill=1.5).check()


def test_a_baseline_grid_resolution_below_the_networks_stride_is_refused_before_anything_is_trained(tmp_path):
    from tfmobile.netadapt import start as start_mod
    from tfmobile.netadapt.state import Session

    cfg = LoopConfig.of(**BASE, model="mbv1", alpha=0.25, resolution=32, resource="macs", target=0.5,
                        baselines=(0.25,), baseline_resolutions=(16, 32))
    session = Session(cfg, RunDir(tmp_path / "run"), log=lambda m: None)
    with pytest.raises(UserError, match="--baseline_resolutions 16: below what the mbv1 baselines' strides allow"):
        start_mod.load_data(session)
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_with_other_constraints_is_refused_and_an_old_run_without_them_resumes(tmp_path):
    cfg = LoopConfig.of(resource="macs", target=0.5, constraint=("params=0.5",))
    d = RunDir(tmp_path / "run")
    d.open(cfg.fingerprint(), resume=False)
    d.write({"measured": 1.0, "predicted": 1.0, "val_accuracy": 0.5}, "start", "start.json")
    with pytest.raises(UserError, match="constraint"):
        RunDir(d.path).open(cfg.replace(constraint=("params=0.4",)).fingerprint(), resume=True,
                            defaults=LoopConfig.absent_fingerprint())
    old = tmp_path / "old"   # made before the settings existed: their keys are missing from its run.json
    fp = LoopConfig.of(resource="macs", target=0.5).fingerprint()
    RunDir(old).open({k: v for k, v in fp.items() if k not in ("constraint", "resolution_step",
                                                                "baseline_resolutions")}, resume=False)
    RunDir(old).write({"measured": 1.0, "predicted": 1.0, "val_accuracy": 0.5}, "start", "start.json")
    assert RunDir(old).open(fp, resume=True, defaults=LoopConfig.absent_fingerprint())["resumed"]


def test_a_run_made_before_a_changed_default_resumes_only_with_the_behaviour_it_had(tmp_path):
    """A run.json without measure_pick / pick_sessions / min_proposals was made with each pick measured alone in one
    session and a step halved only while no group could meet it: the later defaults would continue it with another
    search."""
    old = tmp_path / "old"
    fp = LoopConfig.of(resource="macs", target=0.5).fingerprint()
    assert fp["min_proposals"] == 3 and fp["pick_sessions"] == 3 and fp["measure_pick"] == "interleaved"
    RunDir(old).open({k: v for k, v in fp.items() if k not in ("min_proposals", "pick_sessions", "measure_pick")},
                     resume=False)
    RunDir(old).write({"measured": 1.0, "predicted": 1.0, "val_accuracy": 0.5}, "start", "start.json")
    with pytest.raises(UserError, match="min_proposals=1 \\(now 3\\)"):
        RunDir(old).open(fp, resume=True, defaults=LoopConfig.absent_fingerprint())
    as_made = LoopConfig.of(resource="macs", target=0.5, min_proposals=1, pick_sessions=1,
                            measure_pick="single").fingerprint()
    assert RunDir(old).open(as_made, resume=True, defaults=LoopConfig.absent_fingerprint())["resumed"]


# ------------------------------------------------------------------------------------------------
# the driving resource and the limits already met
# ------------------------------------------------------------------------------------------------
def test_the_resource_furthest_from_its_limit_drives_and_ties_go_to_the_primary(tmp_path):
    from tfmobile.netadapt.resource import resource

    session = _session(tmp_path, resource="macs", target=0.9, constraint=("params=0.5",))
    spec = tiny_spec((16, 24, 24))
    now = {"macs": resource(spec, "macs"), "params": resource(spec, "params")}
    far_params = _start(spec, now, {"macs": 0.9 * now["macs"], "params": 0.5 * now["params"]}, "macs")
    assert iteration.driving_kind(session, far_params, far_params.point, 1) == "params"
    far_macs = _start(spec, now, {"macs": 0.5 * now["macs"], "params": 0.9 * now["params"]}, "macs")
    assert iteration.driving_kind(session, far_macs, far_macs.point, 1) == "macs"
    tie = _start(spec, now, {"macs": 0.8 * now["macs"], "params": 0.8 * now["params"]}, "macs")
    assert iteration.driving_kind(session, tie, tie.point, 1) == "macs"
    # the primary met: the constraint drives even when it is close
    met = _start(spec, now, {"macs": now["macs"], "params": 0.97 * now["params"]}, "macs")
    assert iteration.driving_kind(session, met, met.point, 1) == "params"

    plan = iteration.plan_iteration(session, far_params, far_params.point, 1)
    budget = loop.budget_for(session.cfg.search, 1, now["params"], now["params"], 0.5 * now["params"])
    assert plan["driving"] == "params" and plan["budget"] == pytest.approx(budget)
    assert plan["driving_predicted"] == now["params"] and plan["current_predicted"] == now["macs"]
    assert plan["proposals"]
    for p in plan["proposals"]:   # predicted in the driving resource, each within its budget
        from tfmobile.models import ModelSpec
        assert p["predicted"] == resource(ModelSpec.from_json(p["spec"]), "params") <= plan["budget_predicted"]
    plan_macs = iteration.plan_iteration(session, far_macs, far_macs.point, 1)
    assert plan_macs["driving"] == "macs" and plan_macs["budget"] == pytest.approx(0.94 * now["macs"])
    # one constraint (none given): the plan is today's, no new keys
    single = _session(tmp_path, resource="macs", target=0.9)
    plain = _start(spec, {"macs": now["macs"]}, {"macs": 0.9 * now["macs"]}, "macs")
    assert not {"driving", "driving_predicted"} & set(iteration.plan_iteration(single, plain, plain.point, 1))


def test_a_proposal_that_breaks_a_limit_already_met_is_discarded_and_says_why(tmp_path, monkeypatch):
    from tfmobile.netadapt import resource as resource_mod

    spec = tiny_spec((16, 24, 24))
    real = resource_mod.resource

    def flash_grows_when_block_1_shrinks(candidate, kind, *args, **kwargs):   # a kind that is not monotone
        value = real(candidate, kind, *args, **kwargs)
        shrunk = candidate.blocks[candidate.block_index("block_1")].filters < 24
        return value + 4096 if kind == "flash" and shrunk else value

    monkeypatch.setattr(resource_mod, "resource", flash_grows_when_block_1_shrinks)
    flash, macs = real(spec, "flash"), real(spec, "macs")
    session = _session(tmp_path, resource="macs", target=0.5, constraint=(f"flash={flash}B",))
    start = _start(spec, {"macs": macs, "flash": flash}, {"macs": 0.5 * macs, "flash": flash}, "macs")
    plan = iteration.plan_iteration(session, start, start.point, 1)
    assert plan["driving"] == "macs"
    assert {p["group"] for p in plan["proposals"]} == {"stem", "block_2"}
    (broken,) = [n for n in plan["not_proposing"] if n["group"] == "block_1"]
    assert broken["why"] == f"breaks flash <= {flash}" and broken["proposed"] < broken["width"] == 24
    # the same plan without the constraint keeps block_1's proposal
    alone = _session(tmp_path, resource="macs", target=0.5)
    plain = _start(spec, {"macs": macs}, {"macs": 0.5 * macs}, "macs")
    assert "block_1" in {p["group"] for p in iteration.plan_iteration(alone, plain, plain.point, 1)["proposals"]}


def test_history_records_with_bad_constraint_keys_are_refused(tmp_path):
    d = RunDir(tmp_path / "run")
    d.open({"seed": 0}, resume=False)
    d.append_history({"iteration": 1, "measured": 1.0, "predicted": 1.0, "val_accuracy": 0.5,
                      "resources": {"macs": 1.0, "flash": 2048}, "driving": "flash"})
    assert d.history()[0]["resources"] == {"macs": 1.0, "flash": 2048}
    with open(d.sub("history.jsonl"), "a") as f:
        f.write(json.dumps({"iteration": 2, "measured": 1.0, "predicted": 1.0, "val_accuracy": 0.5,
                            "resources": {"flash": "big"}}) + "\n")
    with pytest.raises(UserError, match="'resources'"):
        d.history()


# ------------------------------------------------------------------------------------------------
# end to end: the run ends when every limit holds, not before; a kill resumes with every resource
# ------------------------------------------------------------------------------------------------
def test_the_run_ends_when_every_limit_holds_and_a_resume_restores_the_resources(tmp_path, monkeypatch):
    cfg = LoopConfig.of(**BASE, checkpoint=_checkpoint(tmp_path / "ckpt"), resource="macs", target=0.9,
                        constraint=("params=0.6",), delta0=0.2)
    out = str(tmp_path / "run")
    original = RunDir.append_history

    def killed_at_2(self, row):   # a kill -9 once iteration 2 is measured, before its line
        if row["iteration"] == 2:
            raise KeyboardInterrupt
        return original(self, row)

    with monkeypatch.context() as m:
        m.setattr(RunDir, "append_history", killed_at_2)
        with pytest.raises(KeyboardInterrupt):
            loop.run(cfg, out, log=lambda message: None)
    (first,) = RunDir(out).history()
    entered = []
    real_search = loop.search

    def spy(session, start, point):
        entered.append(point)
        return real_search(session, start, point)

    monkeypatch.setattr(loop, "search", spy)
    report = loop.run(cfg, out, resume=True, log=lambda message: None)
    assert report["status"] == "met"
    assert entered[0].iteration == 1 and entered[0].resources == first["resources"]   # restored, not guessed

    start = json.loads(open(os.path.join(out, "start", "start.json")).read())
    limits = {"macs": 0.9 * start["resources"]["macs"], "params": 0.6 * start["resources"]["params"]}
    rows = RunDir(out).history()
    assert len(rows) >= 2 and rows[0] == first
    holds = [all(r["resources"][k] <= v for k, v in limits.items()) for r in rows]
    assert holds[-1] and not any(holds[:-1])   # ends when every limit holds, not before
    for r in rows:
        assert set(r["resources"]) == {"macs", "params"} and r["measured"] == r["resources"]["macs"]
        assert r["driving"] in ("macs", "params")
        plan = json.loads(open(os.path.join(out, "iterations", f"{r['iteration']:03d}", "plan.json")).read())
        assert plan["driving"] == r["driving"]
    # the primary was met early (macs 0.9 takes fewer steps than params 0.6): the constraint kept the run going
    assert rows[0]["driving"] == "params" and any(r["resources"]["macs"] <= limits["macs"] for r in rows[:-1])


# ------------------------------------------------------------------------------------------------
# the input resolution as a proposal
# ------------------------------------------------------------------------------------------------
def test_a_resolution_proposal_competes_when_it_meets_the_budget(tmp_path):
    from tfmobile.models import ModelSpec
    from tfmobile.models.surgery import RESOLUTION_GROUP, with_resolution
    from tfmobile.netadapt.resource import resource

    spec = tiny_spec((16, 24, 24))
    session = _session(tmp_path, resource="macs", target=0.5, resolution_step=8)
    macs = resource(spec, "macs")
    start = _start(spec, {"macs": macs}, {"macs": 0.5 * macs}, "macs")
    plan = iteration.plan_iteration(session, start, start.point, 1)
    (res,) = [p for p in plan["proposals"] if p["group"] == RESOLUTION_GROUP]
    assert plan["proposals"][-1] is res and len(plan["proposals"]) == 4   # besides one per channel group
    assert (res["from_width"], res["width"]) == (32, 24)
    assert tuple(ModelSpec.from_json(res["spec"]).input_shape) == (24, 24, 3)
    assert res["predicted"] == resource(with_resolution(spec, 24), "macs") <= plan["budget_predicted"]
    assert "driving" not in plan   # one constraint: a resolution proposal adds no key to the plan
    # a resource the resolution does not change (params): the step cannot meet the budget
    session = _session(tmp_path, resource="params", target=0.5, resolution_step=8)
    params = resource(spec, "params")
    start = _start(spec, {"params": params}, {"params": 0.5 * params}, "params")
    plan = iteration.plan_iteration(session, start, start.point, 1)
    assert RESOLUTION_GROUP not in {p["group"] for p in plan["proposals"]}
    assert {"group": RESOLUTION_GROUP, "width": 32, "why": iteration.RESOLUTION_MISSES} in plan["not_proposing"]
    # never below the network's total stride (4 for the tiny model: 8 - 8 = 0 is refused)
    session = _session(tmp_path, resource="macs", target=0.5, resolution_step=8)
    low = with_resolution(spec, 8)
    start = _start(low, {"macs": resource(low, "macs")}, {"macs": 0.5 * resource(low, "macs")}, "macs")
    plan = iteration.plan_iteration(session, start, start.point, 1)
    assert {"group": RESOLUTION_GROUP, "width": 8, "why": iteration.AT_LOWEST_RESOLUTION} in plan["not_proposing"]


def test_a_chosen_resolution_proposal_is_kept_at_its_lower_input_and_measured_there(tmp_path):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    from tfmobile.models.surgery import RESOLUTION_GROUP
    from tfmobile.netadapt.measure import LocalMeasurer
    from tfmobile.netadapt.resource import resource
    from tfmobile.netadapt.workers import LocalPool

    spec = tiny_spec((16, 24, 24))
    checkpoint = _checkpoint(tmp_path / "ckpt")
    session = _session(tmp_path, checkpoint=checkpoint, resource="macs", target=0.5, constraint=("flash=1MB",),
                       resolution_step=8)
    session.run_dir.open(session.cfg.fingerprint(), resume=False)
    session.measurer = LocalMeasurer(session.cfg.measurement.bench_settings())
    macs, flash = resource(spec, "macs"), resource(spec, "flash")
    point = Point(0, spec, checkpoint, macs, macs, 0.2, {"macs": macs, "flash": flash})
    start = Start(point, {}, 1, 0.5 * macs, {"macs": 0.5 * macs, "flash": 1 << 20})
    plan = iteration.plan_iteration(session, start, point, 1)
    plan["proposals"] = [p for p in plan["proposals"] if p["group"] in ("block_2", RESOLUTION_GROUP)]
    session.pool = LocalPool(1, log=lambda m: None, temp_dir=session.run_dir.scratch_dir())
    try:
        rows = iteration.run_proposals(session, point, 1, plan, lambda *a: None)
    finally:
        session.pool.close()
    assert [r["group"] for r in rows] == ["block_2", RESOLUTION_GROUP]
    assert all(0 <= r["val_accuracy"] <= 1 for r in rows)
    for r in rows:   # the same accuracy: the ratio favours the proposal that saves the most (the resolution)
        r["val_accuracy"] = 0.1
    chosen = iteration.pick("ratio", rows, point, plan)
    assert chosen["group"] == RESOLUTION_GROUP
    new = iteration.record_iteration(session, 1, point, plan, rows, chosen, (0.0, 0.0))
    assert tuple(new.spec.input_shape) == (24, 24, 3) and new.spec.name.endswith("_24")
    (row,) = session.run_dir.history()
    assert (row["chosen"], row["width"]) == (RESOLUTION_GROUP, 24) and row["driving"] == "macs"
    tflite = tmp_path / "run" / "iterations" / "001" / "model_int8.tflite"
    interpreter = Interpreter(model_path=str(tflite))
    assert list(interpreter.get_input_details()[0]["shape"]) == [1, 24, 24, 3]      # converted at its input
    assert row["resources"] == {"macs": resource(new.spec, "macs"), "flash": tflite.stat().st_size}
    assert new.resources == row["resources"] and np.isclose(row["measured"], macs * 24 * 24 / (32 * 32), rtol=0.02)


@pytest.mark.slow
def test_peak_sram_target_flash_constraint_and_resolution_steps_end_to_end(tmp_path):
    """The issue's case on the tiny model through the CLI: arena (predicted by analysis, measured by TFLM) as
    the target, flash (the .tflite's size) as a constraint, resolution proposals competing with the channels."""
    from conftest import run_cli
    from tfmobile import convert
    from tfmobile.models.surgery import RESOLUTION_GROUP

    out = tmp_path / "run"
    r = run_cli("pipelines.netadapt", "--checkpoint", _checkpoint(tmp_path / "ckpt"), "--resource", "peak_sram",
                "--target", "0.5", "--constraint", "flash=0.9", "--resolution_step", "8", "--subset", "--limit",
                "300", "--batch_size", "32", "--short_steps", "2", "--short_lr", "1e-2", "--long_epochs", "0",
                "--qat_epochs", "0", "--notflm", "--final", "fine_tune", "--output_dir", out, "--json", timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["status"] == "met"
    start = json.loads((out / "start" / "start.json").read_text())
    limits = {"peak_sram": 0.5 * start["resources"]["peak_sram"], "flash": 0.9 * start["resources"]["flash"]}
    rows = RunDir(out).history()
    holds = [all(row["resources"][k] <= v for k, v in limits.items()) for row in rows]
    assert holds[-1] and not any(holds[:-1])
    for row in rows:
        tflite = (out / "iterations" / f"{row['iteration']:03d}" / "model_int8.tflite").read_bytes()
        assert row["resources"] == {"peak_sram": convert.measure_arena(tflite)["arena_bytes"], "flash": len(tflite)}
        assert row["measured"] == row["resources"]["peak_sram"]
    plan = json.loads((out / "iterations" / "001" / "plan.json").read_text())
    assert RESOLUTION_GROUP in {p["group"] for p in plan["proposals"]}
