"""What the Keras tests share: a tiny model and its data, fits, callbacks, folder readers.

Every test trains a Dense model on 100 random samples in batches of 10
(10 batches an epoch) on the CPU, so each fit takes well under a second
once TensorFlow is loaded (``conftest.py`` keeps it on the CPU). The child
processes some tests start import this module too (with ``tests/`` on
``PYTHONPATH``). Why these helpers live here and not in ``conftest.py``: see
that file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import keras
import numpy as np
import pytest

from ckptname import CkptnameWarning
from ckptname.keras import BatchAwareCheckpoint, ResumePoint, fit_resumed, resume

SAMPLES = 100
BATCH_SIZE = 10
STEPS = SAMPLES // BATCH_SIZE

# ----------------------------------------------------------------- model and fits


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]], dtype="float32")).astype("float32")
    return x, y


class Batches(keras.utils.PyDataset):
    """``data()`` in batches of 10, indexable, as a user's PyDataset would be."""

    def __init__(self):
        super().__init__()
        self.x, self.y = data()

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return self.x[i * 10 : (i + 1) * 10], self.y[i * 10 : (i + 1) * 10]


def model(steps_per_execution: int = 1, seed: int = 0, metrics: Any = ("mae",)) -> Any:
    """A compiled Dense model, the same weights for the same seed.

    It seeds Keras (``keras.utils.set_random_seed``): build it just before its
    fit, so that a shuffled fit sees the same order in every run.
    """
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    m.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss="mse",
        metrics=list(metrics),
        steps_per_execution=steps_per_execution,
    )
    return m


def _fit_args(inputs: Sequence[Any] | None, fit_kwargs: dict[str, Any]) -> tuple[Any, dict]:
    """The inputs and keyword arguments of a fit; ``data()`` unshuffled in batches of 10
    unless ``inputs`` (a dataset, say) are given or ``fit_kwargs`` say otherwise."""
    if inputs is None:
        return data(), {"batch_size": BATCH_SIZE, "shuffle": False, **fit_kwargs}
    return inputs, fit_kwargs


def fit(
    m: Any,
    callbacks: Iterable[Any],
    epochs: int = 3,
    *,
    inputs: Sequence[Any] | None = None,
    **fit_kwargs: Any,
) -> Any:
    """``m.fit`` without progress output, on ``data()`` unless ``inputs`` are given.

    On ``data()``: batches of 10 and ``shuffle=False`` unless ``fit_kwargs``
    say otherwise. Returns the History.
    """
    args, kwargs = _fit_args(inputs, fit_kwargs)
    return m.fit(*args, epochs=epochs, verbose=0, callbacks=list(callbacks), **kwargs)


def train_step(m: Any, optimizer: Any) -> Callable[[Any, Any], Any]:
    """One training step of a hand-written loop (mean squared error), as each backend writes it.

    TensorFlow: ``tf.GradientTape`` in a ``tf.function``; PyTorch: ``loss.backward()``
    and ``optimizer.apply``; JAX: ``jax.value_and_grad`` over ``stateless_call``, the
    new values assigned back after each step. Returns ``step(x_batch, y_batch) -> loss``.
    """
    loss_fn = keras.losses.MeanSquaredError()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function  # type: ignore[misc]
        def tf_step(xb: Any, yb: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, m(xb, training=True))
            grads = tape.gradient(loss, m.trainable_variables)
            optimizer.apply_gradients(zip(grads, m.trainable_variables))
            return loss

        return tf_step
    if not optimizer.built:
        optimizer.build(m.trainable_variables)
    if backend == "torch":
        import torch

        def torch_step(xb: Any, yb: Any) -> Any:
            loss = loss_fn(keras.ops.convert_to_tensor(yb), m(xb, training=True))
            m.zero_grad()
            loss.backward()
            grads = [v.value.grad for v in m.trainable_variables]
            with torch.no_grad():
                optimizer.apply(grads, m.trainable_variables)
            return loss

        return torch_step
    import jax

    def compute(tv: Any, ntv: Any, xb: Any, yb: Any) -> Any:
        pred, ntv = m.stateless_call(tv, ntv, xb, training=True)
        return loss_fn(yb, pred), ntv

    grad_fn = jax.value_and_grad(compute, has_aux=True)

    def jax_step(xb: Any, yb: Any) -> Any:
        tv = [v.value for v in m.trainable_variables]
        ntv = [v.value for v in m.non_trainable_variables]
        ov = [v.value for v in optimizer.variables]
        (loss, ntv), grads = grad_fn(tv, ntv, xb, yb)
        tv, ov = optimizer.stateless_apply(ov, grads, tv)
        for variables, values in (
            (m.trainable_variables, tv),
            (m.non_trainable_variables, ntv),
            (optimizer.variables, ov),
        ):
            for variable, value in zip(variables, values):
                variable.assign(value)
        return loss

    return jax_step


