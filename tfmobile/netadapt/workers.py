"""Where NetAdapt's proposals run: a local process pool or Ray tasks, with dead workers detected.

A proposal (shrink one group -> transfer weights by L2 norm -> short-term fine-tune -> validation
accuracy) is a pure function of its task dict (``run_proposal``), so it can run anywhere. A resolution
proposal (group ``surgery.RESOLUTION_GROUP``) is the same with a spec at a lower input size: the data
stays as the run loaded it (``task["data"]``: Fashion-MNIST at 28x28, an image folder decoded at the
start's size) and is resized from there to the proposal's ``spec.input_shape``, as the pipeline does (once
per worker process and input shape, ``splits_at``; the parent model is rebuilt once per process and
checkpoint, ``_load_parent``: both are a fixed cost of every proposal otherwise). Every
worker runs TensorFlow with the same thread count and op determinism, so the same task gives the
same accuracy in the driver's pool of 1 or N processes and on Ray: the chosen sequence does not
depend on how the proposals were spread.

Failures: a worker that dies (killed, segfault, out of memory), hangs past ``timeout`` or raises
is detected where it happens (process sentinel / Ray task error) and its proposal is run once more;
a second failure stops the run with a ``WorkerFailure`` naming the proposal and the cause. A
``UserError`` raised by the proposal itself is bad input, not bad luck: it stops the run at once.
The reference implementation's master waited for days on a crashed worker; here nothing waits
without a deadline.

Temporary files: a local pool owns one temporary directory for its life, and each worker process
gets a directory of its own inside it as TMPDIR (a proposal's scratch directory, TensorFlow's
autograph files). A worker that is killed or stopped takes its directory with it, and ``close()``
(also reached from Ctrl-C / SIGTERM, which raise through ``run``) removes the pool's.

Results: both pools call ``on_result(key, result)`` with a proposal's checkpoint already at
``os.path.join(task["output_dir"], "checkpoint")`` (``result["checkpoint"]``); a Ray result's
files are staged there by the pool (written beside it, then renamed), so no result has "files".
"""
import dataclasses
import hashlib
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import traceback

from tfmobile.errors import UserError
from tfmobile.io import shareable_mode
from tfmobile.process import die_with_parent

MAX_ATTEMPTS = 2   # a proposal is run at most twice (one retry)


class WorkerFailure(UserError):
    """A proposal's worker died or failed twice: the run stops with this one line."""


# ------------------------------------------------------------------------------------------------
# the task
# ------------------------------------------------------------------------------------------------
_CONFIGURED = {}
_DATA_CACHE = {}
_RESIZED_CACHE = {}   # (id(splits), input shape) -> (splits, resized splits); the first keeps the id unique
_MODEL_CACHE = {}     # role ("parent", "teacher") -> (the checkpoint's identity, its model)
RESIZED_CACHE_BYTES = 1 << 30   # larger sets are resized per proposal, as before (224x224: 8 GB)


def configure_tensorflow(threads):
    """Same intra/inter-op threads and deterministic ops in every worker (once per process)."""
    import tfmobile  # noqa: F401
    import tensorflow as tf

    if _CONFIGURED.get("threads") == threads:
        return
    if _CONFIGURED:
        raise RuntimeError(f"worker already runs TensorFlow with {_CONFIGURED['threads']} threads, not {threads}")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.config.experimental.enable_op_determinism()
    _CONFIGURED["threads"] = threads


def load_splits(data_config):
    """The train/validation/test split of ``data_config`` (cached per process)."""
    from tfmobile import data

    key = tuple(sorted((k, str(v)) for k, v in data_config.items()))
    if key not in _DATA_CACHE:
        h, w, c = data_config["input_shape"]
        _, splits = data.load_splits(data_config.get("data_dir"), subset=data_config.get("subset", False),
                                     image_size=(h, w), channels=c, val_fraction=data_config["val_fraction"],
                                     seed=data_config["seed"], limit=data_config.get("limit"))
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = splits
    return _DATA_CACHE[key]


