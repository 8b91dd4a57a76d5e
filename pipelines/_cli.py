"""Shared CLI plumbing: absl flag parsing, one-line errors with exit status 2, --json output.

Every pipeline is ``python -m pipelines.NAME``; its ``main(argv)`` returns a result dict (or raises
UserError). Human-readable progress goes to stderr, the result to stdout: a table/summary, or with
``--json`` exactly one JSON object.
"""
import sys

import tfmobile  # noqa: F401  (selects legacy Keras before anything imports TensorFlow)
from absl import app, flags

from tfmobile.errors import UserError
from tfmobile.io import to_json

EXIT_USAGE = 2


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


def run(main):
    """``app.run`` with bad flags, stray arguments and UserError turned into one line + exit 2."""

    def wrapped(argv):
        if len(argv) > 1:
            fail(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            rc = main(argv)
        except UserError as e:
            fail(e)
        except FileNotFoundError as e:
            fail(f"file not found: {e.filename or e}")
        except PermissionError as e:
            fail(f"permission denied: {e.filename or e}")
        except KeyboardInterrupt:
            sys.stderr.write("interrupted\n")
            sys.exit(130)
        return rc if isinstance(rc, int) else 0

    app.run(wrapped, flags_parser=_parse_flags)
