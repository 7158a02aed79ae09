"""resume() and fit_resumed(): an interrupted run continues exactly, names and all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from functools import partial
from pathlib import Path

import keras
import keras_util as ku
import numpy as np
import pytest
from keras_util import (
    STEPS,
    Interrupt,
    InterruptAt,
    data,
    finish,
    fit,
    interrupt,
    interrupt_then_resume,
    leftovers,
    model,
    names,
    ours,
    read_state,
)

import ckptname
from ckptname import CkptnameWarning, read_metadata
from ckptname.keras import BatchAwareCheckpoint, ResumePoint, fit_resumed, resume

TEMPLATE = "e{epoch}-b{batch:03d}-{batch_in_epoch}.keras"


def weights(m):
    return [np.array(w) for w in m.get_weights()]


def assert_same_weights(a, b):
    for wa, wb in zip(weights(a), weights(b), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-6, atol=1e-7)


def uninterrupted(folder: Path, template=TEMPLATE, *, save_freq=5, new_model=model, **run):
    """The reference run, never stopped: its names and its final model.

    ``run`` (``epochs``, ``inputs`` and fit arguments) as for ``keras_util.fit``.
    """
    m = new_model()
    fit(m, [BatchAwareCheckpoint(str(folder / template), save_freq=save_freq)], **run)
    return names(folder), m


def resumed_like_uninterrupted(tmp_path: Path, at: int, **run):
    """An uninterrupted run, and one interrupted after batch ``at`` and resumed.

    Checks that both end with the same checkpoint names and weights; returns
    the resumed model and its point, and the uninterrupted run's names and model.
    """
    reference, done = uninterrupted(tmp_path / "ref", **run)
    m, point, _ = interrupt_then_resume(str(tmp_path / "run" / TEMPLATE), at, **run)
    assert names(tmp_path / "run") == reference
    assert_same_weights(m, done)
    return m, point, reference, done


# ----------------------------------------------------------------- ResumePoint


@pytest.mark.parametrize(
    ("point", "initial_epoch", "mid_epoch"),
    [
        (ResumePoint(), 0, False),
        (ResumePoint("p", epoch=3, batch=30, batch_in_epoch=10, end_of_epoch=True), 3, False),
        (ResumePoint("p", epoch=3, batch=25, batch_in_epoch=5, end_of_epoch=False), 2, True),
    ],
)
def test_resume_point_tells_fit_where_to_start(point, initial_epoch, mid_epoch):
    assert (point.initial_epoch, point.mid_epoch) == (initial_epoch, mid_epoch)


def test_resume_from_an_empty_folder_is_a_fresh_start(tmp_path):
    m = model()
    point = resume(m, tmp_path)
    assert point == ResumePoint()
    assert not point.resumed
    history = finish(
        m, point, str(tmp_path / "b{batch}.keras"), save_freq=10, epochs=1, shuffle=True
    )
    assert history.epoch == [0]
    assert names(tmp_path) == ["b10.keras"]


def test_resume_needs_a_built_model(tmp_path):
    m = keras.Sequential([keras.layers.Dense(1)])
    with pytest.raises(ValueError) as info:
        resume(m, tmp_path)
    assert str(info.value) == (
        "the model must be built before resume() can load weights into it; call it on a "
        "batch, or give it an Input layer"
    )


# ----------------------------------------------------------------- load back


@pytest.mark.parametrize(
    ("template", "weights_only"),
    [("b{batch:02d}.keras", False), ("b{batch:02d}.weights.h5", True)],
)
def test_saves_load_back_with_optimizer_state(tmp_path, template, weights_only):
    m = model()
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / template), save_weights_only=weights_only, save_freq=10
    )
    fit(m, [ckpt], epochs=2, shuffle=True)
    fresh = model(seed=1)
    point = resume(fresh, str(tmp_path / template))
    assert point.path == str(tmp_path / template.format(batch=20))
    assert (point.epoch, point.batch, point.batch_in_epoch, point.end_of_epoch) == (2, 20, 10, True)
    assert point.iterations == 20
    assert int(fresh.optimizer.iterations) == 20
    assert_same_weights(fresh, m)
    for a, b in zip(fresh.optimizer.variables, m.optimizer.variables, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    if not weights_only:
        loaded = keras.models.load_model(point.path)
        x, _ = data()
        np.testing.assert_allclose(loaded.predict(x, verbose=0), m.predict(x, verbose=0))


def test_legacy_h5_saves_load_back_and_the_lost_optimizer_state_is_reported(tmp_path):
    m = model()
    filepath = str(tmp_path / "b{batch:02d}.h5")
    fit(m, [BatchAwareCheckpoint(filepath, save_freq=10)], epochs=1, shuffle=True)
    fresh = model(seed=1)
    with pytest.warns(CkptnameWarning) as record:
        point = resume(fresh, filepath)
    assert ours(record) == [
        f"the state of optimizer 'optimizer' (it had run 10 steps; the file holds no optimizer "
        f"state) is not restored from {point.path!r}: training continues from a fresh "
        "optimizer state; build the optimizer on the variables it updates "
        "(optimizer.build(variables)) before calling resume"
    ]
    assert_same_weights(fresh, m)
    assert int(fresh.optimizer.iterations) == 0  # the legacy format has no optimizer state
    with warnings.catch_warnings():
        warnings.simplefilter("error", CkptnameWarning)
        fit(
            fresh,
            [BatchAwareCheckpoint(filepath, save_freq=10)],
            epochs=2,
            initial_epoch=point.initial_epoch,
            shuffle=True,
        )
    assert names(tmp_path) == ["b10.h5", "b20.h5"]  # the count is the batches that ran


def test_the_optimizer_count_never_moves_the_names(tmp_path):
    # optimizer.iterations counts applied updates (a loss-scale optimizer skips
    # some, a schedule may be reset by hand): the names follow the batches run.
    filepath = str(tmp_path / "b{batch:02d}.keras")
    fit(model(), [BatchAwareCheckpoint(filepath, save_freq=5)], epochs=1, shuffle=True)
    m = model()
    resume(m, filepath)
    m.optimizer.iterations.assign(12)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CkptnameWarning)
        fit(
            m,
            [BatchAwareCheckpoint(filepath, save_freq=5)],
            epochs=2,
            initial_epoch=1,
            shuffle=True,
        )
    assert names(tmp_path) == ["b05.keras", "b10.keras", "b15.keras", "b20.keras"]
    assert read_metadata(tmp_path / "b15.keras")["batch"] == 15
    assert read_metadata(tmp_path / "b15.keras")["iterations"] == 17


def test_starting_before_the_interrupted_epoch_is_reported(tmp_path):
    filepath = str(tmp_path / TEMPLATE)
    interrupt(model(), filepath, 17, shuffle=True)
    m = model()
    resume(m, filepath)
    with pytest.warns(CkptnameWarning) as record:
        fit(m, [BatchAwareCheckpoint(filepath, save_freq=5)], epochs=1, shuffle=True)
    assert ours(record) == [
        "training starts at epoch 1, but the run stopped inside epoch 2 (after batch 5 of "
        "it); pass initial_epoch=1 to fit (or use ckptname.keras.fit_resumed) so that epochs "
        "are numbered as before"
    ]


# ----------------------------------------------------------------- corrupt state and sidecars


def _two_epochs(folder: Path, template: str = "b{batch:02d}.keras"):
    fit(model(), [BatchAwareCheckpoint(str(folder / template), save_freq=5)], epochs=2)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"format": "ckptname.state/1", "templ', "is not valid JSON"),
        (b"", "is not valid JSON"),
        (b"[]", "holds list, expected a JSON object"),
    ],
    ids=["truncated", "empty", "not an object"],
)
def test_resume_and_training_survive_a_corrupt_state_file(tmp_path, content, problem):
    _two_epochs(tmp_path)
    state_path = tmp_path / ".ckptname-state.json"
    state_path.write_bytes(content)
    # Without a template, the sidecars say it, with a warning; never a JSON error.
    m = model(seed=3)
    with pytest.warns(CkptnameWarning) as record:
        point = resume(m, tmp_path)
    (message,) = ours(record)
    assert message.startswith(f"state file {str(state_path)!r} {problem}")
    assert message.endswith(
        "; finding checkpoints by listing the folder, with the template 'b{batch:02d}.keras' "
        "that their sidecars record"
    )
    assert (point.path, point.batch) == (str(tmp_path / "b20.keras"), 20)
    with pytest.warns(CkptnameWarning):
        best = ckptname.find_best(tmp_path, "loss")
    assert best is not None
    keras.models.load_model(best.path)
    # With the template, the state file is not read at all.
    with warnings.catch_warnings():
        warnings.simplefilter("error", CkptnameWarning)
        point = resume(model(seed=3), str(tmp_path / "b{batch:02d}.keras"))
        assert point.batch == 20
        fit(
            m,
            [BatchAwareCheckpoint(str(tmp_path / "b{batch:02d}.keras"), save_freq=5)],
            epochs=3,
            initial_epoch=2,
            shuffle=True,
        )
    # The next save rewrote the state file whole.
    assert read_state(tmp_path)["latest"]["name"] == "b30.keras"
    assert names(tmp_path)[-1] == "b30.keras"


def test_resume_survives_a_truncated_sidecar(tmp_path):
    _two_epochs(tmp_path, "e{epoch}-b{batch:02d}.keras")
    side = tmp_path / "e2-b20.keras.ckptname.json"
    side.write_bytes(side.read_bytes()[:40])
    m = model(seed=3)
    with pytest.warns(CkptnameWarning) as record:
        point = resume(m, str(tmp_path / "e{epoch}-b{batch:02d}.keras"))
    (message,) = ours(record)
    assert message.startswith(f"sidecar {str(side)!r} is not valid JSON (")
    assert message.endswith(
        f"; it may be truncated; counters are read from the name of "
        f"{str(tmp_path / 'e2-b20.keras')!r} instead"
    )
    assert (point.epoch, point.batch, point.end_of_epoch) == (2, 20, True)
    assert int(m.optimizer.iterations) == 20
    fit(
        m,
        [BatchAwareCheckpoint(str(tmp_path / "e{epoch}-b{batch:02d}.keras"), save_freq=5)],
        epochs=3,
        initial_epoch=point.initial_epoch,
        shuffle=True,
    )
    assert names(tmp_path)[-2:] == ["e3-b25.keras", "e3-b30.keras"]
    assert read_metadata(tmp_path / "e3-b30.keras")["iterations"] == 30


# ----------------------------------------------------------------- exact mid-epoch resume


def test_interrupted_run_resumes_with_the_same_names_iterations_and_weights(tmp_path):
    reference, done = uninterrupted(tmp_path / "ref")
    assert reference == [
        "e1-b005-5.keras",
        "e1-b010-10.keras",
        "e2-b015-5.keras",
        "e2-b020-10.keras",
        "e3-b025-5.keras",
        "e3-b030-10.keras",
    ]

    folder = tmp_path / "run"
    filepath = str(folder / TEMPLATE)
    interrupt(model(), filepath, 17)
    assert names(folder) == reference[:3]

    m = model(seed=7)  # other initial weights: everything must come from the checkpoint
    point = resume(m, filepath)
    assert point.path == str(folder / "e2-b015-5.keras")
    assert (point.epoch, point.batch, point.batch_in_epoch, point.end_of_epoch) == (2, 15, 5, False)
    assert point.initial_epoch == 1
    history = finish(m, point, filepath)
    assert names(folder) == reference
    assert int(m.optimizer.iterations) == int(done.optimizer.iterations) == 30
    assert history.epoch == [1, 2]
    assert_same_weights(m, done)  # the same batches, in the same order
    for name in reference:
        a = read_metadata(folder / name)
        b = read_metadata(tmp_path / "ref" / name)
        assert (a["epoch"], a["batch"], a["batch_in_epoch"], a["iterations"]) == (
            b["epoch"],
            b["batch"],
            b["batch_in_epoch"],
            b["iterations"],
        )


LOSS_TEMPLATE = "b{batch:03d}-e{epoch}-loss{loss:.4f}-mae{mae:.4f}.keras"


def test_running_means_continue_across_a_mid_epoch_resume(tmp_path):
    # Keras logs `loss` and compiled metrics as means over the epoch so far;
    # a resume into the middle of epoch 2 puts the sums of its first batches
    # back, so later saves in that epoch carry the same values as without
    # the interruption.
    _, ref = uninterrupted(tmp_path / "ref", LOSS_TEMPLATE, save_freq=3)
    m, point, _ = interrupt_then_resume(
        str(tmp_path / "run" / LOSS_TEMPLATE), 14, save_freq=3, resumed_model=partial(model, seed=3)
    )
    assert (point.batch, point.batch_in_epoch) == (12, 2)
    assert set(point.metric_state) == {"loss", "compile_metrics"}
    reference = names(tmp_path / "ref")
    assert [n[:7] for n in reference] == [f"b{b:03d}-e{(b - 1) // 10 + 1}" for b in range(3, 31, 3)]
    assert names(tmp_path / "run") == reference  # byte-identical, losses included
    for name in reference:
        got = read_metadata(tmp_path / "run" / name)
        want = read_metadata(tmp_path / "ref" / name)
        assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-6), name
        got_state, want_state = got.get("metric_state", {}), want.get("metric_state", {})
        assert sorted(got_state) == sorted(want_state), name
        for key, values in want_state.items():
            assert got_state[key] == pytest.approx(values, rel=1e-6), (name, key)
    assert m.history.history["loss"][-1] == pytest.approx(ref.history.history["loss"][-1])


def test_only_saves_inside_an_epoch_record_the_metric_state(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:02d}.keras"), save_freq=5)
    fit(model(), [ckpt], epochs=1)
    mid, end = read_metadata(tmp_path / "b05.keras"), read_metadata(tmp_path / "b10.keras")
    assert mid["end_of_epoch"] is False and end["end_of_epoch"] is True
    assert sorted(mid["metric_state"]) == ["compile_metrics", "loss"]
    assert mid["metric_state"]["loss"][1] == 50.0  # Mean: [total, count of samples]
    assert "metric_state" not in end


def test_a_metric_that_does_not_read_back_is_named_in_a_warning_not_dropped_silently():
    from types import SimpleNamespace

    from ckptname._keras_backend import metric_state

    class Unreadable:
        def numpy(self):
            raise RuntimeError("Collective ops is aborted")

    mean = keras.metrics.Mean(name="loss")
    mean.update_state([1.0, 3.0])
    broken = SimpleNamespace(name="auc", variables=[Unreadable()])
    with pytest.warns(CkptnameWarning) as record:
        state = metric_state(SimpleNamespace(metrics=[mean, broken]))
    assert state == {"loss": [4.0, 2.0]}
    assert ours(record) == [
        "the running values of 'auc' (RuntimeError: Collective ops is aborted) could not be "
        "read for the sidecar; a resume into the middle of this epoch starts their means afresh"
    ]


def test_a_sidecar_without_metric_state_resumes_with_means_restarted(tmp_path):
    # Without the record, the rest of the epoch is still resumed exactly
    # (counters, weights), but the means restart: the names of the saves
    # later in that epoch differ, which is what the record is for.
    _, ref = uninterrupted(tmp_path / "ref", LOSS_TEMPLATE, save_freq=3)
    filepath = str(tmp_path / "run" / LOSS_TEMPLATE)
    interrupt(model(), filepath, 14, save_freq=3)
    # What an older version, or another writer, left: no metric state.
    for side in (tmp_path / "run").glob("*.ckptname.json"):
        meta = json.loads(side.read_text())
        meta.pop("metric_state", None)
        side.write_text(json.dumps(meta))
    m = model(seed=3)
    finish(m, resume(m, filepath), filepath, save_freq=3)
    got, want = names(tmp_path / "run"), names(tmp_path / "ref")
    assert [n[:7] for n in got] == [n[:7] for n in want]
    differ = [n[:7] for n, r in zip(got, want, strict=True) if n != r]
    assert differ == ["b015-e2", "b018-e2"]
    assert int(m.optimizer.iterations) == 30
    assert_same_weights(m, ref)


def test_metric_state_that_does_not_fit_the_model_is_reported(tmp_path):
    filepath = str(tmp_path / TEMPLATE)
    interrupt(model(metrics=["mae", "mse"]), filepath, 17, epochs=2)
    m = model(metrics=["mae"])  # compiled with fewer metrics than the run that saved
    point = resume(m, filepath)
    with pytest.warns(CkptnameWarning) as record:
        finish(m, point, filepath, epochs=2)
    assert ours(record) == [
        "the running values of 'compile_metrics' recorded in the checkpoint do not fit the "
        "model's metrics; their means in epoch 2 cover only the batches after the resume"
    ]


def test_non_finite_metric_state_round_trips_through_the_sidecar():
    from ckptname._metadata import decode, encode

    state = {"loss": [float("nan"), 3.0], "auc": [[float("inf"), -float("inf")], [1.0, 2.0]]}
    back = decode(encode({"metric_state": state}), "sidecar")["metric_state"]
    assert np.isnan(back["loss"][0]) and back["loss"][1] == 3.0
    assert back["auc"] == [[float("inf"), -float("inf")], [1.0, 2.0]]


@ku.steps_per_execution
def test_steps_per_execution_resume_gives_the_same_names(tmp_path):
    filepath = "b{batch:03d}-e{epoch}-{batch_in_epoch}.keras"
    in_executions_of_4 = partial(model, steps_per_execution=4)
    _, ref = uninterrupted(tmp_path / "ref", filepath, save_freq=6, new_model=in_executions_of_4)
    m, point, _ = interrupt_then_resume(
        str(tmp_path / "run" / filepath), 21, save_freq=6, new_model=in_executions_of_4
    )
    assert (point.epoch, point.batch, point.batch_in_epoch) == (3, 24, 4)
    assert (
        names(tmp_path / "run")
        == names(tmp_path / "ref")
        == [
            "b008-e1-8.keras",
            "b014-e2-4.keras",
            "b018-e2-8.keras",
            "b024-e3-4.keras",
            "b030-e3-10.keras",
        ]
    )
    assert int(m.optimizer.iterations) == int(ref.optimizer.iterations) == 30
    assert_same_weights(m, ref)


def test_shuffled_arrays_resume_with_the_same_counts(tmp_path):
    reference, _ = uninterrupted(tmp_path / "ref", shuffle=True)
    m, _, _ = interrupt_then_resume(str(tmp_path / "run" / TEMPLATE), 23, shuffle=True)
    assert names(tmp_path / "run") == reference
    assert int(m.optimizer.iterations) == 30


def test_resume_with_validation_split_and_a_partial_last_batch(tmp_path):
    # 100 samples, 20% held out: 80 to train in batches of 12 -> 7 batches an
    # epoch, the last of 8 samples.
    kw = {"batch_size": 12, "shuffle": False, "validation_split": 0.2}
    _, m_ref = uninterrupted(tmp_path / "ref", save_freq=3, **kw)
    m, point, history = interrupt_then_resume(
        str(tmp_path / "run" / TEMPLATE), 11, save_freq=3, **kw
    )
    assert (point.batch, point.batch_in_epoch) == (9, 2)
    assert names(tmp_path / "run") == names(tmp_path / "ref")
    assert int(m.optimizer.iterations) == 21
    assert_same_weights(m, m_ref)
    assert history.history["val_loss"][-1] == pytest.approx(
        m_ref.history.history["val_loss"][-1], rel=1e-5
    )


def test_tf_data_resume_finishes_the_pass(tmp_path):
    import tensorflow as tf

    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    m, point, _, _ = resumed_like_uninterrupted(tmp_path, 27, inputs=(ds,))
    assert (point.batch, point.batch_in_epoch) == (25, 5)
    assert int(m.optimizer.iterations) == 30


@pytest.mark.parametrize("repeat", [True, False])
def test_tf_data_stream_with_steps_per_epoch_resumes_where_it_was_cut(tmp_path, repeat):
    # Epochs of 5 batches cut from a stream: a repeated 10-batch dataset, or
    # the finite one itself (Keras then restarts it after each pass).
    import tensorflow as tf

    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    if repeat:
        ds = ds.repeat()
    run = {"inputs": (ds,), "save_freq": 3, "epochs": 5, "steps_per_epoch": 5}
    m, point, _, _ = resumed_like_uninterrupted(tmp_path, 14, **run)
    assert (point.epoch, point.batch, point.batch_in_epoch) == (3, 12, 2)
    assert int(m.optimizer.iterations) == 25


@ku.steps_per_execution
def test_tf_data_with_steps_per_execution_that_does_not_divide_the_epoch_resumes_exactly(tmp_path):
    # steps_per_epoch=7 with steps_per_execution=3: Keras runs whole executions,
    # 9 batches an epoch from the repeated stream. Names count what ran, and a
    # resume cuts the stream where the uninterrupted run did.
    import tensorflow as tf

    x, y = data()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10).repeat()
    run = {"inputs": (ds,), "save_freq": 6, "epochs": 3, "steps_per_epoch": 7}
    spe3 = lambda: model(steps_per_execution=3)  # noqa: E731
    m, point, reference, done = resumed_like_uninterrupted(tmp_path, 13, new_model=spe3, **run)
    assert int(done.optimizer.iterations) == 27
    assert reference == [
        "e1-b006-6.keras", "e2-b012-3.keras", "e2-b018-9.keras", "e3-b024-6.keras",
    ]  # fmt: skip
    assert (point.epoch, point.batch, point.batch_in_epoch) == (2, 12, 3)
    assert int(m.optimizer.iterations) == 27


def test_py_dataset_resumes_mid_epoch_exactly(tmp_path):
    run = {"inputs": (ku.Batches(),), "shuffle": False}
    m, point, _, _ = resumed_like_uninterrupted(tmp_path, 17, **run)
    assert (point.epoch, point.batch, point.batch_in_epoch) == (2, 15, 5)
    assert int(m.optimizer.iterations) == 30


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_a_mid_epoch_resume_on_numpy_and_py_dataset_needs_no_tensorflow(tmp_path, backend):
    # A PyTorch or JAX user without TensorFlow: it cannot be imported in the child.
    script = f"""
