"""BatchAwareCheckpoint in real Keras fits: names, fields, best, retention, sidecars."""

from __future__ import annotations

import itertools
import json
import re

import keras
import keras_util as ku
import numpy as np
import pytest
from keras_util import STEPS, Scripted, data, fit, leftovers, model, names, read_state

import ckptname
import ckptname.keras
from ckptname import CheckpointError, MissingFieldError, read_metadata
from ckptname.keras import BatchAwareCheckpoint, split_filepath

# ----------------------------------------------------------------- counting and naming


def test_integer_save_freq_names_count_batches_across_epochs(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:05d}.keras"), save_freq=5)
    fit(model(), [ckpt])
    assert names(tmp_path) == [f"b{n:05d}.keras" for n in (5, 10, 15, 20, 25, 30)]
    for n in (5, 10, 15, 20, 25, 30):
        meta = read_metadata(tmp_path / f"b{n:05d}.keras")
        assert (meta["batch"], meta["iterations"]) == (n, n)
        assert meta["epoch"] == (n - 1) // STEPS + 1
        assert meta["batch_in_epoch"] == (n - 1) % STEPS + 1
    assert ckpt.batch == 30


@ku.steps_per_execution
def test_steps_per_execution_names_carry_the_true_counts(tmp_path):
    # 10 batches an epoch in executions of 4: Keras reports indexes 3, 7, 11
    # (11 overshoots: only 10 batches ran); saves when the count crosses 6k.
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:03d}-e{epoch}.keras"), save_freq=6)
    fit(model(steps_per_execution=4), [ckpt])
    assert names(tmp_path) == [
        "b008-e1.keras",
        "b014-e2.keras",
        "b018-e2.keras",
        "b024-e3.keras",
        "b030-e3.keras",
    ]
    for name in names(tmp_path):
        meta = read_metadata(tmp_path / name)
        assert meta["iterations"] == meta["batch"]


@ku.steps_per_execution
def test_epoch_saves_fill_batch_with_the_global_count(tmp_path):
    template = "e{epoch:02d}-b{batch:04d}-{batch_in_epoch}.weights.h5"
    ckpt = BatchAwareCheckpoint(str(tmp_path / template), save_weights_only=True)
    fit(model(), [ckpt])
    assert names(tmp_path) == [
        "e01-b0010-10.weights.h5",
        "e02-b0020-10.weights.h5",
        "e03-b0030-10.weights.h5",
    ]
    assert read_metadata(tmp_path / "e02-b0020-10.weights.h5")["end_of_epoch"] is True


def test_batch_in_epoch_is_what_keras_calls_batch(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch}-{batch_in_epoch:02d}.keras"), save_freq=4)
    fit(model(), [ckpt])
    # global 4, 8 | 12, 16, 20 | 24, 28 -> inside epochs: 4, 8 | 2, 6, 10 | 4, 8
    assert names(tmp_path) == [
        "e1-04.keras",
        "e1-08.keras",
        "e2-02.keras",
        "e2-06.keras",
        "e2-10.keras",
        "e3-04.keras",
        "e3-08.keras",
    ]


def test_metrics_in_names_and_exact_values_in_sidecars(tmp_path):
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch:02d}-loss{loss:.4f}-mae{mae:.3f}.keras"), save_freq=10
    )
    fit(model(), [ckpt], epochs=2)
    got = names(tmp_path)
    assert len(got) == 2
    template = split_filepath(str(tmp_path / "b{batch:02d}-loss{loss:.4f}-mae{mae:.3f}.keras"))[1]
    for name in got:
        values = template.parse(name)
        meta = read_metadata(tmp_path / name)
        assert values["loss"] == round(meta["metrics"]["loss"], 4)
        assert values["mae"] == round(meta["metrics"]["mae"], 3)
        assert meta["metrics"]["loss"] != values["loss"]  # the sidecar is not rounded


def test_validation_metrics_in_epoch_names(tmp_path):
    x, y = data(1)
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch}-{val_loss:.3f}.keras"))
    fit(model(), [ckpt], epochs=2, validation_data=(x[:20], y[:20]))
    assert [n.split("-")[0] for n in names(tmp_path)] == ["e1", "e2"]
    meta = read_metadata(tmp_path / names(tmp_path)[0])
    assert set(meta["metrics"]) == {"loss", "mae", "val_loss", "val_mae"}


def test_validation_field_with_integer_save_freq_fails_before_training(tmp_path):
    m = model()
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch}-{val_loss:.2f}.keras"), save_freq=5)
    x, y = data()
    with pytest.raises(MissingFieldError) as info:
        m.fit(x, y, epochs=1, verbose=0, callbacks=[ckpt], validation_data=(x, y))
    assert str(info.value) == (
        "field 'val_loss' of template 'b{batch}-{val_loss:.2f}.keras' will not be in the "
        "logs when saving every 5 batches: validation metrics exist only at epoch end; use "
        "save_freq='epoch', or a training metric such as 'loss'"
    )
    assert info.value.fields == ("val_loss",)
    assert int(m.optimizer.iterations) == 0  # not one batch ran
    assert names(tmp_path) == []


