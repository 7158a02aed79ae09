"""Training speed with no checkpoint callback, Keras's ModelCheckpoint and BatchAwareCheckpoint.

One model, one data set, one process. Each configuration trains for the same
number of batches; configurations are interleaved in rounds (so that a slow
moment of the machine hits them all alike) and each is reported as the median
steps per second over the rounds, and as a ratio to the median of no callback.

Configurations:

* ``none``: no callback (Keras still converts the logs of every batch).
* ``keras`` / ``ckptname``, (a) "no save due": ``save_freq`` larger than the
  run, so only the per-batch hook runs.
* ``keras`` / ``ckptname``, (b) "save every N": ``save_freq=N`` batches, the
  same saves for both (``ckptname`` also writes a sidecar and the state file,
  and flushes each checkpoint to disk).

Every Keras backend that is installed is measured, each in a process of its
own (Keras fixes its backend at import), one after the other; ``--backend``
measures one. Each backend runs on one thread, so that step times are steady
on a shared machine.

Run: ``python benchmarks/bench_fit.py [--backend jax] [--rounds 9] [--every 50]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

# Set before Keras loads a backend: quiet logs, CPU only, one thread.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def build(features: int, width: int) -> Any:
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=sorted(BACKENDS), help="one backend (default: all)")
    parser.add_argument("--rounds", type=int, default=21, help="measurements per configuration")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per measurement")
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--every", type=int, default=50, help="save_freq of the (b) runs")
    parser.add_argument("--threads", type=int, default=1, help="backend threads (0: default)")
    args = parser.parse_args()
    if args.backend is None:
        for backend, module in BACKENDS.items():
            if importlib.util.find_spec(module) is None:
                print(f"backend {backend}: not installed, skipped\n")
                continue
            env = dict(os.environ, KERAS_BACKEND=backend)
            cmd = [sys.executable, __file__, "--backend", backend, *sys.argv[1:]]
            subprocess.run(cmd, env=env, check=True)
            print()
        return
    os.environ["KERAS_BACKEND"] = args.backend
    one_backend(args)


def one_backend(args: argparse.Namespace) -> None:
    import keras
    import numpy as np

    from ckptname.keras import BatchAwareCheckpoint

    if args.threads:
        # Fewer threads make step times steadier on a shared machine.
        if args.backend == "tensorflow":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        elif args.backend == "torch":
            import torch

            torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, 32)).astype("float32")
    y = rng.normal(size=(args.samples, 1)).astype("float32")
    model = build(32, 64)
    steps = args.epochs * (args.samples // args.batch_size)
    never = 10**9
    work = tempfile.mkdtemp(prefix="bench-fit-")

    def callbacks(kind: str, folder: str) -> list[Any]:
        if kind == "none":
            return []
        if kind == "keras (a) no save due":
            return [keras.callbacks.ModelCheckpoint(f"{folder}/{{epoch}}.keras", save_freq=never)]
        if kind == "ckptname (a) no save due":
            return [BatchAwareCheckpoint(f"{folder}/b{{batch}}.keras", save_freq=never)]
        if kind == f"keras (b) save every {args.every}":
            return [
                keras.callbacks.ModelCheckpoint(
                    f"{folder}/e{{epoch}}-{{batch}}.keras", save_freq=args.every
                )
            ]
        return [BatchAwareCheckpoint(f"{folder}/b{{batch}}.keras", save_freq=args.every)]

    kinds = [
        "none",
        "keras (a) no save due",
        "ckptname (a) no save due",
        f"keras (b) save every {args.every}",
        f"ckptname (b) save every {args.every}",
    ]

    def measure(kind: str) -> float:
        """Steps per second of wall time for one fit."""
        folder = tempfile.mkdtemp(dir=work)
        cbs = callbacks(kind, folder)
        start = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=cbs)
        elapsed = time.perf_counter() - start
        shutil.rmtree(folder, ignore_errors=True)
        return steps / elapsed

    try:
        for kind in kinds:  # warm-up: tracing, first saves
            measure(kind)
        speeds: dict[str, list[float]] = {kind: [] for kind in kinds}
        ratios: dict[str, list[float]] = {kind: [] for kind in kinds}
        for r in range(args.rounds):
            # Rotate the order each round so that no configuration always runs
            # first, and compare each with the no-callback run of its own round
            # so that slow spells of a shared machine cancel out.
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            got = {kind: measure(kind) for kind in order}
            for kind in kinds:
                speeds[kind].append(got[kind])
                ratios[kind].append(got[kind] / got["none"])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    hook = hook_cost()
    base = statistics.median(speeds["none"])
    best_base = max(speeds["none"])
    print(
        f"keras {keras.__version__}, backend {keras.backend.backend()}, {steps} steps per "
        f"measurement, {args.rounds} rounds, {args.threads or 'default'} thread(s)"
    )
    print(
        "median: median steps/s over rounds, and median of the per-round ratios to no "
        "callback; best: fastest round, and its ratio to the fastest no-callback round"
    )
    print(f"{'configuration':<32} {'median':>8} {'vs none':>8} {'best':>8} {'vs none':>8}")
    for kind in kinds:
        values = speeds[kind]
        print(
            f"{kind:<32} {statistics.median(values):8.1f} {statistics.median(ratios[kind]):8.3f} "
            f"{max(values):8.1f} {max(values) / best_base:8.3f}"
        )
    pairs = {
        "(a) no save due": ("keras (a) no save due", "ckptname (a) no save due"),
        f"(b) save every {args.every}": (
            f"keras (b) save every {args.every}",
            f"ckptname (b) save every {args.every}",
        ),
    }
    for label, (theirs, ours) in pairs.items():
        median = statistics.median(ratios[ours]) / statistics.median(ratios[theirs])
        best = max(speeds[ours]) / max(speeds[theirs])
        print(f"ckptname / keras ModelCheckpoint, {label}: median {median:.3f}, best {best:.3f}")
    print(
        f"per-batch hook of BatchAwareCheckpoint, no save due: {hook * 1e9:.0f} ns a call "
        f"({hook * base * 100:.3f}% of a step at the median no-callback speed)"
    )


def hook_cost(calls: int = 200_000) -> float:
    """Seconds per ``on_train_batch_end`` call when no save is due, timed alone."""
    from ckptname.keras import BatchAwareCheckpoint

    folder = tempfile.mkdtemp(prefix="bench-hook-")
    try:
        cb = BatchAwareCheckpoint(f"{folder}/b{{batch}}.keras", save_freq=10**12)
        cb.set_model(None)
        cb.set_params({"epochs": 1, "steps": calls})
        cb.on_train_begin()
        cb.on_epoch_begin(0)
        logs = {"loss": 0.5, "mae": 0.4}
        hook = cb.on_train_batch_end
        start = time.perf_counter()
        for i in range(calls):
            hook(i, logs)
        return (time.perf_counter() - start) / calls
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