def splits_at(splits, input_shape):
    """``splits`` with the training and validation images already at ``input_shape`` (same pixels as
    ``make_dataset``'s own resize, which then has nothing to do): 0.5-1 s less per proposal at 32x32."""
    from tfmobile import data as tdata

    input_shape = tuple(int(v) for v in input_shape)
    key = (id(splits), input_shape)
    if key not in _RESIZED_CACHE:
        h, w, c = input_shape
        if (len(splits.x_train) + len(splits.x_val)) * h * w * c > RESIZED_CACHE_BYTES:
            return splits
        if len(_RESIZED_CACHE) >= 4:   # resolution proposals: a few input shapes per run
            _RESIZED_CACHE.clear()
        resized = dataclasses.replace(splits, x_train=tdata.resize_uint8(splits.x_train, input_shape),
                                      x_val=tdata.resize_uint8(splits.x_val, input_shape))
        _RESIZED_CACHE[key] = (splits, resized)
    return _RESIZED_CACHE[key][1]


def _load_parent(checkpoint, files, workdir, role="parent"):
    """The checkpoint's model, rebuilt only when the checkpoint differs from the one this process last
    loaded for ``role``: an iteration's proposals all start from the same parent (1.5-2 s per rebuild).
    Proposals read the parent's weights and never change them."""
    from tfmobile import train

    if files is None:
        d = train.checkpoint_info(checkpoint)["path"]
        identity = (d, tuple(sorted((n, st.st_size, st.st_mtime_ns)
                                    for n, st in ((n, os.stat(os.path.join(d, n))) for n in os.listdir(d)))))
    else:   # Ray: the checkpoint's files travel as bytes
        identity = tuple(sorted((n, hashlib.sha256(blob).hexdigest()) for n, blob in files.items()))
    cached = _MODEL_CACHE.get(role)
    if cached is not None and cached[0] == identity:
        return cached[1]
    if files is None:
        model = train.load_checkpoint(d)
    else:
        d = os.path.join(workdir, role)
        os.makedirs(d)
        for name, blob in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(blob)
        model = train.load_checkpoint(d)
    _MODEL_CACHE[role] = (identity, model)
    return model


def reestimate_batchnorm(model, batches):
    """Reset every BatchNormalization's moving statistics and set them to the average of ``batches``'
    batch statistics (forward in training mode; no gradient, so every weight stays as it is).

    A shrunk model's inherited statistics describe the wider parent's activations; re-estimated
    ones make its accuracy rank the proposals better before (or instead of) fine-tuning
    (EagleEye, Li et al. 2020). The momentum of batch k is (k-1)/k: a cumulative average.
    Returns the number of batches used.
    """
    import tf_keras as keras

    layers = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in layers]
    for bn in layers:
        bn.moving_mean.assign(bn.moving_mean * 0.0)
        bn.moving_variance.assign(bn.moving_variance * 0.0 + 1.0)
    n = 0
    try:
        for x in batches:
            n += 1
            for bn in layers:
                bn.momentum = (n - 1) / n
            model(x, training=True)
    finally:
        for bn, momentum in zip(layers, momenta):
            bn.momentum = momentum
    return n


def training_batches(splits, input_shape, task, count):
    """The first ``count`` batches of the proposal's training stream (its seed, augmentation, batch size)."""
    from tfmobile import data as tdata

    augment = tdata.parse_augment(task["augment"], splits.source)
    ds = tdata.make_dataset(splits.x_train, splits.y_train, input_shape, task["batch_size"], training=True,
                            augment=augment, seed=task["seed"], shift=task["shift"])
    return (x for x, _ in ds.repeat().take(count))


