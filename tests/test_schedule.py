"""Counting and the save schedule, without Keras: plain integers in, decisions out."""

from __future__ import annotations

import warnings

import pytest

from ckptname import CkptnameWarning
from ckptname._schedule import Position, ResumePoint, Schedule, position_from_sidecar


def run(schedule: Schedule, epochs: int, steps: int, *, first_epoch: int = 0) -> list[int]:
    """Drive a schedule as Keras would; the global batch counts at which a save was due."""
    due = []
    for epoch in range(first_epoch, first_epoch + epochs):
        schedule.begin_epoch(epoch)
        for index in range(steps):
            if schedule.end_batch(index):
                due.append(schedule.batch)
        schedule.end_epoch()
    return due


def test_saves_fall_on_multiples_of_the_global_count_across_epochs():
    schedule = Schedule(every=4)
    schedule.configure(10, 1, None)
    assert run(schedule, epochs=3, steps=10) == [4, 8, 12, 16, 20, 24, 28]
    assert schedule.batch == 30 and schedule.epoch == 2 and schedule.batch_in_epoch == 10


def test_epoch_saves_are_never_due_at_batch_ends():
    schedule = Schedule(every=0)
    schedule.configure(5, 1, None)
    assert run(schedule, epochs=2, steps=5) == []
    assert schedule.batch == 10


def test_steps_per_execution_clamps_the_overshooting_last_index_to_the_epoch_length():
    # Keras reports the last index of each execution of 3: 2, 5, 8, then 11 for
    # an epoch of 10 steps, which ran only 10 batches.
    schedule = Schedule(every=5)
    schedule.configure(10, 3, None)
    schedule.begin_epoch(0)
    due = [schedule.batch for index in (2, 5, 8, 11) if schedule.end_batch(index)]
    assert due == [6, 10]
    assert schedule.batch == 10 and schedule.ends_epoch()


def test_with_an_optimizer_the_count_is_what_ran_not_what_steps_per_epoch_says():
    # steps_per_epoch=7 with steps_per_execution=3 on a repeated stream: Keras
    # runs three whole executions, 9 batches, reporting indices 2, 5, 8.
    applied = [0]
    schedule = Schedule(every=4)
    schedule.configure(7, 3, lambda: applied[0])
    due = []
    for epoch in range(2):
        schedule.begin_epoch(epoch)
        for index in (2, 5, 8):
            applied[0] += 3
            if schedule.end_batch(index):
                due.append(schedule.batch)
    assert schedule.batch == 18 and due == [6, 9, 12, 18]


def test_without_epoch_length_the_count_is_read_from_the_batch_counter():
    applied = [0]
    schedule = Schedule(every=4)
    schedule.configure(None, 3, lambda: applied[0])
    schedule.begin_epoch(0)
    for index, ran in ((2, 3), (5, 6), (6, 7)):  # a short last execution of 1
        applied[0] = ran
        schedule.end_batch(index)
    assert schedule.batch == 7 and schedule.batch_in_epoch == 7


def test_seed_prefers_the_optimizer_count_and_warns_when_the_checkpoint_disagrees():
    point = ResumePoint(path="ckpts/b12.keras", epoch=2, batch=12, batch_in_epoch=2,
                        end_of_epoch=False)  # fmt: skip
    schedule = Schedule(every=5)
    with pytest.warns(CkptnameWarning) as record:
        continues_from = schedule.seed(15, point, fresh=True)
    assert schedule.batch == 15 and continues_from is None and schedule.pending is None
    assert str(record[0].message) == (
        "the optimizer has run 15 batches but checkpoint 'ckpts/b12.keras' was saved after 12; "
        "counting continues from 15, the optimizer's count (learning-rate schedules follow it)"
    )


def test_seed_from_a_mid_epoch_checkpoint_continues_inside_its_epoch():
    point = ResumePoint(path="ckpts/b12.keras", epoch=2, batch=12, batch_in_epoch=2,
                        end_of_epoch=False, metric_state={"loss": [1.0, 2.0]})  # fmt: skip
    schedule = Schedule(every=5)
    schedule.configure(10, 1, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert schedule.seed(12, point, fresh=True) == "ckpts/b12.keras"
    restore = schedule.begin_epoch(1)
    assert restore is not None and restore.metric_state == {"loss": [1.0, 2.0]}
    due = [schedule.batch for index in range(8) if schedule.end_batch(index)]
    assert due == [15, 20] and schedule.batch_in_epoch == 10 and schedule.ends_epoch() is False
    assert schedule.steps_per_epoch == 12  # the 2 batches before the resume, then 10 configured


def test_entering_an_earlier_epoch_than_the_interrupted_one_warns_with_the_fix():
    schedule = Schedule(every=5)
    schedule.seed(None, ResumePoint(path="b25.keras", epoch=3, batch=25, batch_in_epoch=5,
                                    end_of_epoch=False), fresh=False)  # fmt: skip
    with pytest.warns(CkptnameWarning) as record:
        schedule.begin_epoch(0)
    assert str(record[0].message) == (
        "training starts at epoch 1, but the run stopped inside epoch 3 (after batch 5 of it); "
        "pass initial_epoch=2 to fit (or use ckptname.keras.fit_resumed) so that epochs are "
        "numbered as before"
    )


def test_a_second_fit_continues_the_callback_s_own_count():
    schedule = Schedule(every=4)
    schedule.configure(6, 1, None)
    run(schedule, epochs=1, steps=6)
    schedule.seed(None, None, fresh=False)
    assert run(schedule, epochs=1, steps=6, first_epoch=1) == [8, 12]


def test_an_index_that_goes_back_without_begin_epoch_starts_a_new_epoch_of_counting():
    schedule = Schedule(every=0)
    for index in (0, 1, 2, 0, 1):  # a hand-written loop that never calls begin_epoch
        schedule.end_batch(index)
    assert schedule.batch == 5 and schedule.batch_in_epoch == 2


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({"epoch": 3, "batch": 25, "batch_in_epoch": 5, "end_of_epoch": False},
         Position(2, 25, 5, False, None)),
        ({"epoch": 1, "batch_in_epoch": 10, "end_of_epoch": True, "metric_state": {"x": [1]}},
         Position(0, 0, 10, True, {"x": [1]})),
        ({"epoch": "3", "batch_in_epoch": 5}, Position(2, 0, 5, False, None)),
    ],
)  # fmt: skip
def test_position_from_sidecar_reads_the_counters(meta, expected):
    assert position_from_sidecar(meta) == expected


@pytest.mark.parametrize("meta", [{}, {"epoch": 2}, {"epoch": True, "batch_in_epoch": 1},
                                  {"epoch": 1.5, "batch_in_epoch": 1}])  # fmt: skip
def test_position_from_sidecar_without_counters_is_none(meta):
    assert position_from_sidecar(meta) is None
