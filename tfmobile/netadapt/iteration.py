"""The steps of one NetAdapt iteration: budget -> proposals -> pick -> measure (``loop.search`` strings them).

Each step that takes time leaves its file in the run directory (``RunDir.step``): the plan (budget
and proposals, written before any proposal runs), each proposal's result, the pick's measurement;
a resumed run reads them back and redoes nothing.
"""
import math
import os
import shutil
import statistics
import time

from tfmobile.netadapt.config import COUNTED, UNITS, constrained_kinds
from tfmobile.netadapt.state import Point

MAX_HALVINGS = 5   # the step is halved at most 5 times (to 1/32) while too few groups meet the budget


# ------------------------------------------------------------------------------------------------
# the schedule and the selection (pure)
# ------------------------------------------------------------------------------------------------
def delta(search, i, start_value):
    return search.delta0 * search.decay ** (i - 1) * start_value


def budget_for(search, i, start_value, current_value, target_value, halvings=0):
    """current - delta_i (halved ``halvings`` times), never below the target."""
    return max(target_value, current_value - delta(search, i, start_value) / 2 ** halvings)


def predicted_budget(budget, current, current_predicted, path, first_step):
    """(the budget in the LUT's units, LUT units per measured unit) for a model measured ``current`` and
    predicted ``current_predicted``; ``path``: [(measured, predicted)] of the start and of every pick since,
    ending at the current model.

    The saving asked for is translated by the median of the current predicted / measured and of each step's
    LUT saving per measured saving (steps that saved at least half a first step: smaller ones are mostly
    measurement noise). Steps, not the ratio: ops timed alone miss a fixed cost per invoke that no width
    removes, so as the model shrinks predicted / measured falls (mbv2 a1.0 32x32: 0.77 at the start, 0.55
    after 12 iterations) while a saving stays about the same in both units (1.1); the ratio asked for about
    half of each step. A median, not the run's total: one pick the LUT misjudged (saved 0.0142 ms measured
    for 0.0032 predicted) set the total to 0.36 for the rest of a run whose other steps were 0.7-0.9, and the
    LUT, asked for steps that small, let 2-3x as many groups propose.
    """
    rates = [current_predicted / current]
    for (m0, p0), (m1, p1) in zip(path, path[1:]):
        if m0 - m1 >= first_step / 2 and p0 >= p1:
            rates.append((p0 - p1) / (m0 - m1))
    per_unit = statistics.median(rates)
    return current_predicted - (current - budget) * per_unit, per_unit


def saving_path(session, point, kind, first, start_predicted, now, current_predicted):
    """[(measured, predicted)] of the start and every pick since in ``kind`` (the primary resource's from the
    history; another kind's from the start to now, whose intermediate points the history does not predict)."""
    if kind != session.cfg.search.resource:
        return [(first, start_predicted), (now, current_predicted)]
    rows = [r for r in session.run_dir.history() if r["iteration"] <= point.iteration]
    return [(first, start_predicted)] + [(r["measured"], r["predicted"]) for r in rows]


def estimate_iterations(search, i, start_value, current_value, target_value):
    """How many more iterations (from i) the schedule needs to go from current to target."""
    n, v = 0, current_value
    while v > target_value and n < search.max_iterations:
        v -= delta(search, i + n, start_value)
        n += 1
    return n


def metric(select, proposal, current):
    """The selection score of a proposal (bigger is better) against the current model."""
    if select == "accuracy":
        return proposal["val_accuracy"]
    saved = current["predicted"] - proposal["predicted"]
    if saved <= 0:
        return -math.inf
    return (proposal["val_accuracy"] - current["val_accuracy"]) / saved


def choose(select, proposals, current):
    """The proposal with the best metric; ties go to the first (group order), so it is reproducible."""
    best = None
    for p in proposals:
        m = metric(select, p, current)
        if best is None or m > best[0]:
            best = (m, p)
    return best[1] if best else None


def pick(select, rows, point, plan=None):
    """The chosen proposal against ``point``; each row gets its ``metric`` (None for -inf: JSON has none).
    With several constraints the ratio is taken in the plan's driving resource (``driving_predicted``)."""
    current_predicted = (plan or {}).get("driving_predicted", point.predicted)
    current = {"predicted": current_predicted, "val_accuracy": point.val_accuracy}
    for r in rows:
        m = metric(select, r, current)
        r["metric"] = m if math.isfinite(m) else None
    return choose(select, rows, current)


