"""NetAdapt's settings: the one place each is declared (the CLI's flags are made from it).

    cfg = LoopConfig.of(model="mbv2", resolution=32, target=0.5)     # flat names: the CLI's flags
    cfg.search.resource, cfg.fine_tune.short_steps, cfg.final.mode   # grouped, as the code reads them

Every setting has one flat name (its ``--flag``, its key in the fingerprint that ``--resume``
checks, its keyword in ``LoopConfig.of``) and one default, here. ``define_flags`` makes the absl
flags from these fields and ``from_flags`` builds the config back: plain dataclasses, because the
settings must stay one flat namespace on the command line (``ml_collections``' config flags would
make them ``--config.search.delta0``).

Light on purpose (no TensorFlow): ``pipelines.netadapt`` reads it before the slow imports.
"""
import dataclasses
import math
import os

from tfmobile.errors import UserError

# The resources NetAdapt can drive down, their units, and those counted on the spec (nothing to
# convert or time).
KINDS = ("latency", "macs", "params", "peak_sram", "flash")
UNITS = {"latency": "ms", "macs": "MACs", "params": "params", "peak_sram": "bytes", "flash": "bytes"}
COUNTED = ("macs", "params")
SELECTIONS = ("ratio", "accuracy")
FINAL_MODES = ("fine_tune", "from_scratch", "rewind")
PICK_MEASUREMENTS = ("single", "interleaved")
BACKENDS = ("litert", "benchmark_litert", "benchmark_model", "android")
# What a --resume may change while no iteration has begun: the target (the start does not depend on it)
RETARGETABLE = ("target", "target_value", "max_iterations")


def setting(default, help_text, choices=None, flag=True, name=None, repeated=False):
    """A config field: its default, its ``--help`` line, and how it appears on the command line.

    flag=False: no flag of its own (set from other flags, e.g. ``target`` from ``--target``);
    name: its flat name when the field's own would read badly in its group (``final.mode`` is ``--final``);
    repeated: a tuple given as one flag per item (``--constraint a --constraint b``), not comma-separated.
    """
    return dataclasses.field(default=default, metadata={"help": help_text, "choices": choices, "flag": flag,
                                                        "name": name, "repeated": repeated})


@dataclasses.dataclass
class Start:
    checkpoint: str = setting(None, "start from this float checkpoint (from pipelines.train).")
    model: str = setting("mbv2", "zoo model trained first when no --checkpoint.")
    alpha: float = setting(1.0, "width multiplier of --model.")
    resolution: int = setting(32, "input resolution of --model.")
    # None: the main job's step-based schedule for the data (data.default_schedule): 10 epochs of a small
    # --data_dir left the start near chance
    epochs: int = setting(None, "training epochs (passes) of --model before the loop (default: the step-based "
                                "schedule for the data, as pipelines.main).")
    lr: float = setting(None, "peak learning rate of the start training and the baselines (default train's).")
    # Keras' 0.999 left the zoo start at chance in eval mode after a short run (train 0.54, val 0.10)
    bn_momentum: float = setting(0.9, "BatchNorm momentum of --model (Keras' 0.999 lags in short runs).")


@dataclasses.dataclass
class Data:
    data_dir: str = setting(None, "Fashion-MNIST IDX dir or class-subfolder image dir (default: the Debian "
                                  "package, else the shipped subset).")
    subset: bool = setting(False, "use the Fashion-MNIST subset shipped in the repo.")
    limit: int = setting(None, "use only this many training images (stratified).")
    val_fraction: float = setting(0.1, "fraction of the training images held out for proposal selection.")