def run_proposal(task, splits=None, parent_files=None, teacher_files=None):
    """Shrink, transfer, re-estimate BatchNorm (``bn_batches``), fine-tune for ``task["steps"]`` steps, and
    measure validation top-1.

    task: {"group", "width", "spec" (the narrower spec's JSON), "parent" (the current model's
    checkpoint dir), "data" (see ``load_splits``), "steps" (0: scored after the re-estimation),
    "bn_batches" (0 or absent: off), "batch_size", "lr", "seed", "augment", "shift", "threads",
    "output_dir" (where the fine-tuned checkpoint goes; None: return its files as bytes)}; with
    distillation also "teacher" (the start model's checkpoint dir), "distill" (soft-target weight), "temperature".
    splits / parent_files / teacher_files: the data and the parent's / teacher's checkpoint files themselves
    (Ray passes them through its object store, so no worker needs the driver's disk).
    """
    configure_tensorflow(task["threads"])
    import tf_keras as keras

    from tfmobile.models import ModelSpec
    from tfmobile.models.surgery import transfer

    t0, cpu0 = time.time(), time.process_time()
    splits = splits if splits is not None else load_splits(task["data"])
    tmp = tempfile.mkdtemp(prefix="tfmobile_proposal_")
    try:
        parent = _load_parent(task["parent"], parent_files, tmp)
        spec = ModelSpec.from_json(task["spec"])
        splits = splits_at(splits, spec.input_shape)
        model = transfer(parent, spec)
        out = task.get("output_dir") or os.path.join(tmp, "fit")
        if os.path.exists(out):   # a retry after a kill: start the proposal over
            shutil.rmtree(out)
        bn_batches = task.get("bn_batches", 0)
        if bn_batches:
            keras.utils.set_random_seed(task["seed"])   # dropout in training mode: same draws everywhere
            reestimate_batchnorm(model, training_batches(splits, tuple(spec.input_shape), task, bn_batches))
        teacher = _load_parent(task["teacher"], teacher_files, tmp, "teacher") if task.get("distill") else None
        ckpt, metrics = _short_term_fine_tune(model, splits, out, task, teacher)
        result = {"group": task["group"], "width": task["width"], "val_accuracy": metrics["val_accuracy"],
                  "train_accuracy": metrics["train_accuracy"], "bn_batches": bn_batches,
                  "seconds": round(time.time() - t0, 2), "cpu_seconds": round(time.process_time() - cpu0, 2),
                  "pid": os.getpid()}
        if task.get("output_dir"):
            result["checkpoint"] = ckpt
        else:
            result["files"] = {n: open(os.path.join(ckpt, n), "rb").read() for n in os.listdir(ckpt)
                               if os.path.isfile(os.path.join(ckpt, n))}
        return result
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _short_term_fine_tune(model, splits, out, task, teacher=None):
    """(checkpoint dir, metrics) after ``task["steps"]`` steps (distilled from ``teacher`` when given); 0 steps:
    scored as it is, no optimizer step."""
    from tfmobile import train

    ckpt = os.path.join(out, train.CHECKPOINT_DIR)
    if task["steps"]:
        distill = ({"teacher": teacher, "distill": task["distill"], "temperature": task["temperature"]}
                   if teacher is not None else {})
        _, metrics = train.fit(model, splits, out, epochs=1, steps_per_epoch=task["steps"],
                               batch_size=task["batch_size"], lr=task["lr"], seed=task["seed"],
                               augment=task["augment"], shift=task["shift"], tensorboard=False,
                               verbose=0, warmup_epochs=0, **distill)
        return ckpt, metrics
    train.save_checkpoint(model, ckpt, extra={"epoch": 0})
    return ckpt, {"val_accuracy": train.evaluate(model, splits.x_val, splits.y_val), "train_accuracy": None}


def checkpoint_files(directory):
    """A checkpoint directory's files as {name: bytes} (to ship a parent model to Ray workers)."""
    return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, n)) and n != "optimizer.npz"}


def stage_checkpoint(files, directory):
    """Write {name: bytes} as the checkpoint ``directory``: staged beside it, then renamed into place,
    so a kill leaves the old directory or the new one, never a mix (a leftover staging is redone)."""
    staging = directory + ".incoming"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging, mode=shareable_mode(directory=True))
    try:
        for name, blob in files.items():
            if os.path.basename(name) != name or name in ("", ".", ".."):
                raise ValueError(f"checkpoint file name {name!r} is not a plain file name")
            with open(os.path.join(staging, name), "wb") as f:
                f.write(blob)
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------------
# local process pool
# ------------------------------------------------------------------------------------------------
_ENVIRON_LOCK = threading.Lock()


