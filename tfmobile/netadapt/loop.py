"""The NetAdapt loop (Yang et al. 2018; MobileNetV3 §3.2): measured resource down, accuracy kept.

    cfg = LoopConfig(model="mbv2", alpha=1.0, resolution=32, epochs=10, target=0.5)
    report = run(cfg, "runs/na")             # resumable: run(cfg, "runs/na", resume=True)

Iteration i (1-based), from the current model (the start, or iteration i-1's pick):
1. budget = max(target, current_measured - delta_i), delta_i = delta0 * decay**(i-1) * start_measured;
   in the LUT's units: budget_predicted = predicted(current) * budget / current_measured (the LUT
   only ranks; its scale error cancels in the ratio).
2. One proposal per channel group: ``largest_width`` meeting budget_predicted -> ``shrink`` ->
   ``transfer`` (L2 norm) -> ``short_steps`` steps of fine-tuning (same steps, data order, seed for
   every proposal) -> top-1 on the validation split carved from the training data.
3. Pick by ``select``: "ratio" = max (acc_p - acc_current) / (predicted_current - predicted_p)
   (MobileNetV3), "accuracy" = max acc_p (NetAdapt); ties go to the earlier group.
4. Measure the pick for real (int8 .tflite, ``measure.py``); the next budget starts from that.
Stop when the measured value meets the target, or no group can shrink (then ``TargetNotMet``).
Then ``final.finish``: long-term fine-tune, QAT, int8 + TFLM, LiteRT test accuracy, latency,
optional width-multiplier baselines, report.

Every proposal result and every iteration is on disk when it finishes (``history.RunDir``); the
plan of an iteration (its budget and proposals) is written before its proposals run, so a
resumed run redoes nothing and asks nothing of the LUT again.
"""
import dataclasses
import math
import os
import shutil
import sys
import time

from tfmobile.errors import UserError
from tfmobile.netadapt.history import RunDir
from tfmobile.netadapt.config import COUNTED, KINDS, UNITS
from tfmobile.netadapt.measure import LocalMeasurer, RayMeasurer
from tfmobile.netadapt.workers import LocalPool, RayPool, load_splits

SELECTIONS = ("ratio", "accuracy")
MAX_HALVINGS = 5   # the step is halved at most 5 times (to 1/32) when no group meets the budget


FINAL_MODES = ("fine_tune", "from_scratch")


class TargetNotMet(UserError):
    """No group can shrink further and the target was never met (the best reached is reported)."""


