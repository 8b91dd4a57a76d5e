"""NetAdapt proposals and pick measurement: widths on --channel_multiple, why a group makes no proposal
(plan.json and history.jsonl), the pick measured interleaved with the current model, and the new
settings' bad values and fingerprint."""
import json
import os
import shutil

import pytest

import tfmobile  # noqa: F401
from netadapt_tiny import tiny_splits, tiny_spec
from conftest import run_cli
from tfmobile.errors import UserError
from tfmobile.netadapt import iteration
from tfmobile.netadapt.config import LoopConfig
from tfmobile.netadapt.history import RunDir
from tfmobile.netadapt.state import Point, RunData, Session, Start




@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, splits):
    from tfmobile import models, train

    out = tmp_path_factory.mktemp("tiny")
    train.save_checkpoint(models.build(tiny_spec()), str(out / "checkpoint"))
    return str(out / "checkpoint")


def _session(tmp_path, checkpoint, splits, measurer=None, **kw):
    from tfmobile import data

    base = dict(checkpoint=checkpoint, subset=True, limit=300, batch_size=32, short_steps=4, resource="macs",
                target=0.6, long_epochs=0, qat_epochs=0, tflm=False, final="fine_tune")
    base.update(kw)
    cfg = LoopConfig.of(**base)
    cfg.check()
    return Session(cfg, RunDir(tmp_path / "run"), measurer=measurer, log=lambda m: None,
                   data=RunData(splits, cfg.data_config((32, 32, 3)),
                                data.sample_images(splits.x_train, (32, 32, 3), n=20)))


def _start(spec, checkpoint, value, target_fraction=0.6):
    return Start(Point(0, spec, checkpoint, value, value, 0.5), {}, 1, target_fraction * value)


# ------------------------------------------------------------------------------------------------
# widths on --channel_multiple, and why the other groups made none
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("multiple", [8, 4])
def test_proposed_widths_are_multiples_of_channel_multiple(tmp_path, tiny_checkpoint, splits, multiple):
    from tfmobile.netadapt.resource import resource

    session = _session(tmp_path, tiny_checkpoint, splits, channel_multiple=multiple)
    spec = tiny_spec()
    macs = resource(spec, "macs")
    plan = iteration.plan_iteration(session, _start(spec, tiny_checkpoint, macs), _start(spec, tiny_checkpoint,
                                                                                         macs).point, 1)
    widths = {p["group"]: p["width"] for p in plan["proposals"]}
    assert widths and all(w % multiple == 0 for w in widths.values())
    if multiple == 4:   # one step of 4 is enough for a 6 % step here: finer than the default's 8
        assert any(w % 8 for w in widths.values()), widths
        stem = [n for n in plan["not_proposing"] if n["group"] == "stem"]
        assert stem == [] and "stem" in widths          # 8 channels: 4 is narrower
    else:
        assert {"group": "stem", "width": 8, "why": iteration.AT_MINIMUM} in plan["not_proposing"]


def test_shrink_takes_a_groups_own_channel_step():
    from tfmobile.models.surgery import groups, shrink

    spec = tiny_spec()
    g = [g for g in groups(spec, channel_step=4) if g.width == 24][0]
    assert g.widths()[0] == 20 and shrink(spec, g, 20).to_dict() != spec.to_dict()
    with pytest.raises(UserError, match="multiple of 8"):
        shrink(spec, g.name, 20)                    # a name: the default step


