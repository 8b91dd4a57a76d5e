"""The NetAdapt run directory: what is finished is on disk, atomically, so ``--resume`` loses nothing.

    OUTPUT_DIR/run.json                      run id + the settings that decide the result (fingerprint)
    OUTPUT_DIR/.lock                         held (flock) by the driver running it; holds its pid
    OUTPUT_DIR/.tmp/                         the workers' temporary files (the pool removes it)
    OUTPUT_DIR/start/checkpoint/             the starting model (spec.json, weights.h5, checkpoint.json)
    OUTPUT_DIR/start/start.json              its measured resource and validation accuracy
    OUTPUT_DIR/iterations/NNN/proposals/G.json            one proposal's result (written when it finishes)
    OUTPUT_DIR/iterations/NNN/proposals/G/checkpoint/     its fine-tuned weights
    OUTPUT_DIR/iterations/NNN/checkpoint/    the chosen model of iteration NNN (spec + weights)
    OUTPUT_DIR/iterations/NNN/plan.json      the iteration's budget and proposals (before they run)
    OUTPUT_DIR/iterations/NNN/measurement.json  the chosen model's measurement (start/ has one too)
    OUTPUT_DIR/history.jsonl                 one line per finished iteration (appended, fsynced)
    OUTPUT_DIR/final/                        the final stage

A kill at any moment leaves every JSON file either complete or absent, and history.jsonl at worst
with its last line cut (an append interrupted): reading drops that line, with a warning, and the
iteration is redone. An iteration counts as done only once its line is in history.jsonl, and a
proposal once its JSON exists. Other damage (a record edited or cut by something else) is a
``UserError`` naming the file: nothing is guessed.
"""
import contextlib
import fcntl
import json
import os
import sys
import uuid

from tfmobile.errors import UserError
from tfmobile.io import write_json, write_text

RUN_FILE = "run.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
SCRATCH_DIR = ".tmp"
START_CHECKPOINT = os.path.join("start", "checkpoint", "checkpoint.json")
START_FILE = os.path.join("start", "start.json")
# What a run has produced once it got anywhere: a directory with only run.json (a run stopped by a
# bad input or Ctrl-C during setup) holds nothing worth keeping and is taken over by the next one.
RESULTS = (START_CHECKPOINT, START_FILE, "iterations", HISTORY_FILE, "final")

# The fields the loop reads from each record, and what they must be.
_NUMBER = ((int, float), "a number")
_INTEGER = ((int,), "an integer")
_TEXT = ((str,), "a string")
HISTORY_FIELDS = {"iteration": _INTEGER, "measured": _NUMBER, "predicted": _NUMBER, "val_accuracy": _NUMBER}
START_FIELDS = {"measured": _NUMBER, "predicted": _NUMBER, "val_accuracy": _NUMBER}
PROPOSAL_FIELDS = {"group": _TEXT, "width": _INTEGER, "val_accuracy": _NUMBER, "predicted": _NUMBER}
# What a run with several constraints adds (absent in a run with one, or made before they existed).
OPTIONAL_FIELDS = {"resources": "an object of numbers", "driving": "a string"}


def log_stderr(message):
    sys.stderr.write(f"[netadapt] {message}\n")
    sys.stderr.flush()


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"corrupt file {path}: {e}") from None


def _check_record(record, fields, where):
    """UserError naming ``where`` unless ``record`` is an object with each of ``fields`` of its type."""
    if not isinstance(record, dict):
        raise UserError(f"corrupt {where}: a {type(record).__name__}, not a JSON object")
    for name, (types, what) in fields.items():
        if name not in record:
            raise UserError(f"corrupt {where}: no {name!r}")
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise UserError(f"corrupt {where}: {name!r} is {value!r}, not {what}")
    _check_optional(record, where)
    return record