def test_validation_monitor_with_integer_save_freq_fails_before_training(tmp_path):
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch}.keras"), monitor="val_loss", save_best_only=True, save_freq=5
    )
    with pytest.raises(MissingFieldError) as info:
        fit(model(), [ckpt], epochs=1)
    assert str(info.value) == (
        "monitor 'val_loss' (save_best_only) will not be in the logs when saving every 5 "
        "batches: validation metrics exist only at epoch end; use save_freq='epoch', or "
        "monitor a training metric such as 'loss'"
    )


def test_field_missing_at_save_time_lists_the_keys_present(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch}-{acc:.2f}.keras"), save_freq=5)
    with pytest.raises(MissingFieldError) as info:
        fit(model(), [ckpt], epochs=1)
    assert str(info.value) == (
        "no value for field 'acc' of template 'b{batch}-{acc:.2f}.keras' at epoch 1, batch 5 "
        "(available: batch, batch_in_epoch, epoch, loss, mae)"
    )
    assert info.value.available == ("batch", "batch_in_epoch", "epoch", "loss", "mae")


def test_missing_validation_field_at_epoch_end_skips_the_save_and_says_why(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch}-{val_loss:.2f}.keras"))
    with pytest.warns(ckptname.CkptnameWarning) as record:
        fit(model(), [ckpt], epochs=1)
    assert [str(w.message) for w in record if w.category is ckptname.CkptnameWarning] == [
        "field 'val_loss' of template 'e{epoch}-{val_loss:.2f}.keras' is not in the logs at "
        "epoch 1, batch 10 (available: batch, batch_in_epoch, epoch, loss, mae): that epoch ran "
        "no validation (fit validates only with validation data, and then every "
        "validation_freq epochs), so its save is skipped; later saves skipped for the same "
        "reason are not reported"
    ]
    assert names(tmp_path) == []


def test_a_misspelt_validation_field_is_still_an_error_that_says_why(tmp_path):
    x, y = data()
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch}-{val_los:.2f}.keras"))
    with pytest.raises(MissingFieldError) as info:
        fit(model(), [ckpt], epochs=1, validation_data=(x, y))
    assert str(info.value) == (
        "no value for field 'val_los' of template 'e{epoch}-{val_los:.2f}.keras' at epoch 1, "
        "batch 10 (available: batch, batch_in_epoch, epoch, loss, mae, val_loss, val_mae); "
        "validation metrics exist only at epoch end, and only when fit has validation data"
    )


def test_a_missing_validation_monitor_skips_the_save_with_one_warning(tmp_path):
    # No validation data: as in Keras's ModelCheckpoint, the best-only save is
    # skipped with a warning instead of stopping training.
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch}.keras"), save_best_only=True)
    with pytest.warns(ckptname.CkptnameWarning) as record:
        fit(model(), [ckpt], epochs=2)
    assert [str(w.message) for w in record if w.category is ckptname.CkptnameWarning] == [
        "monitor 'val_loss' (save_best_only) is not in the logs at epoch 1, batch 10 "
        "(available: loss, mae): that epoch ran no validation (fit validates only with "
        "validation data, and then every validation_freq epochs), so its save is skipped; "
        "later saves skipped for the same reason are not reported"
    ]
    assert names(tmp_path) == []


def test_a_misspelt_validation_monitor_is_still_an_error(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch}.keras"), monitor="val_los",
                                save_best_only=True, mode="min")  # fmt: skip
    x, y = data()
    with pytest.raises(MissingFieldError) as info:
        fit(model(), [ckpt], epochs=1, validation_data=(x, y))
    assert str(info.value) == (
        "monitor 'val_los' (save_best_only) is not in the logs at epoch 1, batch 10 "
        "(available: loss, mae, val_loss, val_mae); validation metrics exist only when fit "
        "has validation data"
    )


def test_validation_freq_skips_saves_that_need_a_validation_field(tmp_path):
    x, y = data()
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch:02d}-{val_loss:.3f}.keras"))
    with pytest.warns(ckptname.CkptnameWarning, match="field 'val_loss' of template") as record:
        fit(model(), [ckpt], epochs=4, validation_data=(x, y), validation_freq=2)
    assert len([w for w in record if w.category is ckptname.CkptnameWarning]) == 1
    assert [n[:3] for n in names(tmp_path)] == ["e02", "e04"]


