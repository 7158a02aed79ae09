"""The count in a name is the number of batches the training loop actually ran.

Not ``optimizer.iterations``: under mixed precision the loss-scale optimizer
skips the steps whose gradients overflow without advancing it, and on the
TensorFlow backend the call that finds an input of unknown length exhausted
advances it without training. With ``steps_per_execution`` N the hook's index
grows by N, also past the end of a finite epoch whose last execution comes
up short. Every test here trains for real; the batches that ran are counted
independently, from the hook's indices, by :class:`Batches`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import keras
import keras_util as ku
import numpy as np
import pytest
from keras_util import STEPS, Interrupt, data, fit, model, names, ours

import ckptname
from ckptname.keras import BatchAwareCheckpoint, ResumePoint, fit_resumed, resume

TEMPLATE = "e{epoch}-b{batch:03d}-{batch_in_epoch}.keras"

EVERY_5 = [
    "e1-b005-5.keras",
    "e1-b010-10.keras",
    "e2-b015-5.keras",
    "e2-b020-10.keras",
    "e3-b025-5.keras",
    "e3-b030-10.keras",
]

# On the TensorFlow backend, the call that finds an input of unknown length
# exhausted still advances optimizer.iterations (the weights are untouched):
# 11 an epoch of 10 batches. The other backends advance it once a batch.
UNKNOWN_LENGTH_ITERATIONS_AN_EPOCH = STEPS + 1 if ku.BACKEND == "tensorflow" else STEPS


# ----------------------------------------------------------------- counting what ran


class Batches(keras.callbacks.Callback):
    """Counts the batches that ran, from the indices Keras passes the batch hook.

    ``on_train_batch_end(batch)`` gets the 0-based index inside the epoch of
    the last batch of the execution, which grows by ``steps_per_execution``,
    also past the end of the input: a short last execution of a finite epoch
    reports the index a whole one would reach, so it is clamped to
    ``per_epoch`` (the batches one pass over the input holds). With ``stop_after``
    it raises :class:`Interrupt` once that many have run; place it after the
    checkpoint callback, so that the save due at that batch has happened.
    """

    def __init__(self, stop_after: int | None = None, per_epoch: int = STEPS) -> None:
        super().__init__()
        self.stop_after = stop_after
        self.per_epoch = per_epoch
        self.ran = 0
        self._in_epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._in_epoch = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        done = min(batch + 1, self.per_epoch)
        self.ran += done - self._in_epoch
        self._in_epoch = done
        if self.stop_after is not None and self.ran >= self.stop_after:
            raise Interrupt(f"interrupted after {self.ran} batches")


@pytest.fixture
def mixed_float16() -> Iterator[None]:
    """Models built in the test compute in float16 and compile to a LossScaleOptimizer."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def assert_steps_were_skipped(m: Any, ran: int) -> None:
    """Without skipped steps a mixed-precision test could not tell batches from iterations."""
    assert isinstance(m.optimizer, keras.optimizers.LossScaleOptimizer)
    assert int(m.optimizer.iterations) < ran, "the loss-scale optimizer skipped no step"


def weights(m: Any) -> list[np.ndarray]:
    return [np.array(w) for w in m.get_weights()]


