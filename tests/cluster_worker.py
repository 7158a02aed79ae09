"""One process of a two-process training cluster on 127.0.0.1 (run by test_many_workers.py).

``python cluster_worker.py SPEC`` reads the JSON file ``SPEC``:

* ``backend``: ``"tensorflow"`` (``MultiWorkerMirroredStrategy``), ``"jax"``
  (``jax.distributed`` with CPU collectives and ``keras.distribution.DataParallel``,
  each process feeding its half of the data) or ``"torch"`` (``torch.distributed``
  with gloo and ``DistributedDataParallel`` in a hand-written loop, as Keras's
  multi-GPU PyTorch guide trains);
* ``launch``: on TensorFlow, ``"tf_config"`` (the cluster in ``TF_CONFIG``, the
  default) or ``"resolver"`` (no ``TF_CONFIG``: the strategy is given a
  ``SimpleClusterResolver`` of the same cluster, as a Slurm job gives it a
  ``SlurmClusterResolver``);
* ``index``, ``ports``: this process and the cluster's addresses;
* ``filepath``: the checkpoint template, local or ``s3://``; ``s3``: the S3
  server's endpoint, and the access key this process signs with;
* ``background``: whether the chief saves on a background thread; ``chief``: the
  callback's ``chief`` argument; ``without_callback``: only process 0 runs the
  callback; ``agree_timeout``: how long processes wait for each other at train begin;
* ``kill_at``: the global batch after which this process reports ``paused_at``
  and waits, for the test to SIGKILL the whole cluster at once, or ``None``;
* ``save_on_preemption``: the callback's argument; ``signal_at``, ``signal_to``:
  process ``signal_to`` sends itself SIGTERM once global batch ``signal_at`` - 1
  has ended (the other process receives nothing);
* ``in_scope``: on TensorFlow, ``resume`` and ``fit`` are called inside
  ``with strategy.scope():`` (else after the block that built the model);
* ``misconfigured``: instead of training, one ``fit`` for each entry, with the
  callback given that entry's ``chief``, ``filepath`` and ``save_on_preemption``
  (each a list of one value per process), recording the error each raised;
* ``save_freq``, ``keep_last``: the callback's arguments (4 and 2 by default);
  ``batch_sleep``: seconds each process sleeps after every batch; ``clock_rate``:
  the clock the non-chief's schedule reads runs this many times faster than
  time (a wall-clock ``save_freq`` must follow the chief's clock alone);
* ``report``: where to write what this process computed, rewritten after every
  checkpoint, so a killed process leaves it too.

It resumes from the folder (a fresh start when empty) and trains 3 epochs of 8
batches with :class:`ckptname.keras.BatchAwareCheckpoint` saving every 4 global
batches (inside and at the end of epochs) and keeping the last 2. A process that
is not the chief records every write, rename or delete it makes below the local
checkpoint root (Python audit events), which the test expects to be none.

Stacks: ``SIGUSR1`` dumps every thread's stack to stderr (the test sends it to a
stuck cluster); a process still running after ``deadline`` seconds dumps and exits.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import os
import signal
import sys
import time
import traceback
from typing import Any

with open(sys.argv[1]) as spec_file:
    SPEC = json.load(spec_file)
faulthandler.register(signal.SIGUSR1, all_threads=True)
faulthandler.dump_traceback_later(SPEC["deadline"], exit=True)

BACKEND = os.environ["KERAS_BACKEND"]
INDEX = SPEC["index"]
PORTS = SPEC["ports"]
EPOCHS, STEPS, LOCAL_BATCH = 3, 8, 4
WORKERS = len(PORTS)


def start_cluster() -> object | None:
    """Join the cluster; the TensorFlow strategy (``None`` on JAX)."""
    if BACKEND == "tensorflow":
        cluster = {"worker": [f"127.0.0.1:{port}" for port in PORTS]}
        resolver = None
        if SPEC.get("launch") == "resolver":
            import tensorflow as tf

            resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
                tf.train.ClusterSpec(cluster), task_type="worker", task_id=INDEX, rpc_layer="grpc"
            )
        else:
            os.environ["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": INDEX}}
            )
        import tensorflow as tf

        strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
        work_around_keras_under_mwms()
        return strategy
    # No TensorFlow on JAX or PyTorch: nothing here needs it (NumPy input), and
    # keeping it out shows that; it also saves each process seconds of imports.
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    if BACKEND == "torch":
        # As Keras's multi-GPU PyTorch guide sets it up, on CPU: gloo instead of NCCL.
        from datetime import timedelta

        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{PORTS[0]}", rank=INDEX,
                                world_size=WORKERS, timeout=timedelta(seconds=SPEC["deadline"]))
        return None
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{PORTS[0]}", num_processes=WORKERS, process_id=INDEX
    )
    import keras

    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
    )
    return None


def work_around_keras_under_mwms() -> None:
    """Two upstream bugs stop Keras 3's ``fit`` under MultiWorkerMirroredStrategy.

    Test code only: ckptname patches nothing in Keras.

    * keras-team/keras#20585: ``_maybe_symbolic_build`` takes a batch from the
      distributed iterator (``PerReplica`` values it cannot convert, and a batch
      the epoch then lacks). The model is built before ``fit`` instead (see
      ``build``), so this step has nothing to do.
    * tensorflow/tensorflow#72388: ``reduce_per_replica`` reduces the logged
      scalars with ``axis=0`` across workers (``Invalid reduction dimension 0``);
      they are reduced over the replicas alone.
    """
    import keras
    from keras.src.backend.tensorflow import trainer as tf_trainer

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = lambda self, **kw: None
    original = tf_trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):  # type: ignore[no-untyped-def]
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(
            strategy
        ):
            return keras.tree.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values
            )
        return original(values, strategy, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica


def watch_writes(root: str) -> list[str]:
    """Every write, rename or delete this process makes below ``root`` (or by directory fd)."""
    root = os.path.realpath(root)
    seen: list[str] = []
    writes = {"os.rename", "os.replace", "os.remove", "os.rmdir", "os.mkdir", "os.truncate",
              "os.symlink", "os.link", "shutil.rmtree", "shutil.move"}  # fmt: skip

    def below(path: object) -> bool:
        if isinstance(path, int) or path is None:
            return False
        try:
            full = os.path.realpath(os.fsdecode(path))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        return full == root or full.startswith(root + os.sep)

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event == "open" and len(args) >= 3:
            path, mode, flags = args[0], args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if writing and below(path):
                seen.append(f"open {path} {mode!r}")
        elif event in writes and any(below(a) for a in args if not isinstance(a, int)):
            seen.append(f"{event} {args}")
        elif event in writes and any(isinstance(a, int) and a >= 0 for a in args[1:]):
            seen.append(f"{event} with a directory fd {args}")  # relative to an open folder

    sys.addaudithook(hook)
    return seen


def main() -> None:
    strategy = start_cluster()
    if SPEC.get("s3"):
        import fsspec

        fsspec.config.conf["s3"] = {
            "endpoint_url": SPEC["s3"]["endpoint"],
            "key": SPEC["s3"]["key"],
            "secret": "testing",
        }
    import keras
    import numpy as np

    filepath = SPEC["filepath"]
    chief = INDEX == 0
    roots = [os.path.dirname(path) for case in SPEC.get("misconfigured", [])
             for path in case["filepath"]]  # fmt: skip
    watched = [os.path.dirname(filepath), *roots]
    writes = [] if chief or "://" in filepath else watch_writes(os.path.commonpath(watched))

    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS * LOCAL_BATCH * WORKERS, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")).astype("float32")
    if BACKEND == "torch":
        train_torch_loop(x, y, writes)
        return
    if BACKEND == "jax":
        # Each process feeds its half; the global batch is both halves together.
        x, y, batch_size = x[INDEX::WORKERS], y[INDEX::WORKERS], LOCAL_BATCH
    else:
        batch_size = LOCAL_BATCH * WORKERS  # the strategy splits each global batch

    def build() -> keras.Model:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
        )
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse", metrics=["mae"])
        if strategy is not None:
            model._symbolic_build(data_batch=(x[:batch_size], y[:batch_size]))
        return model

    if strategy is not None:
        with strategy.scope():  # type: ignore[attr-defined]
            model = build()
    else:
        model = build()
    in_scope = strategy is not None and SPEC.get("in_scope")
    scope = strategy.scope() if in_scope else contextlib.nullcontext()  # type: ignore[attr-defined]
    with scope:
        train(strategy, model, x, y, batch_size, writes)


def train(strategy: Any, model: Any, x: Any, y: Any, batch_size: int, writes: list[str]) -> None:
    """Resume from the folder and train to the end (or the kill, or the signal)."""
    import keras
    import numpy as np

    from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume

    filepath = SPEC["filepath"]
    point = resume(model, filepath)
    if SPEC.get("without_callback") and INDEX != 0:
        # A cluster given the callback on the chief alone: this process trains without it.
        fit_resumed(model, x, y, resume=point, epochs=EPOCHS, batch_size=batch_size,
                    shuffle=False, verbose=0)  # fmt: skip
        return
    if SPEC.get("agree_timeout"):
        import ckptname._keras_cluster

        ckptname._keras_cluster.AGREE_TIMEOUT_S = SPEC["agree_timeout"]
    if SPEC.get("misconfigured"):
        misconfigured(model, x, y, batch_size, writes)
        return
    preemption = SPEC.get("save_on_preemption", False)
    ckpt = BatchAwareCheckpoint(filepath, monitor="loss", save_freq=SPEC.get("save_freq", 4),
                                keep_last=SPEC.get("keep_last", 2),
                                save_on_background=SPEC["background"], chief=SPEC["chief"],
                                save_on_preemption=preemption)  # fmt: skip
    if SPEC.get("clock_rate") and INDEX != 0:
        began, rate = time.time(), SPEC["clock_rate"]
        ckpt._schedule.clock = lambda: began + rate * (time.time() - began)
    if strategy is not None:
        replicas = strategy.num_replicas_in_sync  # type: ignore[attr-defined]
    else:
        import jax

        replicas = jax.device_count() if jax.process_count() == WORKERS else 0
    report = {"index": INDEX, "chief": None, "resumed_from": point.batch, "names": [],
              "writes": writes, "replicas": replicas}  # fmt: skip

    def write_report() -> None:
        report["chief"] = ckpt.is_chief
        tmp = SPEC["report"] + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(report, fh)
        os.replace(tmp, SPEC["report"])

    class Record(keras.callbacks.Callback):  # type: ignore[misc]
        """What this process computed: each checkpoint name, as the callback named it."""

        def note(self) -> None:
            path = ckpt.last_checkpoint
            name = None if path is None else os.path.basename(path)
            if name is not None and (not report["names"] or report["names"][-1] != name):
                report["names"].append(name)
                write_report()

        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            self.note()
            time.sleep(SPEC.get("batch_sleep", 0))
            if SPEC.get("signal_to") == INDEX and ckpt.batch == SPEC["signal_at"] - 1:
                os.kill(os.getpid(), signal.SIGTERM)
            if SPEC["kill_at"] is not None and ckpt.batch == SPEC["kill_at"]:
                report["paused_at"] = ckpt.batch
                write_report()
                while True:  # until the test kills the cluster
                    time.sleep(1)

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            self.note()

        def on_train_end(self, logs: object = None) -> None:
            self.note()  # a background save ends by the callback's on_train_end, before this

    write_report()
    fit_resumed(model, x, y, resume=point, epochs=EPOCHS, batch_size=batch_size,
                shuffle=False, verbose=0, callbacks=[ckpt, Record()])  # fmt: skip
    report["iterations"] = int(np.asarray(model.optimizer.iterations))
    report["batch"], report["preempted"] = ckpt.batch, ckpt.preempted
    write_report()
    if strategy is not None:
        # TensorFlow's gRPC teardown at exit takes seconds and adds nothing here.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def train_torch_loop(x: Any, y: Any, writes: list[str]) -> None:
    """Keras's multi-GPU PyTorch guide on CPU: DDP, a DistributedSampler, a torch optimizer.

    The callback is driven by hand, as ``fit`` would drive it, and the loss it
    is given is the mean over the processes, as ``fit`` reports it under a
    distribution: every process then names every checkpoint alike. The
    optimizer is plain SGD, whose state is nothing: the Keras checkpoint holds
    the whole training state. An interrupted epoch's rest is run first, as a
    run of its own (as ``fit_resumed`` does).
    """
    import keras
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    from ckptname.keras import BatchAwareCheckpoint, resume

    filepath = SPEC["filepath"]
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)]
    )
    point = resume(model, filepath)
    if SPEC.get("misconfigured"):
        misconfigured_loops(model, writes)
        return
    ckpt = BatchAwareCheckpoint(filepath, monitor="loss", save_freq=SPEC.get("save_freq", 4),
                                keep_last=SPEC.get("keep_last", 2),
                                save_on_background=SPEC["background"], chief=SPEC["chief"],
                                save_on_preemption=SPEC.get("save_on_preemption",
                                                            False))  # fmt: skip
    if SPEC.get("clock_rate") and INDEX != 0:
        began, rate = time.time(), SPEC["clock_rate"]
        ckpt._schedule.clock = lambda: began + rate * (time.time() - began)
    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    sampler = DistributedSampler(data, num_replicas=WORKERS, rank=INDEX, shuffle=False)
    loader = DataLoader(data, sampler=sampler, batch_size=LOCAL_BATCH, shuffle=False)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.MSELoss()
    report = {"index": INDEX, "chief": None, "resumed_from": point.batch, "names": [],
              "writes": writes, "replicas": dist.get_world_size()}  # fmt: skip
    steps_run = 0

    def write_report() -> None:
        report["chief"] = ckpt.is_chief
        tmp = SPEC["report"] + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(report, fh)
        os.replace(tmp, SPEC["report"])

    def note() -> None:
        path = ckpt.last_checkpoint
        name = None if path is None else os.path.basename(path)
        if name is not None and (not report["names"] or report["names"][-1] != name):
            report["names"].append(name)
            write_report()

    def run(first_epoch: int, last_epoch: int, skip: int) -> bool:
        """Epochs ``first_epoch`` to ``last_epoch`` (0-based); the first skips ``skip`` batches."""
        nonlocal steps_run
        model.stop_training = False  # as fit does; the callback sets it for a preemption
        ckpt.set_model(model)
        ckpt.set_params({"epochs": last_epoch + 1, "steps": STEPS - skip})
        ckpt.on_train_begin()
        logs: dict[str, float] = {}
        for epoch in range(first_epoch, last_epoch + 1):
            ckpt.on_epoch_begin(epoch)
            begin = skip if epoch == first_epoch else 0
            for i, (xb, yb) in enumerate(loader):
                if i < begin:
                    continue
                loss = loss_fn(ddp(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                steps_run += 1
                mean = loss.detach().clone()
                dist.all_reduce(mean)
                logs = {"loss": float(mean) / WORKERS}
                ckpt.on_train_batch_end(i - begin, logs)
                note()
                if SPEC.get("signal_to") == INDEX and ckpt.batch == SPEC["signal_at"] - 1:
                    os.kill(os.getpid(), signal.SIGTERM)
                if SPEC["kill_at"] is not None and ckpt.batch == SPEC["kill_at"]:
                    report["paused_at"] = ckpt.batch
                    write_report()
                    while True:  # until the test kills the cluster
                        time.sleep(1)
                time.sleep(SPEC.get("batch_sleep", 0))
                if model.stop_training:
                    break
            ckpt.on_epoch_end(epoch, logs)  # as fit does, also after a stop
            note()
            if model.stop_training:
                break
        ckpt.on_train_end()
        note()
        return not model.stop_training

    write_report()
    going = True
    if point.mid_epoch:
        going = run(point.initial_epoch, point.initial_epoch, point.batch_in_epoch)
    if going:
        run(point.initial_epoch + int(point.mid_epoch), EPOCHS - 1, 0)
    report["iterations"] = point.batch + steps_run
    report["batch"], report["preempted"] = ckpt.batch, ckpt.preempted
    report["weights"] = [np.asarray(w).tolist() for w in model.get_weights()]
    write_report()
    dist.destroy_process_group()


def misconfigured_loops(model: Any, writes: list[str]) -> None:
    """One run of the callback's hooks for each misconfiguration; the error each raised."""
    from ckptname.keras import BatchAwareCheckpoint

    errors: list[list[str] | None] = []
    for case in SPEC["misconfigured"]:
        mine = {key: values[INDEX] for key, values in case.items()}
        ckpt = BatchAwareCheckpoint(mine["filepath"], monitor="loss", save_freq=mine["save_freq"],
                                    chief=mine["chief"],
                                    save_on_preemption=mine["save_on_preemption"])  # fmt: skip
        ckpt.set_model(model)
        try:
            ckpt.on_train_begin()
        except Exception as exc:  # the test compares type and message
            errors.append([f"{type(exc).__module__}.{type(exc).__name__}", str(exc)])
        else:
            errors.append(None)
            ckpt.on_train_end()
    with open(SPEC["report"], "w") as fh:
        json.dump({"index": INDEX, "errors": errors, "writes": writes}, fh)


def misconfigured(model: Any, x: Any, y: Any, batch_size: int, writes: list[str]) -> None:
    """One fit for each misconfiguration of the spec; the error each raised, in the report."""
    from ckptname.keras import BatchAwareCheckpoint

    errors: list[list[str] | None] = []
    for case in SPEC["misconfigured"]:
        mine = {key: values[INDEX] for key, values in case.items()}
        ckpt = BatchAwareCheckpoint(mine["filepath"], monitor="loss", save_freq=mine["save_freq"],
                                    chief=mine["chief"],
                                    save_on_preemption=mine["save_on_preemption"])  # fmt: skip
        try:
            model.fit(x, y, epochs=1, batch_size=batch_size, shuffle=False, verbose=0,
                      callbacks=[ckpt])  # fmt: skip
        except Exception as exc:  # the test compares type and message
            errors.append([f"{type(exc).__module__}.{type(exc).__name__}", str(exc)])
        else:
            errors.append(None)
    with open(SPEC["report"], "w") as fh:
        json.dump({"index": INDEX, "errors": errors, "writes": writes}, fh)
    if BACKEND == "tensorflow":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        # Exit at once: a TensorFlow worker whose cluster broke can hang in its
        # teardown, and the test expects a failed worker to end.
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