def test_validation_freq_with_best_only_and_keep_best_tracks_validated_epochs(tmp_path):
    x, y = data()
    best_only = BatchAwareCheckpoint(str(tmp_path / "best" / "e{epoch:02d}.keras"),
                                     save_best_only=True)  # fmt: skip
    kept = BatchAwareCheckpoint(str(tmp_path / "kept" / "e{epoch:02d}.keras"), keep_best=1)
    with pytest.warns(ckptname.CkptnameWarning):
        fit(model(), [best_only, kept], epochs=4, validation_data=(x, y), validation_freq=2)
    assert names(tmp_path / "best") == ["e02.keras", "e04.keras"]
    # keep_best keeps the best validated checkpoint (epoch 4: the loss falls) and the
    # newest; the epochs without a value are saved, then pruned.
    assert names(tmp_path / "kept") == ["e04.keras"]
    assert read_state(tmp_path / "kept")["best"]["name"] == "e04.keras"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"filepath": "c/b{batch}.keras", "mode": "maximum"},
            "mode must be 'min', 'max' or 'auto', got 'maximum'; use 'min' where lower is "
            "better (losses, errors) and 'max' where higher is better (accuracies, scores)",
        ),
        (
            {"filepath": "c/b{batch}.keras", "save_freq": 0},
            "Unrecognized save_freq: 0. Expected save_freq are 'epoch' or integer values; "
            "ckptname accepts 'epoch', a whole number of batches above 0 (500), or a string: "
            "'500ba' (batches), '2ep' (epochs), '30s', '10min' or '2h' (wall-clock time), "
            "got 0",
        ),
        (
            {"filepath": "c/b{batch}.keras", "save_freq": "batch"},
            "Unrecognized save_freq: batch. Expected save_freq are 'epoch' or integer values; "
            "ckptname accepts 'epoch', a whole number of batches above 0 (500), or a string: "
            "'500ba' (batches), '2ep' (epochs), '30s', '10min' or '2h' (wall-clock time), "
            "got 'batch'",
        ),
        (
            {"filepath": "c/b{batch}.keras", "on_save_error": "ignore"},
            "on_save_error must be 'raise' or 'warn', got 'ignore'",
        ),
        (
            {"filepath": "c/b{batch}.keras", "keep_last": -1},
            "keep_last must be None or a whole number >= 0, got -1",
        ),
        (
            {"filepath": "c/b{batch}.keras", "save_weights_only": True},
            "with save_weights_only=True the filepath must end in '.weights.h5' (Keras weights "
            "format), got 'c/b{batch}.keras'",
        ),
        (
            {"filepath": "c/b{batch}.weights.h5"},
            "the filepath must end in '.keras' (or '.h5') to save the whole model, got "
            "'c/b{batch}.weights.h5'; to save weights only, end it in '.weights.h5' and pass "
            "save_weights_only=True",
        ),
        (
            {"filepath": "c/b{batch}.ckpt"},
            "the filepath must end in '.keras' (or '.h5') to save the whole model, got "
            "'c/b{batch}.ckpt'; to save weights only, end it in '.weights.h5' and pass "
            "save_weights_only=True",
        ),
        (
            {"filepath": "c/b{batch}.keras", "extras": {"batch": 3}},
            "extras key 'batch' is a counter the callback fills itself (batch, epoch, "
            "batch_in_epoch); rename the extra",
        ),
    ],
)
def test_constructor_fail(kwargs, message):
    with pytest.raises(ValueError) as info:
        BatchAwareCheckpoint(**kwargs)
    assert str(info.value) == message


def test_a_wrapped_model_checkpoint_gets_the_call_to_write_instead():
    # The recipe in circulation wraps a ModelCheckpoint.
    inner = keras.callbacks.ModelCheckpoint("ckpts/{epoch:02d}.keras", save_freq=50,
                                            monitor="loss", save_best_only=True)  # fmt: skip
    with pytest.raises(TypeError) as info:
        BatchAwareCheckpoint(inner)
    assert str(info.value) == (
        "BatchAwareCheckpoint replaces keras.callbacks.ModelCheckpoint rather than wrapping it; "
        "pass the same arguments instead: BatchAwareCheckpoint('ckpts/{epoch:02d}.keras', "
        "monitor='loss', save_best_only=True, save_freq=50)"
    )


def test_the_extras_counter_clash_is_a_ckptname_error():
    with pytest.raises(ckptname.RenderError):
        BatchAwareCheckpoint("c/b{batch}.keras", extras={"epoch": 1})


def test_a_second_fit_that_numbers_epochs_from_1_again_never_overwrites_silently(tmp_path):
    m = model()
    ckpt = BatchAwareCheckpoint(str(tmp_path / "ep{epoch:02d}.keras"))
    fit(m, [ckpt], epochs=2)
    before = {name: (tmp_path / name).read_bytes() for name in names(tmp_path)}
    with pytest.raises(CheckpointError) as info:
        fit(m, [ckpt], epochs=2)  # no initial_epoch: Keras numbers the epochs 1, 2 again
    assert str(info.value) == (
        f"folder {str(tmp_path)!r} already holds checkpoint 'ep01.keras' of template "
        "'ep{epoch:02d}.keras', saved at batch 10, which this run would overwrite: it starts "
        "at epoch 1 with 20 batches done; pass initial_epoch=2 to fit so that epochs are "
        "numbered on, or use another folder"
    )
    assert {name: (tmp_path / name).read_bytes() for name in names(tmp_path)} == before
    fit(m, [ckpt], epochs=4, initial_epoch=2)  # the way out the message gives
    assert names(tmp_path) == ["ep01.keras", "ep02.keras", "ep03.keras", "ep04.keras"]


def test_a_bad_mode_is_a_monitor_error_as_everywhere_else():
    with pytest.raises(ckptname.MonitorError):
        BatchAwareCheckpoint("c/b{batch}.keras", mode="maximum")
    with pytest.raises(ckptname.MonitorError):
        ckptname.plan_retention([], keep_best=1, monitor="loss", mode="maximum")


def test_keep_last_zero_keeps_only_the_newest_as_in_plan_retention(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:02d}.keras"), save_freq=5, keep_last=0)
    fit(model(), [ckpt], epochs=2)
    assert names(tmp_path) == ["b20.keras"]


@pytest.mark.parametrize(
    "filepath",
    ["c/b{batch}.keras", "c/b{batch}.h5", "c/best.keras"],
)
def test_constructor_accepts_keras_model_suffixes(filepath):
    BatchAwareCheckpoint(filepath)


