"""Process lifetime: SIGTERM handled like Ctrl-C, and child processes that die with their parent.

Parent side: ``terminate_on_sigterm()`` turns SIGTERM (what ``timeout``, CI cancellation and
``docker stop`` send) into a ``Terminated`` exception in the main thread, so the same ``finally`` /
``with`` blocks that clean up after Ctrl-C run: temporary files and directories are removed and
``subprocess.run`` kills its child before re-raising.

Child side: ``die_with_parent()`` asks the kernel to SIGKILL this process when its parent dies,
for whatever reason, ``kill -9`` included (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere a
watchdog thread that polls the parent id). A benchmark worker left running would occupy its
pinned core and skew every later measurement.
"""
import os
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1
EXIT_SIGINT = 128 + signal.SIGINT     # 130, the shell's code for a Ctrl-C'd process
EXIT_SIGTERM = 128 + signal.SIGTERM   # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived. A KeyboardInterrupt, so code that cleans up after Ctrl-C cleans up after it."""


def _raise_terminated(signum, frame):
    signal.signal(signum, signal.SIG_IGN)   # a second SIGTERM must not interrupt the clean-up
    raise Terminated(f"signal {signal.Signals(signum).name}")


def terminate_on_sigterm():
    """Raise ``Terminated`` in the main thread on SIGTERM (call once, from the main thread)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def die_with_parent(parent_pid=None):
    """Have this (child) process killed when its parent process ends, ``kill -9`` included.

    parent_pid: the parent's pid as the parent saw it (``os.getpid()`` handed to the child). A child
    whose parent died before the request took effect is adopted by init or by a sub-reaper: without
    parent_pid only adoption by init (parent 1) is told apart; with it, any other parent. Such an
    orphan exits at once.
    """
    parent = os.getppid() if parent_pid is None else parent_pid
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
                now = os.getppid()
                if now != parent or (parent_pid is None and now == 1):   # orphaned before prctl
                    os._exit(EXIT_SIGTERM)
                return
        except (OSError, AttributeError):
            pass
    threading.Thread(target=_watch_parent, args=(parent,), name="die_with_parent", daemon=True).start()


def _watch_parent(parent, interval_s=0.5):
    import time

    while os.getppid() == parent:
        time.sleep(interval_s)
    os._exit(EXIT_SIGTERM)