@dataclasses.dataclass
class Search:
    resource: str = setting("latency", "what to reduce.", choices=KINDS)
    target: float = setting(None, "fraction of the start's measured value", flag=False)
    target_value: float = setting(None, "absolute (ms for latency, bytes for memory, count for macs/params)",
                                  flag=False)
    delta0: float = setting(0.06, "first step, as a fraction of the start (delta_i = delta0 * decay^(i-1)).")
    decay: float = setting(0.96, "step decay per iteration.")
    max_iterations: int = setting(100, "stop after this many iterations.")
    select: str = setting("ratio", "ratio: max dAcc/|dLatency| (MobileNetV3); accuracy: max accuracy (NetAdapt).",
                          choices=SELECTIONS)
    channel_multiple: int = setting(8, "proposals' widths are multiples of this (int8 kernels favour 8; 1 = any "
                                       "width).")
    # 3, not 1: a lone proposal is a forced pick, often of a gutted layer (mbv2 32x32: block_3's expansion 144 -> 8;
    # 64x64: three in a row); 3 never took one, and its mbv2 32x32 architecture was +0.83 points on three training
    # seeds' mean and 6 % faster (64x64: +0.46, one seed; docs/netadapt_results.md)
    min_proposals: int = setting(3, "halve the step (at most 5 times) while fewer groups than this can meet it "
                                    "(1: only while none can).")
    constraints: tuple = setting((), "another resource that must also end at or below a limit, as kind=value "
                                     "(value as --target: flash=256KB, latency=0.05ms, macs=0.5); repeatable.",
                                 name="constraint", repeated=True)
    resolution_step: int = setting(0, "also propose lowering the input resolution by this many pixels each "
                                      "iteration (0: off; never below what the network's strides allow).")


@dataclasses.dataclass
class FineTune:
    # 50, not the 200 that rank best: with the from-scratch final stage the scores only steer the search; 50 found
    # a better architecture at 0.38 of the iteration time (docs/netadapt_results.md, "What an iteration costs")
    short_steps: int = setting(50, "short-term fine-tune steps per proposal (T; 0: scored right after the BN "
                                   "re-estimation).")
    bn_batches: int = setting(0, "training batches that re-estimate each proposal's BatchNorm statistics (forward "
                                 "only, weights frozen) before its fine-tune; 0 = off.")
    short_lr: float = setting(5e-4, "short-term fine-tune peak learning rate.")
    short_distill: float = setting(0.0, "weight of the start model's soft targets in each proposal's short-term "
                                        "fine-tune (distillation at --distill_temperature; 0: off).")
    batch_size: int = setting(64, "batch size of every training step.")
    seed: int = setting(0, "seed: data split, order, initialisation.")
    augment: bool = setting(True, "augment the proposals' fine-tuning data", flag=False)
    shift: float = setting(0.0, "random shift of the proposals' fine-tuning data", flag=False)
    worker_threads: int = setting(1, "TensorFlow threads per proposal worker (same in every mode, so the chosen "
                                     "sequence does not depend on --workers / Ray).")


@dataclasses.dataclass
class Measurement:
    backend: str = setting("litert", "latency backend (as pipelines.benchmark).", choices=BACKENDS)
    threads: int = setting(1, "interpreter threads of the measurement.")
    bench_runs: int = setting(300, "timed runs per measurement.")
    bench_warmup: int = setting(30, "warm-up runs per measurement.")
    backend_opts: dict = setting(None, "the backend's options (from --binary / --serial)", flag=False)
    lut: str = setting(None, "latency LUT JSON (built/extended as needed; must be this device's).")
    measure_pick: str = setting("interleaved", "latency of each pick: interleaved: measured in alternating rounds "
                                               "with the current model, the current value scaled by their ratio "
                                               "(drift between sessions cancels); single: measured alone. Other "
                                               "resources measure the same every time.", choices=PICK_MEASUREMENTS)
    pick_rounds: int = setting(6, "alternating rounds of --measure_pick interleaved", flag=False)
    pick_sessions: int = setting(3, "interleaved sessions (each its own measuring process) of every pick; their "
                                    "median ratio counts, so one disturbed session cannot fake a step", flag=False)

    def bench_settings(self):
        return {"backend": self.backend, "threads": self.threads, "runs": self.bench_runs,
                "warmup": self.bench_warmup, "backend_opts": dict(self.backend_opts or {})}