def test_unreadable_template_is_refused():
    with pytest.raises(ckptname.TemplateError) as info:
        BatchAwareCheckpoint("c/{epoch}{batch}.keras")
    assert str(info.value).endswith(
        "; ckptname must read names back to find and resume checkpoints"
    )


def test_auto_mode_that_cannot_be_decided_is_an_error(tmp_path):
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "e{epoch}.keras"), monitor="wobble", save_best_only=True
    )
    m = model()
    with pytest.raises(ckptname.MonitorError) as info:
        fit(m, [Scripted("wobble", {0: 1.0}), ckpt], epochs=1)
    assert int(m.optimizer.iterations) == 0
    assert str(info.value) == (
        "cannot tell whether a higher or a lower 'wobble' is better; pass mode='min' or mode='max'"
    )


@pytest.mark.parametrize(
    ("filepath", "root", "template"),
    [
        ("ckpts/b{batch}.keras", "ckpts", "b{batch}.keras"),
        ("/runs/a/lr{lr}/b{batch}.keras", "/runs/a", "lr{lr}/b{batch}.keras"),
        ("b{batch}.keras", ".", "b{batch}.keras"),
        ("/b{batch}.keras", "/", "b{batch}.keras"),
        ("s3://bk/run/b{batch}.keras", "s3://bk/run", "b{batch}.keras"),
        ("ckpts/best.keras", "ckpts", "best.keras"),
        ("a{{x}}/b{batch}.keras", "a{x}", "b{batch}.keras"),
    ],
)
def test_split_filepath(filepath, root, template):
    got_root, got_template = split_filepath(filepath)
    assert (got_root, got_template.text) == (root, template)


# ----------------------------------------------------------------- best


def test_save_best_only_saves_on_improvement_like_keras(tmp_path):
    scores = {0: 0.5, 1: 0.7, 2: 0.4}
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "e{epoch}.keras"), monitor="val_score", mode="min", save_best_only=True
    )
    fit(model(), [Scripted("val_score", scores), ckpt])
    assert names(tmp_path) == ["e1.keras", "e3.keras"]
    assert ckpt.best == 0.4


def test_nan_is_never_the_best(tmp_path):
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "e{epoch}.keras"), monitor="val_loss", save_best_only=True
    )
    fit(model(), [Scripted("val_loss", {0: float("nan"), 1: 0.5, 2: 0.7}), ckpt])
    assert names(tmp_path) == ["e2.keras"]
    assert ckpt.best == 0.5


def test_state_file_best_names_a_checkpoint_that_exists(tmp_path):
    # keep_last alone prunes the best checkpoint; the state file follows.
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch}.keras"), monitor="val_loss", keep_last=2)
    fit(model(), [Scripted("val_loss", {0: 0.1, 1: 0.5, 2: 0.4}), ckpt])
    assert names(tmp_path) == ["e2.keras", "e3.keras"]
    state = read_state(tmp_path)
    assert state["best"] == {"name": "e3.keras", "monitor": "val_loss", "mode": "min", "value": 0.4}


def test_initial_value_threshold_is_the_bar_to_beat(tmp_path):
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "e{epoch}.keras"),
        monitor="val_accuracy",
        save_best_only=True,
        initial_value_threshold=0.6,
    )
    fit(model(), [Scripted("val_accuracy", {0: 0.5, 1: 0.7, 2: 0.65}), ckpt])
    assert names(tmp_path) == ["e2.keras"]


def test_best_survives_a_resume(tmp_path):
    filepath = str(tmp_path / "e{epoch:02d}.keras")
    scores = {0: 0.5, 1: 0.3, 2: 0.4, 3: 0.2}

    def callback():
        return BatchAwareCheckpoint(
            filepath, monitor="val_loss", save_best_only=True, keep_last=None
        )

    fit(model(), [Scripted("val_loss", scores), callback()], epochs=2)
    assert names(tmp_path) == ["e01.keras", "e02.keras"]

    # A new process: a fresh model and callback. Keras would start from
    # best=inf and save epoch 3 (0.4) over the true best (0.3).
    m = model(seed=1)
    point = ckptname.keras.resume(m, filepath)
    assert point.path == str(tmp_path / "e02.keras")
    cb = callback()
    fit(m, [Scripted("val_loss", scores), cb], epochs=4, initial_epoch=point.initial_epoch)
    assert names(tmp_path) == ["e01.keras", "e02.keras", "e04.keras"]
    state = read_state(tmp_path)
    assert state["best"] == {
        "name": "e04.keras",
        "monitor": "val_loss",
        "mode": "min",
        "value": 0.2,
    }
    assert state["latest"]["name"] == "e04.keras"


def test_best_survives_a_resume_without_a_state_file(tmp_path):
    filepath = str(tmp_path / "e{epoch:02d}-{val_auc:.2f}.keras")
    scores = {0: 0.7, 1: 0.9, 2: 0.8}
    fit(
        model(),
        [
            Scripted("val_auc", scores),
            BatchAwareCheckpoint(filepath, "val_auc", save_best_only=True),
        ],
        epochs=2,
    )
    (tmp_path / ".ckptname-state.json").unlink()
    m = model()
    point = ckptname.keras.resume(m, filepath)
    cb = BatchAwareCheckpoint(filepath, "val_auc", save_best_only=True)
    fit(m, [Scripted("val_auc", scores), cb], epochs=3, initial_epoch=point.initial_epoch)
    assert names(tmp_path) == ["e01-0.70.keras", "e02-0.90.keras"]  # val_auc: higher is better
    assert cb.best == 0.9


