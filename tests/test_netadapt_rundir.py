"""The NetAdapt run directory: a run stopped during its setup does not block the next one, one driver
at a time, and damaged records are recovered (a cut last history line) or named (anything else)."""
import json
import os
import signal
import subprocess
import sys

import pytest

import tfmobile  # noqa: F401
from conftest import REPO
from tfmobile.errors import UserError
from tfmobile.netadapt.history import RunDir


def _row(i, **kw):
    row = {"iteration": i, "measured": 1.0 / i, "predicted": 2.0 / i, "val_accuracy": 0.5, "chosen": "g"}
    row.update(kw)
    return row


def _run_dir(path, logs=None):
    return RunDir(path, log=(logs.append if logs is not None else lambda m: None))


# ------------------------------------------------------------------------------------------------
# a run that stopped before its first result
# ------------------------------------------------------------------------------------------------
def test_a_run_without_results_is_taken_over_fresh_and_on_resume(tmp_path):
    out = tmp_path / "run"
    first = _run_dir(out).open({"lr": 0.1}, resume=False)   # then a bad input stopped it
    (out / "lut.json").write_text("{}")                       # what setup may leave: not a result
    logs = []
    fixed = _run_dir(out, logs).open({"lr": 0.01}, resume=False)
    assert fixed["run_id"] != first["run_id"] and fixed["resumed"] is False
    assert json.loads((out / "run.json").read_text()) == {"run_id": fixed["run_id"], "fingerprint": {"lr": 0.01}}
    assert any(first["run_id"] in m and "stopped before its first result" in m for m in logs)
    logs.clear()
    again = _run_dir(out, logs).open({"lr": 0.001}, resume=True)   # --resume with other settings: afresh
    assert again["resumed"] is False and again["run_id"] != fixed["run_id"]
    assert any("--resume starts it afresh" in m for m in logs)
    assert _run_dir(out).open({"lr": 0.001}, resume=False)["resumed"] is False


@pytest.mark.parametrize("result", ["start/checkpoint/checkpoint.json", "start/start.json",
                                    "iterations/001/plan.json", "history.jsonl", "final/final.json"])
def test_a_run_with_any_result_is_kept(tmp_path, result):
    out = tmp_path / "run"
    man = _run_dir(out).open({"lr": 0.1}, resume=False)
    (out / result).parent.mkdir(parents=True, exist_ok=True)
    (out / result).write_text("" if result == "history.jsonl" else "{}")
    assert _run_dir(out).has_results()
    with pytest.raises(UserError, match="already holds"):
        _run_dir(out).open({"lr": 0.1}, resume=False)
    with pytest.raises(UserError, match="another run"):
        _run_dir(out).open({"lr": 0.2}, resume=True)
    assert json.loads((out / "run.json").read_text())["run_id"] == man["run_id"]
    resumed = _run_dir(out).open({"lr": 0.1}, resume=True)
    assert resumed["resumed"] is True and resumed["run_id"] == man["run_id"]


def test_an_empty_start_dir_or_iterations_dir_is_no_result(tmp_path):
    out = tmp_path / "run"
    _run_dir(out).open({"lr": 0.1}, resume=False)
    (out / "start" / "checkpoint").mkdir(parents=True)   # a start model whose first epoch never finished
    (out / "iterations").mkdir()
    assert not _run_dir(out).has_results()


