"""How much of a §4 verdict (issue 19) is the test set's sampling: a paired bootstrap of the ratio and the gain.

    python benchmarks/netadapt_ratio_interval.py --setting_dir docs/benchmark_data/netadapt/mbv2_a1_r32 --json

Why: the ratio is read where the width multiplier's curve is flat (mbv2 32x32: alpha 0.5 -> 0.75 is +0.9 points for
1.8x the latency), so a few tenths of a point of top-1 move it by a tenth. From the committed files of a setting
(manifest.json: the .tflite files and their interleaved latencies), each int8 model runs in LiteRT on the 10,000
test images (its top-1 must equal the manifest's); then the test images are resampled with replacement, the same
indices for every model (paired: a hard image is hard for all), and the ratio at equal accuracy and the gain at
equal latency are read on the multiplier's frontier (``netadapt.final.compare``) for each resample. Latencies stay
the manifest's. Not in the interval: the training seeds (one model each) and the latency measurement's noise.
"""
import json
import os

import numpy as np

import tfmobile  # noqa: F401
from absl import flags

from pipelines import _cli

flags.DEFINE_list("setting_dir", None, "directories holding a setting's manifest.json and .tflite files.")
flags.DEFINE_string("data_dir", "/usr/share/datasets/fashion-mnist", "Fashion-MNIST IDX directory (the test images).")
flags.DEFINE_integer("resamples", 2000, "bootstrap resamples of the test images.")
flags.DEFINE_integer("seed", 0, "seed of the resampling.")
flags.DEFINE_multi_string("max_ratio", ["mbv2=0.55", "mbv1=0.70"], "the ratio goal per setting (model=value).")
flags.DEFINE_float("min_gain_points", 1.5, "the gain goal, top-1 points over the curve.")
flags.DEFINE_boolean("json", False, "print one JSON object.")
FLAGS = flags.FLAGS

PERCENTILES = (5, 50, 95)


def goal_for(setting, values):
    """The value of ``model=value`` whose model starts the setting's name (mbv2_a1_r32 -> mbv2); None if none."""
    return _cli.value_for(values, setting.split("_")[0])


def load_manifest(directory):
    from tfmobile.errors import UserError

    path = os.path.join(directory, "manifest.json")
    if not os.path.isfile(path):
        raise UserError(f"--setting_dir {directory}: no manifest.json there")
    with open(path) as f:
        man = json.load(f)
    missing = [k for k in ("setting", "netadapt", "baselines", "accuracy", "latency_ms") if k not in man]
    if missing:
        raise UserError(f"{path}: not issue 19's manifest (lacks {', '.join(missing)})")
    return man


def correct_per_image(directory, man, x_test, y_test):
    """{file: bool array} of the NetAdapt model and every baseline; each top-1 checked against the manifest."""
    from tfmobile import evaluation
    from tfmobile.errors import UserError

    out = {}
    for name in [man["netadapt"]] + list(man["baselines"].values()):
        _cli.progress(f"netadapt_ratio_interval: {man['setting']}: LiteRT on {len(y_test)} test images: {name}")
        pred = evaluation.predict_tflite(os.path.join(directory, name), x_test)["predictions"]
        out[name] = pred == np.asarray(y_test)
        top1 = float(out[name].mean())
        if abs(top1 - man["accuracy"][name]) > 1e-9:
            raise UserError(f"{name}: LiteRT top-1 {top1:.4f} here, {man['accuracy'][name]:.4f} in the manifest")
    return out


def compare_at(man, accuracy):
    """``final.compare`` of the NetAdapt model against the baselines with the accuracies ``accuracy`` {file: top-1}."""
    from tfmobile.netadapt.final import compare_models

    lat, na = man["latency_ms"], man["netadapt"]
    return compare_models((lat[na], accuracy[na]), {k: (lat[f], accuracy[f]) for k, f in man["baselines"].items()},
                          lat[na])