def _start_with_temp_dir(process, directory):
    """Start ``process`` with TMPDIR=``directory`` in its environment from its first instruction: a
    spawned worker imports TensorFlow (through tfmobile.netadapt) while it unpickles its target,
    before any code of ours runs in it. Python's tempfile here keeps its own, already chosen, directory."""
    tempfile.gettempdir()
    with _ENVIRON_LOCK:
        before = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = directory
        try:
            process.start()
        finally:
            if before is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = before


def _use_temp_dir(directory):
    """Python's tempfile in this worker: ``directory`` even if something chose before TMPDIR was read."""
    os.environ["TMPDIR"] = directory
    tempfile.tempdir = directory


def _worker_main(conn, parent_pid, fn, temp_dir):
    _use_temp_dir(temp_dir)
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the driver's to handle
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            os._exit(0)
        if msg is None:
            os._exit(0)
        key, task = msg
        conn.send(("started", key))   # the proposal's deadline counts from here, not from our start-up
        try:
            conn.send(("ok", key, fn(task)))
        except UserError as e:
            conn.send(("user_error", key, str(e)))
        except BaseException as e:  # noqa: BLE001  (reported to the driver, which retries or stops)
            line = " ".join(str(e).split()) or type(e).__name__
            conn.send(("error", key, f"{type(e).__name__}: {line[:300]}",
                       traceback.format_exc(limit=4)[-1500:]))


class _Proc:
    """One worker process and its temporary directory (removed when the worker stops)."""

    def __init__(self, ctx, fn, pool_temp_dir):
        self.temp_dir = tempfile.mkdtemp(prefix="worker_", dir=pool_temp_dir)
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, os.getpid(), fn, self.temp_dir), daemon=True)
        try:
            _start_with_temp_dir(self.process, self.temp_dir)
        except BaseException:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            raise
        finally:
            child.close()
        self.key = None
        self.started = None

    def stop(self, kill=False):
        try:
            if not kill:
                self.conn.send(None)
        except OSError:
            pass
        if kill and self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)   # what a killed proposal left, autograph files


def describe_exit(exitcode):
    if exitcode is None:
        return "still running"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        hint = " (killed: out of memory, or by a user)" if -exitcode == signal.SIGKILL else ""
        return f"died by signal {name}{hint}"
    return f"exited with status {exitcode}"


class _Attempts:
    """Retry bookkeeping shared by both pools: one retry per proposal, then a clear stop."""

    def __init__(self, log):
        self.count = {}
        self.log = log

    def failed(self, key, why):
        self.count[key] = self.count.get(key, 0) + 1
        if self.count[key] >= MAX_ATTEMPTS:
            raise WorkerFailure(f"proposal {key} failed {self.count[key]} times; last: {why}")
        self.log(f"proposal {key}: worker {why}; retrying it once")