def test_plan_and_history_say_why_groups_made_no_proposal(tmp_path, tiny_checkpoint, splits):
    from tfmobile.models.surgery import groups
    from tfmobile.netadapt.measure import LocalMeasurer
    from tfmobile.netadapt.resource import resource

    # a 45 % step: only some groups can reach it alone, the stem (8 channels) is at its minimum
    session = _session(tmp_path, tiny_checkpoint, splits, delta0=0.45, target=0.1, min_proposals=1,
                       measurer=LocalMeasurer({"backend": "litert", "threads": 1, "runs": 1, "warmup": 0}))
    spec = tiny_spec()
    macs = resource(spec, "macs")
    start = _start(spec, tiny_checkpoint, macs, 0.1)
    plan = iteration.plan_iteration(session, start, start.point, 1)
    why = {n["group"]: n["why"] for n in plan["not_proposing"]}
    assert plan["groups"] == len(groups(spec, at_minimum=True)) == len(plan["proposals"]) + len(why)
    assert why["stem"] == iteration.AT_MINIMUM
    assert iteration.NO_WIDTH_MEETS in why.values() and plan["proposals"], plan
    for group, reason in why.items():
        if reason == iteration.NO_WIDTH_MEETS:   # even its narrowest width misses the budget
            from tfmobile.models.surgery import shrink

            g = [g for g in groups(spec) if g.name == group][0]
            assert resource(shrink(spec, g, g.widths()[-1]), "macs") > plan["budget"]
    # the iteration's history line carries them
    proposal = plan["proposals"][0]
    copy = tmp_path / "proposal" / "checkpoint"
    shutil.copytree(tiny_checkpoint, copy)
    row = dict(proposal, val_accuracy=0.5, checkpoint=str(copy))
    iteration.record_iteration(session, 1, start.point, plan, [row], row, (0.0, 0.0))
    line = json.loads((tmp_path / "run" / "history.jsonl").read_text().splitlines()[-1])
    assert line["groups"] == plan["groups"] and line["not_proposing"] == plan["not_proposing"]


def test_too_few_proposals_halve_the_step_until_enough_groups_can_meet_it(tmp_path, tiny_checkpoint, splits):
    from tfmobile.models.surgery import groups
    from tfmobile.netadapt.resource import resource

    spec = tiny_spec()
    macs = resource(spec, "macs")
    start = _start(spec, tiny_checkpoint, macs, 0.1)

    def plan(name, **kw):
        session = _session(tmp_path / name, tiny_checkpoint, splits, delta0=0.3, target=0.1, **kw)
        return iteration.plan_iteration(session, start, start.point, 1)

    alone = plan("alone", min_proposals=1)          # the full 30 % step, which one group meets
    n = len(alone["proposals"])
    assert alone["halvings"] == 0 and 0 < n < len(groups(spec)), alone
    more = plan("more", min_proposals=n + 1)
    assert more["halvings"] >= 1 and len(more["proposals"]) >= n + 1, more
    assert more["budget"] == pytest.approx(macs - 0.3 * macs / 2 ** more["halvings"])
    assert more["delta"] == pytest.approx(0.3 * macs / 2 ** more["halvings"])
    assert all(p["predicted"] <= more["budget"] for p in more["proposals"])
    assert more["groups"] == len(more["proposals"]) + len(more["not_proposing"])
    # more than can ever propose: the step that let the most groups propose, the largest of equal ones
    most = plan("most", min_proposals=1000)
    assert len(most["proposals"]) == len(more["proposals"]) == more["groups"] - 1, most   # the stem: at its minimum
    assert most["halvings"] == more["halvings"] < iteration.MAX_HALVINGS


# ------------------------------------------------------------------------------------------------
# the pick measured interleaved with the current model
# ------------------------------------------------------------------------------------------------
class Device:
    """The measuring device's interleaved answers (the loop's int8 models are real)."""

    def __init__(self, current, pick, sessions=None):
        self.sessions = list(sessions or []) or None   # (current, pick) per session; else always the same
        self.medians = {"current": current, "pick": pick}
        self.calls = []

    def measure_many(self, models, rounds):
        self.calls.append((dict(models), rounds))
        medians = dict(zip(("current", "pick"), self.sessions.pop(0))) if self.sessions else self.medians
        return {n: {"kind": "latency", "clock": "cpu", "value": v, "cpu_median_ms": v, "cv": 0.2,
                    "cpu_cv": 0.01 if n == "current" else 0.02} for n, v in medians.items()}

    def measure(self, tflite, kind, spec_json=None):
        raise AssertionError("an interleaved pick is not measured alone")