def _check_optional(record, where):
    """The several-constraints keys, where present: ``resources`` {kind: number}, ``driving`` a kind."""
    resources, driving = record.get("resources"), record.get("driving")
    if resources is not None and not (isinstance(resources, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in resources.values())):
        raise UserError(f"corrupt {where}: 'resources' is {resources!r}, not {OPTIONAL_FIELDS['resources']}")
    if driving is not None and not isinstance(driving, str):
        raise UserError(f"corrupt {where}: 'driving' is {driving!r}, not {OPTIONAL_FIELDS['driving']}")


def _fields_of(relpath):
    """The fields to check in the record at ``relpath`` (relative to the run), or None."""
    parts = os.path.normpath(relpath).split(os.sep)
    if parts == ["start", "start.json"]:
        return START_FIELDS
    if len(parts) == 4 and parts[0] == "iterations" and parts[2] == "proposals" and parts[3].endswith(".json"):
        return PROPOSAL_FIELDS
    return None


def _append_line(path, line):
    """Append one line with one write and fsync it: a crash can cut only this line, never an earlier one."""
    data = line.encode("utf-8")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    created = not os.path.exists(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
        while written < len(data):   # a short write (a signal, a full disk): finish or raise
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:   # the new file's directory entry, too
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class RunDir:
    """One run's output directory (see the module docstring for the layout).

    log: where a recovery is reported (a cut last history line dropped, a run taken over);
    ``[netadapt] ...`` on stderr by default.
    """

    def __init__(self, path, log=None):
        self.path = os.path.abspath(os.fspath(path))
        self.log = log or log_stderr

    # --- identity -------------------------------------------------------------------------------
    def manifest(self):
        man = _read_json(os.path.join(self.path, RUN_FILE))
        if man is not None and not (isinstance(man, dict) and man.get("run_id")):
            raise UserError(f"corrupt {self.sub(RUN_FILE)}: not a NetAdapt run manifest (no run_id)")
        return man

    def has_results(self):
        """Whether the run got anywhere: a start checkpoint, start.json, an iteration or the final stage."""
        for relpath in RESULTS:
            path = self.sub(relpath)
            if os.path.isdir(path) and os.listdir(path) or os.path.isfile(path):
                return True
        return False

    def open(self, fingerprint, resume, free_until_first_iteration=(), defaults=None):
        """Create the run (fresh dir) or check that ``--resume`` continues the same run.

        fingerprint: the JSON-able settings that decide the chosen sequence; a directory holding
        another run (other settings) is refused, so nothing of it is overwritten or mixed in.
        free_until_first_iteration: settings a ``--resume`` may change while no iteration has begun (a new
        target after "the start already meets it" reuses the trained, measured start).
        defaults: what a setting the stored fingerprint lacks was (a run made before the setting existed).
        A run.json without any result (see ``has_results``) is a run that stopped during its setup:
        a new run takes the directory over, with or without ``resume``.
        Returns the manifest (run_id, fingerprint) plus ``resumed``: whether an earlier run continues.
        """
        man = self.manifest()
        if man is not None and not self.has_results():
            self.log(f"{self.path}: run {man['run_id']} stopped before its first result; "
                     f"{'--resume starts it afresh' if resume else 'starting a new run in its place'}")
            return self._create(fingerprint)
        if man is None:
            if resume:
                raise UserError(f"--resume: {self.path} holds no NetAdapt run (no {RUN_FILE})")
            if os.path.isdir(self.path) and any(not n.startswith(".") for n in os.listdir(self.path)):
                raise UserError(f"{self.path} is not empty; choose a new --output_dir (or --resume a run)")
            return self._create(fingerprint)
        if not resume:
            raise UserError(f"{self.path} already holds NetAdapt run {man.get('run_id')}: pass --resume to "
                            "continue it, or choose a new --output_dir")
        theirs = dict(man.get("fingerprint") or {})
        theirs.update({k: v for k, v in (defaults or {}).items() if k in fingerprint and k not in theirs})
        diff = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
        shown = ", ".join(f"{k}={theirs.get(k)!r} (now {fingerprint.get(k)!r})" for k in diff[:4])
        if diff and set(diff) <= set(free_until_first_iteration) and not self.iteration_begun():
            self.log(f"--resume: no iteration has begun; continuing with {shown} (the start is kept)")
            man = {"run_id": man["run_id"], "fingerprint": fingerprint}
            write_json(self.sub(RUN_FILE), man)
            return dict(man, resumed=True)
        if diff:
            raise UserError(f"--resume: {self.path} is another run ({man.get('run_id')}) with different "
                            f"settings: {shown}")
        return dict(man, resumed=True)

    def _create(self, fingerprint):
        man = {"run_id": uuid.uuid4().hex, "fingerprint": fingerprint}
        write_json(self.sub(RUN_FILE), man)
        return dict(man, resumed=False)

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
        done = self._read_record(relpath)
        if done is not None:
            return done
        result = compute()
        write_json(self.sub(relpath), result)
        return result

    def iteration_begun(self):
        """Whether the search got past its start (settings in ``open``'s free list may change only before)."""
        return os.path.exists(self.sub("iterations"))

    # --- paths ----------------------------------------------------------------------------------
    def sub(self, *parts):
        return os.path.join(self.path, *parts)

    def iteration_dir(self, i):
        return self.sub("iterations", f"{i:03d}")

    def proposal_json(self, i, group):
        return os.path.join(self.iteration_dir(i), "proposals", f"{_safe(group)}.json")

    def proposal_dir(self, i, group):
        return os.path.join(self.iteration_dir(i), "proposals", _safe(group))

    def scratch_dir(self):
        """The workers' temporary directory (``LocalPool(temp_dir=...)``); not part of the run's results."""
        return self.sub(SCRATCH_DIR)

    # --- records --------------------------------------------------------------------------------
    def read(self, *parts):
        return self._read_record(os.path.join(*parts))

    def _read_record(self, relpath):
        """The JSON at ``relpath`` or None; start.json and proposal JSONs checked for the fields the loop reads."""
        path = self.sub(relpath)
        record = _read_json(path)
        fields = _fields_of(os.path.relpath(path, self.path))
        if record is not None and fields:
            _check_record(record, fields, path)
        return record

    def write(self, obj, *parts):
        write_json(self.sub(*parts), obj)

    def proposal(self, i, group):
        return self._read_record(self.proposal_json(i, group))

    def save_proposal(self, i, group, result):
        write_json(self.proposal_json(i, group), result)

    def history(self):
        """Finished iterations, in order, each checked for the fields the loop reads.

        A last line cut mid-append (no newline, not JSON) is what a crash while recording an
        iteration leaves: it is dropped, with a warning, and the file rewritten without it (that
        iteration is redone). Any other damage is a UserError naming the file and line.
        """
        path = self.sub(HISTORY_FILE)
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        lines = text.split("\n")
        tail = lines.pop()   # "" when the file ends with a newline, else the unfinished last line
        rows, kept = [], []
        last = len(lines) + 1
        for number, line in enumerate(lines + [tail], 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if number == last:
                    self.log(f"{path}: its last line was cut by a crash while iteration {len(rows) + 1} was "
                             "recorded; dropped it, that iteration is redone")
                    break
                raise UserError(f"corrupt {path}: line {number} is not JSON ({e.msg})") from None
            _check_record(row, HISTORY_FIELDS, f"{path} line {number}")
            if row["iteration"] != len(rows) + 1:
                raise UserError(f"corrupt {path}: line {number} is iteration {row['iteration']}, "
                                f"expected {len(rows) + 1}")
            rows.append(row)
            kept.append(line)
        if tail:   # the next append must start on a line of its own
            write_text(path, "".join(line + "\n" for line in kept))
        return rows

    def append_history(self, row):
        """Record a finished iteration: one line appended (the lines before it are never rewritten)."""
        rows = self.history()
        if row["iteration"] != len(rows) + 1:
            raise ValueError(f"iteration {row['iteration']} after {len(rows)} finished ones")
        _append_line(self.sub(HISTORY_FILE), json.dumps(row, sort_keys=False) + "\n")


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
