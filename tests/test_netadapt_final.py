"""NetAdapt's final stage options (fine_tune, from_scratch, rewind; distillation from the start model), the
start training's step-based schedule, and their settings (checked, in the fingerprint, on the command line)."""
import json
import os
import time

import numpy as np
import pytest

import tfmobile  # noqa: F401
from netadapt_tiny import tiny_splits, tiny_spec
from conftest import run_cli
from tfmobile.errors import UserError
from tfmobile.netadapt import config, final, report
from tfmobile.netadapt.history import RunDir


def _tiny_spec():
    return tiny_spec((8, 16), name="mbv1_final_test")


@pytest.fixture(scope="module")
def splits():
    return tiny_splits()


@pytest.fixture(scope="module")
def start_checkpoint(splits, tmp_path_factory):
    """A trained float start model (the teacher) and, as the loop's last checkpoint, a copy of it."""
    from tfmobile import models, train

    out = tmp_path_factory.mktemp("start")
    train.fit(models.build(_tiny_spec()), splits, str(out), epochs=2, batch_size=32, lr=1e-2, tensorboard=False,
              verbose=0)
    return os.path.join(out, "checkpoint")


def _cfg(checkpoint, **kw):
    base = dict(checkpoint=checkpoint, subset=True, limit=300, batch_size=32, resource="macs", target=0.6,
                long_epochs=1, qat_epochs=0, tflm=False)
    return config.LoopConfig.of(**dict(base, **kw))


# ------------------------------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------------------------------
def test_new_settings_have_one_default_are_checked_and_in_the_fingerprint():
    cfg = config.LoopConfig.of(target=0.5)
    assert "rewind" in config.FINAL_MODES and cfg.final.mode == "fine_tune"
    assert (cfg.final.distill, cfg.final.distill_temperature, cfg.start.epochs) == (0.0, 4.0, None)
    cfg.check()                                       # epochs None: the data's schedule, a valid start
    for bad, flag in (({"distill": 1.5}, "--distill"), ({"distill": -0.1}, "--distill"),
                      ({"distill": float("nan")}, "--distill"), ({"distill_temperature": 0.0}, "--distill_temperature"),
                      ({"distill_temperature": float("inf")}, "--distill_temperature"), ({"final": "rewound"}, "--final"),
                      ({"epochs": 0}, "--epochs")):
        with pytest.raises(UserError, match=flag):
            cfg.replace(**bad).check()
    fp = cfg.fingerprint()
    for name in ("final", "distill", "distill_temperature", "epochs"):
        assert name in fp
    for change in ({"final": "rewind"}, {"distill": 0.5}, {"distill_temperature": 2.0}):
        assert cfg.replace(**change).fingerprint() != fp, change


def test_resume_refuses_a_run_made_with_other_final_settings(tmp_path):
    cfg = config.LoopConfig.of(target=0.5)
    run_dir = RunDir(tmp_path / "run", log=lambda m: None)
    run_dir.open(cfg.fingerprint(), resume=False)
    run_dir.write({"measured": 1.0}, "start", "start.json")            # the run has a result
    for change, name in (({"final": "rewind"}, "final"), ({"distill": 0.3}, "distill"),
                         ({"distill_temperature": 2.0}, "distill_temperature")):
        with pytest.raises(UserError, match=f"another run .*{name}="):
            run_dir.open(cfg.replace(**change).fingerprint(), resume=True)
    assert run_dir.open(cfg.fingerprint(), resume=True)["resumed"]