BACKEND = keras.backend.backend()


def tensorflow_backend(test: Any) -> Any:
    """Mark a test that needs the TensorFlow backend; it is skipped on the others."""
    skip = pytest.mark.skipif(
        BACKEND != "tensorflow", reason="reads TF_CONFIG, which only the TensorFlow backend uses"
    )
    return pytest.mark.tensorflow_backend(skip(test))


def steps_per_execution(test: Any) -> Any:
    """Mark a test that uses ``steps_per_execution > 1``; skipped where Keras refuses it."""
    skip = pytest.mark.skipif(
        BACKEND == "torch", reason="Keras refuses steps_per_execution > 1 on the PyTorch backend"
    )
    return pytest.mark.steps_per_execution(skip(test))


# ----------------------------------------------------------------- callbacks


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


# ----------------------------------------------------------------- interrupt, then resume


def interrupt(m: Any, filepath: str, at: int, *, save_freq: int = 5, **run: Any) -> None:
    """Fit ``m``, saving every ``save_freq`` batches to ``filepath``, until
    :class:`InterruptAt` ``(at)`` stops it (the test fails if nothing does).

    ``run`` (``epochs``, ``inputs`` and fit arguments) as for :func:`fit`.
    """
    ckpt = BatchAwareCheckpoint(filepath, save_freq=save_freq)
    with pytest.raises(Interrupt):
        fit(m, [ckpt, InterruptAt(at)], **run)


def finish(
    m: Any,
    point: ResumePoint,
    filepath: str,
    *,
    save_freq: int = 5,
    epochs: int = 3,
    callbacks: Iterable[Any] = (),
    inputs: Sequence[Any] | None = None,
    **fit_kwargs: Any,
) -> Any:
    """Finish the run ``point`` resumes with ``fit_resumed``, saving every
    ``save_freq`` batches to ``filepath`` again (``callbacks`` run after the
    checkpoint callback). Inputs as for :func:`fit`; returns the History."""
    args, kwargs = _fit_args(inputs, fit_kwargs)
    ckpt = BatchAwareCheckpoint(filepath, save_freq=save_freq)
    return fit_resumed(
        m, *args, resume=point, epochs=epochs, verbose=0, callbacks=[ckpt, *callbacks], **kwargs
    )


class Resumed(NamedTuple):
    model: Any
    point: ResumePoint
    history: Any


def interrupt_then_resume(
    filepath: str,
    at: int,
    *,
    new_model: Callable[[], Any] = model,
    resumed_model: Callable[[], Any] | None = None,
    **run: Any,
) -> Resumed:
    """A run interrupted after batch ``at``, then resumed and finished as a new process would.

    ``new_model`` builds the model of the interrupted run and, unless
    ``resumed_model`` is given, the one that resumes; each is built just
    before its fit. ``run`` (``save_freq``, ``epochs``, ``inputs`` and fit
    arguments) applies to both fits, as in :func:`interrupt` and :func:`finish`.
    """
    interrupt(new_model(), filepath, at, **run)
    m = (resumed_model or new_model)()
    point = resume(m, filepath)
    return Resumed(m, point, finish(m, point, filepath, **run))


# ----------------------------------------------------------------- what a folder holds


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


def read_state(folder: Path | str) -> dict[str, Any]:
    """The folder's state file, parsed."""
    return json.loads((Path(folder) / ".ckptname-state.json").read_text())


def ours(record: Iterable[Any]) -> list[str]:
    """The messages of the ckptname warnings among those recorded."""
    return [str(w.message) for w in record if issubclass(w.category, CkptnameWarning)]
