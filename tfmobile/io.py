"""Atomic file writes: an artifact is either complete or absent, never half-written."""
import json
import os
import tempfile
from contextlib import contextmanager


def _temp_beside(path):
    """A new empty file next to ``path`` (same folder, so the final rename is atomic), mode 0644."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o644)
    return tmp


def _remove(tmp):
    if os.path.exists(tmp):
        os.remove(tmp)


@contextmanager
def atomic_path(path):
    """Yield a temp path in the destination folder; rename onto ``path`` only if the block succeeds."""
    path = os.fspath(path)
    tmp = _temp_beside(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _write(tmp, data):
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        _write(tmp, data)


class StagedWriter:
    """Several files that appear together or not at all: ``add`` writes each to a temporary next to
    its destination, ``commit`` renames them all, ``abort`` removes them."""

    def __init__(self):
        self.staged = []   # (tmp, final)

    def add(self, path, data):
        tmp = _temp_beside(os.fspath(path))
        try:
            _write(tmp, data)
        except BaseException:
            _remove(tmp)
            raise
        self.staged.append((tmp, os.fspath(path)))

    def commit(self):
        for tmp, final in self.staged:
            os.replace(tmp, final)
        self.staged = []

    def abort(self):
        for tmp, _ in self.staged:
            _remove(tmp)
        self.staged = []


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(o):
    """``json.dumps(default=...)`` for numpy scalars / arrays and tuples."""
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def to_json(obj, **kw):
    return json.dumps(obj, default=json_default, **kw)
