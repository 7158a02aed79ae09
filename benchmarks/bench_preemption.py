"""From a preemption signal to a committed checkpoint: the time a grace period must cover.

One process, TensorFlow backend, the two models of ``bench_save.py`` (about
50 M and 1 M parameters, Adam). Each round trains with
``BatchAwareCheckpoint(save_on_preemption=True)`` (synchronous, and with
``save_on_background=True``), and a timer thread sends ``SIGTERM`` to the
process at a random moment of the training. Measured, per configuration:

* the latency from the signal to ``fit`` returning, when the preemption
  checkpoint is complete (its sidecar written, the state file naming it);
* the baseline, measured in the same run: the step time of the same fit
  (median over its batches) plus the time of one ``model.save`` of the same
  model by Keras (median over the rounds). The latency should be at most one
  step (the signal waits for the next batch boundary) plus one save, and the
  ratio to the baseline near 1.

Run: ``python benchmarks/bench_preemption.py [--rounds 5] [--models 50M,1M]``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # after the environment above
import numpy as np
from bench_save import MODELS, build  # the same models

from ckptname import read_metadata
from ckptname.keras import BatchAwareCheckpoint


class StepTimes(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []
        self._start = 0.0

    def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.times.append(time.perf_counter() - self._start)


def one(spec: tuple[int, int, int], background: bool, x: Any, y: Any, rng: random.Random) -> tuple:
    folder = tempfile.mkdtemp(prefix="ckptname-bench-")
    try:
        model = build(*spec)
        model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)  # compile first
        ckpt = BatchAwareCheckpoint(os.path.join(folder, "b{batch:06d}.keras"), save_freq=10**9,
                                    save_on_preemption=True, save_on_background=background)
        steps = StepTimes()
        sent: list[float] = []

        def preempt() -> None:
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGTERM)

        timer = threading.Timer(rng.uniform(0.5, 2.0), preempt)
        timer.start()
        model.fit(x, y, batch_size=32, epochs=1000, verbose=0, callbacks=[steps, ckpt])
        returned = time.perf_counter()
        timer.cancel()
        assert ckpt.preempted and ckpt.last_checkpoint is not None
        assert read_metadata(ckpt.last_checkpoint)["preempted"] is True
        started = time.perf_counter()
        model.save(os.path.join(folder, "keras.keras"))
        saved = time.perf_counter() - started
        return returned - sent[0], statistics.median(steps.times), saved
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--models", default="50M,1M")
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, {args.rounds} rounds")
    print("latency: from SIGTERM to fit returning with the checkpoint committed (median, min, max)")
    for label in args.models.split(","):
        spec = MODELS[label]
        features = spec[0]
        x = np.random.default_rng(0).normal(size=(2048, features)).astype("float32")
        y = x[:, :1].copy()
        for background in (False, True):
            results = [one(spec, background, x, y, rng) for _ in range(args.rounds)]
            latency = [r[0] for r in results]
            step = statistics.median(r[1] for r in results)
            save = statistics.median(r[2] for r in results)
            kind = "background" if background else "synchronous"
            median = statistics.median(latency)
            print(
                f"model {label}, {kind:11s}: latency {median * 1e3:7.1f} ms "
                f"(min {min(latency) * 1e3:.1f}, max {max(latency) * 1e3:.1f}); "
                f"step {step * 1e3:.1f} ms + keras model.save {save * 1e3:.1f} ms; "
                f"latency / (step + save) {median / (step + save):.2f}"
            )


if __name__ == "__main__":
    main()