def test_interleaved_pick_is_the_current_value_times_the_sessions_ratio(tmp_path, tiny_checkpoint, splits):
    session = _session(tmp_path, tiny_checkpoint, splits, resource="latency", measure_pick="interleaved",
                       target=0.5)
    current_dir = tmp_path / "run" / "start"
    shutil.copytree(tiny_checkpoint, current_dir / "checkpoint")
    (current_dir / "model_int8.tflite").write_bytes(b"the current model's own .tflite")
    spec = tiny_spec()
    current = Point(0, spec, str(current_dir / "checkpoint"), 4.0, 1.0, 0.5)
    # this session's host is 1.5x slower than the one that measured 4.0 ms: the pick's 1.5 ms here is
    # 3.0 ms on the current model's scale, where a single measurement would have said 1.5
    session.measurer = Device(current=2.0, pick=1.5)
    pick = tmp_path / "pick" / "checkpoint"
    shutil.copytree(tiny_checkpoint, pick)
    row = {"group": "block_1", "width": 16, "predicted": 0.9, "val_accuracy": 0.5, "checkpoint": str(pick)}
    plan = {"budget": 3.5, "budget_predicted": 0.9, "delta": 0.5, "groups": 1, "not_proposing": []}
    iteration.record_iteration(session, 1, current, plan, [row], row, (0.0, 0.0))
    line = json.loads((tmp_path / "run" / "history.jsonl").read_text())
    assert line["measured"] == pytest.approx(3.0)
    inter = line["measurement"]["interleaved"]
    assert inter["ratio"] == pytest.approx(0.75) and (inter["current_median"], inter["pick_median"]) == (2.0, 1.5)
    assert (inter["current_cv"], inter["pick_cv"]) == (0.01, 0.02) and inter["rounds"] == 6
    calls = session.measurer.calls
    written = (tmp_path / "run" / "iterations" / "001" / "model_int8.tflite").read_bytes()
    assert calls == [({"current": b"the current model's own .tflite", "pick": written}, 6)] * 3   # 3 sessions
    # a pick measured slower than the current model in the same session is what it is: no re-measurement
    session.measurer = Device(current=2.0, pick=2.2)
    m = iteration.measure(session, str(pick), "iterations/002", not_above=4.0, against=current)
    assert m["value"] == pytest.approx(4.4) and "repeats" not in m


def test_one_disturbed_interleaved_session_cannot_fake_a_step(tmp_path, tiny_checkpoint, splits):
    """The benchmark's iteration 10 read its current model 34 % slow in one session (ratio 0.76 where
    repeated sessions read 0.95): the median of three sessions' ratios counts."""
    session = _session(tmp_path, tiny_checkpoint, splits, resource="latency", measure_pick="interleaved",
                       target=0.5)
    current_dir = tmp_path / "run" / "start"
    shutil.copytree(tiny_checkpoint, current_dir / "checkpoint")
    (current_dir / "model_int8.tflite").write_bytes(b"current")
    current = Point(0, tiny_spec(), str(current_dir / "checkpoint"), 4.0, 1.0, 0.5)
    session.measurer = Device(0, 0, sessions=[(2.6, 1.9), (2.0, 1.9), (2.1, 2.0)])
    pick = tmp_path / "pick" / "checkpoint"
    shutil.copytree(tiny_checkpoint, pick)
    m = iteration.measure(session, str(pick), "iterations/001", not_above=4.0, against=current)
    inter = m["interleaved"]
    assert inter["session_ratios"] == pytest.approx([1.9 / 2.6, 0.95, 2.0 / 2.1])
    assert inter["ratio"] == pytest.approx(0.95) and m["value"] == pytest.approx(3.8)
    assert (inter["current_median"], inter["pick_median"]) == (2.0, 1.9)   # the median session's own


# ------------------------------------------------------------------------------------------------
# bad values and the fingerprint
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"channel_multiple": 0}, "--channel_multiple must be >= 1"),
    ({"channel_multiple": 4.5}, "--channel_multiple must be a whole number"),
    ({"bn_batches": -1}, "--bn_batches must be >= 0"),
    ({"short_steps": -1}, "--short_steps must be >= 0"),
    ({"measure_pick": "twice"}, "--measure_pick must be one of single, interleaved"),
    ({"pick_sessions": 0}, "--pick_sessions must be >= 1"),
    ({"min_proposals": 0}, "--min_proposals must be >= 1"),
])
def test_bad_values_of_the_new_settings_are_one_line_errors(settings, message):
    with pytest.raises(UserError, match=message):
        LoopConfig.of(target=0.5, **settings).check()
    LoopConfig.of(target=0.5, short_steps=0, bn_batches=8, channel_multiple=1).check()   # all allowed