# ----------------------------------------------------------------- folders


def test_folder_with_later_checkpoints_is_an_error_at_train_begin(tmp_path):
    fit(model(), [BatchAwareCheckpoint(str(tmp_path / "b{batch:03d}.keras"), save_freq=5)])
    m = model()
    with pytest.raises(CheckpointError) as info:
        fit(m, [BatchAwareCheckpoint(str(tmp_path / "b{batch:03d}.keras"), save_freq=5)])
    assert str(info.value) == (
        f"folder '{tmp_path}' already holds checkpoint 'b030.keras' of template "
        "'b{batch:03d}.keras' from batch 30, later than this run's batch count 0; resume "
        f"from it (ckptname.keras.resume(model, '{tmp_path}')) or use another folder"
    )
    assert int(m.optimizer.iterations) == 0


def test_other_templates_in_the_folder_are_not_in_the_way(tmp_path):
    fit(model(), [BatchAwareCheckpoint(str(tmp_path / "b{batch:03d}.keras"), save_freq=5)])
    fit(model(), [BatchAwareCheckpoint(str(tmp_path / "run2-{batch:03d}.keras"), save_freq=15)])
    assert names(tmp_path, ".keras")[-2:] == ["run2-015.keras", "run2-030.keras"]


def test_a_second_fit_in_the_same_process_continues_the_count(tmp_path):
    m = model()
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch}-b{batch:03d}.keras"), save_freq=10)
    fit(m, [ckpt], epochs=1)
    fit(m, [ckpt], epochs=2, initial_epoch=1)
    assert names(tmp_path) == ["e1-b010.keras", "e2-b020.keras"]


def test_templates_with_folders(tmp_path):
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "lr{lr:.0e}" / "e{epoch}" / "b{batch:02d}.keras"),
        save_freq=5,
        extras={"lr": 0.01},
        keep_last=3,
    )
    fit(model(), [ckpt], epochs=2)
    found = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.keras"))
    assert found == ["lr1e-02/e1/b10.keras", "lr1e-02/e2/b15.keras", "lr1e-02/e2/b20.keras"]
    state = read_state(tmp_path)
    assert state["template"] == "lr{lr:.0e}/e{epoch}/b{batch:02d}.keras"
    assert state["latest"]["name"] == "lr1e-02/e2/b20.keras"


# ----------------------------------------------------------------- retention


def test_keep_last_deletes_only_this_templates_older_files(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "b00005.keras.bak").write_text("not a checkpoint of the template")
    (tmp_path / "other-00005.keras").write_text("another template")
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:05d}.keras"), save_freq=5, keep_last=2)
    fit(model(), [ckpt])
    assert names(tmp_path) == [
        "b00005.keras.bak",
        "b00025.keras",
        "b00030.keras",
        "notes.txt",
        "other-00005.keras",
    ]
    sidecars = sorted(p.name for p in tmp_path.glob("*.ckptname.json"))
    assert sidecars == ["b00025.keras.ckptname.json", "b00030.keras.ckptname.json"]
    assert leftovers(tmp_path) == []


def test_keep_best_and_keep_last_keep_the_union(tmp_path):
    scores = {0: 0.2, 1: 0.5, 2: 0.4, 3: 0.6}
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "e{epoch}.keras"), monitor="val_loss", keep_last=1, keep_best=1
    )
    fit(model(), [Scripted("val_loss", scores), ckpt], epochs=4)
    assert names(tmp_path) == ["e1.keras", "e4.keras"]


def test_keep_best_ranks_by_exact_values_when_names_round(tmp_path):
    # Both names read 0.12; the sidecars hold the values that decide.
    scores = {0: 0.1249, 1: 0.1201, 2: 0.1222}
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "e{epoch}-{val_loss:.2f}.keras"), monitor="val_loss", keep_best=1
    )
    fit(model(), [Scripted("val_loss", scores), ckpt], epochs=3)
    # the newest is never deleted; of the rest, the best (epoch 2) is kept
    assert names(tmp_path) == ["e2-0.12.keras", "e3-0.12.keras"]


def test_retention_spares_the_checkpoint_a_run_resumed_from_until_it_ends(tmp_path):
    filepath = str(tmp_path / "b{batch:03d}.keras")
    fit(model(), [BatchAwareCheckpoint(filepath, save_freq=10)], epochs=1)
    m = model()
    point = ckptname.keras.resume(m, filepath)
    assert point.batch == 10
    seen = []
    spy = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(names(tmp_path)))
    ckpt = BatchAwareCheckpoint(filepath, save_freq=5, keep_last=1)
    fit(m, [ckpt, spy], epochs=3, initial_epoch=1)
    assert seen == [["b010.keras", "b020.keras"], ["b010.keras", "b030.keras"]]
    assert names(tmp_path) == ["b030.keras"]  # as after an uninterrupted run


# ----------------------------------------------------------------- extras and sidecars


