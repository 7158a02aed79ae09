"""One process training under ``tf.distribute.MirroredStrategy`` on two CPU devices
(run by test_keras_optimizers.py).

The two logical CPUs must be configured before TensorFlow initialises, which is
why this runs in a process of its own. ``python strategy_worker.py SPEC`` reads
the JSON file ``SPEC``:

* ``phase``: ``"reference"`` trains 3 epochs without interruption into
  ``reference``, then trains again into ``run`` until it is interrupted after
  batch 13 (inside epoch 2, a save at batch 12 behind it); ``"resume"`` resumes
  from ``run`` and finishes the 3 epochs;
* ``resume_in_scope``: with ``"resume"``, whether ``resume`` and ``fit_resumed``
  are called inside ``strategy.scope()``, else after the block that built the model;
* ``deadline``: seconds after which the process dumps every thread's stack and exits;
* ``report``: where to write what the process computed (JSON), rewritten after
  each step, so that a process that fails leaves what it got to.

Every model is built and compiled inside ``strategy.scope()``; the global batch
of 10 is split over the two replicas.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import warnings

with open(sys.argv[1]) as spec_file:
    SPEC = json.load(spec_file)
faulthandler.dump_traceback_later(SPEC["deadline"], exit=True)

import tensorflow as tf  # noqa: E402

(CPU,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(CPU, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import keras_util as ku  # noqa: E402
import numpy as np  # noqa: E402

from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume  # noqa: E402

TEMPLATE = "e{epoch}-b{batch:03d}-{batch_in_epoch}-loss{loss:.4f}.keras"
STRATEGY = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


class StopAfter(keras.callbacks.Callback):
    """Raises :class:`keras_util.Interrupt` after ``count`` batches of this fit."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.seen = 0

    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        self.seen += 1
        if self.seen >= self.count:
            raise ku.Interrupt(f"interrupted after batch {self.count}")


def checkpoint(folder: str) -> BatchAwareCheckpoint:
    return BatchAwareCheckpoint(os.path.join(folder, TEMPLATE), save_freq=4)


def built() -> keras.Model:
    with STRATEGY.scope():
        return ku.model()


def fit_args() -> dict[str, object]:
    x, y = ku.data()
    return {"x": x, "y": y, "batch_size": ku.BATCH_SIZE, "shuffle": False, "verbose": 0}


def state(m: keras.Model) -> dict[str, object]:
    """The model's weights and optimizer state, and whether that state is the strategy's."""
    optimizer = m.optimizer
    return {
        "iterations": int(np.asarray(optimizer.iterations.numpy())),
        "weights": [w.tolist() for w in m.get_weights()],
        "optimizer": [np.asarray(v.numpy()).tolist() for v in optimizer.variables],
        "distributed": [
            isinstance(v.value, tf.distribute.DistributedValues) for v in optimizer.variables
        ],
    }


def said(record: list[warnings.WarningMessage]) -> list[str]:
    """The user warnings recorded (ckptname's and Keras's), as ``Category: message``."""
    return [
        f"{w.category.__name__}: {w.message}" for w in record if issubclass(w.category, UserWarning)
    ]


def reference() -> dict[str, object]:
    m = built()
    m.fit(epochs=3, callbacks=[checkpoint(SPEC["reference"])], **fit_args())
    whole = state(m)
    try:
        m = built()
        m.fit(epochs=3, callbacks=[checkpoint(SPEC["run"]), StopAfter(13)], **fit_args())
    except ku.Interrupt:
        pass
    else:
        raise AssertionError("the run to interrupt was not interrupted")
    return {"reference": whole, "interrupted": ku.names(SPEC["run"], ".keras")}


def write(report: dict[str, object]) -> None:
    tmp = SPEC["report"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(report, fh)
    os.replace(tmp, SPEC["report"])


def resumed() -> dict[str, object]:
    filepath = os.path.join(SPEC["run"], TEMPLATE)
    report: dict[str, object] = {}

    def resume_and_finish(m: keras.Model) -> None:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            point = resume(m, filepath)
        report["resume_warnings"] = said(record)
        report["point"] = {"name": os.path.basename(point.path or ""), "batch": point.batch}
        report["after_resume"] = state(m)
        write(report)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            fit_resumed(m, resume=point, epochs=3, callbacks=[checkpoint(SPEC["run"])],
                        **fit_args())  # fmt: skip
        report["fit_warnings"] = said(record)
        report["finished"] = state(m)
        report["names"] = ku.names(SPEC["run"], ".keras")

    if SPEC["resume_in_scope"]:
        with STRATEGY.scope():
            m = ku.model(seed=7)  # other initial weights: all must come from the checkpoint
            resume_and_finish(m)
    else:
        with STRATEGY.scope():
            m = ku.model(seed=7)
        resume_and_finish(m)
    return report


def main() -> None:
    report = reference() if SPEC["phase"] == "reference" else resumed()
    report["replicas"] = STRATEGY.num_replicas_in_sync
    write(report)


if __name__ == "__main__":
    main()