class LocalPool:
    """``workers`` spawned processes, one proposal each at a time; they die with the driver.

    fn: the task function (module-level, picklable by reference); ``run_proposal`` by default.
    temp_dir: the workers' temporary directory, owned by the pool: wiped when the first worker starts
    and removed by ``close()`` (a run passes its ``RunDir.scratch_dir()``, so what a kill -9 of the
    driver leaves is wiped by the next driver, which holds the run's lock). None: a new directory in
    the system's temporary directory.
    """

    kind = "local"

    def __init__(self, workers=1, timeout=None, log=None, fn=run_proposal, temp_dir=None):
        if workers < 1:
            raise UserError(f"--workers must be >= 1, got {workers}")
        self.workers, self.timeout = workers, timeout
        self.log = log or (lambda m: None)
        self.ctx = multiprocessing.get_context("spawn")
        self.fn = fn
        self.procs = []
        self.temp_dir_option = temp_dir
        self.temp_dir = None   # exists while workers may run

    def _start_worker(self):
        if self.temp_dir is None:
            if self.temp_dir_option:
                shutil.rmtree(self.temp_dir_option, ignore_errors=True)
                os.makedirs(self.temp_dir_option)
                self.temp_dir = self.temp_dir_option
            else:
                self.temp_dir = tempfile.mkdtemp(prefix="tfmobile_pool_")
        self.procs.append(_Proc(self.ctx, self.fn, self.temp_dir))

    def describe(self):
        return f"{self.workers} local worker process(es)"

    def run(self, tasks, on_result):
        """Run {key: task}; call ``on_result(key, result)`` as each finishes (in the driver).

        Each worker's pipe says "started", then the result; its sentinel says it died. A dead or late
        (``timeout``) worker is replaced and its task retried once (``_Attempts``).
        """
        queue = list(tasks)
        attempts = _Attempts(self.log)
        busy = {}
        try:
            while len(self.procs) < min(self.workers, len(queue)):
                self._start_worker()
            while queue or busy:
                self._dispatch(queue, tasks, busy)
                if not busy:
                    break
                ready = self._wait(busy)
                for p in list(busy.values()):
                    self._collect(p, ready, busy, queue, attempts, on_result)
        except BaseException:
            self.close(kill=True)
            raise

    def _dispatch(self, queue, tasks, busy):
        """Give every idle worker the next task."""
        for p in self.procs:
            if p.key is None and queue:
                key = queue.pop(0)
                p.key, p.started = key, None
                p.conn.send((key, tasks[key]))
                busy[key] = p

    def _wait(self, busy):
        """The pipes and sentinels that are ready, waiting at most until the earliest deadline."""
        from multiprocessing.connection import wait

        waits = [x for p in busy.values() for x in (p.conn, p.process.sentinel)]
        running = [p.started for p in busy.values() if p.started is not None]
        deadline = min(running) + self.timeout if self.timeout and running else None
        return wait(waits, timeout=None if deadline is None else max(0.0, deadline - time.time()))

    def _collect(self, p, ready, busy, queue, attempts, on_result):
        """What worker ``p`` has to say: started, a result, an error, or its death / lateness."""
        key, msg = p.key, None
        if p.conn in ready:
            try:
                msg = p.conn.recv()
            except (EOFError, OSError):
                msg = None
        if msg is not None and msg[0] == "started":
            p.started = time.time()
            return
        if msg is not None:
            del busy[key]
            p.key = None
            if msg[0] == "ok":
                on_result(key, msg[2])
            elif msg[0] == "user_error":
                raise UserError(f"proposal {key}: {msg[2]}")
            else:
                attempts.failed(key, f"raised {msg[2]}")
                queue.insert(0, key)
            return
        dead = p.process.sentinel in ready or (p.conn in ready) or not p.process.is_alive()
        late = self.timeout and p.started is not None and time.time() - p.started > self.timeout
        if dead or late:
            if dead:
                p.process.join(timeout=5)   # reap it, so its exit status is known
            why = describe_exit(p.process.exitcode) if dead and not late else f"timed out after {self.timeout:.0f} s"
            p.stop(kill=True)
            del busy[key]
            self.procs.remove(p)
            attempts.failed(key, why)
            queue.insert(0, key)
            self._start_worker()

    def pids(self):
        return [p.process.pid for p in self.procs]

    def close(self, kill=False):
        """Stop the workers and remove the pool's temporary directory (safe to call again)."""
        try:
            for p in self.procs:
                p.stop(kill=kill)
        finally:
            self.procs = []
            if self.temp_dir is not None:
                shutil.rmtree(self.temp_dir, ignore_errors=True)
                self.temp_dir = None


# ------------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------------
def check_ray_address(address):
    """UserError unless ``address`` is 'local', 'auto' or a HOST:PORT that accepts connections."""
    if address in ("local", "auto"):
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"--ray_address must be auto, local or HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as e:
        raise UserError(f"Ray cluster at {address} is unreachable: {e.strerror or e}") from None