def test_cli_refuses_a_bad_channel_multiple_with_one_line(tmp_path):
    r = run_cli("pipelines.netadapt", "--target", "0.5", "--channel_multiple", "0", "--output_dir",
                tmp_path / "x", timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("error:")] == [
        "error: --channel_multiple must be >= 1, got 0"]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("other", [{"bn_batches": 8}, {"short_steps": 0}, {"channel_multiple": 1},
                                   {"measure_pick": "single"}, {"min_proposals": 1}])
def test_resume_with_other_ranking_or_measurement_settings_is_refused(tmp_path, other):
    cfg = LoopConfig.of(target=0.5)
    RunDir(tmp_path).open(cfg.fingerprint(), resume=False)
    RunDir(tmp_path).write({"measured": 1.0, "predicted": 1.0, "val_accuracy": 0.5}, "start", "start.json")
    with pytest.raises(UserError, match=f"different settings: {list(other)[0]}="):
        RunDir(tmp_path).open(cfg.replace(**other).fingerprint(), resume=True)
    assert RunDir(tmp_path).open(cfg.fingerprint(), resume=True)["resumed"]


# ------------------------------------------------------------------------------------------------
# the ranking study's statistics (benchmarks/netadapt_ranking.py)
# ------------------------------------------------------------------------------------------------
def test_ranking_study_spearman_and_the_cheapest_setting_within_tolerance():
    import subprocess
    import sys

    from conftest import REPO

    code = """
import json, netadapt_ranking as r
s = [{"name": "t200", "step_equivalents": 200, "mean_spearman": 0.9},
     {"name": "t50", "step_equivalents": 50, "mean_spearman": 0.86},
     {"name": "bn_only", "step_equivalents": 16.7, "mean_spearman": 0.84},
     {"name": "broken", "step_equivalents": 0, "mean_spearman": None}]
print(json.dumps([r.ranks([3, 1, 2, 2]), r.spearman([1, 2, 3, 4], [10, 20, 40, 30]),
                  r.spearman([1, 2, 3, 4], [4, 3, 2, 1]), r.spearman([1, 1, 1], [1, 2, 3]),
                  r.choose_default(s, 0.05), r.choose_default(s, 0.1), r.na_config.parse_score_settings(["50:0", "0:200"])]))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.path.join(REPO, "benchmarks")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ranks, rho, inverse, constant, within_005, within_01, settings = json.loads(r.stdout.splitlines()[-1])
    assert ranks == [4.0, 1.0, 2.5, 2.5] and rho == pytest.approx(0.8) and inverse == -1.0 and constant is None
    assert (within_005, within_01) == ("t50", "bn_only") and settings == [[50, 0], [0, 200]]


@pytest.mark.slow
def test_iteration_cost_study_searches_each_score_and_trains_what_each_found(tmp_path):
    """benchmarks/netadapt_iteration_cost.py --smoke: one search per N:T from the same start, each found
    architecture trained from scratch and measured; the costs are those its history.jsonl records."""
    import subprocess
    import sys

    from conftest import REPO

    r = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "netadapt_iteration_cost.py"), "--smoke",
                        "--output_dir", str(tmp_path / "cost"), "--json"], capture_output=True, text=True,
                       timeout=1200, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    assert list(out["settings"]) == ["bn0_t3", "bn2_t0"] and out["reference"] == "bn0_t3"
    for name, s in out["settings"].items():
        history = [json.loads(line) for line in open(tmp_path / "cost" / name / "run" / "history.jsonl")]
        assert s["iterations"] == len(history) >= 1
        assert s["iteration_seconds"] == pytest.approx(sum(h["seconds"] for h in history), abs=0.2)
        assert os.path.isfile(s["scratch"]["path"]) and s["latency_ms"] > 0 and 0 <= s["test_accuracy"] <= 1
        fingerprint = json.load(open(tmp_path / "cost" / name / "run" / "run.json"))["fingerprint"]
        assert (fingerprint["bn_batches"], fingerprint["short_steps"]) == {"bn0_t3": (0, 3), "bn2_t0": (2, 0)}[name]
    assert out["settings"]["bn0_t3"]["iteration_time_ratio"] == 1.0
    bad = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "netadapt_iteration_cost.py"),
                          "--output_dir", str(tmp_path / "bad"), "--score_settings", "0:0"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
