"""NetAdapt report: markdown tables and the accuracy-vs-measured-resource plot."""


def _f(v, fmt="{:.4g}"):
    return "-" if v is None else fmt.format(v)


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f} %"


def markdown(rep):
    unit = rep["unit"]
    s = rep["start"]
    lines = [f"# NetAdapt: {s['model']}, {rep['resource']} to {_f(rep['target_value'])} {unit}", "",
             f"Status: **{rep['status']}**. Start: measured {_f(s['measured'])} {unit} (LUT/prediction "
             f"{_f(s['predicted'])}), validation top-1 {_pct(s['val_accuracy'])}. Selection: {rep['select']}. "
             f"Proposals ran on {rep['workers']}.", "",
             "Iterations (validation accuracy after the short-term fine-tune; measured = the int8 model on the "
             "measuring device, which sets the next budget):", "",
             f"| iteration | budget ({unit}) | chosen | width | predicted | measured | wall-clock cv | "
             "prediction error | val top-1 | proposals | wall s | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for h in rep["iterations"]:
        m = h.get("measurement") or {}
        lines.append(f"| {h['iteration']} | {_f(h['budget'])} | {h['chosen']} | {h['width']} | {_f(h['predicted'])} "
                     f"| {_f(h['measured'])} | {_f(m.get('cv'), '{:.3f}')} | "
                     f"{_f(100 * h['prediction_error'], '{:+.1f} %')} | {_pct(h['val_accuracy'])} "
                     f"| {len(h['proposals'])} | {h['seconds']:.0f} | {_f(h.get('cpu_seconds'), '{:.0f}')} |")
    r = rep["reached"]
    lines += ["", f"Reached: {_f(r['measured'])} {unit} at iteration {r['iteration']}.", ""]
    steps = s.get("train_steps")
    if steps:
        lines += [f"Start training: {steps} optimizer steps ({s.get('train_epochs')} passes over the training "
                  "images); the baselines' budget adds the long-term fine-tune's passes to these.", ""]
    fin = rep.get("final")
    if fin:
        lines += ["## Final model and width-multiplier baselines", "", final_stage_line(fin), "",
                  "Accuracy: the int8 .tflite in LiteRT on the test set. Measured together (interleaved rounds).", "",
                  f"| model | measured ({unit}) | LiteRT test top-1 | int8 bytes | TFLM arena (bytes) |",
                  "|---|---|---|---|---|",
                  f"| NetAdapt | {_f(fin['measured'])} | {_pct(fin['accuracy'])} | {fin['size_bytes']} | "
                  f"{(fin.get('tflm') or {}).get('arena_bytes', '-')} |"]
        for b in rep.get("baselines") or []:
            at = f" at {b['resolution']}x{b['resolution']}" if b.get("resolution") else ""
            lines.append(f"| width multiplier {b['alpha']:g}{at} ({b['epochs']} epochs) | {_f(b['measured'])} | "
                         f"{_pct(b['accuracy'])} | {b['size_bytes']} | {(b.get('tflm') or {}).get('arena_bytes', '-')} |")
        c = rep.get("comparison")
        if c:
            dominated = c.get("dominated_baselines")
            lines += ["", f"- {rep['resource']} ratio at equal accuracy (NetAdapt / baseline curve): "
                          f"{_f(c.get('ratio_at_equal_accuracy'), '{:.3f}')}"
                          + (" at most (more accurate than every baseline: the ratio to the most accurate one)"
                             if c.get("ratio_is_upper_bound") else "")
                          + (f" (the curve leaves out width multiplier {', '.join(f'{a:g}' for a in dominated)}: "
                             "a faster one is at least as accurate)" if dominated else ""),
                      f"- accuracy gain at equal {rep['resource']}: "
                      f"{_f(None if c.get('accuracy_gain_at_equal_value') is None else 100 * c['accuracy_gain_at_equal_value'], '{:+.2f} points')}"]
            if c.get("lowest_ratio_at_target") is not None:
                lines.append(f"- lowest ratio a model at the target can get: {c['lowest_ratio_at_target']:.3f} (the target "
                             "over the most accurate baseline's value)")
            w = c.get("widest_baseline_meeting_target")
            if w:
                lines.append(f"- widest width multiplier meeting the target: {w['alpha']:g} ({_f(w['measured'])} {unit}, "
                             f"{_pct(w['accuracy'])}); NetAdapt {100 * w['accuracy_gain']:+.2f} points")
        lines.append("")
    if rep.get("constraints"):
        lines += constraints_section(rep["constraints"])
    if rep.get("mcu"):
        lines += mcu_section(rep["mcu"])
    t = rep["timings"]
    lines += ["## Time", ""] + [f"- {k}: {v}" for k, v in t.items()] + ["", "![NetAdapt](netadapt.png)", ""]
    return "\n".join(lines)


def _bytes(v):
    return "-" if v is None else f"{int(v):,} B ({v / 1024:.1f} KB)"


def _value(v, unit):
    return _bytes(v) if unit == "bytes" and v is not None else f"{_f(v)} {unit}"


def constraints_section(constraints):
    """Every constraint of the run: its limit, the final model's measured value, the verdict."""
    lines = ["## Constraints (final model, measured)", "", "| resource | limit | measured | verdict |",
             "|---|---|---|---|"]
    for c in constraints:
        lines.append(f"| {c['kind']} | {_value(c['limit'], c['unit'])} | {_value(c['measured'], c['unit'])} | "
                     f"{c['verdict']} |")
    return lines + [""]


def mcu_section(mcu):
    """The final model as the firmware will run it (TFLM), the baseline grid and the best fitting point."""
    f = mcu["final"]
    agree = f.get("tflm_agreement") or {}
    lines = ["## MCU fit", "",
             f"Final model: {f['resolution']}x{f['resolution']} input, TFLM arena {_bytes(f['arena_bytes'])} "
             f"(measured in TFLite-Micro), flash {_bytes(f['flash_bytes'])} (the int8 .tflite), "
             f"{_f(f['macs'], '{:,}')} MACs.", "",
             f"- test top-1: LiteRT {_pct(f['accuracy'])}, TFLite-Micro {_pct(f['tflm_accuracy'])} "
             f"on the same {f.get('tflm_test_images', '-')} images"
             + (f" (top-1 agrees on {agree['agreeing']} of them)" if agree.get("agreeing") is not None else "")]
    for kind, v in (f.get("budget") or {}).items():
        lines.append(f"- {kind}: {_bytes(v['measured'])} of {_bytes(v['limit'])}: **{v['verdict']}**")
    if f.get("c_array"):
        lines.append(f"- firmware files: `{f['c_array']}`, `{f['header']}`"
                     + (f", `{f['op_resolver']}`" if f.get("op_resolver") else ""))
    if f.get("tflm_error"):
        lines.append(f"- TFLM export failed: {f['tflm_error']}")
    lines += ["", mcu["latency_note"], ""]
    grid = mcu.get("grid") or []
    if grid:
        lines += ["Baseline grid (width multiplier x resolution, the same training budget; int8 in LiteRT on the "
                  "test set; arena measured in TFLM):", "",
                  "| alpha | resolution | TFLM arena | flash | MACs | LiteRT test top-1 | fits every constraint |",
                  "|---|---|---|---|---|---|---|"]
        for g in sorted(grid, key=lambda g: (g["alpha"], g["resolution"])):
            lines.append(f"| {g['alpha']:g} | {g['resolution']} | {_bytes(g['arena_bytes'])} | "
                         f"{_bytes(g['flash_bytes'])} | {_f(g.get('macs'), '{:,}')} | {_pct(g['accuracy'])} | "
                         f"{'yes' if g['fits'] else 'no'}"
                         + ("" if g.get("trained", True) else " (not trained: " + g["why_untrained"] + ")") + " |")
        best = mcu.get("best_fitting")
        lines.append("")
        if best is None:
            lines.append("No grid point fits every constraint.")
        else:
            r = best["resolution"]
            lines.append(f"Best fitting grid point: alpha {best['alpha']:g} at {r}x{r}, "
                         f"{_pct(best['accuracy'])} (TFLM {_pct(best.get('tflm_accuracy'))}); the NetAdapt model is "
                         f"{mcu['gain_points']:+.2f} points over it.")
        lines.append("")
    return lines


def final_stage_line(fin):
    """Which final stage ran, why (the default or --final) and how long, in one line."""
    why = {"default": " (the default)", "--final": " (chosen with --final)"}.get(fin.get("final_stage_chosen_by"), "")
    return (f"Final stage: **{fin.get('final_stage')}**{why}: {fin.get('final_stage_what') or ''}"
            f"{'' if fin.get('distillation') else '; no distillation'}.")


def plot(rep, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfmobile.io import atomic_path

    unit = rep["unit"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    xs = [rep["start"]["measured"]] + [h["measured"] for h in rep["iterations"]]
    ys = [100 * rep["start"]["val_accuracy"]] + [100 * h["val_accuracy"] for h in rep["iterations"]]
    ax.plot(xs, ys, "o-", ms=4, label="NetAdapt trajectory (validation, float, after short-term fine-tune)")
    fin = rep.get("final")
    if fin:
        ax.plot([fin["measured"]], [100 * fin["accuracy"]], "*", ms=14, label="NetAdapt final (int8, LiteRT test)")
    bases = sorted(rep.get("baselines") or [], key=lambda b: b["measured"])
    if bases:
        ax.plot([b["measured"] for b in bases], [100 * b["accuracy"] for b in bases], "s--",
                label="width multiplier (int8, LiteRT test)")
        for b in bases:
            label = f"{b['alpha']:g}" + (f"@{b['resolution']}" if b.get("resolution") else "")
            ax.annotate(label, (b["measured"], 100 * b["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(4, -10))
    ax.axvline(rep["target_value"], color="grey", ls=":", lw=1, label="target")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.set_xlabel(f"measured {rep['resource']} ({unit})")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"NetAdapt on {rep['start']['model']}: accuracy vs measured {rep['resource']}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
