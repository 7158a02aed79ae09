"""BatchAwareCheckpoint driven by hand from a custom training loop, on every backend.

The loop's training step is written as each backend's guide writes it
(``tf.GradientTape``, ``loss.backward()``, ``jax.value_and_grad``): see
``keras_util.train_step``.
"""

from __future__ import annotations

import keras
import keras_util as ku
import pytest
from keras_util import STEPS, data, fit, model, names, train_step

from ckptname import read_metadata
from ckptname.keras import BatchAwareCheckpoint, resume

TEMPLATE = "e{epoch}-b{batch:03d}-{batch_in_epoch}.weights.h5"


class Stop(Exception):
    pass


def train(m, ckpt, *, epochs=3, first_epoch=0, first_batch=0, **kw):
    """Train as fit_resumed does: an interrupted epoch's rest first, as a run of its own."""
    if first_batch:
        run(m, ckpt, epochs=first_epoch + 1, first_epoch=first_epoch, first_batch=first_batch, **kw)
        first_epoch += 1
    run(m, ckpt, epochs=epochs, first_epoch=first_epoch, **kw)


def run(m, ckpt, *, epochs, first_epoch, first_batch=0, stop_at=None, optimizer=None, steps=True):
    """A hand-written loop over the batches that fit(shuffle=False) sees, in order."""
    x, y = data()
    step = train_step(m, optimizer or m.optimizer)

    ckpt.set_model(m)
    if steps:
        # What fit tells callbacks: the batches of each epoch of this run.
        # Without it, a save after an epoch's last batch cannot know that the
        # epoch is complete.
        ckpt.set_params({"epochs": epochs, "steps": STEPS - first_batch})
    ckpt.on_train_begin()
    done = 0
    loss = 0.0
    for epoch in range(first_epoch, epochs):
        ckpt.on_epoch_begin(epoch)
        for i in range(first_batch if epoch == first_epoch else 0, STEPS):
            loss = step(x[i * 10 : (i + 1) * 10], y[i * 10 : (i + 1) * 10])
            # 0-based inside this run's epoch, as fit passes it.
            index = i - (first_batch if epoch == first_epoch else 0)
            ckpt.on_train_batch_end(index, {"loss": loss})  # a tensor: converted on saves
            done += 1
            if stop_at is not None and done == stop_at:
                raise Stop
        ckpt.on_epoch_end(epoch, {"loss": float(loss)})
    ckpt.on_train_end()


def test_custom_loop_names_match_fit(tmp_path):
    via_fit = BatchAwareCheckpoint(
        str(tmp_path / "fit" / TEMPLATE), save_weights_only=True, save_freq=4
    )
    fit(model(), [via_fit])
    by_hand = BatchAwareCheckpoint(
        str(tmp_path / "loop" / TEMPLATE), save_weights_only=True, save_freq=4
    )
    train(model(), by_hand)
    assert names(tmp_path / "loop") == names(tmp_path / "fit")
    assert len(names(tmp_path / "loop")) == 7
    meta = read_metadata(tmp_path / "loop" / "e3-b028-8.weights.h5")
    assert meta["iterations"] == 28
    assert meta["metrics"]["loss"] == pytest.approx(
        read_metadata(tmp_path / "fit" / "e3-b028-8.weights.h5")["metrics"]["loss"], rel=0.5
    )


def test_custom_loop_with_metrics_in_the_name(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:02d}-{loss:.4f}.keras"), save_freq=10)
    train(model(), ckpt, epochs=2)
    got = names(tmp_path)
    assert [n[:3] for n in got] == ["b10", "b20"]
    meta = read_metadata(tmp_path / got[0])
    assert f"{meta['metrics']['loss']:.4f}" in got[0]


def test_custom_loop_with_an_optimizer_outside_the_model_resumes(tmp_path):
    # No model.optimizer: the counters come from the callback and the checkpoint.
    def bare():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])

    filepath = str(tmp_path / "run" / TEMPLATE)
    ref = BatchAwareCheckpoint(
        str(tmp_path / "ref" / TEMPLATE), save_weights_only=True, save_freq=5
    )
    train(bare(), ref, optimizer=keras.optimizers.SGD(0.01), steps=False)
    with pytest.raises(Stop):
        train(
            bare(),
            BatchAwareCheckpoint(filepath, save_weights_only=True, save_freq=5),
            optimizer=keras.optimizers.SGD(0.01),
            stop_at=13,
            steps=False,
        )
    m = bare()
    point = resume(m, filepath)
    # Without params the loop never said that epochs have 10 batches: the save
    # after batch 10 learns that it closed epoch 1 when the epoch ends, and the
    # resume starts epoch 2.
    assert (point.epoch, point.batch, point.batch_in_epoch, point.end_of_epoch) == (
        1,
        10,
        10,
        True,
    )
    assert point.initial_epoch == 1
    ckpt = BatchAwareCheckpoint(filepath, save_weights_only=True, save_freq=5)
    train(
        m,
        ckpt,
        first_epoch=point.initial_epoch,
        optimizer=keras.optimizers.SGD(0.01),
        steps=False,
    )
    assert names(tmp_path / "run") == names(tmp_path / "ref")
    assert ckpt.batch == 30


def test_custom_loop_mid_epoch_resume(tmp_path):
    filepath = str(tmp_path / "run" / TEMPLATE)
    ref = BatchAwareCheckpoint(
        str(tmp_path / "ref" / TEMPLATE), save_weights_only=True, save_freq=5
    )
    train(model(), ref)
    with pytest.raises(Stop):
        train(
            model(), BatchAwareCheckpoint(filepath, save_weights_only=True, save_freq=5), stop_at=17
        )
    m = model()
    point = resume(m, filepath)
    assert (point.batch, point.batch_in_epoch, point.initial_epoch) == (15, 5, 1)
    ckpt = BatchAwareCheckpoint(filepath, save_weights_only=True, save_freq=5)
    train(m, ckpt, first_epoch=point.initial_epoch, first_batch=point.batch_in_epoch)
    assert names(tmp_path / "run") == names(tmp_path / "ref")
    assert int(m.optimizer.iterations) == 30
    assert ku.STEPS == 10
