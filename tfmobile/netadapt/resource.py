"""Resources of a ModelSpec without building or converting it: latency, MACs, params, TFLM SRAM, flash.

NetAdapt asks "what is the largest width of this group that meets the budget?" for every group at
every iteration; converting each candidate to int8 TFLite takes seconds. ``tfmobile.analysis.int8_ops``
instead derives the int8 converter's ops and their LUT keys from the spec (each block kind's ``int8``
rule), so ``latency`` is the LUT prediction of ``tfmobile.bench.lut`` (same overhead, context scale
and clocks) with no conversion, and peak SRAM / flash are ``analysis.tflm_arena`` / ``int8_flash``.

Filling the LUT is one explicit step, ``ensure_lut(specs, lut)``: it measures the entries the specs
need that the LUT lacks (on one-op models synthesized from their configurations) and saves once.
Prediction afterwards is pure: ``resource`` never measures and never writes the LUT (a missing entry
is a UserError), so the same spec and LUT always give the same number.

    from tfmobile.netadapt.resource import resource, largest_width
    from tfmobile.netadapt.resource import ensure_lut
    ensure_lut([spec], "lut.json")                   # measure what this host's LUT lacks
    resource(spec, "latency", lut="lut.json")        # ms on this host's LUT device
    resource(spec, "peak_sram")                      # bytes of TFLM tensor arena
    largest_width(spec, group, budget_ms, "latency", "lut.json")
"""
import functools
import math

from tfmobile import analysis
from tfmobile.analysis import int8_ops  # noqa: F401  (the spec's int8 ops, for NetAdapt's callers)
from tfmobile.analysis.int8 import check_spec
from tfmobile.analysis.op_config import config_macs
from tfmobile.bench import lut as lut_mod
from tfmobile.bench import synth
from tfmobile.errors import UserError
from tfmobile.models import ModelSpec
from tfmobile.models.surgery import groups as groups_of
from tfmobile.models.surgery import shrink
from tfmobile.netadapt.config import KINDS


def _lut_layers(derived):
    return [{"index": i, "op": o["op"], "name": f"{o['op'].lower()}_{i}", "key": o["key"], "config": o["config"],
             "macs": config_macs(o["config"])} for i, o in enumerate(derived["ops"])]


def ensure_lut(specs, lut, threads=1, verbose=False, backend="litert"):
    """Make ``lut`` (a path or a LUT dict) hold every op entry ``specs`` (a ModelSpec or a list) need.

    The entries it lacks for this device are timed on one-op models synthesized from their
    configurations and the LUT saved once (a path) or updated in place (a dict); the fixed overhead
    already in the LUT is kept, so adding entries never moves another spec's prediction. A LUT of
    another device is refused. Returns how many entries were measured.
    """
    specs = [specs] if isinstance(specs, ModelSpec) else list(specs)
    table = lut_mod.check_device(lut, backend, threads)
    present = lut_mod.device_entries(table, backend, threads)
    wanted = {}
    for spec in specs:
        for o in int8_ops(spec)["ops"]:
            if (present is None or o["key"] not in present) and o["key"] not in wanted:
                wanted[o["key"]] = (o["op"], functools.partial(synth.one_op_model, o["config"], o["const_values"]))
    if not wanted and present is not None and lut_mod.has_overhead(table, backend, threads):
        return 0
    lut_mod.build_lut([], table, backend, threads, verbose=verbose, one_op_models=wanted, keep_overhead=True)
    if not isinstance(lut, dict):
        lut_mod.save_lut(table, lut)
    return len(wanted)


def latency(spec, lut, backend="litert", threads=1, clock=None, detail=False):
    """Predicted latency (ms) of ``spec``'s int8 model on the LUT's device, without converting it.

    lut: a path or a LUT dict (a dict avoids reading the file on every call). Pure: an entry the LUT
    lacks is a UserError (``ensure_lut`` first); a LUT that holds only other devices is refused.
    """
    out = lut_mod.predict_ops(_lut_layers(int8_ops(spec)), lut, backend, threads, clock=clock)
    return out if detail else out["predicted_ms"]


def macs(spec):
    """Multiply-accumulates of the int8 graph (convolutions, depthwise, fully connected), as analysis counts them."""
    return sum(config_macs(o["config"]) for o in int8_ops(spec)["ops"])


def resource(spec, kind, lut=None, backend="litert", threads=1, clock=None):
    """One resource of ``spec``: latency (ms, needs ``lut`` holding its entries: ``ensure_lut``), macs,
    params, peak_sram (bytes of TFLM tensor arena) or flash (bytes of the int8 .tflite). Pure."""
    if kind not in KINDS:
        raise UserError(f"unknown resource kind {kind!r}; choose one of {', '.join(KINDS)}")
    if kind == "latency":
        if lut is None:
            raise UserError("latency needs a LUT (lut= a path or a LUT dict)")
        return latency(spec, lut, backend, threads, clock)
    if kind == "macs":
        return macs(spec)
    if kind == "params":
        check_spec(spec)
        return analysis.profile(spec).params
    derived = int8_ops(spec)
    if kind == "peak_sram":
        return analysis.tflm_arena(derived)["arena_bytes"]
    return analysis.int8_flash(derived)["flash_bytes"]


def largest_width(spec, group, budget, kind, lut=None, threads=1, **resource_kwargs):
    """The largest width of ``group`` (a netadapt Group or its name: its current width, then ``group.widths()``,
    the multiples of its channel step below it, descending) whose ``kind`` resource meets ``budget``; None when
    even one step does not. For latency each candidate's entries are put in the LUT first (``ensure_lut``),
    then predicted purely; a LUT path is read once and saved once.

    Searched from the top down rather than by bisection: latency from a LUT is not monotone in the width
    (int8 kernels favour some channel counts), and the first width that fits is the one NetAdapt wants.
    """
    group = _group_named(spec, group)
    if not (isinstance(budget, (int, float)) and not isinstance(budget, bool) and math.isfinite(budget)):
        raise UserError(f"budget must be a finite number, got {budget!r}")
    fills_lut = kind == "latency" and lut is not None
    table = lut_mod.load_lut(lut) if fills_lut else lut     # read once, not once per candidate
    measured = 0
    try:
        for width in [group.width] + group.widths():
            candidate = spec if width == group.width else shrink(spec, group, width)
            if fills_lut:
                measured += ensure_lut([candidate], table, threads=threads,
                                       backend=resource_kwargs.get("backend", "litert"))
            if resource(candidate, kind, table, threads=threads, **resource_kwargs) <= budget:
                return width
        return None
    finally:
        if measured and not isinstance(lut, dict):
            lut_mod.save_lut(table, lut)


def _group_named(spec, group):
    if not isinstance(group, str):
        return group
    found = [g for g in groups_of(spec) if g.name == group]
    if not found:
        raise UserError(f"spec {spec.name} has no channel group {group!r}")
    return found[0]
