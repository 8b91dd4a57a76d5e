"""Run one pipeline's command line several times in one interpreter, as ``python -m MODULE ARGS`` would.

The bad-input tests give each pipeline a dozen refused command lines; each in its own process pays
TensorFlow's import (3-5 s on 2 cores) for a refusal that takes milliseconds. Here one child process runs
them in turn through the same entry point (``pipelines._cli.run``: flag parsing, UserError -> one line,
exit 2), with the flags reset between cases, and reports each case's exit status, stdout, stderr and
seconds.

    python tests/cli_cases.py MODULE < cases.json     # cases: [[arg, ...], ...]; prints one JSON list
"""
import contextlib
import importlib
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cases(module, cases):
    from absl import flags

    from pipelines import _cli

    pipeline = importlib.import_module(module)
    results = []
    for argv in cases:
        flags.FLAGS.unparse_flags()
        sys.argv = [module, *map(str, argv)]
        err, out, t = io.StringIO(), io.StringIO(), time.time()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                _cli.run(pipeline.main)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "seconds": time.time() - t})
    return results


if __name__ == "__main__":
    print(json.dumps(run_cases(sys.argv[1], json.load(sys.stdin))))