# ------------------------------------------------------------------------------------------------
# prediction: the LUT first made complete, then read
# ------------------------------------------------------------------------------------------------
def ensure_lut(session, specs):
    """Measure the LUT entries ``specs`` lack (when latency is constrained; the other kinds need no LUT)."""
    if "latency" in constrained_kinds(session.cfg):
        from tfmobile.netadapt.resource import ensure_lut as ensure

        ensure(list(specs), session.lut, threads=session.cfg.measurement.threads)


def predict(session, spec, kind=None):
    """The LUT's (or the count's) value of ``spec`` (``kind``, default the primary ``--resource``): pure once
    ``ensure_lut`` saw it."""
    from tfmobile.netadapt.resource import resource

    return float(resource(spec, kind or session.cfg.search.resource, lut=session.lut,
                          threads=session.cfg.measurement.threads))


# ------------------------------------------------------------------------------------------------
# several constraints: which resource drives the iteration, which ones a proposal must keep
# ------------------------------------------------------------------------------------------------
def limits_of(session, start):
    """{kind: absolute limit} of every constrained resource (a start made without ``limits``: the target)."""
    return dict(start.limits) or {session.cfg.search.resource: start.target}


def resources_of(session, point):
    """{kind: measured value} of ``point`` (a point made without ``resources``: the primary's)."""
    return dict(point.resources) or {session.cfg.search.resource: point.measured}


def all_hold(session, start, point):
    """Whether every constrained resource of ``point`` is at or below its limit: the loop's end."""
    now = resources_of(session, point)
    return all(now[kind] <= limit for kind, limit in limits_of(session, start).items())


def driving_kind(session, start, point, i):
    """The resource furthest from its limit relative to its own schedule: the one whose schedule (its start
    value, its current value, its limit) needs the most iterations; ties go to the primary, then to the
    constraints' order."""
    first, now = resources_of(session, start.point), resources_of(session, point)
    primary = session.cfg.search.resource
    needs = {kind: estimate_iterations(session.cfg.search, i, first[kind], now[kind], limit)
             for kind, limit in limits_of(session, start).items() if now[kind] > limit}
    if not needs or needs.get(primary) == max(needs.values()):
        return primary
    return max(needs, key=lambda kind: needs[kind])   # max keeps the first of equal ones


def kept_limits(session, start, point, driving):
    """{kind: (limit, limit in predicted units)} of the constraints other than ``driving`` that already hold:
    a proposal predicted above one of them is discarded. The predicted-units limit scales the measured one by
    the current model's predicted / measured (as the budget is), so a prediction's scale error cancels."""
    now = resources_of(session, point)
    kept = {}
    for kind, limit in limits_of(session, start).items():
        if kind != driving and now[kind] <= limit:
            kept[kind] = (limit, limit * predict(session, point.spec, kind) / now[kind])
    return kept


def _format_value(value, kind):
    return f"{int(round(value))}" if kind != "latency" and abs(value - round(value)) < 1e-6 else f"{value:.4g}"


def _discard_breaking(session, found, kept, not_proposing):
    """``found`` without the proposals predicted above a limit that already holds; each discarded one is
    listed in ``not_proposing`` with why ("breaks flash <= 262144")."""
    if not kept:
        return found
    ensure_lut(session, [spec for _, _, _, spec in found])
    keep = []
    for name, from_width, width, spec in found:
        broken = [kind for kind, (_, limit_predicted) in kept.items() if predict(session, spec, kind) > limit_predicted]
        if broken:
            not_proposing.append({"group": name, "width": from_width, "proposed": width,
                                  "why": "breaks " + ", ".join(f"{k} <= {_format_value(kept[k][0], k)}"
                                                               for k in broken)})
        else:
            keep.append((name, from_width, width, spec))
    return keep