def test_bad_values_of_the_new_flags_are_one_error_line(tmp_path):
    fast = ["--subset", "--limit", "300", "--resource", "macs", "--target", "0.6"]
    for k, (bad, expect) in enumerate(((["--distill", "2"], "--distill"),
                                       (["--distill_temperature", "-1"], "--distill_temperature"),
                                       (["--final", "rewound"], "final"))):
        out = tmp_path / f"o{k}"
        t = time.time()
        r = run_cli("pipelines.netadapt", *fast, *bad, "--output_dir", out, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and expect in lines[0], r.stderr[-2000:]
        assert not os.path.exists(out) or os.listdir(out) == []
        assert time.time() - t < 60


# ------------------------------------------------------------------------------------------------
# the start training's length
# ------------------------------------------------------------------------------------------------
def test_start_training_follows_the_step_schedule_unless_epochs_are_given():
    from tfmobile import data
    from tfmobile.netadapt import start

    cfg = config.LoopConfig.of(target=0.5, batch_size=64)
    small = start.start_schedule(cfg, 3600)
    assert small == data.default_schedule(3600, batch_size=64)
    assert small.total_steps >= 2500 and small.passes_per_epoch == 2          # not 10 epochs of 57 steps
    rec = start.start_training(cfg, 3600, small.epochs)
    assert rec["train_steps"] == small.total_steps and rec["train_epochs"] == small.epochs * 2
    assert rec["train_schedule"]["total_steps"] == small.total_steps
    given = cfg.replace(epochs=3)
    assert start.start_schedule(given, 3600).total_steps == 3 * 57
    assert start.start_training(given, 3600, 3)["train_epochs"] == 3
    # the baselines' budget counts the start's passes: as many steps as the start + the long-term fine-tune
    assert final.budget_epochs(cfg, rec["train_epochs"]) == small.epochs * 2 + cfg.final.long_epochs
    ckpt = start.start_training(cfg.replace(checkpoint="x"), 3600, 7)
    assert ckpt == {"train_epochs": 7, "train_steps": None, "train_schedule": None}


# ------------------------------------------------------------------------------------------------
# the final stage
# ------------------------------------------------------------------------------------------------
def test_rewind_trains_the_loop_weights_with_the_baselines_budget_at_the_start_rate(start_checkpoint):
    from tfmobile import train

    cfg = _cfg(start_checkpoint, final="rewind", long_epochs=3, long_lr=1e-4, lr=2e-3)
    spec = train.checkpoint_spec(start_checkpoint)
    model, epochs, lr, what = final.final_training(cfg, 2, start_checkpoint, spec)
    assert (epochs, lr) == (2 + 3, 2e-3) and "rewind" in what
    loop_weights = train.load_checkpoint(start_checkpoint).get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), loop_weights))
    assert final.chosen_by(cfg) == "--final" and final.chosen_by(cfg.replace(final="fine_tune")) == "default"


def test_distilled_final_stage_trains_with_the_start_model_as_teacher(start_checkpoint, splits, tmp_path):
    from tfmobile import data as tdata
    from tfmobile.netadapt.state import RunData

    cfg = _cfg(start_checkpoint, final="rewind", distill=0.5, distill_temperature=2.0)
    run_data = RunData(splits, cfg.data_config((32, 32, 3)), tdata.sample_images(splits.x_train, (32, 32, 3), n=20))
    run_dir, logged = RunDir(tmp_path / "run", log=lambda m: None), []
    row = final.final_model(cfg, run_dir, run_data, 1, start_checkpoint, logged.append,
                            teacher_checkpoint=start_checkpoint)
    assert row["final_stage"] == "rewind" and row["final_stage_chosen_by"] == "--final" and row["epochs"] == 2
    assert row["distillation"] == {"weight": 0.5, "temperature": 2.0, "teacher": "start/checkpoint"}
    with open(tmp_path / "run" / "final" / "train" / "float" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["distillation"] == {"weight": 0.5, "temperature": 2.0} and metrics["epochs"] == 2
    assert any("distilled from the start model" in m for m in logged)
    assert os.path.isfile(row["path"]) and 0.0 <= row["accuracy"] <= 1.0
    md = report.final_stage_line(row)
    assert "**rewind** (chosen with --final)" in md and "distilled" in md


def test_report_says_the_default_final_stage_ran_by_default():
    line = report.final_stage_line({"final_stage": "fine_tune", "final_stage_chosen_by": "default",
                                    "final_stage_what": "5 long-term fine-tune epoch(s)", "distillation": None})
    assert line.startswith("Final stage: **fine_tune** (the default)") and "no distillation" in line