@dataclasses.dataclass
class Final:
    long_epochs: int = setting(5, "long-term fine-tune epochs after the loop.")
    long_lr: float = setting(5e-4, "long-term fine-tune peak learning rate.")
    mode: str = setting("from_scratch", "final stage: from_scratch: the found architecture freshly initialised "
                                        "and trained with the baselines' whole budget at --lr (MobileNetV3's "
                                        "recipe; the default: it measured best, docs/netadapt_results.md); "
                                        "rewind: the same budget from the loop's weights; fine_tune the loop's "
                                        "weights for --long_epochs.",
                        choices=FINAL_MODES, name="final")
    distill: float = setting(0.0, "final stage: weight of the soft targets of the start model (the teacher) in "
                                  "the loss, labels 1-W (0: no distillation).")
    distill_temperature: float = setting(4.0, "temperature of the distillation's soft targets (loss scaled by T^2).")
    qat_epochs: int = setting(1, "QAT epochs of the final model (0: post-training int8).")
    tflm: bool = setting(True, "export the final int8 model for TFLite-Micro (arena measured).")
    baselines: tuple = setting((), "width multipliers trained with the same budget and measured with the "
                                   "NetAdapt model, e.g. 0.35,0.5,0.75.")
    baseline_rounds: int = setting(6, "interleaved rounds of the final measurement", flag=False)
    baseline_resolutions: tuple = setting((), "input resolutions of the --baselines grid, e.g. 32,40,48 (default: "
                                              "the start's resolution only).")


@dataclasses.dataclass
class Execution:
    """How the run is spread and where shared work goes: not part of the result (not in the fingerprint)."""
    baselines_dir: str = setting(None, "train the baselines here, shared with other runs (once per training "
                                       "setting); default OUTPUT_DIR/baselines.")
    workers: int = setting(1, "local proposal worker processes.")
    ray_address: str = setting(None, "run proposals as Ray tasks: auto, HOST:PORT, or local (start one).")
    proposal_timeout: float = setting(None, "seconds after which a proposal's worker counts as hung.")


GROUPS = {"start": Start, "data": Data, "search": Search, "fine_tune": FineTune, "measurement": Measurement,
          "final": Final, "execution": Execution}


def flat_name(field):
    return field.metadata.get("name") or field.name


def _fields():
    """(group, field) of every setting, in declaration order."""
    return [(g, f) for g, cls in GROUPS.items() for f in dataclasses.fields(cls)]


# settings whose default changed when (or after) they were added: the value that reproduces a run made before
BEFORE_THE_SETTING = {"measure_pick": "single", "pick_sessions": 1, "min_proposals": 1}