import sys
sys.modules["tensorflow"] = None  # `import tensorflow` raises ImportError
import keras_util as ku
from ckptname.keras import resume
filepath = {str(tmp_path / "b{batch:03d}.keras")!r}
for inputs in [None, (ku.Batches(),)]:
    ku.interrupt(ku.model(), filepath, 17, inputs=inputs)
    m = ku.model()
    point = resume(m, filepath)
    assert point.mid_epoch, point
    ku.finish(m, point, filepath, inputs=inputs)
    assert int(m.optimizer.iterations) == 30
    assert ku.names({str(tmp_path)!r})[-1] == "b030.keras"
    for name in ku.names({str(tmp_path)!r}):
        (ku.Path({str(tmp_path)!r}) / name).unlink()
    (ku.Path({str(tmp_path)!r}) / ".ckptname-state.json").unlink()
    for side in ku.Path({str(tmp_path)!r}).glob("*.ckptname.json"):
        side.unlink()
print("tensorflow" in sys.modules and sys.modules["tensorflow"] is not None)
"""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_a_truncated_newest_checkpoint_is_passed_over_and_replaced(tmp_path):
    reference, done = uninterrupted(tmp_path / "ref", save_freq=5)
    filepath = str(tmp_path / "run" / TEMPLATE)
    interrupt(model(), filepath, 17)  # saved at 5, 10, 15
    newest = tmp_path / "run" / "e2-b015-5.keras"
    newest.write_bytes(newest.read_bytes()[:100])  # damaged by something else
    m = model()
    with pytest.warns(CkptnameWarning) as record:
        point = resume(m, filepath)
    message = str(next(w.message for w in record if "not resuming" in str(w.message)))
    assert message.startswith(f"not resuming from {str(newest)!r}: it does not load (")
    assert message.endswith("; trying the checkpoint before it")
    assert (point.batch, point.skipped) == (10, (str(newest),))
    finish(m, point, filepath)
    assert names(tmp_path / "run") == reference  # the damaged one was saved again
    assert int(m.optimizer.iterations) == 30
    assert_same_weights(m, done)


def test_a_checkpoint_with_a_nan_loss_is_never_resumed_from(tmp_path):
    x, y = data()
    y[55:] = np.nan  # batch 6 onwards: the loss turns NaN and TerminateOnNaN stops
    filepath = str(tmp_path / "b{batch:02d}-{loss:.3f}.keras")
    ckpt = BatchAwareCheckpoint(filepath, monitor="loss", save_freq=2)
    fit(
        model(),
        [ckpt, keras.callbacks.TerminateOnNaN()],
        inputs=(x, y),
        epochs=1,
        batch_size=10,
        shuffle=False,
    )
    assert names(tmp_path)[-1].endswith("nan.keras")
    m = model()
    with pytest.warns(CkptnameWarning, match=r"its loss is nan; trying the checkpoint before it"):
        point = resume(m, filepath)
    assert point.batch == 4 and np.isfinite(point.metrics["loss"])


def test_when_no_checkpoint_loads_the_error_names_the_newest_and_why(tmp_path):
    filepath = str(tmp_path / "b{batch:02d}.keras")
    fit(model(), [BatchAwareCheckpoint(filepath, save_freq=5)], epochs=1)
    wider = keras.Sequential([keras.Input((4,)), keras.layers.Dense(7), keras.layers.Dense(1)])
    wider.compile(optimizer="adam", loss="mse")
    with pytest.warns(CkptnameWarning), pytest.raises(ckptname.CheckpointError) as info:
        resume(wider, filepath)
    message = str(info.value)
    assert message.startswith(
        f"no checkpoint in {str(tmp_path)!r} can be resumed from: the newest, "
        f"{str(tmp_path / 'b10.keras')!r}, it does not load ("
    )
    assert message.endswith(
        ", and so do the 1 before it; build and compile the model as it was when saved, "
        "or start in another folder"
    )


def test_a_job_restarted_by_backup_and_restore_replaces_its_own_later_checkpoints(tmp_path):
    # The job checkpoints every 5 batches and backs up at epoch ends; killed in
    # epoch 2, it restarts from the backup of epoch 1 (batch 10), behind its
    # own checkpoint b015: it goes on, saves b015 again, and ends as an
    # uninterrupted run.
    reference, done = uninterrupted(tmp_path / "ref", save_freq=5)
    filepath = str(tmp_path / "run" / TEMPLATE)
    backup = str(tmp_path / "backup")

    def job(m, *extra):
        callbacks = [keras.callbacks.BackupAndRestore(backup), *extra,
                     BatchAwareCheckpoint(filepath, save_freq=5)]  # fmt: skip
        fit(m, callbacks, epochs=3)

    with pytest.raises(Interrupt):
        job(model(), InterruptAt(17))
    assert names(tmp_path / "run") == ["e1-b005-5.keras", "e1-b010-10.keras", "e2-b015-5.keras"]
    m = model()
    job(m)
    assert names(tmp_path / "run") == reference
    assert int(m.optimizer.iterations) == 30
    assert_same_weights(m, done)


def test_a_fresh_run_is_still_refused_a_folder_with_later_checkpoints(tmp_path):
    filepath = str(tmp_path / "b{batch:02d}.keras")
    fit(model(), [BatchAwareCheckpoint(filepath, save_freq=5)], epochs=1)
    with pytest.raises(ckptname.CheckpointError, match="later than this run's batch count 0"):
        fit(model(), [BatchAwareCheckpoint(filepath, save_freq=5)], epochs=1)


def test_fit_resumed_takes_the_initial_epoch_from_the_resume_point():
    with pytest.raises(ValueError) as info:
        fit_resumed(None, resume=None, initial_epoch=2)
    assert str(info.value) == (
        "fit_resumed takes the initial epoch from `resume`; do not pass initial_epoch"
    )


def test_fit_resumed_refuses_inputs_it_cannot_cut():
    point = ResumePoint("p", epoch=1, batch=5, batch_in_epoch=5, end_of_epoch=False)

    def gen():
        yield from ()

    with pytest.raises(TypeError) as info:
        fit_resumed(model(), gen(), resume=point, epochs=2)
    assert str(info.value) == (
        "fit_resumed finishes an interrupted epoch for NumPy arrays (or lists and dicts of "
        "them), keras.utils.PyDataset and tf.data datasets; got generator"
    )


# ----------------------------------------------------------------- a real kill

_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, json
    import keras
    import keras_util as ku
    from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume

    folder, kill_at = sys.argv[1], int(sys.argv[2])

    class KillAt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    x, y = ku.data()
    m = ku.model()
    point = resume(m, folder + "/" + sys.argv[3])
    ckpt = BatchAwareCheckpoint(folder + "/" + sys.argv[3], save_freq=5, keep_last=2)
    fit_resumed(m, x, y, resume=point, epochs=3, batch_size=10, shuffle=False, verbose=0,
                callbacks=[ckpt, KillAt()])
    print(json.dumps({"iterations": int(m.optimizer.iterations),
                      "weights": [w.tolist() for w in m.get_weights()]}))
    """
)


