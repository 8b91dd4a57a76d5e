"""Atomic file writes: an artifact is either complete or absent, never half-written.

Files and directories written here get the permissions of a plain ``open()`` / ``mkdir`` (0644 /
0755 under the usual umask 022), not the 0600 / 0700 of their temporary names: metrics, LUTs and
specs are meant to be shared. ``check_writable`` tells, before any expensive work and leaving
nothing behind, whether an output path can be written.
"""
import json
import os
import tempfile
from contextlib import contextmanager

from tfmobile.errors import UserError


def _temp_beside(path):
    """A new empty file next to ``path`` (same folder, so the final rename is atomic), with the mode
    a plain ``open()`` would give it (not mkstemp's 0600)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    os.chmod(tmp, shareable_mode())
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


def _umask():
    try:
        with open("/proc/self/status", encoding="ascii") as f:   # reading it changes nothing
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable_mode(directory=False):
    """The mode ``open()`` (0o666) or ``os.mkdir`` (0o777) would give under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def check_writable(path, directory=False, what=None):
    """UserError unless ``path`` can be written as a file (or, ``directory``, as a directory).

    Leaves nothing behind: a path that does not exist yet is checked at its nearest existing
    ancestor, which must be a directory where a file can be created (probed with a temporary file,
    so root, ACLs and read-only file systems are judged as the write itself will be). Returns ``path``.
    """
    path = os.fspath(path)
    what = what or ("output directory" if directory else "output file")
    if not path:
        raise UserError(f"{what} is empty")
    if os.path.isdir(path) and not directory:
        raise UserError(f"{what} {path} is a directory")
    if os.path.lexists(path) and not os.path.isdir(path) and directory:
        raise UserError(f"{what} {path} exists and is not a directory")
    probe_dir = os.path.abspath(path) if directory and os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(probe_dir):
        probe_dir = os.path.dirname(probe_dir)
    if not os.path.isdir(probe_dir):
        raise UserError(f"cannot write {what} {path}: {probe_dir} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write_probe.", dir=probe_dir)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write {what} {path}: {probe_dir}: {e.strerror or e}") from None
    return path


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

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        """All or nothing: commit when the block ends normally, abort when it raises."""
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


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