@dataclasses.dataclass
class LoopConfig:
    start: Start = dataclasses.field(default_factory=Start)
    data: Data = dataclasses.field(default_factory=Data)
    search: Search = dataclasses.field(default_factory=Search)
    fine_tune: FineTune = dataclasses.field(default_factory=FineTune)
    measurement: Measurement = dataclasses.field(default_factory=Measurement)
    final: Final = dataclasses.field(default_factory=Final)
    execution: Execution = dataclasses.field(default_factory=Execution)

    @classmethod
    def of(cls, **settings):
        """A config from flat names (``checkpoint=``, ``short_steps=``, ``final=``...), the rest defaults."""
        return cls().replace(**settings)

    def replace(self, **settings):
        """A copy with these flat-named settings changed; an unknown name is a TypeError."""
        groups = {g: {} for g in GROUPS}
        where = {flat_name(f): (g, f.name) for g, f in _fields()}
        for key, value in settings.items():
            if key not in where:
                raise TypeError(f"LoopConfig has no setting {key!r}")
            group, attr = where[key]
            groups[group][attr] = value
        return dataclasses.replace(self, **{g: dataclasses.replace(getattr(self, g), **kw)
                                            for g, kw in groups.items() if kw})

    def flat(self):
        """{flat name: value} of every setting."""
        return {flat_name(f): getattr(getattr(self, g), f.name) for g, f in _fields()}

    def fingerprint(self):
        """The settings that decide the result (a resumed run must have the same)."""
        d = {k: v for k, v in self.flat().items()
             if k not in {flat_name(f) for f in dataclasses.fields(Execution)}}
        d["backend_opts"] = dict(d["backend_opts"]) if d["backend_opts"] is not None else None
        d["baselines"] = list(d["baselines"] or ())
        d["constraint"] = list(d["constraint"] or ())
        d["baseline_resolutions"] = list(d["baseline_resolutions"] or ())
        if d["checkpoint"]:
            d["checkpoint"] = os.path.abspath(d["checkpoint"])
            for k in ("model", "alpha", "resolution", "epochs", "lr", "bn_momentum"):
                d.pop(k)
        if d["lut"]:
            d["lut"] = os.path.abspath(d["lut"])
        return d

    @staticmethod
    def absent_fingerprint():
        """What each setting was in a run made before the setting existed (its run.json lacks the key), for
        ``--resume``: the defaults, except where a later default differs from the behaviour before the setting
        (each pick measured alone, in one session; the step halved only while no group could meet it)."""
        return dict(LoopConfig().fingerprint(), **BEFORE_THE_SETTING)

    def data_config(self, input_shape):
        """What decides the run's data (the workers load the same split from it)."""
        return {"data_dir": self.data.data_dir, "subset": self.data.subset, "limit": self.data.limit,
                "val_fraction": self.data.val_fraction, "seed": self.fine_tune.seed,
                "input_shape": list(input_shape)}

    def target_of(self, start_measured):
        """The absolute target: the given value, or the fraction of the start's measured one."""
        s = self.search
        return s.target_value if s.target_value is not None else s.target * start_measured

    def check(self):
        """UserError for values the run cannot start with (before anything is written)."""
        s, ft, m, fin = self.search, self.fine_tune, self.measurement, self.final
        if s.resource not in KINDS:
            raise UserError(f"unknown --resource {s.resource!r}; one of {', '.join(KINDS)}")
        if s.select not in SELECTIONS:
            raise UserError(f"unknown --select {s.select!r}; one of {', '.join(SELECTIONS)}")
        if (s.target is None) == (s.target_value is None):
            raise UserError("give one target: a fraction of the start or an absolute value")
        if s.target is not None and not 0.0 < s.target < 1.0:
            raise UserError(f"target fraction must be in (0, 1), got {s.target}")
        if s.target_value is not None and not (s.target_value > 0 and math.isfinite(s.target_value)):
            raise UserError(f"target value must be a finite number > 0, got {s.target_value}")
        if not 0.0 < self.start.bn_momentum < 1.0:
            raise UserError(f"--bn_momentum must be in (0, 1), got {self.start.bn_momentum}")
        if not 0.0 < s.delta0 < 1.0 or not 0.0 < s.decay <= 1.0:
            raise UserError(f"need 0 < delta0 < 1 and 0 < decay <= 1, got {s.delta0}, {s.decay}")
        if not isinstance(s.channel_multiple, int) or isinstance(s.channel_multiple, bool):
            raise UserError(f"--channel_multiple must be a whole number of channels, got {s.channel_multiple!r}")
        if m.measure_pick not in PICK_MEASUREMENTS:
            raise UserError(f"--measure_pick must be one of {', '.join(PICK_MEASUREMENTS)}, got {m.measure_pick!r}")
        parse_constraints(self)   # every --constraint parses
        at_least = {"short_steps": (ft.short_steps, 0), "bn_batches": (ft.bn_batches, 0),
                    "channel_multiple": (s.channel_multiple, 1), "pick_rounds": (m.pick_rounds, 1),
                    "pick_sessions": (m.pick_sessions, 1), "min_proposals": (s.min_proposals, 1),
                    "batch_size": (ft.batch_size, 1),
                    "bench_runs": (m.bench_runs, 1), "worker_threads": (ft.worker_threads, 1),
                    "workers": (self.execution.workers, 1), "max_iterations": (s.max_iterations, 1),
                    "threads": (m.threads, 1), "baseline_rounds": (fin.baseline_rounds, 1),
                    "long_epochs": (fin.long_epochs, 0), "qat_epochs": (fin.qat_epochs, 0),
                    "bench_warmup": (m.bench_warmup, 0)}
        if self.start.epochs is not None:   # None: the data's step-based schedule
            at_least["epochs"] = (self.start.epochs, 1)
        for name, (value, low) in at_least.items():
            if value < low:
                raise UserError(f"--{name} must be >= {low}, got {value}")
        if fin.mode not in FINAL_MODES:
            raise UserError(f"--final must be one of {', '.join(FINAL_MODES)}, got {fin.mode!r}")
        if not 0.0 <= fin.distill <= 1.0:
            raise UserError(f"--distill must be in [0, 1] (0: off), got {fin.distill}")
        if not 0.0 <= self.fine_tune.short_distill <= 1.0:
            raise UserError(f"--short_distill must be in [0, 1] (0: off), got {self.fine_tune.short_distill}")
        if (fin.distill or self.fine_tune.short_distill) and self.search.resolution_step:
            flag = "--distill" if fin.distill else "--short_distill"
            raise UserError(f"{flag} and --resolution_step: the start model (the teacher) takes the start's "
                            "input size and the found model may take a smaller one; use one of them")
        if not (fin.distill_temperature > 0 and math.isfinite(fin.distill_temperature)):
            raise UserError(f"--distill_temperature must be a finite number > 0, got {fin.distill_temperature}")
        for a in fin.baselines or ():
            if not a > 0:
                raise UserError(f"baseline width multipliers must be > 0, got {a}")
        for r in fin.baseline_resolutions or ():
            if not (isinstance(r, int) and not isinstance(r, bool) and r > 0):
                raise UserError(f"--baseline_resolutions must be whole numbers of pixels > 0, got {r!r}")
        if not (isinstance(s.resolution_step, int) and not isinstance(s.resolution_step, bool)
                and s.resolution_step >= 0):
            raise UserError(f"--resolution_step must be a whole number of pixels >= 0 (0: off), "
                            f"got {s.resolution_step!r}")
        timeout = self.execution.proposal_timeout
        if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
            raise UserError(f"--proposal_timeout must be a number of seconds > 0, got {timeout}")