def test_a_killed_process_resumes_with_the_same_names_and_iterations(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(ku.__file__).parent), *sys.path]))
    folder = tmp_path / "ckpts"

    def run(kill_at):
        return subprocess.run(
            [sys.executable, str(script), str(folder), str(kill_at), TEMPLATE],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )

    killed = run(17)  # inside epoch 2, two batches after the save at 15
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert names(folder) == ["e1-b010-10.keras", "e2-b015-5.keras"]

    finished = run(-1)
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout.strip().splitlines()[-1])

    ref = model()
    fit(ref, [BatchAwareCheckpoint(str(tmp_path / "ref" / TEMPLATE), save_freq=5, keep_last=2)])
    assert names(folder) == names(tmp_path / "ref") == ["e3-b025-5.keras", "e3-b030-10.keras"]
    assert sorted(p.name for p in folder.glob("*.ckptname.json")) == [
        "e3-b025-5.keras.ckptname.json",
        "e3-b030-10.keras.ckptname.json",
    ]
    assert result["iterations"] == int(ref.optimizer.iterations) == 30
    for got, want in zip(result["weights"], ref.get_weights(), strict=True):
        np.testing.assert_allclose(np.array(got), want, rtol=1e-6, atol=1e-7)
    assert leftovers(folder) == []
    assert STEPS == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ckptname.find_latest(str(folder), TEMPLATE).name == "e3-b030-10.keras"