def test_extras_fill_fields_and_sidecars(tmp_path):
    m = model()

    def extras():
        return {"lr": float(m.optimizer.learning_rate.numpy()), "run": "alpha", "seed": 7}

    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "{run:s}-b{batch}-lr{lr:.0e}.keras"), save_freq=10, extras=extras
    )
    fit(m, [ckpt], epochs=1)
    assert names(tmp_path) == ["alpha-b10-lr1e-02.keras"]
    meta = read_metadata(tmp_path / "alpha-b10-lr1e-02.keras")
    assert set(meta) == {
        "format",
        "name",
        "template",
        "epoch",
        "batch",
        "batch_in_epoch",
        "iterations",
        "end_of_epoch",
        "steps_per_epoch",
        "metrics",
        "extras",
        "time",
        "ckptname_version",
        "save_weights_only",
        "optimizers",
    }
    assert meta["optimizers"] == {"optimizer": {"iterations": 10, "variables": [0, 1, 2, 3]}}
    assert meta["format"] == "ckptname.checkpoint/1"
    assert meta["name"] == "alpha-b10-lr1e-02.keras"
    assert meta["template"] == "{run:s}-b{batch}-lr{lr:.0e}.keras"
    assert (meta["epoch"], meta["batch"], meta["batch_in_epoch"], meta["iterations"]) == (
        1,
        10,
        10,
        10,
    )
    assert meta["end_of_epoch"] is True
    assert meta["steps_per_epoch"] == 10
    assert meta["extras"] == {"lr": pytest.approx(0.01), "run": "alpha", "seed": 7}
    assert set(meta["metrics"]) == {"loss", "mae"}
    assert meta["ckptname_version"] == ckptname.__version__
    assert meta["save_weights_only"] is False
    assert isinstance(meta["time"], float)
    state = read_state(tmp_path)
    assert state["format"] == "ckptname.state/1"
    assert state["latest"] == {
        "name": "alpha-b10-lr1e-02.keras",
        "epoch": 1,
        "batch": 10,
        "batch_in_epoch": 10,
        "iterations": 10,
    }


def test_extras_that_shadow_a_metric_are_refused(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch}.keras"), save_freq=5, extras={"loss": 1})
    with pytest.raises(ckptname.RenderError) as info:  # a CkptnameError and a ValueError
        fit(model(), [ckpt], epochs=1)
    assert str(info.value) == (
        "extras key 'loss' is also a key of the logs; rename the extra so that the template "
        "field is not ambiguous"
    )


def test_extras_must_be_json(tmp_path):
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch}.keras"), save_freq=5, extras={"obj": object()}
    )
    with pytest.raises(TypeError) as info:
        fit(model(), [ckpt], epochs=1)
    assert str(info.value) == (
        "extras value for 'obj' is a object, which cannot be stored as JSON; pass numbers, "
        "strings, booleans, None, or lists and dicts of them"
    )


def test_verbose_prints_what_keras_prints(tmp_path, capsys):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "e{epoch}.keras"), verbose=1, save_freq="epoch")
    fit(model(), [ckpt], epochs=1)
    out = capsys.readouterr().out
    assert f"Epoch 1: saving model to {tmp_path / 'e1.keras'}" in out
    assert f"Epoch 1: finished saving model to {tmp_path / 'e1.keras'}" in out


def test_a_process_that_is_not_the_chief_names_but_writes_nothing(tmp_path):
    worker = BatchAwareCheckpoint(str(tmp_path / "b{batch:02d}.keras"), save_freq=10, chief=False)
    fit(model(), [worker], epochs=2)
    assert list(tmp_path.iterdir()) == []  # no checkpoint, sidecar, state file or lock
    assert worker.last_checkpoint == str(tmp_path / "b20.keras")  # named as the chief names it


def test_a_worker_that_is_not_the_chief_refuses_the_start_the_chief_refuses(tmp_path):
    """Every worker reads the folder at train begin: none trains on while the chief stops."""
    filepath = str(tmp_path / "b{batch:02d}-{loss:.3f}.keras")
    fit(model(), [BatchAwareCheckpoint(filepath, monitor="loss", save_freq=10)], epochs=2)
    before = {name: (tmp_path / name).read_bytes() for name in names(tmp_path)}
    errors = []
    for chief in (True, False):
        with pytest.raises(CheckpointError) as info:
            fit(model(), [BatchAwareCheckpoint(filepath, save_freq=10, chief=chief)], epochs=1)
        errors.append(str(info.value))
    assert errors[0] == errors[1]
    assert errors[1].startswith(f"folder {str(tmp_path)!r} already holds checkpoint 'b20-")
    assert {name: (tmp_path / name).read_bytes() for name in names(tmp_path)} == before


def test_a_worker_that_is_not_the_chief_restores_the_best_the_chief_restores(tmp_path):
    filepath = str(tmp_path / "b{batch:02d}-{loss:.3f}.keras")
    first = BatchAwareCheckpoint(filepath, monitor="loss", save_freq=10, save_best_only=True)
    fit(model(), [first], epochs=2)
    bests = []
    for chief in (True, False):
        m = model()
        point = ckptname.keras.resume(m, filepath)
        ckpt = BatchAwareCheckpoint(filepath, monitor="loss", save_freq=10, save_best_only=True,
                                    chief=chief)  # fmt: skip
        ckpt.set_model(m)
        ckpt.on_train_begin()
        bests.append(ckpt.best)
        ckpt.on_train_end()
        assert point.batch == 20
    assert bests == [first.best, first.best]


