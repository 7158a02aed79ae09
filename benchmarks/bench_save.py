"""The stall a save puts in the training loop, and the whole fit, with and without background saves.

One process, TensorFlow backend, interleaved rounds (each round trains every
configuration once, so that a slow moment of the machine hits them all
alike). The same model, data and steps for every configuration, a save every
``--every`` steps:

* ``none``: no callback;
* ``keras``: ``keras.callbacks.ModelCheckpoint``;
* ``ckptname``: ``BatchAwareCheckpoint`` (synchronous);
* ``ckptname bg``: ``BatchAwareCheckpoint(save_on_background=True)``;
* ``orbax`` / ``orbax bg``: Keras's ``OrbaxCheckpoint``, only where
  ``orbax-checkpoint`` is installed.

Reported per configuration: the time inside the callback per save (the
stall the training loop sees; median, min and max over all saves of all
rounds, the first save of each fit included), the whole ``fit`` including
the final wait (median, min, max over rounds) and the size of one checkpoint
on disk, with ratios to ``ModelCheckpoint``. Two models: about 50 M
parameters (Dense layers, Adam) and about 1 M.

Run: ``python benchmarks/bench_save.py [--rounds 3] [--steps 60] [--every 20]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # after the environment above
import numpy as np

from ckptname.keras import BatchAwareCheckpoint

MODELS = {"50M": (1024, 4800, 3), "1M": (256, 900, 2)}  # features, width, hidden layers


def build(features: int, width: int, hidden: int) -> Any:
    keras.utils.set_random_seed(0)
    layers = [keras.layers.Dense(width, activation="relu") for _ in range(hidden)]
    model = keras.Sequential([keras.Input((features,)), *layers, keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return model


class Timed(keras.callbacks.Callback):
    """Wraps a callback and times its batch-end hook on the batches where a save is due."""

    def __init__(self, inner: Any, every: int) -> None:
        super().__init__()
        self.inner, self.every, self.stalls, self.end = inner, every, [], 0.0
        self.step = 0

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        self.inner.set_model(model)

    def set_params(self, params: Any) -> None:
        super().set_params(params)
        self.inner.set_params(params)

    def on_train_begin(self, logs: Any = None) -> None:
        self.inner.on_train_begin(logs)

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.inner.on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.step += 1
        t = time.perf_counter()
        self.inner.on_train_batch_end(batch, logs)
        if self.step % self.every == 0:
            self.stalls.append(time.perf_counter() - t)

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        self.inner.on_epoch_end(epoch, logs)

    def on_train_end(self, logs: Any = None) -> None:
        t = time.perf_counter()
        self.inner.on_train_end(logs)
        self.end = time.perf_counter() - t


def callback(kind: str, folder: str, every: int) -> Any:
    if kind == "none":
        return None
    if kind == "keras":
        return keras.callbacks.ModelCheckpoint(
            os.path.join(folder, "e{epoch:02d}-b{batch:04d}.keras"), save_freq=every
        )
    if kind.startswith("orbax"):
        return keras.callbacks.OrbaxCheckpoint(
            folder, save_freq=every, save_on_background=kind.endswith("bg")
        )
    return BatchAwareCheckpoint(
        os.path.join(folder, "b{batch:05d}.keras"),
        save_freq=every,
        save_on_background=kind.endswith("bg"),
        lock=False,
    )


def size_of(folder: str) -> int:
    """Bytes of one checkpoint: the largest file or step folder there."""
    sizes = []
    for entry in os.scandir(folder):
        if entry.is_dir():
            files = [os.path.join(d, f) for d, _, names in os.walk(entry.path) for f in names]
            sizes.append(sum(map(os.path.getsize, files)))
        elif ".ckptname" not in entry.name:
            sizes.append(entry.stat().st_size)
    return max(sizes, default=0)


def run(kind: str, spec: tuple[int, int, int], args: argparse.Namespace, x: Any, y: Any) -> dict:
    model = build(*spec)
    model.fit(x[:64], y[:64], batch_size=args.batch_size, epochs=1, verbose=0)  # trace once
    model.optimizer.iterations.assign(0)  # every callback counts from step 0
    folder = tempfile.mkdtemp(prefix="bench-save-")
    try:
        inner = callback(kind, folder, args.every)
        timed = None if inner is None else Timed(inner, args.every)
        start = time.perf_counter()
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0,
                  callbacks=[] if timed is None else [timed])  # fmt: skip
        whole = time.perf_counter() - start
        return {
            "fit": whole,
            "stalls": [] if timed is None else timed.stalls,
            "end": 0.0 if timed is None else timed.end,
            "size": size_of(folder) if inner is not None else 0,
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fmt(values: list[float], scale: float = 1.0) -> str:
    if not values:
        return "-"
    return (
        f"{statistics.median(values) * scale:7.3f} "
        f"[{min(values) * scale:.3f}-{max(values) * scale:.3f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="training steps per fit")
    parser.add_argument("--every", type=int, default=20, help="save every N steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="50M,1M")
    args = parser.parse_args()
    kinds = ["none", "keras", "ckptname", "ckptname bg"]
    if importlib.util.find_spec("orbax") is not None:
        kinds += ["orbax", "orbax bg"]
    else:
        print("orbax-checkpoint is not installed: Keras OrbaxCheckpoint not measured")
    for label in args.models.split(","):
        spec = MODELS[label]
        model = build(*spec)
        params = model.count_params()
        del model
        rng = np.random.default_rng(0)
        n = args.steps * args.batch_size
        x = rng.normal(size=(n, spec[0])).astype("float32")
        y = rng.normal(size=(n, 1)).astype("float32")
        results: dict[str, list[dict]] = {k: [] for k in kinds}
        for r in range(args.rounds):
            order = kinds[r % len(kinds):] + kinds[: r % len(kinds)]  # rotate the order
            for kind in order:
                results[kind].append(run(kind, spec, args, x, y))
        print(
            f"\nmodel {label}: {params / 1e6:.1f} M parameters, Adam, {args.steps} steps of "
            f"{args.batch_size}, a save every {args.every} steps, {args.rounds} rounds; "
            "seconds, median [min-max]"
        )
        print(f"{'configuration':14} {'stall per save':>24} {'vs keras':>8} "
              f"{'whole fit':>24} {'vs keras':>8} {'wait at end':>12} {'size':>9}")  # fmt: skip
        ref_stall = statistics.median(s for r in results["keras"] for s in r["stalls"])
        ref_fit = statistics.median(r["fit"] for r in results["keras"])
        for kind in kinds:
            stalls = [s for r in results[kind] for s in r["stalls"]]
            fits = [r["fit"] for r in results[kind]]
            ends = [r["end"] for r in results[kind]]
            size = results[kind][0]["size"]
            stall_ratio = f"{statistics.median(stalls) / ref_stall:8.3f}" if stalls else f"{'-':>8}"
            print(
                f"{kind:14} {fmt(stalls):>24} {stall_ratio} {fmt(fits):>24} "
                f"{statistics.median(fits) / ref_fit:8.3f} {statistics.median(ends):12.3f} "
                f"{size / 1e6:7.1f}MB"
            )


if __name__ == "__main__":
    main()