def assert_same_end(m: Any, done: Any) -> None:
    """The same optimizer count and the same weights as the uninterrupted run's."""
    assert int(m.optimizer.iterations) == int(done.optimizer.iterations)
    for wa, wb in zip(weights(m), weights(done), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def identity(path: Path) -> tuple[int, int]:
    """What changes when a file is written again under the same name."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


# ----------------------------------------------------------------- the two runs

Inputs = Callable[[], tuple[Any, ...]] | None


def _args(inputs: Inputs, fit_kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A fresh copy of the inputs and the fit arguments, as ``keras_util.fit`` takes them."""
    if inputs is None:
        return data(), {"batch_size": ku.BATCH_SIZE, "shuffle": False, **fit_kwargs}
    return inputs(), fit_kwargs


class Uninterrupted(NamedTuple):
    names: list[str]
    model: Any
    ran: int


def uninterrupted(
    folder: Path,
    *,
    spe: int = 1,
    save_freq: int = 5,
    keep_last: int | None = None,
    epochs: int = 3,
    inputs: Inputs = None,
    **fit_kwargs: Any,
) -> Uninterrupted:
    """The reference run, never stopped: its names, its model, the batches that ran.

    ``inputs`` makes a fresh input (a dataset) for each run; ``None`` is
    ``data()`` in batches of 10, unshuffled.
    """
    m = model(steps_per_execution=spe)
    ckpt = BatchAwareCheckpoint(str(folder / TEMPLATE), save_freq=save_freq, keep_last=keep_last)
    counted = Batches()
    args, kwargs = _args(inputs, fit_kwargs)
    fit(m, [ckpt, counted], epochs, inputs=args, **kwargs)
    return Uninterrupted(names(folder), m, counted.ran)


class Resumed(NamedTuple):
    model: Any
    point: ResumePoint
    before: list[str]
    warned: list[str]


def interrupted_then_resumed(
    folder: Path,
    after: int,
    *,
    like: Uninterrupted | None = None,
    spe: int = 1,
    save_freq: int = 5,
    keep_last: int | None = None,
    epochs: int = 3,
    inputs: Inputs = None,
    **fit_kwargs: Any,
) -> Resumed:
    """A run interrupted once ``after`` batches have run, then resumed as a new process would.

    The resumed model starts from other weights: all must come from the
    checkpoint. Checks that no checkpoint written before the interruption
    was deleted (unless ``keep_last`` pruned it) or written again, and, given
    the uninterrupted run ``like``, that both end with the same names,
    optimizer count and weights. Returns the resumed model, its point, the
    names before the resume and the ckptname warnings of ``resume`` and the
    resumed fit. The other arguments as for :func:`uninterrupted`.
    """
    filepath = str(folder / TEMPLATE)
    ckpt = BatchAwareCheckpoint(filepath, save_freq=save_freq, keep_last=keep_last)
    args, kwargs = _args(inputs, fit_kwargs)
    with pytest.raises(Interrupt):
        fit(model(steps_per_execution=spe), [ckpt, Batches(after)], epochs, inputs=args, **kwargs)
    before = {name: identity(folder / name) for name in names(folder)}

    m = model(steps_per_execution=spe, seed=7)
    args, kwargs = _args(inputs, fit_kwargs)
    ckpt = BatchAwareCheckpoint(filepath, save_freq=save_freq, keep_last=keep_last)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        point = resume(m, filepath)
        fit_resumed(m, *args, resume=point, epochs=epochs, verbose=0, callbacks=[ckpt], **kwargs)
    there = {name: identity(folder / name) for name in names(folder) if name in before}
    if keep_last is None:
        assert list(there) == list(before), "a checkpoint of the interrupted run was deleted"
    assert there == {name: before[name] for name in there}, "a checkpoint was written again"
    if like is not None:
        assert names(folder) == like.names
        assert_same_end(m, like.model)
    return Resumed(m, point, list(before), ours(record))


# ----------------------------------------------------------------- mixed precision


def test_mixed_precision_names_count_batches_not_optimizer_steps_and_resume_alike(
    tmp_path, mixed_float16
):
    done = uninterrupted(tmp_path / "ref")
    assert done.ran == 30
    assert_steps_were_skipped(done.model, done.ran)
    assert done.names == EVERY_5
    resumed = interrupted_then_resumed(tmp_path / "run", 17, like=done)
    assert resumed.before == EVERY_5[:3]
    point = resumed.point
    assert point.path == str(tmp_path / "run" / "e2-b015-5.keras")
    assert (point.epoch, point.batch, point.batch_in_epoch, point.end_of_epoch) == (2, 15, 5, False)
    assert point.initial_epoch == 1


@ku.steps_per_execution
@pytest.mark.parametrize(
    ("spe", "save_freq", "expected", "before"),
    [
        # Executions of 2: the count moves 2, 4, 6, ... and a save is due when
        # it crosses a multiple of 5. Interrupted at 18, after the save at 16.
        (2, 5, ["e1-b006-6.keras", "e1-b010-10.keras", "e2-b016-6.keras",
                "e2-b020-10.keras", "e3-b026-6.keras", "e3-b030-10.keras"], 3),
        # Executions of 3, 3, 3 and a short one of 1 (Keras reports the index
        # 11 for it): 3, 6, 9, 10, 13, 16, 19, 20, ... Interrupted at 19.
        (3, 4, ["e1-b006-6.keras", "e1-b009-9.keras", "e2-b013-3.keras", "e2-b016-6.keras",
                "e2-b020-10.keras", "e3-b026-6.keras", "e3-b029-9.keras"], 4),
    ],
)  # fmt: skip
def test_mixed_precision_with_steps_per_execution_names_count_batches_and_resume_alike(
    tmp_path, mixed_float16, spe, save_freq, expected, before
):
    run = {"spe": spe, "save_freq": save_freq}
    done = uninterrupted(tmp_path / "ref", **run)
    assert done.ran == 30
    assert_steps_were_skipped(done.model, done.ran)
    assert done.names == expected
    resumed = interrupted_then_resumed(tmp_path / "run", 17, like=done, **run)
    assert resumed.before == expected[:before]
    assert (resumed.point.batch, resumed.point.batch_in_epoch) == (16, 6)


def test_mixed_precision_second_fit_with_the_same_callback_continues_the_count(
    tmp_path, mixed_float16
):
    m = model()
    ckpt = BatchAwareCheckpoint(str(tmp_path / TEMPLATE), save_freq=5)
    counted = Batches()
    fit(m, [ckpt, counted], epochs=2)
    assert names(tmp_path) == EVERY_5[:4]
    fit(m, [ckpt, counted], epochs=3, initial_epoch=2)
    assert counted.ran == 30
    assert_steps_were_skipped(m, counted.ran)
    assert names(tmp_path) == EVERY_5
    assert ckpt.batch == 30


def test_mixed_precision_resume_with_keep_last_keeps_the_last_names_without_warnings(
    tmp_path, mixed_float16
):
    done = uninterrupted(tmp_path / "ref", keep_last=2)
    assert_steps_were_skipped(done.model, done.ran)
    assert done.names == EVERY_5[-2:]
    resumed = interrupted_then_resumed(tmp_path / "run", 17, like=done, keep_last=2)
    assert names(tmp_path / "run") == EVERY_5[-2:]
    assert resumed.warned == []


# ----------------------------------------------------------------- tf.data of unknown length


def unknown_length() -> tuple[Any]:
    """``data()`` in batches of 10 through a filter: a dataset of unknown cardinality."""
    import tensorflow as tf

    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10).filter(lambda a, b: True)
    assert int(ds.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    return (ds,)


@pytest.fixture
def ran_out_of_data_ignored() -> Iterator[None]:
    """Keras warns "Your input ran out of data" at the end of every epoch of unknown length."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield


def test_unknown_length_tf_data_names_count_the_batches_that_ran(tmp_path, ran_out_of_data_ignored):
    done = uninterrupted(tmp_path, inputs=unknown_length)
    assert done.ran == 30
    assert done.names == EVERY_5
    assert int(done.model.optimizer.iterations) == 3 * UNKNOWN_LENGTH_ITERATIONS_AN_EPOCH


def test_unknown_length_tf_data_resumes_mid_epoch_like_uninterrupted(
    tmp_path, ran_out_of_data_ignored
):
    done = uninterrupted(tmp_path / "ref", inputs=unknown_length)
    assert done.names == EVERY_5
    resumed = interrupted_then_resumed(tmp_path / "run", 17, like=done, inputs=unknown_length)
    assert (resumed.point.batch, resumed.point.batch_in_epoch) == (15, 5)
    assert resumed.point.end_of_epoch is False


def test_unknown_length_tf_data_checkpoint_on_the_last_batch_resumes_at_the_next_epoch(
    tmp_path, ran_out_of_data_ignored
):
    # The save at 10 happens on the last batch of epoch 1, before Keras
    # learns that the input has run out; the resume must still know it
    # ended the epoch, or it would enter epoch 1 again.
    done = uninterrupted(tmp_path / "ref", inputs=unknown_length)
    resumed = interrupted_then_resumed(tmp_path / "run", 12, inputs=unknown_length)
    assert resumed.before == EVERY_5[:2]
    point = resumed.point
    assert point.path == str(tmp_path / "run" / "e1-b010-10.keras")
    assert point.end_of_epoch is True
    assert (point.initial_epoch, point.batch) == (1, 10)
    assert names(tmp_path / "run") == done.names == EVERY_5
    if ku.BACKEND == "tensorflow":
        # The optimizer step Keras adds when epoch 1 runs out came after
        # the save at 10: the resumed run has one fewer, and Adam's bias
        # correction moves its weights apart.
        assert int(resumed.model.optimizer.iterations) == int(done.model.optimizer.iterations) - 1
    else:
        assert_same_end(resumed.model, done.model)


@ku.steps_per_execution
def test_steps_per_execution_with_an_input_of_unknown_length_is_refused_before_any_batch(
    tmp_path, ran_out_of_data_ignored
):
    m = model(steps_per_execution=2)
    counted = Batches()
    ckpt = BatchAwareCheckpoint(str(tmp_path / TEMPLATE), save_freq=5)
    with pytest.raises(ckptname.CountError) as info:
        fit(m, [ckpt, counted], inputs=unknown_length())
    assert str(info.value) == (
        "steps_per_execution=2 with an input of unknown length: Keras does not report how "
        "many batches the last execution of an epoch runs, so the batch count could not be "
        "exact; give the input a known length (tf.data: "
        "dataset.apply(tf.data.experimental.assert_cardinality(n))), pass steps_per_epoch "
        "with a repeated input, or use steps_per_execution=1"
    )
    assert counted.ran == 0
    assert int(m.optimizer.iterations) == 0
    assert names(tmp_path) == []


# ----------------------------------------------------------------- mixed precision, a stream


def repeated_stream() -> tuple[Any]:
    """``data()`` in batches of 10, repeated for ever."""
    import tensorflow as tf

    x, y = data()
    return (tf.data.Dataset.from_tensor_slices((x, y)).batch(10).repeat(),)


@ku.steps_per_execution
def test_mixed_precision_stream_with_steps_per_execution_counts_whole_executions(
    tmp_path, mixed_float16
):
    # steps_per_epoch=7 with executions of 3: Keras runs 9 batches an epoch.
    run = {"spe": 3, "save_freq": 6, "inputs": repeated_stream, "steps_per_epoch": 7}
    done = uninterrupted(tmp_path / "ref", **run)
    assert done.ran == 27
    assert_steps_were_skipped(done.model, done.ran)
    assert done.names == [
        "e1-b006-6.keras", "e2-b012-3.keras", "e2-b018-9.keras", "e3-b024-6.keras",
    ]  # fmt: skip
    resumed = interrupted_then_resumed(tmp_path / "run", 13, like=done, **run)
    assert (resumed.point.epoch, resumed.point.batch, resumed.point.batch_in_epoch) == (2, 12, 3)