@dataclasses.dataclass
class LoopConfig:
    # start: a float checkpoint, or a zoo model trained first
    checkpoint: str = None
    model: str = "mbv2"
    alpha: float = 1.0
    resolution: int = 32
    epochs: int = 10
    lr: float = None
    bn_momentum: float = 0.9      # of a zoo start (Keras' 0.999 leaves eval-mode BN statistics behind)
    # data (validation is carved from the training images; the test set is used once, at the end)
    data_dir: str = None
    subset: bool = False
    limit: int = None
    val_fraction: float = 0.1
    # target and resource
    resource: str = "latency"
    target: float = None          # fraction of the start's measured value
    target_value: float = None    # absolute (ms for latency, bytes for memory, count for macs/params)
    delta0: float = 0.06          # 0.06 * (1 + 0.96 + ... + 0.96**9) = 0.503: 50 % in 10 iterations
    decay: float = 0.96
    max_iterations: int = 100
    select: str = "ratio"
    # proposals
    short_steps: int = 200
    short_lr: float = 5e-4
    batch_size: int = 64
    seed: int = 0
    augment: bool = True
    shift: float = 0.0
    worker_threads: int = 1
    # measurement (as pipelines.benchmark)
    backend: str = "litert"
    threads: int = 1
    bench_runs: int = 300
    bench_warmup: int = 30
    backend_opts: dict = None
    lut: str = None
    # final stage
    long_epochs: int = 5
    long_lr: float = 5e-4
    final: str = "fine_tune"      # or "from_scratch" (see final.final_training)
    qat_epochs: int = 1
    tflm: bool = True
    baselines: tuple = ()
    baseline_rounds: int = 6
    baselines_dir: str = None     # shared by runs (trained once per setting); default OUTPUT_DIR/baselines
    # execution (not part of the result)
    workers: int = 1
    ray_address: str = None
    proposal_timeout: float = None

    EXECUTION = ("workers", "ray_address", "proposal_timeout", "baselines_dir")

    def fingerprint(self):
        """The settings that decide the result (a resumed run must have the same)."""
        d = dataclasses.asdict(self)
        for k in self.EXECUTION:
            d.pop(k)
        d["baselines"] = list(d["baselines"] or ())
        if d["checkpoint"]:
            d["checkpoint"] = os.path.abspath(d["checkpoint"])
            for k in ("model", "alpha", "resolution", "epochs", "lr", "bn_momentum"):
                d.pop(k)
        if d["lut"]:
            d["lut"] = os.path.abspath(d["lut"])
        return d

    def bench_settings(self):
        return {"backend": self.backend, "threads": self.threads, "runs": self.bench_runs,
                "warmup": self.bench_warmup, "backend_opts": dict(self.backend_opts or {})}

    def data_config(self, input_shape):
        return {"data_dir": self.data_dir, "subset": self.subset, "limit": self.limit,
                "val_fraction": self.val_fraction, "seed": self.seed, "input_shape": list(input_shape)}


# ------------------------------------------------------------------------------------------------
# pure pieces (unit-tested)
# ------------------------------------------------------------------------------------------------
def delta(config, i, start_value):
    return config.delta0 * config.decay ** (i - 1) * start_value


def budget_for(config, i, start_value, current_value, target_value, halvings=0):
    """current - delta_i (halved ``halvings`` times), never below the target."""
    return max(target_value, current_value - delta(config, i, start_value) / 2 ** halvings)


def estimate_iterations(config, i, start_value, current_value, target_value):
    """How many more iterations (from i) the schedule needs to go from current to target."""
    n, v = 0, current_value
    while v > target_value and n < config.max_iterations:
        v -= delta(config, i + n, start_value)
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


def parse_target(text, kind):
    """'0.5' -> (0.5, None) a fraction; '256KB' / '0.4ms' / '1.5M' -> (None, absolute value)."""
    s = str(text).strip().replace(" ", "")
    units = {"KB": 1024, "KIB": 1024, "MB": 1 << 20, "MIB": 1 << 20, "B": 1, "MS": 1, "K": 1e3, "M": 1e6, "G": 1e9}
    for u in sorted(units, key=len, reverse=True):
        if s.upper().endswith(u) and s[:-len(u)]:
            if (u == "MS") != (kind == "latency") and u not in ("K", "M", "G"):
                raise UserError(f"--target {text}: {u.lower()} is not a unit of {kind}")
            try:
                return None, float(s[:-len(u)]) * units[u]
            except ValueError:
                break
    try:
        v = float(s)
    except ValueError:
        raise UserError(f"--target must be a fraction of the start (0.5) or a value with a unit "
                        f"(0.4ms, 256KB), got {text!r}") from None
    if not 0.0 < v < 1.0:
        raise UserError(f"--target {text}: a fraction of the start must be in (0, 1)")
    return v, None


