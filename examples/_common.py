"""Small pieces the examples share: quiet TensorFlow, a tiny model, toy data."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

# Examples import keras and tensorflow from here, after the settings above.
import keras
import numpy as np
import tensorflow as tf

__all__ = ["keras", "names", "output_dir", "tf", "tiny_model", "toy_data"]


def output_dir(description: str, default: str) -> Path:
    """Parse ``--out`` (replaced on every run) and return it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=default, help="folder to write to (replaced)")
    out = Path(parser.parse_args().out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    return out


def toy_data(n: int = 320, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = (x[:, :2].sum(axis=1) > 0).astype("float32")
    return x, y


def tiny_model(lr: float = 0.01, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(lr), loss="binary_crossentropy", metrics=["accuracy"]
    )
    return model


def names(folder: Path, suffix: str = "") -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if p.name.endswith(suffix) and ".ckptname" not in p.name
    )
