"""NetAdapt: shrink a trained model until its measured latency (or memory) meets a target (and every --constraint).

    python -m pipelines.netadapt --model mbv2 --alpha 1.0 --resolution 32 --epochs 10 --target 0.5 --output_dir runs/na
    python -m pipelines.netadapt --checkpoint runs/mbv2/checkpoint --target_ms 0.06 --workers 2 --output_dir runs/na
    python -m pipelines.netadapt --checkpoint C --resource peak_sram --target 256KB --output_dir runs/na_sram
    python -m pipelines.netadapt --checkpoint C --resource peak_sram --target 64KB --constraint flash=256KB
        --resolution_step 8 --output_dir runs/na_mcu              # several limits; the input resolution too
    python -m pipelines.netadapt ... --ray_address auto          # proposals as Ray tasks
    python -m pipelines.netadapt ... --resume                     # after a kill: continues, redoes nothing

Writes OUTPUT_DIR/history.jsonl, iterations/NNN/ (plan, proposals, chosen checkpoint, measurement),
final/ (spec.json, checkpoints, int8 .tflite, TFLM files), report.md, report.json, netadapt.png.
Exit 2 with one line on bad input, or when the target could not be met (the report is written).
"""
from absl import flags

from pipelines import _cli
from tfmobile.netadapt import config

FLAGS = flags.FLAGS
config.define_flags(FLAGS)   # one flag per setting of tfmobile.netadapt.config, with its default
flags.adopt_module_key_flags(config)   # --help lists them
flags.DEFINE_boolean("json", False, "print exactly one JSON object on stdout.")


def render(rep):
    from tfmobile.netadapt.report import markdown

    return markdown(rep) + f"\nreport: {rep['report_md']}\n"


def main(argv):
    from tfmobile.netadapt import loop

    rep = loop.run(config.from_flags(FLAGS), FLAGS.output_dir, resume=FLAGS.resume)
    _cli.emit(rep, FLAGS.json, render)
    return 0


if __name__ == "__main__":
    _cli.run(main)
