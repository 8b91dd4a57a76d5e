import os
import subprocess
import sys

import pytest

import tfmobile  # noqa: F401  (legacy Keras before TensorFlow)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(module, *args, timeout=600):
    """Run ``python -m module args`` from the repo root; returns CompletedProcess (text)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_cli_cases(module, cases, timeout=600):
    """``python -m module args`` for each args of ``cases``, run in one child interpreter (tests/cli_cases.py):
    [CompletedProcess] with each case's returncode, stdout and stderr, and ``seconds`` it took."""
    import json

    r = subprocess.run([sys.executable, os.path.join(REPO, "tests", "cli_cases.py"), module], cwd=REPO,
                       input=json.dumps([[str(a) for a in args] for args in cases]), capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    out = []
    for args, case in zip(cases, json.loads(r.stdout.strip().splitlines()[-1])):
        done = subprocess.CompletedProcess([module, *args], case["code"], case["stdout"], case["stderr"])
        done.seconds = case["seconds"]
        out.append(done)
    return out


@pytest.fixture
def cli():
    return run_cli


def whole_line_written(path):
    """Whether ``path`` holds a whole line: a process creates its marker file, then writes it, and a reader in
    between sees it empty."""
    try:
        with open(path) as f:
            return f.read().endswith("\n")
    except FileNotFoundError:
        return False


def process_alive(pid):
    """Whether ``pid`` runs (a zombie does not: it has exited, only its parent has not reaped it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
