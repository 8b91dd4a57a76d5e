"""Child process for tflite-micro's Python interpreter (never imported by the parent).

TFLM can abort or crash the whole process (an int8 SOFTMAX with a tiny input scale or >= 2048
elements aborts; an arena of a few hundred bytes segfaults), so the parent runs this in a
subprocess and turns a signal into a clear error. Protocol: one JSON request file in, one line of
JSON per event on stdout (flushed), so that the parent knows exactly which step was running when a
signal arrived.

    python -m tfmobile.convert._tflm_child REQUEST.json

request: {"model": path, "input": path to .npy | null, "output": path to .npy | null,
          "run_arena": int | null,            # run once at this arena (init + invoke)
          "search": [lo, hi] | null,         # bisect the smallest arena in (lo, hi], hi known good
          "granularity": 16}
events:  {"event": "probe", "arena": A}  before each init (so a crash is attributable)
         {"event": "result", "arena": A, "ok": bool, "error": str}
         {"event": "invoked", "arena": A, "output": path}
         {"event": "done"}
"""
import json
import sys


def _emit(**kw):
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def _try(runtime, model, arena):
    _emit(event="probe", arena=arena)
    try:
        it = runtime.Interpreter.from_bytes(model, arena_size=arena)
    except (RuntimeError, ValueError) as e:
        _emit(event="result", arena=arena, ok=False, error=str(e).splitlines()[0] if str(e) else "")
        return None
    _emit(event="result", arena=arena, ok=True, error="")
    return it


def main(path):
    from tfmobile.process import die_with_parent

    die_with_parent()   # an orphan would keep running (and its parent's temp dir in use) after kill -9
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    with open(path) as f:
        req = json.load(f)
    with open(req["model"], "rb") as f:
        model = f.read()
    g = int(req.get("granularity", 16))
    if req.get("search"):
        lo, hi = req["search"]          # lo known bad (or 0), hi known good
        while hi - lo > g:
            mid = (lo + hi) // 2 // g * g
            if mid <= lo:
                mid = lo + g
            if _try(runtime, model, mid) is not None:
                hi = mid
            else:
                lo = mid
        _emit(event="search_done", lo=lo, hi=hi)
    if req.get("run_arena"):
        arena = int(req["run_arena"])
        it = _try(runtime, model, arena)
        if it is not None and req.get("input"):
            x = np.load(req["input"])
            d = it.get_input_details(0)
            _emit(event="invoking", arena=arena)
            outs = []
            for i in range(len(x)):
                it.set_input(x[i:i + 1].astype(d["dtype"]), 0)
                it.invoke()
                outs.append(np.array(it.get_output(0))[0])
            np.save(req["output"], np.stack(outs))
            _emit(event="invoked", arena=arena, output=req["output"])
    _emit(event="done")


if __name__ == "__main__":
    main(sys.argv[1])