# ------------------------------------------------------------------------------------------------
# one driver at a time
# ------------------------------------------------------------------------------------------------
def test_a_second_driver_is_refused_until_the_holder_is_killed(tmp_path):
    out = tmp_path / "run"
    code = ("import sys, time\nsys.path.insert(0, %r)\nfrom tfmobile.netadapt.history import RunDir\n"
            "with RunDir(%r).lock():\n    print('locked', flush=True)\n    time.sleep(600)\n" % (REPO, str(out)))
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError) as e:
            with RunDir(out).lock():
                pass
        assert "\n" not in str(e.value) and f"pid {holder.pid}" in str(e.value) and "in use" in str(e.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    with RunDir(out).lock():   # the kernel freed it with its holder
        assert (out / ".lock").read_text() == str(os.getpid())
    with RunDir(out).lock():   # and this driver's own release too
        pass


# ------------------------------------------------------------------------------------------------
# damaged records
# ------------------------------------------------------------------------------------------------
def test_a_last_history_line_cut_mid_append_is_dropped_and_redone(tmp_path):
    logs = []
    d = _run_dir(tmp_path / "run", logs)
    d.append_history(_row(1))
    d.append_history(_row(2))
    path = tmp_path / "run" / "history.jsonl"
    whole = path.read_text()
    path.write_text(whole + json.dumps(_row(3))[:25])   # a crash while appending iteration 3
    assert [h["iteration"] for h in d.history()] == [1, 2]
    assert path.read_text() == whole                     # rewritten without the cut line
    assert len(logs) == 1 and "cut" in logs[0] and "iteration 3" in logs[0] and str(path) in logs[0]
    d.append_history(_row(3))                            # the iteration is redone and recorded
    assert [h["iteration"] for h in d.history()] == [1, 2, 3] and len(logs) == 1


def test_a_complete_last_line_without_its_newline_is_kept(tmp_path):
    d = _run_dir(tmp_path / "run")
    d.append_history(_row(1))
    path = tmp_path / "run" / "history.jsonl"
    path.write_text(path.read_text() + json.dumps(_row(2)))   # cut between the object and its newline
    assert [h["iteration"] for h in d.history()] == [1, 2]
    d.append_history(_row(3))
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [1, 2, 3]


def test_history_appends_never_rewrite_the_finished_lines(tmp_path):
    d = _run_dir(tmp_path / "run")
    d.append_history(_row(1))
    path = tmp_path / "run" / "history.jsonl"
    inode, first = path.stat().st_ino, path.read_bytes()
    d.append_history(_row(2))
    assert path.stat().st_ino == inode and path.read_bytes().startswith(first)
    assert [h["iteration"] for h in d.history()] == [1, 2]
    with pytest.raises(ValueError):   # an iteration is never repeated or skipped
        d.append_history(_row(2))


@pytest.mark.parametrize("damage, message", [
    (lambda lines: [lines[0][:20]] + lines[1:], "line 1 is not JSON"),                   # cut, not the last
    (lambda lines: lines[:1] + ["[1, 2]"] + lines[2:], "line 2: a list, not a JSON object"),
    (lambda lines: lines[:1] + [json.dumps({"iteration": 2, "predicted": 1.0, "val_accuracy": 0.5})],
     "line 2: no 'measured'"),
    (lambda lines: lines[:1] + [json.dumps(_row(2, val_accuracy="high"))], "line 2: 'val_accuracy' is 'high'"),
    (lambda lines: lines[:1] + [json.dumps(_row(3))], "line 2 is iteration 3, expected 2"),
    (lambda lines: lines[:1] + [lines[1] + "}"], "line 2 is not JSON"),                  # whole, then damaged
])
def test_other_history_damage_is_one_line_naming_the_file(tmp_path, damage, message):
    d = _run_dir(tmp_path / "run")
    d.append_history(_row(1))
    d.append_history(_row(2))
    path = tmp_path / "run" / "history.jsonl"
    path.write_text("\n".join(damage(path.read_text().splitlines())) + "\n")
    before = path.read_bytes()
    with pytest.raises(UserError) as e:
        d.history()
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)
    assert path.read_bytes() == before                   # nothing dropped or repaired behind the user's back


def test_start_and_proposal_records_are_checked_where_they_are_read(tmp_path):
    d = _run_dir(tmp_path / "run")
    start = {"spec": {}, "measured": 2.0, "predicted": 1.5, "val_accuracy": 0.8}
    d.write(start, "start", "start.json")
    assert d.read("start", "start.json") == start
    assert d.step("start/start.json", lambda: pytest.fail("a finished step is not computed again")) == start
    d.write({k: v for k, v in start.items() if k != "measured"}, "start", "start.json")
    path = os.path.join(d.path, "start", "start.json")
    for read in (lambda: d.read("start", "start.json"), lambda: d.step("start/start.json", dict)):
        with pytest.raises(UserError, match=f"corrupt {path}: no 'measured'"):
            read()
    proposal = {"group": "block_1", "width": 16, "val_accuracy": 0.7, "predicted": 1.2, "checkpoint": "x"}
    d.save_proposal(1, "block_1", proposal)
    assert d.proposal(1, "block_1") == proposal
    for bad, message in (({**proposal, "width": 16.5}, "'width' is 16.5, not an integer"),
                         ({**proposal, "group": None}, "'group' is None, not a string"),
                         ({k: v for k, v in proposal.items() if k != "val_accuracy"}, "no 'val_accuracy'")):
        d.save_proposal(1, "block_1", bad)
        with pytest.raises(UserError, match=message) as e:
            d.proposal(1, "block_1")
        assert d.proposal_json(1, "block_1") in str(e.value)
    with open(d.proposal_json(1, "block_1"), "w") as f:
        f.write('{"group": "block_1", "wid')                 # not written by RunDir (those are atomic)
    with pytest.raises(UserError, match="corrupt file .*block_1.json"):
        d.proposal(1, "block_1")
    d.write({"value": 3}, "iterations", "001", "measurement.json")   # other records: read as they are
    assert d.read("iterations", "001", "measurement.json") == {"value": 3}


def test_a_run_made_before_a_setting_existed_resumes_when_it_has_the_default(tmp_path):
    d = RunDir(tmp_path / "run")
    d.open({"seed": 0}, resume=False)
    d.write({"measured": 1.0, "predicted": 1.0, "val_accuracy": 0.5}, "start", "start.json")
    assert RunDir(d.path).open({"seed": 0, "new": 8}, resume=True, defaults={"new": 8})["resumed"]
    with pytest.raises(UserError, match="another run"):
        RunDir(d.path).open({"seed": 0, "new": 1}, resume=True, defaults={"new": 8})