@ku.tensorflow_backend
def test_only_the_chief_writes(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}),
    )
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:02d}.keras"), save_freq=10)
    fit(model(), [ckpt], epochs=2)
    assert names(tmp_path) == []
    assert ckpt.last_checkpoint == str(tmp_path / "b20.keras")  # named as the chief names it
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}),
    )
    chief = BatchAwareCheckpoint(str(tmp_path / "b{batch:02d}.keras"), save_freq=10)
    fit(model(), [chief], epochs=2)
    assert names(tmp_path) == ["b10.keras", "b20.keras"]


def test_remote_storage_writes_the_sidecar_last(tmp_path):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    written: list[str] = []
    real_pipe = fs.pipe_file
    real_put = fs.put_file

    def pipe_file(path, value, *a, **k):
        written.append(path)
        return real_pipe(path, value, *a, **k)

    def put_file(lpath, rpath, *a, **k):
        written.append(rpath)
        return real_put(lpath, rpath, *a, **k)

    fs.pipe_file = pipe_file
    fs.put_file = put_file
    try:
        ckpt = BatchAwareCheckpoint("memory://ckn-test/run/b{batch:02d}.keras", save_freq=10)
        fit(model(), [ckpt], epochs=1)
        assert [re.sub(r"^/", "", p) for p in written] == [
            "ckn-test/run/.ckptname-state.json",  # marks the folder before the first upload
            "ckn-test/run/b10.keras",
            "ckn-test/run/b10.keras.ckptname.json",
            "ckn-test/run/.ckptname-state.json",
        ]
        assert read_metadata("memory://ckn-test/run/b10.keras")["batch"] == 10
        m = model(seed=3)
        point = ckptname.keras.resume(m, "memory://ckn-test/run")
        assert (point.batch, int(m.optimizer.iterations)) == (10, 10)
    finally:
        del fs.pipe_file, fs.put_file
        fs.rm("/ckn-test", recursive=True)


def test_saves_reuse_keras_skip_sets_and_leave_keras_state_as_it_was(tmp_path, monkeypatch):
    # Keras 3.15 stores its saver's skip-sets under one key and reads another;
    # our saves alias them for their own duration only.
    from keras.src.backend.common import global_state

    def aliases():
        return sorted(
            k
            for k in vars(global_state.GLOBAL_STATE_TRACKER)
            if k.startswith("saving_attr_skiplist_")
        )

    before = aliases()
    seen = []
    real_save = keras.Model.save

    def save(self, filepath, *args, **kwargs):
        seen.append(aliases())
        return real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save)
    m = model()
    fit(m, [BatchAwareCheckpoint(str(tmp_path / "b{batch:02d}.keras"), save_freq=10)], epochs=2)
    assert aliases() == before
    assert "saving_attr_skiplist_Sequential" in seen[-1]  # computed by the first save
    loaded = keras.models.load_model(tmp_path / "b20.keras")
    x, _ = data()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), m.predict(x, verbose=0))


def test_keep_last_never_prunes_a_hand_saved_name_outside_the_sequence(tmp_path):
    # 'ckpt-{epoch}' has no format type: 'ckpt-final.keras' reads as epoch='final'.
    final = tmp_path / "ckpt-final.keras"
    m = model()
    m.build((None, 4))
    m.save(final)
    ckpt = BatchAwareCheckpoint(str(tmp_path / "ckpt-{epoch}.keras"), keep_last=1)
    fit(m, [ckpt], epochs=3)
    assert names(tmp_path) == ["ckpt-3.keras", "ckpt-final.keras"]
    assert ckptname.find_latest(tmp_path).name == "ckpt-3.keras"
    assert ckptname.find_latest(tmp_path, "ckpt-{epoch}.keras").name == "ckpt-3.keras"


# ----------------------------------------------------------------- runs sharing one tree

_SWEEP_MEMBER = """
import json, os, sys, time
import keras_util as ku
from ckptname.keras import BatchAwareCheckpoint

filepath, extras, epochs, go = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
m = ku.model()
ckpt = BatchAwareCheckpoint(filepath, save_freq=1, keep_last=2, extras=extras or None)
print("READY", flush=True)
while not os.path.exists(go):
    time.sleep(0.01)
ku.fit(m, [ckpt], epochs=epochs)
print("DONE", flush=True)
"""