def parse_score_settings(values):
    """[(N, T)] from "N:T" strings (N BatchNorm re-estimation batches, then T fine-tune steps: how a proposal is
    scored, as the studies of issue 19 name it); UserError on anything else."""
    out = []
    for v in values:
        try:
            n, t = (int(x) for x in v.split(":"))
        except ValueError:
            raise UserError(f"--score_settings: {v!r} is not N:T (two whole numbers)") from None
        if n < 0 or t < 0 or n + t == 0:
            raise UserError(f"--score_settings: {v!r} needs N, T >= 0 and one of them > 0")
        out.append((n, t))
    if len(set(out)) != len(out) or not out:
        raise UserError("--score_settings must list distinct N:T pairs")
    return out


def constrained_kinds(cfg):
    """Every resource the run must bring under its limit: the primary ``--resource`` first, then the constraints."""
    return (cfg.search.resource, *parse_constraints(cfg))


def parse_constraints(cfg):
    """{kind: (value, is_fraction)} of the ``--constraint kind=value`` settings, in their order (value: a
    fraction of the start when is_fraction, else absolute in the kind's unit). A constraint that repeats the
    primary ``--resource`` with the same limit is dropped; every other repetition or contradiction, an
    unknown kind, a unit of another kind or a malformed item is a UserError."""
    s = cfg.search
    primary = (s.target, s.target_value)
    out = {}
    for text in s.constraints or ():
        kind, sep, value = str(text).partition("=")
        kind, value = kind.strip(), value.strip()
        if not sep or not kind or not value:
            raise UserError(f"--constraint {text!r}: expected kind=value, e.g. flash=256KB")
        if kind not in KINDS:
            raise UserError(f"--constraint {text}: unknown resource {kind!r}; one of {', '.join(KINDS)}")
        fraction, absolute = parse_target(value, kind, flag=f"--constraint {kind}=")
        if kind in out:
            raise UserError(f"--constraint {text}: {kind} is constrained twice")
        if kind == s.resource:
            if (fraction, absolute) != primary:
                raise UserError(f"--constraint {text} contradicts --resource {kind} with its --target")
            continue
        out[kind] = (fraction, True) if fraction is not None else (absolute, False)
    return out


