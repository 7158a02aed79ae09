"""The main job: train with checkpoints, get preempted, resume, look at the folder.

A small classifier learns scikit-learn's handwritten digits (they ship inside the
package: nothing is downloaded). ``BatchAwareCheckpoint`` saves every 25 global
batches and keeps the 3 latest and the 2 best by loss. The run is stopped in the
middle of an epoch, as a preempted job would be; a fresh process's worth of model
resumes from the latest checkpoint, finishes the interrupted epoch exactly, and
ends with the same checkpoint names and optimizer steps as a run that was never
interrupted. Then the ``ckptname`` command shows the folder.

Run: ``make demo`` (or ``python examples/demo.py [--out DIR] [--epochs N]``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # quieter, and the same numbers every run

import keras
import numpy as np
from sklearn.datasets import load_digits

from ckptname.cli import main as ckptname_cli
from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume

TEMPLATE = "b{batch:05d}-ep{epoch:02d}-loss{loss:.3f}.keras"
BATCH_SIZE = 32
SAVE_FREQ = 25


class Preempted(Exception):
    """What a job scheduler's kill looks like from inside the training loop."""


class PreemptAt(keras.callbacks.Callback):  # type: ignore[misc]
    """Stop training abruptly once the checkpoint callback has counted `batch` batches."""

    def __init__(self, ckpt: BatchAwareCheckpoint, batch: int) -> None:
        super().__init__()
        self.ckpt, self.at = ckpt, batch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.ckpt.batch >= self.at:
            raise Preempted(f"preempted at global batch {self.ckpt.batch}")


def data() -> tuple[np.ndarray, ...]:
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int32")
    return x[:1500], y[:1500], x[1500:], y[1500:]


def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    m = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    m.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return m


def callback(folder: Path) -> BatchAwareCheckpoint:
    return BatchAwareCheckpoint(
        str(folder / TEMPLATE), monitor="loss", save_freq=SAVE_FREQ, keep_last=3, keep_best=2
    )


def train(folder: Path, epochs: int, preempt_at: int | None) -> int:
    """Train into `folder`; return the optimizer steps taken. Preempt if asked."""
    x, y, xv, yv = data()
    m = model()
    ckpt = callback(folder)
    point = resume(m, str(folder / TEMPLATE))
    if point.resumed:
        print(
            f"  resumed from {Path(point.path or '').name}: epoch {point.epoch}, global batch "
            f"{point.batch}, {point.batch_in_epoch} batches into the epoch"
        )
    callbacks: list[keras.callbacks.Callback] = [ckpt]
    if preempt_at is not None:
        callbacks.append(PreemptAt(ckpt, preempt_at))
    try:
        fit_resumed(
            m,
            x,
            y,
            resume=point,
            epochs=epochs,
            batch_size=BATCH_SIZE,
            shuffle=False,
            validation_data=(xv, yv),
            callbacks=callbacks,
            verbose=0,
        )
    except Preempted as exc:
        print(
            f"  {exc} (epoch {ckpt.batch // -(-len(x) // BATCH_SIZE) + 1}); last "
            f"checkpoint: {Path(ckpt.last_checkpoint or '').name}"
        )
    return int(m.optimizer.iterations.numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo_runs", help="where to write (replaced)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--preempt-at", type=int, default=130, help="global batch")
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    run, reference = out / "digits", out / "digits-uninterrupted"
    steps_per_epoch = -(-1500 // BATCH_SIZE)
    started = time.perf_counter()

    print(
        f"ckptname demo: {args.epochs} epochs of {steps_per_epoch} batches, a checkpoint "
        f"every {SAVE_FREQ} global batches, keep_last=3, keep_best=2 (by loss)"
    )
    print(f"template: {TEMPLATE}\n")
    print("1. training, then a preemption in the middle of an epoch")
    train(run, args.epochs, preempt_at=args.preempt_at)
    print("2. a new model resumes from the latest checkpoint and finishes")
    steps = train(run, args.epochs, preempt_at=None)
    print("3. the same training without interruption, for comparison")
    ref_steps = train(reference, args.epochs, preempt_at=None)

    names = sorted(p.name for p in run.iterdir() if p.suffix == ".keras")
    ref_names = sorted(p.name for p in reference.iterdir() if p.suffix == ".keras")
    print(
        f"  same checkpoint names as the uninterrupted run: {names == ref_names}; "
        f"optimizer steps {steps} vs {ref_steps}\n"
    )

    print(f"$ ckptname ls {run}")
    ckptname_cli(["ls", str(run)])
    print(f"\n$ ckptname latest {run}")
    ckptname_cli(["latest", str(run)])
    print(f"\n$ ckptname best {run} --monitor loss")
    ckptname_cli(["best", str(run), "--monitor", "loss"])
    print(f"\ndone in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