def interval(values):
    finite = [v for v in values if v is not None]
    row = {"defined": len(finite), "of": len(values)}
    if finite:
        row.update({f"p{q}": float(np.percentile(finite, q)) for q in PERCENTILES})
    return row


def one_setting(directory, x_test, y_test, rng):
    man = load_manifest(directory)
    correct = correct_per_image(directory, man, x_test, y_test)
    measured = compare_at(man, {f: float(c.mean()) for f, c in correct.items()})
    ratios, gains = [], []
    n = len(y_test)
    for _ in range(FLAGS.resamples):
        idx = rng.integers(0, n, n)
        c = compare_at(man, {f: float(v[idx].mean()) for f, v in correct.items()})
        ratios.append(c.get("ratio_at_equal_accuracy"))
        gain = c.get("accuracy_gain_at_equal_value")
        gains.append(None if gain is None else 100 * gain)
    max_ratio = goal_for(man["setting"], FLAGS.max_ratio)
    out = {"setting": man["setting"], "test_images": n, "resamples": FLAGS.resamples,
           "measured": {"ratio_at_equal_accuracy": measured.get("ratio_at_equal_accuracy"),
                        "gain_points": None if measured.get("accuracy_gain_at_equal_value") is None
                        else 100 * measured["accuracy_gain_at_equal_value"],
                        "dominated_baselines": measured.get("dominated_baselines", [])},
           "ratio_at_equal_accuracy": interval(ratios), "gain_points": interval(gains)}
    if max_ratio is not None:
        out["share_meeting_ratio_goal"] = {"limit": max_ratio,
                                           "share": sum(r is not None and r <= max_ratio for r in ratios) / len(ratios)}
    out["share_meeting_gain_goal"] = {"limit": FLAGS.min_gain_points,
                                      "share": sum(g is not None and g >= FLAGS.min_gain_points for g in gains)
                                      / len(gains)}
    return out


def main(argv):
    from tfmobile import data
    from tfmobile.errors import UserError

    if not FLAGS.setting_dir:
        raise UserError("--setting_dir is required (a directory with issue 19's manifest.json)")
    if FLAGS.resamples < 1:
        raise UserError(f"--resamples must be >= 1, got {FLAGS.resamples}")
    for d in FLAGS.setting_dir:
        goal_for(load_manifest(d)["setting"], FLAGS.max_ratio)   # bad input: one line, before any inference
    test = data.load_fashion_mnist(FLAGS.data_dir)
    rng = np.random.default_rng(FLAGS.seed)
    return {"what": "paired bootstrap over the test images only (not seeds, not latency noise)",
            "settings": [one_setting(d, test.x_test, test.y_test, rng) for d in FLAGS.setting_dir]}


def _render(r):
    lines = [r["what"]]
    for s in r["settings"]:
        ratio, gain = s["ratio_at_equal_accuracy"], s["gain_points"]
        lines.append(f"{s['setting']}: ratio {s['measured']['ratio_at_equal_accuracy']:.3f} "
                     f"(90 % interval {ratio.get('p5', float('nan')):.3f}-{ratio.get('p95', float('nan')):.3f}, "
                     f"defined in {ratio['defined']}/{ratio['of']}), gain {s['measured']['gain_points']:+.2f} points "
                     f"({gain.get('p5', float('nan')):+.2f} to {gain.get('p95', float('nan')):+.2f})")
        if "share_meeting_ratio_goal" in s:
            lines.append(f"  resamples meeting ratio <= {s['share_meeting_ratio_goal']['limit']}: "
                         f"{100 * s['share_meeting_ratio_goal']['share']:.1f} %; gain >= "
                         f"{s['share_meeting_gain_goal']['limit']}: {100 * s['share_meeting_gain_goal']['share']:.1f} %")
    return "\n".join(lines)


if __name__ == "__main__":
    _cli.run_and_emit(main, _render)
