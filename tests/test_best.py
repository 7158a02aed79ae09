"""The best tracker, without Keras."""

from __future__ import annotations

import math

import pytest

from ckptname._best import BestTracker


@pytest.mark.parametrize(
    ("mode", "best", "value", "improves"),
    [
        ("min", None, 0.5, True),
        ("min", 0.5, 0.4, True),
        ("min", 0.5, 0.5, False),  # equal keeps the earlier best, as Keras does
        ("min", 0.5, 0.6, False),
        ("max", 0.5, 0.6, True),
        ("max", 0.5, 0.5, False),
        ("min", None, math.nan, False),  # NaN never becomes the best
        ("min", 0.5, math.nan, False),
        (None, None, 0.1, False),  # direction not known yet
    ],
)
def test_improves(mode, best, value, improves):
    tracker = BestTracker("val_loss", mode, None)
    tracker.value = best
    assert tracker.improves(value) is improves


def test_threshold_is_a_bar_without_a_checkpoint():
    tracker = BestTracker("val_loss", "min", 0.3)
    assert tracker.entry() is None
    assert not tracker.improves(0.35) and tracker.improves(0.25)
    tracker.record(0.25, "e02.keras")
    assert tracker.entry() == {
        "name": "e02.keras", "monitor": "val_loss", "mode": "min", "value": 0.25,
    }  # fmt: skip


def test_snapshot_and_reset_undo_a_failed_save():
    tracker = BestTracker("loss", "min", None)
    tracker.record(0.5, "a.keras")
    snap = tracker.snapshot()
    tracker.record(0.4, "b.keras")
    tracker.reset(snap)
    assert (tracker.value, tracker.name) == (0.5, "a.keras")


def state(name, value, *, template="e{epoch}.keras", monitor="val_loss", mode="min"):
    best = {"name": name, "monitor": monitor, "mode": mode, "value": value}
    return {"template": template, "best": best}


def test_restore_takes_the_state_file_s_best_when_it_names_an_existing_checkpoint():
    tracker = BestTracker("val_loss", "min", None)
    tracker.restore(state("e2.keras", 0.2), "e{epoch}.keras", ["e1.keras", "e2.keras"], None)
    assert (tracker.value, tracker.name) == (0.2, "e2.keras")


@pytest.mark.parametrize(
    "bad",
    [
        state("e9.keras", 0.2),  # names a checkpoint that is gone
        state("e2.keras", 0.2, template="other{epoch}.keras"),
        state("e2.keras", 0.2, monitor="loss"),
        state("e2.keras", 0.2, mode="max"),
        state("e2.keras", "0.2"),
    ],
)
def test_restore_falls_back_to_the_sidecars_where_the_state_cannot_say(bad):
    tracker = BestTracker("val_loss", "min", None)
    values = [("e1.keras", 0.4), ("e2.keras", math.nan), ("e3.keras", 0.3), ("e4.keras", None)]
    tracker.restore(bad, "e{epoch}.keras", ["e1.keras", "e2.keras"], lambda: values)
    assert (tracker.value, tracker.name) == (0.3, "e3.keras")


def test_restore_keeps_a_threshold_that_is_better_than_the_folder():
    tracker = BestTracker("val_loss", "min", 0.1)
    tracker.restore(state("e2.keras", 0.2), "e{epoch}.keras", ["e2.keras"], None)
    assert (tracker.value, tracker.name) == (0.1, None)


def test_restore_with_unknown_mode_or_empty_folder_changes_nothing():
    tracker = BestTracker("val_loss", None, None)
    tracker.restore(state("e2.keras", 0.2), "e{epoch}.keras", ["e2.keras"], None)
    assert tracker.value is None
    tracker = BestTracker("val_loss", "min", None)
    tracker.restore(state("e2.keras", 0.2), "e{epoch}.keras", [], None)
    assert tracker.value is None


def test_best_of_picks_the_best_number_and_the_earlier_of_equals():
    tracker = BestTracker("acc", "max", None)
    tracker.record(0.99, "gone.keras")
    tracker.best_of([("a", 0.5), ("b", 0.7), ("c", 0.7), ("d", math.nan), ("e", "x")])
    assert (tracker.value, tracker.name) == (0.7, "b")
    tracker.best_of([])
    assert (tracker.value, tracker.name) == (None, None)