# ----------------------------------------------------------------- hostile metadata files


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"metrics": [0.5]}, "has 'metrics' of type list, expected a JSON object"),
        ({"extras": "lr=0.1"}, "has 'extras' of type str, expected a JSON object"),
        ({"metric_state": [1.0, 2.0]}, "has 'metric_state' of type list, expected a JSON object"),
    ],
    ids=["metrics", "extras", "metric_state"],
)
def test_resume_survives_sidecar_sections_of_the_wrong_type(tmp_path, fields, problem):
    _two_epochs(tmp_path, "e{epoch}-b{batch:02d}.keras")
    side = tmp_path / "e2-b20.keras.ckptname.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), **fields}))
    m = model(seed=3)
    with pytest.warns(CkptnameWarning) as record:
        point = resume(m, str(tmp_path / "e{epoch}-b{batch:02d}.keras"))
    assert ours(record) == [
        f"sidecar {str(side)!r} {problem}; it was not written by ckptname, or is damaged; "
        f"counters are read from the name of {str(tmp_path / 'e2-b20.keras')!r} instead"
    ]
    assert (point.epoch, point.batch, point.end_of_epoch) == (2, 20, True)


def test_resume_with_a_fifo_for_a_state_file_does_not_hang(tmp_path):
    _two_epochs(tmp_path)
    state_path = tmp_path / ".ckptname-state.json"
    state_path.unlink()
    os.mkfifo(state_path)

    def timeout(signum, frame):
        raise TimeoutError("resume blocked on the FIFO for 5 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        with pytest.warns(CkptnameWarning) as record:
            point = resume(model(seed=3), tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert ours(record) == [
        f"state file {str(state_path)!r} is a FIFO; ckptname reads its files only as regular "
        "files of at most 16 MiB; finding checkpoints by listing the folder, with the template "
        "'b{batch:02d}.keras' that their sidecars record"
    ]
    assert (point.path, point.batch) == (str(tmp_path / "b20.keras"), 20)


# ----------------------------------------------------------------- what resume checks


def test_a_resume_with_another_batch_size_is_refused_before_any_batch_runs(tmp_path):
    # The run used batches of 10 (10 an epoch); with batches of 20 the rest of
    # the interrupted epoch is empty and the next epoch has 5.
    filepath = str(tmp_path / TEMPLATE)
    interrupt(model(), filepath, 17)
    m = model()
    point = resume(m, filepath)
    with pytest.raises(ckptname.CountError) as info:
        finish(m, point, filepath, batch_size=20)
    assert str(info.value) == (
        f"checkpoint {point.path!r} was saved by a run whose epochs had 10 batches, but "
        "epoch 3 of this fit has 5; another batch size, steps_per_epoch or data length "
        "would count other batches under the run's names: continue with the run's batch "
        "size and data (ckptname.keras.fit_resumed finishes the interrupted epoch), or start "
        "in another folder"
    )
    assert int(m.optimizer.iterations) == 15  # nothing trained
    assert names(tmp_path) == ["e1-b005-5.keras", "e1-b010-10.keras", "e2-b015-5.keras"]


def test_a_sidecar_that_contradicts_its_name_is_set_aside_and_the_name_wins(tmp_path):
    filepath = str(tmp_path / "b{batch:03d}.keras")
    fit(model(), [BatchAwareCheckpoint(filepath, save_freq=6)], epochs=1)
    side = tmp_path / "b006.keras.ckptname.json"
    meta = json.loads(side.read_text())
    meta.update(batch=40, epoch=9, batch_in_epoch=4)
    side.write_text(json.dumps(meta))
    m = model()
    with pytest.warns(CkptnameWarning) as record:
        point = resume(m, filepath)
    assert ours(record) == [
        f"the sidecar of {str(tmp_path / 'b006.keras')!r} records batch 40, epoch 9, "
        "batch_in_epoch 4, but the name says batch 6; the name wins and the sidecar is not "
        "used (it describes another checkpoint)"
    ]
    assert (point.path, point.batch) == (str(tmp_path / "b006.keras"), 6)