# ------------------------------------------------------------------------------------------------
# 1-2. budget and proposals
# ------------------------------------------------------------------------------------------------
def plan_iteration(session, start, point, i):
    """The budget and one proposal per group that meets it (iterations/NNN/plan.json), and why the
    other groups made none (``not_proposing``).

    The budget is in measured units; in the LUT's it is the current prediction less the saving asked for,
    translated by ``predicted_budget`` (the LUT ranks; the measurements decide). Entries the candidates add to the LUT
    keep its fixed overhead, so the current model's prediction is the same before and after the search.
    With several constraints the budget is the driving resource's (``driving_kind``), recorded as
    ``driving`` with its current prediction ``driving_predicted``.
    """
    ensure_lut(session, [point.spec])
    current_predicted = predict(session, point.spec)
    kind = driving_kind(session, start, point, i)
    driving_predicted = current_predicted if kind == session.cfg.search.resource else predict(session, point.spec,
                                                                                              kind)
    proposals, halvings, budget, budget_predicted, per_unit, not_proposing = propose(session, start, point, i, kind,
                                                                                     driving_predicted)
    step = delta(session.cfg.search, i, resources_of(session, start.point)[kind])
    plan = {"iteration": i, "delta": step / 2 ** halvings, "halvings": halvings, "budget": budget,
            "budget_predicted": budget_predicted, "predicted_per_measured": per_unit,
            "current_predicted": current_predicted, "proposals": proposals,
            "groups": len(proposals) + len(not_proposing), "not_proposing": not_proposing}
    if len(limits_of(session, start)) > 1:
        plan.update(driving=kind, driving_predicted=driving_predicted)
    return plan


AT_MINIMUM = "at its minimum width"
NO_WIDTH_MEETS = "no width meets the budget"
MEETS_UNSHRUNK = "the model meets the budget without shrinking it"
AT_LOWEST_RESOLUTION = "at the lowest resolution the network's strides allow"
RESOLUTION_MISSES = "one resolution step does not meet the budget"


def propose(session, start, point, i, kind, current_predicted):
    """(proposals, halvings, budget, budget in LUT units, LUT units per measured unit, not_proposing) in resource
    ``kind``: the step halved while fewer than ``--min_proposals`` groups meet it (small models, where the
    per-invoke overhead is most of the latency, or a memory peak that one group barely moves; a lone proposal is
    a forced pick, often of a gutted layer: mbv2's block_3 expansion 144 -> 8). After the last halving, the step
    that let the most groups propose (the largest of equals). not_proposing: [{group, width, why}] of the groups
    of that budget that made no proposal, or whose proposal broke a constraint that already holds."""
    from tfmobile.models.surgery import groups

    search = session.cfg.search
    every = groups(point.spec, channel_step=search.channel_multiple, at_minimum=True)
    first, now = resources_of(session, start.point)[kind], resources_of(session, point)[kind]
    limit, kept = limits_of(session, start)[kind], kept_limits(session, start, point, kind)
    # the start's prediction in this kind's LUT units (the primary's is recorded; another kind's predicted anew)
    start_predicted = (start.point.predicted if kind == search.resource else predict(session, start.point.spec, kind))
    path = saving_path(session, point, kind, first, start_predicted, now, current_predicted)
    best = None
    for halvings in range(MAX_HALVINGS + 1):
        budget = budget_for(search, i, first, now, limit, halvings)
        budget_predicted, per_unit = predicted_budget(budget, now, current_predicted, path, delta(search, 1, first))
        found, not_proposing = _channel_proposals(session, point.spec, every, budget_predicted, kind)
        if search.resolution_step:
            _resolution_proposal(session, point.spec, budget_predicted, kind, found, not_proposing)
        found = _discard_breaking(session, found, kept, not_proposing)
        if best is None or len(found) > len(best[0]) or not best[0]:   # none yet: the smallest step tried
            best = (found, not_proposing, halvings, budget, budget_predicted, per_unit)
        if len(found) >= search.min_proposals:
            break
    found, not_proposing, halvings, budget, budget_predicted, per_unit = best
    ensure_lut(session, [spec for _, _, _, spec in found])
    return ([{"group": name, "from_width": from_width, "width": w, "predicted": predict(session, spec, kind),
              "spec": spec.to_json(indent=None)} for name, from_width, w, spec in found], halvings, budget,
            budget_predicted, per_unit, not_proposing)


def _channel_proposals(session, spec, every, budget_predicted, kind):
    """([(group, from_width, width, spec)], not_proposing): each group's widest width meeting the budget."""
    from tfmobile.models.surgery import shrink
    from tfmobile.netadapt.resource import largest_width

    found, not_proposing = [], []
    for g in every:
        if not g.widths():
            not_proposing.append({"group": g.name, "width": g.width, "why": AT_MINIMUM})
            continue
        w = largest_width(spec, g, budget_predicted, kind, lut=session.lut, threads=session.cfg.measurement.threads)
        if w is not None and w < g.width:
            found.append((g.name, g.width, int(w), shrink(spec, g, w)))
        else:
            why = NO_WIDTH_MEETS if w is None else MEETS_UNSHRUNK
            not_proposing.append({"group": g.name, "width": g.width, "why": why})
    return found, not_proposing


