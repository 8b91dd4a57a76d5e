"""Shared CLI plumbing: absl flag parsing, one-line errors with exit status 2, --json output.

Every pipeline is ``python -m pipelines.NAME``; its ``main(argv)`` returns a result dict (or raises
UserError). Human-readable progress goes to stderr, the result to stdout: a table/summary, or with
``--json`` exactly one JSON object.

Output paths are checked with ``check_output`` before any slow work; an OSError that still happens
later (disk full, a path removed meanwhile) is one ``error:`` line and exit 2 as well. SIGINT exits
130 and SIGTERM 143 after the same clean-up (temporary files removed, child processes killed).
"""
import sys

import tfmobile  # noqa: F401  (selects legacy Keras before anything imports TensorFlow)
from absl import app, flags

from tfmobile import process
from tfmobile.errors import UserError
from tfmobile.io import check_writable, to_json

EXIT_USAGE = 2
# Input resolutions above this are refused at flag parsing (``upper_bound=MAX_RESOLUTION``): a typo
# such as 100000 would otherwise die in a 931 GiB image allocation after the model was built, and
# 100 calibration images at 1024x1024x3 in float32 already take 1.2 GiB.
MAX_RESOLUTION = 1024


def fail(message):
    """Print one line to stderr and exit 2: the contract for every kind of bad input."""
    message = " ".join(str(message).split()) or "invalid input"
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    sys.exit(EXIT_USAGE)


def _parse_flags(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(e)


def check_output(path, directory=False, flag=None):
    """Fail now (one line, exit 2) unless the output ``path`` of ``--flag`` can be written; no-op for None."""
    if path:
        check_writable(path, directory=directory, what=f"--{flag}" if flag else None)
    return path


def _os_error_message(e):
    """``file not found: PATH``, ``is a directory: PATH``, ...: what went wrong, on which path."""
    what = {FileNotFoundError: "file not found", PermissionError: "permission denied"}.get(type(e))
    what = what or (e.strerror or str(e) or type(e).__name__).lower()
    paths = [str(p) for p in (e.filename, e.filename2) if p is not None]
    return f"{what}: {' -> '.join(paths)}" if paths else what


def value_for(values, name):
    """``--max_ratio mbv2=0.55``-style flags (NAME=VALUE items): the number given for ``name``, or None."""
    for text in values:
        key, sep, value = str(text).partition("=")
        if not sep:
            raise UserError(f"expected MODEL=VALUE, got {text!r}")
        if key == name:
            try:
                return float(value)
            except ValueError:
                raise UserError(f"{text!r}: {value!r} is not a number") from None
    return None


def progress(message):
    """Progress for long work; stderr so that --json stdout stays one object."""
    sys.stderr.write(f"[tfmobile] {message}\n")
    sys.stderr.flush()


def emit(result, as_json, render=None):
    """Print the result: one JSON object, or ``render(result)`` text (default: key: value lines)."""
    if as_json:
        sys.stdout.write(to_json(result) + "\n")
    else:
        text = render(result) if render else "\n".join(f"{k}: {v}" for k, v in result.items())
        sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()


def run_and_emit(main, render=None):
    """``run`` of a benchmark's ``main`` (returning its result), printed by ``emit`` as its ``--json`` flag says."""
    from absl import flags

    run(lambda argv: emit(main(argv), flags.FLAGS.json, render))


def run(main):
    """``app.run`` with bad flags, stray arguments, UserError and OSError turned into one line + exit 2.

    SIGTERM raises ``process.Terminated`` (a KeyboardInterrupt) so that it unwinds like Ctrl-C.
    """

    def wrapped(argv):
        process.terminate_on_sigterm()
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            rc = main(argv)
        except UserError as e:
            fail(e)
        except OSError as e:
            fail(_os_error_message(e))
        except process.Terminated:
            sys.stderr.write("terminated\n")
            sys.exit(process.EXIT_SIGTERM)
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            sys.exit(process.EXIT_SIGINT)
        return rc if isinstance(rc, int) else 0

    app.run(wrapped, flags_parser=_parse_flags)