# ------------------------------------------------------------------------------------------------
# checks before any work
# ------------------------------------------------------------------------------------------------
def check_config(cfg):
    if cfg.resource not in KINDS:
        raise UserError(f"unknown --resource {cfg.resource!r}; one of {', '.join(KINDS)}")
    if cfg.select not in SELECTIONS:
        raise UserError(f"unknown --select {cfg.select!r}; one of {', '.join(SELECTIONS)}")
    if (cfg.target is None) == (cfg.target_value is None):
        raise UserError("give one target: a fraction of the start or an absolute value")
    if cfg.target is not None and not 0.0 < cfg.target < 1.0:
        raise UserError(f"target fraction must be in (0, 1), got {cfg.target}")
    if cfg.target_value is not None and not cfg.target_value > 0:
        raise UserError(f"target value must be > 0, got {cfg.target_value}")
    if not 0.0 < cfg.bn_momentum < 1.0:
        raise UserError(f"--bn_momentum must be in (0, 1), got {cfg.bn_momentum}")
    if not 0.0 < cfg.delta0 < 1.0 or not 0.0 < cfg.decay <= 1.0:
        raise UserError(f"need 0 < delta0 < 1 and 0 < decay <= 1, got {cfg.delta0}, {cfg.decay}")
    for name in ("short_steps", "batch_size", "bench_runs", "worker_threads", "workers", "max_iterations",
                 "threads", "baseline_rounds"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.final not in FINAL_MODES:
        raise UserError(f"--final must be one of {', '.join(FINAL_MODES)}, got {cfg.final!r}")
    for name in ("long_epochs", "qat_epochs", "bench_warmup"):
        if getattr(cfg, name) < 0:
            raise UserError(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.checkpoint:
        from tfmobile import train

        info = train.checkpoint_info(cfg.checkpoint)
        if not os.path.isfile(os.path.join(info["path"], "spec.json")):
            raise UserError(f"checkpoint {info['path']} has no spec.json: NetAdapt needs the architecture "
                            "(a checkpoint written by tfmobile.train)")
        if info["compression"]:
            raise UserError(f"checkpoint {info['path']} is a {info['compression']} checkpoint; NetAdapt "
                            "starts from a float one (QAT comes after the loop)")
    if cfg.baselines and not cfg.checkpoint:
        from tfmobile import models
        if cfg.model not in models.available():
            raise UserError(f"unknown --model {cfg.model!r}")
    for a in cfg.baselines or ():
        if not a > 0:
            raise UserError(f"baseline width multipliers must be > 0, got {a}")
    if cfg.resource == "latency":
        check_lut(cfg.lut, "litert", cfg.threads)


def check_lut(path, backend, threads):
    if path and os.path.exists(path):
        from tfmobile.bench.lut import check_device
        check_device(path, backend, threads, source=f"LUT {path}")


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
def log_stderr(message):
    sys.stderr.write(f"[netadapt] {message}\n")
    sys.stderr.flush()


class Run:
    """State of one run: its directory, data, pools, measurer (see ``run``)."""

    def __init__(self, cfg, output_dir, resume=False, log=log_stderr):
        check_config(cfg)
        self.cfg, self.log = cfg, log
        self.dir = RunDir(output_dir)
        self.pool = self.measurer = None
        self.resume = resume
        if cfg.ray_address:
            from tfmobile.netadapt.workers import check_ray_address
            check_ray_address(cfg.ray_address)  # an unreachable cluster: one line, before anything is written
        self.t0, self.cpu0 = time.time(), time.process_time()

    def open(self):
        """Workers first (a Ray cluster that refuses us writes nothing), then the run directory."""
        self.open_workers()
        self.manifest = self.dir.open(self.cfg.fingerprint(), self.resume)

    # --- setup ----------------------------------------------------------------------------------
    def start_spec(self, classes=10):
        from tfmobile import models, train

        if self.cfg.checkpoint:
            return train.checkpoint_spec(self.cfg.checkpoint)
        r = self.cfg.resolution
        return models.get_spec(self.cfg.model, input_shape=(r, r, 3), alpha=self.cfg.alpha, classes=classes,
                               bn_momentum=self.cfg.bn_momentum)

    def open_workers(self):
        cfg = self.cfg
        if cfg.ray_address:
            self.pool = RayPool(cfg.ray_address, threads=cfg.worker_threads, timeout=cfg.proposal_timeout,
                                log=self.log)
            self.measurer = RayMeasurer(self.pool.ray, cfg.bench_settings())
        else:
            self.pool = LocalPool(cfg.workers, timeout=cfg.proposal_timeout, log=self.log)
            self.measurer = LocalMeasurer(cfg.bench_settings())

    def close(self):
        if self.pool is not None:
            self.pool.close()

    # --- measuring --------------------------------------------------------------------------------
    def int8(self, model):
        from tfmobile import convert

        return convert.to_tflite(model, "int8", representative_data=self.calib)

    def predict(self, spec):
        from tfmobile.netadapt.resource import resource

        return float(resource(spec, self.cfg.resource, **self.resource_args()))

    def resource_args(self):
        """The LUT (this run's own lut.json unless --lut) and thread count the predictions use.

        The LUT times ops on this host's LiteRT (litert backend); for the other backends it only
        ranks the proposals, and the measurements on the chosen backend decide.
        """
        return {"lut": self.cfg.lut or self.dir.sub("lut.json"), "threads": self.cfg.threads}

    def measure_model(self, model, spec, directory, not_above=None):
        """Convert, measure on the one device, keep the .tflite; returns the measurement dict.

        not_above: the value this model cannot honestly exceed (the wider model it was cut from).
        A latency above it is a disturbed measurement on a shared CPU (observed: +50 % on one of
        three iterations under load), and the next budget starts from it, so the model is measured
        twice more and the median of the three kept (all three are recorded).
        """
        from tfmobile.io import write_bytes

        done = self.dir.read(directory, "measurement.json")
        if done is not None:
            return done
        t = time.time()
        tfl = None
        if self.cfg.resource not in COUNTED:   # macs / params are counted on the spec: no conversion
            tfl = self.int8(model)
            write_bytes(self.dir.sub(directory, "model_int8.tflite"), tfl)
        m = self.measurer.measure(tfl, self.cfg.resource, spec.to_json(indent=None))
        if not_above is not None and self.cfg.resource == "latency" and m["value"] > not_above:
            tries = [m] + [self.measurer.measure(tfl, "latency") for _ in range(2)]
            m = dict(sorted(tries, key=lambda r: r["value"])[1])
            m["repeats"] = [r["value"] for r in tries]
            self.log(f"{directory}: measured {tries[0]['value']:.4g} ms, above the wider model's {not_above:.4g} ms; "
                     f"measured twice more, kept the median {m['value']:.4g} ms")
        m["predicted"] = self.predict(spec)
        m["seconds"] = round(time.time() - t, 2)
        self.dir.write(m, directory, "measurement.json")
        return m

    # --- start --------------------------------------------------------------------------------------
    def prepare_start(self):
        from tfmobile import data, models, train

        cfg = self.cfg
        spec = self.start_spec()
        self.input_shape = tuple(spec.input_shape)
        self.data_config = cfg.data_config(self.input_shape)
        self.splits = load_splits(self.data_config)
        if isinstance(self.pool, RayPool):
            self.pool.put_splits(self.splits)
        if not cfg.checkpoint and self.splits.num_classes != spec.classes:   # a zoo start fits the data
            spec = self.start_spec(self.splits.num_classes)
        if self.splits.num_classes != spec.classes:
            raise UserError(f"the start model has {spec.classes} classes but the data has {self.splits.num_classes}")
        self.calib = data.sample_images(self.splits.x_train, self.input_shape, seed=cfg.seed)
        self.check_shrinkable(spec)
        start_ckpt = self.dir.sub("start", train.CHECKPOINT_DIR)
        if not os.path.isfile(os.path.join(start_ckpt, "checkpoint.json")):
            if cfg.checkpoint:
                model = train.load_checkpoint(cfg.checkpoint)
                info = train.checkpoint_info(cfg.checkpoint)
                train.save_checkpoint(model, start_ckpt, extra={"epoch": info.get("epoch", 0),
                                                                "metrics": info.get("metrics", {})})
            else:
                self.log(f"training the start model {spec.name} for {cfg.epochs} epochs")
                train.fit(models.build(spec), self.splits, self.dir.sub("start"), epochs=cfg.epochs, lr=cfg.lr,
                          batch_size=cfg.batch_size, seed=cfg.seed, resume=True, verbose=2)
        start = self.dir.read("start", "start.json")
        if start is None:
            model = train.load_checkpoint(start_ckpt)
            m = self.measure_model(model, spec, "start")
            start = {"spec": spec.to_dict(), "checkpoint": start_ckpt, "measured": m["value"], "measurement": m,
                     "predicted": m["predicted"], "val_accuracy": train.evaluate(model, self.splits.x_val,
                                                                                self.splits.y_val),
                     "train_epochs": train.checkpoint_info(start_ckpt).get("epoch", 0)}
            self.dir.write(start, "start", "start.json")
        self.start = start
        self.target_value = cfg.target_value if cfg.target_value is not None else cfg.target * start["measured"]
        unit = UNITS[cfg.resource]
        if self.target_value >= start["measured"]:
            raise UserError(f"target {self.target_value:.4g} {unit} is not below the start's measured "
                            f"{start['measured']:.4g} {unit}: nothing to do")
        self.log(f"start {spec.name}: measured {start['measured']:.4g} {unit} (predicted "
                 f"{start['predicted']:.4g}), val top-1 {start['val_accuracy']:.4f}; target {self.target_value:.4g} {unit}")

    def check_shrinkable(self, spec):
        from tfmobile.models.surgery import groups

        gs = groups(spec)
        if not any(g.width > g.channel_step for g in gs):
            raise UserError(f"{spec.name} has no shrinkable channel group (every group is at its minimum width)")

    # --- iterations -----------------------------------------------------------------------------
    def current(self):
        """The model the next iteration starts from: the last finished iteration's, else the start."""
        from tfmobile.models import ModelSpec

        hist = self.dir.history()
        if not hist:
            s = self.start
            return {"iteration": 0, "spec": ModelSpec.from_dict(s["spec"]), "checkpoint": s["checkpoint"],
                    "measured": s["measured"], "predicted": s["predicted"], "val_accuracy": s["val_accuracy"]}
        h = hist[-1]
        d = self.dir.iteration_dir(h["iteration"])
        return {"iteration": h["iteration"], "spec": ModelSpec.load(os.path.join(d, "checkpoint", "spec.json")),
                "checkpoint": os.path.join(d, "checkpoint"), "measured": h["measured"],
                "predicted": h["predicted"], "val_accuracy": h["val_accuracy"]}

    def plan(self, i, cur):
        """Budget and proposals of iteration i (computed once, then read back on resume)."""
        plan = self.dir.read("iterations", f"{i:03d}", "plan.json")
        if plan is not None:
            return plan
        cfg = self.cfg
        step = delta(cfg, i, self.start["measured"])
        # Predictions of one spec move when the LUT gains entries (its fixed-overhead term is the
        # smallest seen so far: observed 0.024 -> 0.042 ms for the same spec within one run), so the
        # current model is predicted again with the LUT the proposals see, and the pass is repeated
        # if measuring the candidates' missing entries changed it.
        for _ in range(3):
            cur_pred = self.predict(cur["spec"])
            proposals, halvings, budget, budget_pred = self.proposals(i, cur, cur_pred)
            if self.predict(cur["spec"]) == cur_pred:
                break
        plan = {"iteration": i, "delta": step / 2 ** halvings, "halvings": halvings, "budget": budget,
                "budget_predicted": budget_pred, "current_predicted": cur_pred, "proposals": proposals}
        self.dir.write(plan, "iterations", f"{i:03d}", "plan.json")
        return plan

    def proposals(self, i, cur, cur_pred):
        """One proposal per group that can meet the budget; the step halved while none can."""
        from tfmobile.models.surgery import groups, shrink
        from tfmobile.netadapt.resource import largest_width

        cfg = self.cfg
        for halvings in range(MAX_HALVINGS + 1):
            # No single group reaching the budget (small models, where the per-invoke overhead is
            # most of the latency, or a memory peak that one group barely moves): ask for less.
            budget = budget_for(cfg, i, self.start["measured"], cur["measured"], self.target_value, halvings)
            budget_pred = cur_pred * budget / cur["measured"]
            found = []
            for g in groups(cur["spec"]):
                w = largest_width(cur["spec"], g, budget_pred, cfg.resource, **self.resource_args())
                if w is None or w >= g.width:
                    continue
                spec = shrink(cur["spec"], g, w)
                found.append({"group": g.name, "from_width": g.width, "width": int(w),
                              "predicted": self.predict(spec), "spec": spec.to_json(indent=None)})
            if found:
                break
        return found, halvings, budget, budget_pred

    def task(self, i, cur, p):
        cfg = self.cfg
        return {"group": p["group"], "width": p["width"], "spec": p["spec"], "parent": cur["checkpoint"],
                "data": self.data_config, "steps": cfg.short_steps, "batch_size": cfg.batch_size,
                "lr": cfg.short_lr, "seed": cfg.seed, "augment": cfg.augment, "shift": cfg.shift,
                "threads": cfg.worker_threads, "output_dir": self.dir.proposal_dir(i, p["group"])}

    def store(self, i, p, result):
        """Record one finished proposal (its checkpoint first, then its JSON: the JSON means done)."""
        from tfmobile import train
        from tfmobile.io import write_bytes

        ckpt = os.path.join(self.dir.proposal_dir(i, p["group"]), train.CHECKPOINT_DIR)
        if "files" in result:   # from Ray: write the files where a local worker would have
            staging = ckpt + ".incoming"
            shutil.rmtree(staging, ignore_errors=True)
            for name, blob in result.pop("files").items():
                write_bytes(os.path.join(staging, name), blob)
            shutil.rmtree(ckpt, ignore_errors=True)
            os.replace(staging, ckpt)
        row = {k: p[k] for k in ("group", "from_width", "width", "predicted")}
        row.update({k: result[k] for k in ("val_accuracy", "train_accuracy", "seconds", "cpu_seconds")
                    if k in result})
        row["checkpoint"] = ckpt
        self.dir.save_proposal(i, p["group"], row)
        return row

    def iterate(self, i, cur, est_total):
        cfg = self.cfg
        t_iter, cpu_iter = time.time(), time.process_time()
        plan = self.plan(i, cur)
        props = plan["proposals"]
        if not props:
            return None
        done = {}
        for p in props:
            r = self.dir.proposal(i, p["group"])
            if r is not None and os.path.isfile(os.path.join(r["checkpoint"], "checkpoint.json")):
                done[p["group"]] = r
        todo = {p["group"]: self.task(i, cur, p) for p in props if p["group"] not in done}
        by_group = {p["group"]: p for p in props}
        unit = UNITS[cfg.resource]
        if done:
            self.log(f"iteration {i}: {len(done)} of {len(props)} proposals already done (resumed)")
        t_props = time.time()

        def on_result(group, result):
            done[group] = self.store(i, by_group[group], result)
            n_new = len(done) - (len(props) - len(todo))
            per = (time.time() - t_props) / max(n_new, 1)
            left = len(props) - len(done)
            eta = per * (left + len(props) * max(est_total - i, 0))
            self.log(f"iteration {i}/~{est_total}, proposal {len(done)}/{len(props)} ({group} -> "
                     f"{result['width']}: val {result['val_accuracy']:.4f}), current {cur['measured']:.4g} {unit}, "
                     f"target {self.target_value:.4g} {unit}, ETA {_duration(eta)}")

        if todo:
            self.pool.run(todo, on_result)
        rows = [done[p["group"]] for p in props]
        cur = dict(cur, predicted=plan.get("current_predicted", cur["predicted"]))
        pick = choose(cfg.select, rows, cur)
        for r in rows:
            m = metric(cfg.select, r, cur)
            r["metric"] = m if math.isfinite(m) else None   # JSON has no -inf (a proposal saving nothing)
        return self.finish_iteration(i, cur, plan, rows, pick, t_iter, cpu_iter)

    def finish_iteration(self, i, cur, plan, rows, pick, t_iter, cpu_iter):
        from tfmobile import train
        from tfmobile.models import ModelSpec

        d = self.dir.iteration_dir(i)
        chosen = os.path.join(d, "checkpoint")
        if not os.path.isfile(os.path.join(chosen, "checkpoint.json")):
            staging = chosen + ".incoming"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(pick["checkpoint"], staging)
            os.replace(staging, chosen)
        spec = ModelSpec.load(os.path.join(chosen, "spec.json"))
        m = self.measure_model(train.load_checkpoint(chosen), spec, os.path.relpath(d, self.dir.path),
                               not_above=cur["measured"])
        worker_cpu = sum(r.get("cpu_seconds", 0.0) for r in rows)
        row = {"iteration": i, "budget": plan["budget"], "budget_predicted": plan["budget_predicted"],
               "delta": plan["delta"],
               "proposals": [{k: r.get(k) for k in ("group", "from_width", "width", "predicted", "val_accuracy",
                                                    "metric", "seconds")} for r in rows],
               "chosen": pick["group"], "width": pick["width"], "predicted": pick["predicted"],
               "measured": m["value"], "measurement": {k: v for k, v in m.items() if k != "predicted"},
               "prediction_error": (pick["predicted"] - m["value"]) / m["value"],
               "prediction_error_scaled": (pick["predicted"] / cur["predicted"] * cur["measured"] - m["value"])
               / m["value"],
               "val_accuracy": pick["val_accuracy"], "seconds": round(time.time() - t_iter, 2),
               "cpu_seconds": round(time.process_time() - cpu_iter + worker_cpu, 2)}
        for r in rows:   # only the chosen proposal's weights are kept (the JSONs stay)
            if r["group"] != pick["group"]:
                shutil.rmtree(os.path.dirname(r["checkpoint"]), ignore_errors=True)
        self.dir.append_history(row)
        return row

    def loop(self):
        cfg = self.cfg
        unit = UNITS[cfg.resource]
        while True:
            cur = self.current()
            i = cur["iteration"] + 1
            if cur["measured"] <= self.target_value:
                return "met"
            if i > cfg.max_iterations:
                return "max_iterations"
            est = i - 1 + estimate_iterations(cfg, i, self.start["measured"], cur["measured"], self.target_value)
            row = self.iterate(i, cur, est)
            if row is None:
                return "no_shrinkable_group"
            self.log(f"iteration {i}: chose {row['chosen']} -> {row['width']} (val {row['val_accuracy']:.4f}); "
                     f"measured {row['measured']:.4g} {unit} (budget {row['budget']:.4g}, predicted "
                     f"{row['predicted']:.4g} in LUT units), {row['seconds']:.0f} s")


def _duration(s):
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run(cfg, output_dir, resume=False, log=log_stderr):
    """The whole NetAdapt job; returns the report dict (also written as report.json / report.md).

    Raises TargetNotMet (a UserError: one line, exit 2) after writing the report when no group
    can shrink further and the target was never met.
    """
    from tfmobile.netadapt import final

    r = Run(cfg, output_dir, resume, log)
    try:
        r.open()
        r.prepare_start()
        status = r.loop()
        report = final.finish(r, status)
    finally:
        r.close()
    if status != "met":
        best = report["reached"]
        raise TargetNotMet(f"target {r.target_value:.4g} {UNITS[cfg.resource]} not met ({status}): best reached "
                           f"{best['measured']:.4g} at iteration {best['iteration']}; report in "
                           f"{os.path.join(r.dir.path, 'report.md')}")
    return report