def test_a_sweep_member_and_a_run_in_a_nested_root_train_at_once(tmp_path):
    """Run A writes runs/lr={lr}/... with lr=0.1 from its extras while run B, rooted at
    runs/lr=0.01 inside A's root, trains at the same time: both with keep_last=2, save
    every batch; A goes on after B ends. Neither deletes, refuses or locks out the other."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import keras_util as ku

    runs = tmp_path / "runs"
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(ku.__file__).parent), *sys.path]))
    members = {
        "A": (str(runs / "lr={lr}" / "b{batch:04d}.keras"), {"lr": 0.1}, 5),
        "B": (str(runs / "lr=0.01" / "b{batch:04d}.keras"), {}, 2),
    }
    procs = {
        key: subprocess.Popen(
            [sys.executable, "-c", _SWEEP_MEMBER, path, json.dumps(extras), str(epochs), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for key, (path, extras, epochs) in members.items()
    }
    try:
        for proc in procs.values():
            assert proc.stdout.readline() == "READY\n", proc.stderr.read()
        go.write_bytes(b"")
        outcome = {key: proc.communicate(timeout=240) for key, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for key, (out, err) in outcome.items():
        assert (procs[key].returncode, out) == (0, "DONE\n"), f"run {key}: {err}"
    assert names(runs / "lr=0.1") == ["b0049.keras", "b0050.keras"]
    assert names(runs / "lr=0.01") == ["b0019.keras", "b0020.keras"]
    assert sorted(p.name for p in runs.iterdir()) == [".ckptname-state.json", "lr=0.01", "lr=0.1"]


def test_sweep_members_started_one_after_another_see_only_their_own_folder(tmp_path):
    filepath = str(tmp_path / "runs" / "lr={lr}" / "b{batch:03d}.keras")
    for lr in (0.1, 0.2):  # the second is not refused for the first one's "later" files
        fit(model(), [BatchAwareCheckpoint(filepath, save_freq=5, keep_last=1, extras={"lr": lr})])
    assert names(tmp_path / "runs" / "lr=0.1") == names(tmp_path / "runs" / "lr=0.2") == [
        "b030.keras"
    ]
    # A fresh start of a member whose folder holds later checkpoints is refused, and the
    # advice names that member's checkpoints, not the whole sweep's.
    fit(model(seed=1), [BatchAwareCheckpoint(filepath, save_freq=5, extras={"lr": 0.3})], epochs=4)
    with pytest.raises(CheckpointError) as info:
        fit(model(), [BatchAwareCheckpoint(filepath, save_freq=5, extras={"lr": 0.1})])
    own = str(tmp_path / "runs" / "lr=0.1" / "b{batch:03d}.keras")
    assert str(info.value) == (
        f"folder {str(tmp_path / 'runs')!r} already holds checkpoint 'lr=0.1/b030.keras' of "
        "template 'lr={lr}/b{batch:03d}.keras' from batch 30, later than this run's batch "
        f"count 0; resume from it (ckptname.keras.resume(model, {own!r})) or use another folder"
    )
    from ckptname.keras import resume

    point = resume(model(seed=2), own)
    assert (point.path, point.batch) == (str(tmp_path / "runs" / "lr=0.1" / "b030.keras"), 30)


# ----------------------------------------------------------------- save_freq forms


def test_batches_and_epochs_spelled_as_strings_save_like_their_number_and_epoch(tmp_path):
    template = "e{epoch}-b{batch:03d}.keras"
    for folder, freq in (("n", 4), ("ba", "4ba"), ("ep", "epoch"), ("1ep", "1ep")):
        fit(model(), [BatchAwareCheckpoint(str(tmp_path / folder / template), save_freq=freq)])
    assert names(tmp_path / "ba") == names(tmp_path / "n")
    assert names(tmp_path / "1ep") == names(tmp_path / "ep") == [
        "e1-b010.keras", "e2-b020.keras", "e3-b030.keras",
    ]  # fmt: skip
    fit(model(), [BatchAwareCheckpoint(str(tmp_path / "2ep" / template), save_freq="2ep")],
        epochs=5)  # fmt: skip
    assert names(tmp_path / "2ep") == ["e2-b020.keras", "e4-b040.keras"]


class Slow(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        import time

        time.sleep(0.15)


def test_a_wall_clock_save_freq_saves_about_every_interval_with_global_batch_names(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:03d}.keras"), save_freq="1s")
    fit(model(), [Slow(), ckpt], epochs=3)
    saved = names(tmp_path)
    metas = [read_metadata(tmp_path / n) for n in saved]
    assert [m["batch"] for m in metas] == [int(n[1:4]) for n in saved]
    assert len(saved) >= 3  # 30 batches of at least 0.15 s: 4.5 s and more
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(metas)]
    batches = [b["batch"] - a["batch"] for a, b in itertools.pairwise(metas)]
    assert all(gap >= 0.9 for gap in gaps), gaps  # never before the interval
    assert all(n <= 8 for n in batches), batches  # and at the first batch after it


@ku.tensorflow_backend
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"save_freq": "30s"},
         "save_freq='30s' on a cluster of 2 processes (TF_CONFIG, with a model that does not "
         "train under a MultiWorkerMirroredStrategy): each process names every checkpoint, and "
         "ckptname shares the chief's clock with the others only under TensorFlow's "
         "MultiWorkerMirroredStrategy, JAX's jax.distributed and PyTorch's torch.distributed; "
         "pass a number of batches or epochs instead"),
        # TF_CONFIG lists a cluster, but the model trains under no multi-worker strategy
        # whose collectives could share a signal.
        ({"save_on_preemption": True},
         "save_on_preemption=True on a cluster of 2 processes (TF_CONFIG, with a model that "
         "does not train under a MultiWorkerMirroredStrategy): a signal reaches one process, "
         "and ckptname shares it with the others only under TensorFlow's "
         "MultiWorkerMirroredStrategy, JAX's jax.distributed and PyTorch's torch.distributed; "
         "here the others would wait for it at their next step; pass save_on_preemption=False "
         "and save with an integer save_freq, or train in one process"),
    ],
)  # fmt: skip
def test_what_several_processes_cannot_agree_on_is_refused_before_training(
    tmp_path, monkeypatch, kwargs, message
):
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    task = {"type": "worker", "index": 0}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch}.keras"), **kwargs)
    with pytest.raises(ckptname.ClusterError) as info:
        fit(model(), [ckpt], epochs=1)
    assert str(info.value) == message
    assert names(tmp_path) == []
