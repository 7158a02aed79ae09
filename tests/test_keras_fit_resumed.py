"""fit_resumed: each kind of input is cut where the interrupted run stopped, or refused with
advice that works."""

from __future__ import annotations

import itertools
from pathlib import Path

import keras
import keras_util as ku
import numpy as np
import pytest
from keras_util import STEPS, data, finish, fit, interrupt, interrupt_then_resume, model, names

from ckptname.keras import BatchAwareCheckpoint, ResumePoint, fit_resumed, resume

TEMPLATE = "e{epoch}-b{batch:03d}-{batch_in_epoch}.keras"


def weights(m):
    return [np.array(w) for w in m.get_weights()]


def assert_same_weights(a, b):
    for wa, wb in zip(weights(a), weights(b), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def uninterrupted(folder: Path, *, save_freq=5, new_model=model, **run):
    """The reference run, never stopped: its names and its final model."""
    m = new_model()
    fit(m, [BatchAwareCheckpoint(str(folder / TEMPLATE), save_freq=save_freq)], **run)
    return names(folder), m


def resumed_like_uninterrupted(tmp_path: Path, at: int, **run):
    """An uninterrupted run, and one interrupted after batch ``at`` and resumed.

    Checks that both end with the same checkpoint names and weights; returns
    the resumed model, its point and the uninterrupted run's names.
    """
    reference, done = uninterrupted(tmp_path / "ref", **run)
    m, point, _ = interrupt_then_resume(str(tmp_path / "run" / TEMPLATE), at, **run)
    assert names(tmp_path / "run") == reference
    assert int(m.optimizer.iterations) == int(done.optimizer.iterations)
    assert_same_weights(m, done)
    return m, point, reference


def batch(i: int):
    """Batch ``i`` of a stream that goes round ``data()``'s 10 batches: each index its own."""
    x, y = data()
    j = i % STEPS
    return x[j * 10 : (j + 1) * 10], y[j * 10 : (j + 1) * 10]


class Endless(keras.utils.PyDataset):
    """An endless ``PyDataset`` (``num_batches`` is ``None``): batch ``i`` at index ``i``."""

    @property
    def num_batches(self):
        return None

    def __getitem__(self, i):
        return batch(i)


def stream():
    """The batches of :class:`Endless`, from a generator."""
    for i in itertools.count():
        yield batch(i)


def mid_epoch(epoch: int, batch_in_epoch: int, steps_per_epoch: int) -> ResumePoint:
    batch = (epoch - 1) * steps_per_epoch + batch_in_epoch
    return ResumePoint("p", epoch, batch, batch_in_epoch, end_of_epoch=False)


# ----------------------------------------------------------------- an endless PyDataset


def test_an_endless_py_dataset_with_steps_per_epoch_resumes_where_it_was_cut(tmp_path):
    # Epochs of 7 batches cut from one stream: epoch 3 runs batches 14 to 20,
    # and the run stops after batch 16 (saved after 15).
    run = {"inputs": (Endless(),), "save_freq": 3, "epochs": 4, "steps_per_epoch": 7}
    m, point, reference = resumed_like_uninterrupted(tmp_path, 16, **run)
    assert (point.epoch, point.batch, point.batch_in_epoch) == (3, 15, 1)
    assert reference[-2:] == ["e4-b024-3.keras", "e4-b027-6.keras"]
    assert int(m.optimizer.iterations) == 28


@ku.steps_per_execution
def test_an_endless_py_dataset_with_steps_per_execution_resumes_where_it_was_cut(tmp_path):
    # steps_per_epoch=7 in executions of 3: Keras takes 9 batches an epoch.
    run = {"inputs": (Endless(),), "save_freq": 6, "epochs": 3, "steps_per_epoch": 7}
    spe3 = lambda: model(steps_per_execution=3)  # noqa: E731
    m, point, reference = resumed_like_uninterrupted(tmp_path, 13, new_model=spe3, **run)
    assert reference == [
        "e1-b006-6.keras", "e2-b012-3.keras", "e2-b018-9.keras", "e3-b024-6.keras",
    ]  # fmt: skip
    assert (point.epoch, point.batch, point.batch_in_epoch) == (2, 12, 3)
    assert int(m.optimizer.iterations) == 27


def test_an_endless_py_dataset_needs_steps_per_epoch():
    with pytest.raises(ValueError) as info:
        fit_resumed(model(), Endless(), resume=mid_epoch(1, 5, 10), epochs=2)
    assert str(info.value) == (
        "an infinite keras.utils.PyDataset needs steps_per_epoch (as in model.fit)"
    )


# ----------------------------------------------------------------- a finite PyDataset


@pytest.mark.parametrize(
    ("at", "where"),
    [
        (8, (2, 6, 1)),  # the rest of epoch 2 ends the first pass
        (14, (3, 12, 2)),  # epoch 3 is the first half of the second pass
    ],
)
def test_a_finite_py_dataset_with_steps_per_epoch_resumes_where_it_was_cut(tmp_path, at, where):
    # 10 batches in epochs of 5: Keras starts a new pass every 2 epochs.
    run = {"inputs": (ku.Batches(),), "save_freq": 3, "epochs": 5, "steps_per_epoch": 5}
    m, point, _ = resumed_like_uninterrupted(tmp_path, at, shuffle=False, **run)
    assert (point.epoch, point.batch, point.batch_in_epoch) == where
    assert int(m.optimizer.iterations) == 25


def test_a_shuffled_finite_py_dataset_with_steps_per_epoch_resumes_with_the_same_counts(tmp_path):
    run = {"inputs": (ku.Batches(),), "save_freq": 3, "epochs": 5, "steps_per_epoch": 5}
    reference, _ = uninterrupted(tmp_path / "ref", shuffle=True, **run)
    m, _, _ = interrupt_then_resume(str(tmp_path / "run" / TEMPLATE), 14, shuffle=True, **run)
    assert names(tmp_path / "run") == reference
    assert int(m.optimizer.iterations) == 25


class Indices(keras.utils.PyDataset):
    """Ten batches, each its own index."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return i


def test_a_shuffled_pass_is_finished_from_the_same_order_that_later_epochs_continue():
    # Resumed after batch 12 of epochs of 5: the rest of epoch 3 is 3 batches
    # of pass 2 and epoch 4 the other 5 of them, drawn from one order, before
    # pass 3 brings all ten again.
    from ckptname._fit_resumed import _py_dataset_parts

    keras.utils.set_random_seed(0)
    rest, after = _py_dataset_parts(Indices(), mid_epoch(3, 2, 5), 5, 1, shuffle=True)
    assert (rest.num_batches, after.num_batches) == (None, None)
    pass_two = [rest[i] for i in range(3)] + [after[i] for i in range(5)]
    assert len(set(pass_two)) == 8
    assert sorted(after[i] for i in range(5, 15)) == list(range(10))


def test_a_finite_py_dataset_whose_epochs_do_not_divide_the_pass_is_refused_and_the_advice_works(
    tmp_path,
):
    # Keras cuts epochs of 4 from passes of 10 as 4, 4, 2: a resume cannot
    # tell where the next pass begins.
    with pytest.raises(ValueError) as info:
        fit_resumed(model(), ku.Batches(), resume=mid_epoch(2, 1, 4), epochs=3, steps_per_epoch=4)
    assert str(info.value) == (
        "a keras.utils.PyDataset of 10 batches with steps_per_epoch=4: Keras cuts the last "
        "epoch of each pass short, which a resume cannot reproduce; choose steps_per_epoch so "
        "that epochs divide the 10 batches, or make the dataset endless (num_batches None, "
        "__getitem__(i) returning batch i % 10)"
    )
    run = {"inputs": (Endless(),), "save_freq": 3, "epochs": 3, "steps_per_epoch": 4}
    resumed_like_uninterrupted(tmp_path, 7, **run)


@ku.steps_per_execution
def test_epochs_of_whole_executions_that_do_not_divide_the_pass_are_refused():
    # steps_per_epoch=5 divides 10, but in executions of 2 Keras takes 6
    # batches, then the 4 that are left: the cut is as uneven as any other.
    import tensorflow as tf

    x, y = data()
    inputs = {
        "keras.utils.PyDataset": ku.Batches(),
        "dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(10),
    }
    advice = {
        "keras.utils.PyDataset": (
            "make the dataset endless (num_batches None, __getitem__(i) returning batch i % 10)"
        ),
        "dataset": ".repeat() the dataset",
    }
    for kind, dataset in inputs.items():
        with pytest.raises(ValueError) as info:
            fit_resumed(
                model(steps_per_execution=2),
                dataset,
                resume=mid_epoch(2, 2, 6),
                epochs=3,
                steps_per_epoch=5,
            )
        assert str(info.value) == (
            f"a {kind} of 10 batches with steps_per_epoch=5 and steps_per_execution=2 "
            "(epochs of 6 batches): Keras cuts the last epoch of each pass short, which a "
            "resume cannot reproduce; choose steps_per_epoch so that epochs divide the 10 "
            f"batches, or {advice[kind]}"
        )


# ----------------------------------------------------------------- generators


def test_a_generator_with_steps_per_epoch_is_refused_and_the_advice_works(tmp_path):
    # The run was fed by a generator; its resume follows the advice and is fed
    # the same batches by an endless PyDataset.
    run = {"save_freq": 3, "epochs": 3, "steps_per_epoch": 7}
    reference, done = uninterrupted(tmp_path / "ref", inputs=(stream(),), **run)
    filepath = str(tmp_path / "run" / TEMPLATE)
    interrupt(model(), filepath, 16, inputs=(stream(),), **run)
    m = model()
    point = resume(m, filepath)
    with pytest.raises(TypeError) as info:
        finish(m, point, filepath, inputs=(stream(),), **run)
    assert str(info.value) == (
        "with steps_per_epoch, fit_resumed starts the stream again at the batch where the "
        "run stopped, which a generator cannot do; give the batches as a "
        "keras.utils.PyDataset whose __getitem__(i) returns batch i and whose num_batches "
        "is None, or as a tf.data.Dataset"
    )
    finish(m, point, filepath, inputs=(Endless(),), **run)
    assert names(tmp_path / "run") == reference
    assert int(m.optimizer.iterations) == int(done.optimizer.iterations) == 21
    assert_same_weights(m, done)