def _code_root():
    import tfmobile
    return os.path.dirname(os.path.dirname(os.path.abspath(tfmobile.__file__)))


def ray_init(address, log=None):
    """Connect to (or, for 'local', start) Ray; the workers import this tfmobile checkout."""
    check_ray_address(address)
    try:
        import ray
    except ImportError:
        raise UserError("--ray_address needs Ray: pip install 'tfmobile[netadapt]'") from None
    if ray.is_initialized():
        return ray
    env = {"env_vars": {"PYTHONPATH": _code_root(), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}}
    try:
        if address == "local":
            ray.init(runtime_env=env, include_dashboard=False, log_to_driver=False,
                     num_cpus=os.cpu_count(), configure_logging=False)
        else:
            ray.init(address=address, runtime_env=env, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot connect to Ray at {address}: {first}") from None
    if log:
        res = ray.cluster_resources()
        log(f"Ray at {address}: {int(res.get('CPU', 0))} CPU(s) on {len(ray.nodes())} node(s)")
    return ray


def _ray_error_is_user(err):
    cause = getattr(err, "cause", None)
    return isinstance(cause, UserError), cause


class RayPool:
    """Proposals as Ray tasks (``threads`` CPUs each); same task function as the local pool."""

    kind = "ray"

    def __init__(self, address, threads=1, timeout=None, log=None, fn=run_proposal):
        self.address, self.threads, self.timeout = address, threads, timeout
        self.log = log or (lambda m: None)
        self.ray = ray_init(address, self.log)
        self.remote = self.ray.remote(max_retries=0, num_cpus=threads)(fn)
        self._data_ref = None

    def describe(self):
        return f"Ray tasks at {self.address}"

    def put_splits(self, splits):
        self._data_ref = self.ray.put(splits)

    def run(self, tasks, on_result):
        ray = self.ray
        attempts = _Attempts(self.log)
        pending = {}
        parents = {t["parent"]: ray.put(checkpoint_files(t["parent"])) for t in tasks.values() if "parent" in t}
        teachers = {t["teacher"]: ray.put(checkpoint_files(t["teacher"])) for t in tasks.values() if t.get("teacher")}

        def submit(key):
            t = dict(tasks[key], output_dir=None)
            args = (t, self._data_ref, parents[t["parent"]]) if "parent" in t else (t,)
            if t.get("teacher"):
                args += (teachers[t["teacher"]],)
            pending[self.remote.remote(*args)] = (key, time.time())

        for key in tasks:
            submit(key)
        try:
            while pending:
                deadline = min(s for _, s in pending.values()) + self.timeout if self.timeout else None
                wait_s = None if deadline is None else max(0.1, deadline - time.time())
                done, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
                for ref in done:
                    key, _ = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:
                        is_user, cause = _ray_error_is_user(e)
                        if is_user:
                            raise UserError(f"proposal {key}: {cause}") from None
                        attempts.failed(key, f"raised {type(cause or e).__name__}: "
                                             f"{' '.join(str(cause or e).split())[:300]}")
                        submit(key)
                        continue
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as e:
                        attempts.failed(key, f"died ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
                        submit(key)
                        continue
                    on_result(key, self._deliver(tasks[key], result))
                if self.timeout:
                    for ref, (key, started) in list(pending.items()):
                        if time.time() - started > self.timeout:
                            ray.cancel(ref, force=True)
                            pending.pop(ref)
                            attempts.failed(key, f"timed out after {self.timeout:.0f} s")
                            submit(key)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    @staticmethod
    def _deliver(task, result):
        """A result as a local worker gives it: its checkpoint written at the task's output_dir."""
        if "files" in result and task.get("output_dir"):
            from tfmobile import train

            checkpoint = os.path.join(task["output_dir"], train.CHECKPOINT_DIR)
            stage_checkpoint(result.pop("files"), checkpoint)
            result["checkpoint"] = checkpoint
        return result

    def close(self, kill=False):
        pass