def _resolution_proposal(session, spec, budget_predicted, kind, found, not_proposing):
    """The input resolution one ``--resolution_step`` lower (never below ``surgery.lowest_resolution``) as one more
    proposal (group ``surgery.RESOLUTION_GROUP``, width = the resolution) when it meets the budget."""
    from tfmobile.models.surgery import RESOLUTION_GROUP, lowest_resolution, with_resolution

    resolution = int(spec.input_shape[0])
    lower = resolution - session.cfg.search.resolution_step
    if lower < lowest_resolution(spec):
        not_proposing.append({"group": RESOLUTION_GROUP, "width": resolution, "why": AT_LOWEST_RESOLUTION})
        return
    candidate = with_resolution(spec, lower)
    ensure_lut(session, [candidate])
    if predict(session, candidate, kind) <= budget_predicted:
        found.append((RESOLUTION_GROUP, resolution, lower, candidate))
    else:
        not_proposing.append({"group": RESOLUTION_GROUP, "width": resolution, "why": RESOLUTION_MISSES})


# ------------------------------------------------------------------------------------------------
# 2. the proposals' short-term fine-tunes (on the pool), recorded one by one
# ------------------------------------------------------------------------------------------------
def run_proposals(session, point, i, plan, progress, teacher=None):
    """Each proposal of ``plan`` fine-tuned and validated (those already recorded are read back);
    returns their records in plan order. ``progress(done, todo, group, result)`` after each one.
    teacher: the start model's checkpoint, distilled from with ``--short_distill``."""
    run_dir, ft = session.run_dir, session.cfg.fine_tune
    distill = ({"teacher": teacher, "distill": ft.short_distill,
                "temperature": session.cfg.final.distill_temperature} if ft.short_distill else {})
    done = {}
    for p in plan["proposals"]:
        r = run_dir.proposal(i, p["group"])
        if r is not None and os.path.isfile(os.path.join(r["checkpoint"], "checkpoint.json")):
            done[p["group"]] = r
    todo = {p["group"]: {"group": p["group"], "width": p["width"], "spec": p["spec"], "parent": point.checkpoint,
                         "data": session.data.config, "steps": ft.short_steps, "bn_batches": ft.bn_batches,
                         "batch_size": ft.batch_size,
                         "lr": ft.short_lr, "seed": ft.seed, "augment": ft.augment, "shift": ft.shift,
                         "threads": ft.worker_threads, "output_dir": run_dir.proposal_dir(i, p["group"]),
                         **distill}
            for p in plan["proposals"] if p["group"] not in done}
    if done:
        session.log(f"iteration {i}: {len(done)} of {len(plan['proposals'])} proposals already done (resumed)")
    by_group = {p["group"]: p for p in plan["proposals"]}

    def on_result(group, result):
        done[group] = record_proposal(run_dir, i, by_group[group], result)
        progress(done, todo, group, result)

    if todo:
        session.pool.run(todo, on_result)
    return [done[p["group"]] for p in plan["proposals"]]


def record_proposal(run_dir, i, proposal, result):
    """One finished proposal (its checkpoint is already in its directory; the JSON means done)."""
    from tfmobile import train

    row = {k: proposal[k] for k in ("group", "from_width", "width", "predicted")}
    row.update({k: result[k] for k in ("val_accuracy", "train_accuracy", "seconds", "cpu_seconds") if k in result})
    row["checkpoint"] = os.path.join(run_dir.proposal_dir(i, proposal["group"]), train.CHECKPOINT_DIR)
    run_dir.save_proposal(i, proposal["group"], row)
    return row


