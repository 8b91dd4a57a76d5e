"""The NetAdapt run directory: what is finished is on disk, atomically, so ``--resume`` loses nothing.

    OUTPUT_DIR/run.json                      run id + the settings that decide the result (fingerprint)
    OUTPUT_DIR/start/checkpoint/             the starting model (spec.json, weights.h5, checkpoint.json)
    OUTPUT_DIR/start/start.json              its measured resource and validation accuracy
    OUTPUT_DIR/iterations/NNN/proposals/G.json            one proposal's result (written when it finishes)
    OUTPUT_DIR/iterations/NNN/proposals/G/checkpoint/     its fine-tuned weights
    OUTPUT_DIR/iterations/NNN/checkpoint/    the chosen model of iteration NNN (spec + weights)
    OUTPUT_DIR/iterations/NNN/plan.json      the iteration's budget and proposals (before they run)
    OUTPUT_DIR/iterations/NNN/measurement.json  the chosen model's measurement (start/ has one too)
    OUTPUT_DIR/history.jsonl                 one line per finished iteration (rewritten atomically)

A kill at any moment leaves every file either complete or absent; an iteration counts as done only
once its line is in history.jsonl, and a proposal once its JSON exists.
"""
import contextlib
import fcntl
import json
import os
import uuid

from tfmobile.errors import UserError
from tfmobile.io import write_json, write_text

RUN_FILE = "run.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"corrupt file {path}: {e}") from None


class RunDir:
    """One run's output directory (see the module docstring for the layout)."""

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))

    # --- identity -------------------------------------------------------------------------------
    def manifest(self):
        return _read_json(os.path.join(self.path, RUN_FILE))

    def open(self, fingerprint, resume):
        """Create the run (fresh dir) or check that ``--resume`` continues the same run.

        fingerprint: the JSON-able settings that decide the chosen sequence; a directory holding
        another run (other settings) is refused, so nothing of it is overwritten or mixed in.
        """
        man = self.manifest()
        if man is None:
            if resume:
                raise UserError(f"--resume: {self.path} holds no NetAdapt run (no {RUN_FILE})")
            if os.path.isdir(self.path) and any(not n.startswith(".") for n in os.listdir(self.path)):
                raise UserError(f"{self.path} is not empty; choose a new --output_dir (or --resume a run)")
            man = {"run_id": uuid.uuid4().hex, "fingerprint": fingerprint}
            write_json(os.path.join(self.path, RUN_FILE), man)
            return man
        if not resume:
            raise UserError(f"{self.path} already holds NetAdapt run {man.get('run_id')}: pass --resume to "
                            "continue it, or choose a new --output_dir")
        theirs = man.get("fingerprint") or {}
        diff = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
        if diff:
            shown = ", ".join(f"{k}={theirs.get(k)!r} (now {fingerprint.get(k)!r})" for k in diff[:4])
            raise UserError(f"--resume: {self.path} is another run ({man.get('run_id')}) with different "
                            f"settings: {shown}")
        return man

    @contextlib.contextmanager
    def lock(self):
        """Hold the run for this driver; a second driver on the same directory is refused (UserError).

        An advisory ``flock`` on OUTPUT_DIR/.lock: the kernel releases it when the holder exits, kill -9
        included, so a killed driver never leaves it held.
        """
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.sub(LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
                raise UserError(f"{self.path} is in use by another NetAdapt driver (pid {holder}); wait for it "
                                "to finish or stop it first") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield self
        finally:
            os.close(fd)   # releases the lock

    def step(self, relpath, compute):
        """A resumable step: the JSON at ``relpath`` (relative to the run) if it exists, else ``compute()``
        written there atomically. Its file existing means the step is done."""
        done = _read_json(self.sub(relpath))
        if done is not None:
            return done
        result = compute()
        write_json(self.sub(relpath), result)
        return result

    # --- paths ----------------------------------------------------------------------------------
    def sub(self, *parts):
        return os.path.join(self.path, *parts)

    def iteration_dir(self, i):
        return self.sub("iterations", f"{i:03d}")

    def proposal_json(self, i, group):
        return os.path.join(self.iteration_dir(i), "proposals", f"{_safe(group)}.json")

    def proposal_dir(self, i, group):
        return os.path.join(self.iteration_dir(i), "proposals", _safe(group))

    # --- records --------------------------------------------------------------------------------
    def read(self, *parts):
        return _read_json(self.sub(*parts))

    def write(self, obj, *parts):
        write_json(self.sub(*parts), obj)

    def proposal(self, i, group):
        return _read_json(self.proposal_json(i, group))

    def save_proposal(self, i, group, result):
        write_json(self.proposal_json(i, group), result)

    def history(self):
        """Finished iterations, in order (a line is written whole or not at all)."""
        path = self.sub(HISTORY_FILE)
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        for k, row in enumerate(rows, 1):
            if row.get("iteration") != k:
                raise UserError(f"corrupt {path}: line {k} is iteration {row.get('iteration')}")
        return rows

    def append_history(self, row):
        rows = self.history()
        if row["iteration"] != len(rows) + 1:
            raise ValueError(f"iteration {row['iteration']} after {len(rows)} finished ones")
        rows.append(row)
        write_text(self.sub(HISTORY_FILE), "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows))


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
