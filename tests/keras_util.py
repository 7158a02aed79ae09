"""Tiny models, data and helper callbacks shared by the Keras tests.

Every test trains a Dense model on 100 random samples in batches of 10
(10 batches an epoch) on the CPU, so each fit takes well under a second
once TensorFlow is loaded.
"""

from __future__ import annotations

import os

# Set before TensorFlow loads: quiet logs, CPU only.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from pathlib import Path
from typing import Any

import keras
import numpy as np

SAMPLES = 100
BATCH_SIZE = 10
STEPS = SAMPLES // BATCH_SIZE


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], dtype="float32")).astype("float32")
    return x, y


def model(steps_per_execution: int = 1, seed: int = 0, metrics: Any = ("mae",)) -> Any:
    """A compiled Dense model, the same weights for the same seed."""
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    m.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="mse",
        metrics=list(metrics),
        steps_per_execution=steps_per_execution,
    )
    return m


def names(folder: Path | str, suffix: str = "") -> list[str]:
    """Checkpoint names in a folder (ckptname's own files left out), sorted."""
    return sorted(
        p.name
        for p in Path(folder).iterdir()
        if ".ckptname" not in p.name and p.name.endswith(suffix)
    )


def leftovers(folder: Path | str) -> list[str]:
    """Temporary files a save left behind."""
    return sorted(p.name for p in Path(folder).rglob(".ckptname-tmp-*"))


class Scripted(keras.callbacks.Callback):
    """Puts a chosen value of a metric into the logs at each epoch end.

    Place it before the checkpoint callback: Keras hands every callback the
    same logs dict.
    """

    def __init__(self, key: str, values: dict[int, float]) -> None:
        super().__init__()
        self.key = key
        self.values = values

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None and epoch in self.values:
            logs[self.key] = self.values[epoch]


class Interrupt(Exception):
    """Stands in for a preemption in the middle of training."""


class InterruptAt(keras.callbacks.Callback):
    """Raises :class:`Interrupt` once the optimizer has applied ``batch`` batches."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if int(self.model.optimizer.iterations) >= self.batch:
            raise Interrupt(f"interrupted after batch {self.batch}")