# ------------------------------------------------------------------------------------------------
# 4. measuring a model on the one device
# ------------------------------------------------------------------------------------------------
def measure(session, checkpoint, directory, spec=None, not_above=None, against=None):
    """Convert, measure, keep the .tflite (DIRECTORY/measurement.json, DIRECTORY/model_int8.tflite).

    Every constrained resource is measured on the one conversion; the record is the primary's
    measurement, plus (several constraints) ``resources`` {kind: value} and each other kind's record
    under ``constraints``.
    not_above: the value this model cannot honestly exceed (the wider model it was cut from): a number
    (the primary's) or {kind: value}. A latency above it is a disturbed measurement on a shared CPU
    (observed: +50 % on one of three iterations under load), and the next budget starts from it, so the
    model is measured twice more and the median of the three kept (all three are recorded).
    against: the current Point, with ``--measure_pick interleaved``: see ``_measure_against``.
    """
    return session.run_dir.step(os.path.join(directory, "measurement.json"),
                                lambda: _measure_now(session, checkpoint, directory, spec, not_above, against))


def int8_as_exported(session, checkpoint, spec):
    """The checkpoint's int8 .tflite, converted as the final stage will export it when the file's bytes are a
    resource (flash, peak_sram) and the export is QAT: tfmot's wrappers name every tensor longer and quantize the
    classifier per tensor, so a post-training conversion of the same weights is smaller (mbv2 a0.35 at 40 px:
    628,032 B PTQ, 633,704 B QAT, the same for QAT-wrapped and QAT-trained weights), and a pick measured under a
    flash limit exported over it. Otherwise post-training int8 (7x faster to convert, the same op graph)."""
    from tfmobile import compress, convert, train

    model = train.load_checkpoint(checkpoint)
    if session.cfg.final.qat_epochs > 0 and set(constrained_kinds(session.cfg)) & {"flash", "peak_sram"}:
        model = compress.qat(model)
    return convert.to_tflite(model, "int8", representative_data=session.data.calibration_for(spec.input_shape))


def _measure_now(session, checkpoint, directory, spec, not_above, against):
    from tfmobile.io import write_bytes

    t = time.time()
    kinds, spec = constrained_kinds(session.cfg), spec or session.checkpoint_spec(checkpoint)
    tfl = None
    if any(kind not in COUNTED for kind in kinds):   # macs / params are counted on the spec: no conversion
        tfl = int8_as_exported(session, checkpoint, spec)
        write_bytes(session.run_dir.sub(directory, "model_int8.tflite"), tfl)
    if not isinstance(not_above, dict):
        not_above = {} if not_above is None else {kinds[0]: not_above}
    results = {kind: _measure_kind(session, kind, tfl, spec, directory, not_above.get(kind), against)
               for kind in kinds}
    m = results[kinds[0]]
    if len(kinds) > 1:
        m["resources"] = {kind: r["value"] for kind, r in results.items()}
        m["constraints"] = {kind: r for kind, r in results.items() if kind != kinds[0]}
    ensure_lut(session, [spec])
    m["predicted"] = predict(session, spec)
    m["seconds"] = round(time.time() - t, 2)
    return m


def _measure_kind(session, kind, tflite, spec, directory, not_above, against):
    """One resource of the converted model (latency interleaved with ``against``, or re-measured when above
    ``not_above``)."""
    if against is not None and kind == "latency":
        m = _measure_against(session, tflite, against)
    else:
        m = session.measurer.measure(tflite, kind, spec.to_json(indent=None))
    if not_above is not None and kind == "latency" and against is None and m["value"] > not_above:
        tries = [m] + [session.measurer.measure(tflite, "latency") for _ in range(2)]
        m = dict(sorted(tries, key=lambda r: r["value"])[1])
        m["repeats"] = [r["value"] for r in tries]
        session.log(f"{directory}: measured {tries[0]['value']:.4g} ms, above the wider model's {not_above:.4g} "
                    f"ms; measured twice more, kept the median {m['value']:.4g} ms")
    return m