def parse_target(text, kind, flag="--target"):
    """'0.5' -> (0.5, None) a fraction; '256KB' / '0.4ms' / '1.5M' -> (None, absolute value).

    flag: how the error names the setting (``--constraint flash=``)."""
    sep = "" if flag.endswith("=") else " "
    s = str(text).strip().replace(" ", "")
    units = {"KB": 1024, "KIB": 1024, "MB": 1 << 20, "MIB": 1 << 20, "B": 1, "MS": 1, "K": 1e3, "M": 1e6, "G": 1e9}
    for u in sorted(units, key=len, reverse=True):
        if s.upper().endswith(u) and s[:-len(u)]:
            if (u == "MS") != (kind == "latency") and u not in ("K", "M", "G"):
                raise UserError(f"{flag}{sep}{text}: {u.lower()} is not a unit of {kind}")
            try:
                value = float(s[:-len(u)]) * units[u]
            except ValueError:
                break
            if not (value > 0 and math.isfinite(value)):
                raise UserError(f"{flag}{sep}{text}: a value must be finite and > 0")
            return None, value
    try:
        v = float(s)
    except ValueError:
        raise UserError(f"{flag.rstrip('=')} must be a fraction of the start (0.5) or a value with a unit "
                        f"(0.4ms, 256KB), got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise UserError(f"{flag}{sep}{text}: a fraction of the start must be in (0, 1)")
    return v, None


# ------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------
def define_flags(flag_values):
    """The absl flags of every setting that has one (type, default, choices from its field), and the
    command line's own: the target as text, the backend's options, the run directory."""
    from absl import flags

    kw = dict(flag_values=flag_values)
    for _, f in _fields():
        if not f.metadata["flag"]:
            continue
        name, help_text, choices = flat_name(f), f.metadata["help"], f.metadata["choices"]
        if f.metadata.get("repeated"):
            flags.DEFINE_multi_string(name, list(f.default), help_text, **kw)
        elif choices:
            flags.DEFINE_enum(name, f.default, list(choices), help_text, **kw)
        elif f.type in (bool, "bool"):
            flags.DEFINE_boolean(name, f.default, help_text, **kw)
        elif f.type in (int, "int"):
            flags.DEFINE_integer(name, f.default, help_text, **kw)
        elif f.type in (float, "float"):
            flags.DEFINE_float(name, f.default, help_text, **kw)
        elif f.type in (tuple, "tuple"):
            flags.DEFINE_list(name, list(f.default), help_text, **kw)
        else:
            flags.DEFINE_string(name, f.default, help_text, **kw)
    flags.DEFINE_string("target", None, "fraction of the start (0.5), or a value with a unit (256KB, 0.4ms).", **kw)
    flags.DEFINE_float("target_ms", None, "latency target in ms (instead of --target).", **kw)
    flags.DEFINE_string("binary", None, "benchmark_model binary (backend benchmark_model / android binary mode).",
                        **kw)
    flags.DEFINE_string("serial", None, "android: adb serial.", **kw)
    flags.DEFINE_string("output_dir", None, "run directory (required).", **kw)
    flags.DEFINE_boolean("resume", False, "continue the run in --output_dir.", **kw)


def from_flags(values):
    """The LoopConfig of parsed flags (``values``: absl FlagValues); UserError on a bad combination."""
    if not values.output_dir:
        raise UserError("--output_dir is required")
    if (values.target is None) == (values.target_ms is None):
        raise UserError("give one of --target (0.5, 256KB, ...) or --target_ms")
    if values.target_ms is not None:
        if values.resource != "latency":
            raise UserError("--target_ms goes with --resource latency")
        fraction, value = None, values.target_ms
    else:
        fraction, value = parse_target(values.target, values.resource)
    settings = {flat_name(f): values[flat_name(f)].value for _, f in _fields() if f.metadata["flag"]}
    try:
        settings["baselines"] = tuple(float(a) for a in values.baselines)
    except ValueError:
        raise UserError(f"--baselines must be width multipliers, got {','.join(values.baselines)}") from None
    settings["constraint"] = tuple(values.constraint or ())
    try:
        settings["baseline_resolutions"] = tuple(int(r) for r in values.baseline_resolutions)
    except ValueError:
        raise UserError(f"--baseline_resolutions must be whole numbers of pixels, got "
                        f"{','.join(values.baseline_resolutions)}") from None
    opts = {k: values[k].value for k in ("binary", "serial") if values[k].value}
    return LoopConfig.of(**settings, target=fraction, target_value=value, backend_opts=opts)