def _measure_against(session, tflite, current):
    """The pick measured in alternating rounds with ``current`` (same measurer, same session); its value is
    ``current's latency * pick median / current median``, so a drift of the host between this session and
    the one that measured ``current`` cannot fake or hide a step."""
    from tfmobile.netadapt.measure import cv_of

    kept = os.path.join(os.path.dirname(current.checkpoint), "model_int8.tflite")
    if os.path.isfile(kept):   # the file its own measurement timed
        with open(kept, "rb") as f:
            current_tflite = f.read()
    else:
        current_tflite = int8_as_exported(session, current.checkpoint, current.spec)
    rounds, sessions = session.cfg.measurement.pick_rounds, session.cfg.measurement.pick_sessions
    answers = [session.measurer.measure_many({"current": current_tflite, "pick": tflite}, rounds)
               for _ in range(sessions)]
    ratios = [a["pick"]["value"] / a["current"]["value"] for a in answers]
    ratio = statistics.median_low(ratios)   # one disturbed session (0.76 where two others read 0.95) is outvoted
    both = answers[ratios.index(ratio)]
    current_latency = resources_of(session, current)["latency"]
    m = dict(both["pick"])
    m["value"] = current_latency * ratio
    m["interleaved"] = {"rounds": rounds, "sessions": sessions, "session_ratios": ratios,
                        "current_median": both["current"]["value"], "pick_median": both["pick"]["value"],
                        "ratio": ratio, "current_cv": cv_of(both["current"]), "pick_cv": cv_of(both["pick"]),
                        "current_measured": current_latency}
    return m


# ------------------------------------------------------------------------------------------------
# 3-4. the pick: kept, measured, recorded
# ------------------------------------------------------------------------------------------------
def keep_pick(session, i, pick):
    """Copy the pick's weights to iterations/NNN/checkpoint (whole or not at all); the directory."""
    chosen = os.path.join(session.run_dir.iteration_dir(i), "checkpoint")
    if not os.path.isfile(os.path.join(chosen, "checkpoint.json")):
        staging = chosen + ".incoming"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(pick["checkpoint"], staging)
        os.replace(staging, chosen)
    return chosen


def record_iteration(session, i, point, plan, rows, pick, started):
    """Measure the pick, append its line to history.jsonl, drop the other proposals' weights; the new point."""
    chosen = keep_pick(session, i, pick)
    interleaved = session.cfg.measurement.measure_pick == "interleaved"
    m = measure(session, chosen, os.path.relpath(session.run_dir.iteration_dir(i), session.run_dir.path),
                not_above=resources_of(session, point), against=point if interleaved else None)
    several = "driving" in plan
    predicted = m["predicted"] if several else pick["predicted"]   # the primary's (the pick's is the driving one's)
    t_iter, cpu_iter = started
    worker_cpu = sum(r.get("cpu_seconds", 0.0) for r in rows)
    row = {"iteration": i, "budget": plan["budget"], "budget_predicted": plan["budget_predicted"],
           "delta": plan["delta"], "groups": plan.get("groups"), "not_proposing": plan.get("not_proposing"),
           "proposals": [{k: r.get(k) for k in ("group", "from_width", "width", "predicted", "val_accuracy",
                                                "metric", "seconds")} for r in rows],
           "chosen": pick["group"], "width": pick["width"], "predicted": predicted,
           "measured": m["value"], "measurement": {k: v for k, v in m.items() if k != "predicted"},
           "prediction_error": (predicted - m["value"]) / m["value"],
           "prediction_error_scaled": (predicted / point.predicted * point.measured - m["value"])
           / m["value"],
           "val_accuracy": pick["val_accuracy"], "seconds": round(time.time() - t_iter, 2),
           "cpu_seconds": round(time.process_time() - cpu_iter + worker_cpu, 2)}
    if several:
        row.update(resources=m["resources"], driving=plan["driving"])
    session.run_dir.append_history(row)
    for r in rows:   # only the chosen proposal's weights are kept (the JSONs stay); after the line is written,
        if r["group"] != pick["group"]:   # so a kill before it leaves every proposal whole (nothing redone)
            shutil.rmtree(os.path.dirname(r["checkpoint"]), ignore_errors=True)
    unit = UNITS[session.cfg.search.resource]
    session.log(f"iteration {i}: chose {row['chosen']} -> {row['width']} (val {row['val_accuracy']:.4f}); "
                f"measured {row['measured']:.4g} {unit} (budget {row['budget']:.4g}, predicted "
                f"{row['predicted']:.4g} in LUT units), {row['seconds']:.0f} s"
                + (f"; driven by {row['driving']}, resources {row['resources']}" if several else ""))
    return point_of(session, row)


def point_of(session, row):
    """The point an iteration's history line stands for."""
    checkpoint = os.path.join(session.run_dir.iteration_dir(row["iteration"]), "checkpoint")
    return Point(row["iteration"], session.checkpoint_spec(checkpoint), checkpoint, row["measured"],
                 row["predicted"], row["val_accuracy"],
                 dict(row.get("resources") or {session.cfg.search.resource: row["measured"]}))
