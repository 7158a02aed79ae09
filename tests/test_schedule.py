"""Counting and the save schedule, without Keras: plain integers in, decisions out."""

from __future__ import annotations

import warnings

import pytest

from ckptname import CkptnameWarning, CountError
from ckptname._options import SaveFreq, parse_save_freq
from ckptname._schedule import (
    Position,
    Restart,
    ResumePoint,
    Schedule,
    epoch_length,
    execution_ran,
    position_from_sidecar,
)


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
    schedule.configure(10)
    assert run(schedule, epochs=3, steps=10) == [4, 8, 12, 16, 20, 24, 28]
    assert schedule.batch == 30 and schedule.epoch == 2 and schedule.batch_in_epoch == 10


def test_epoch_saves_are_never_due_at_batch_ends():
    schedule = Schedule(every=0)
    schedule.configure(5)
    assert run(schedule, epochs=2, steps=5) == []
    assert schedule.batch == 10


@pytest.mark.parametrize(
    ("steps_seen", "data_length", "per_execution", "ran"),
    [
        (3, 10, 3, 3),  # a whole execution
        (9, 10, 3, 3),
        (12, 10, 3, 1),  # the last of a pass of 10: only batch 10 was left
        (10, 10, 5, 5),
        (12, None, 3, 3),  # a stream: executions are whole
        (4, 4, 1, 1),
    ],
)
def test_an_execution_runs_what_is_left_of_the_pass(steps_seen, data_length, per_execution, ran):
    assert execution_ran(steps_seen, data_length, per_execution) == ran


@pytest.mark.parametrize(
    ("steps_per_epoch", "data_length", "per_execution", "length"),
    [
        (None, 10, 3, 10),  # one pass
        (None, None, 1, None),  # a pass of unknown length
        (7, None, 3, 9),  # whole executions from a stream: 3 of 3
        (7, None, 1, 7),
        (5, 10, 1, None),  # cut from a finite pass: where it ends decides
    ],
)
def test_the_length_of_an_epoch_is_known_ahead_only_where_keras_fixes_it(
    steps_per_epoch, data_length, per_execution, length
):
    assert epoch_length(steps_per_epoch, data_length, per_execution) == length


def test_executions_move_the_count_by_the_batches_they_ran():
    # 10 batches an epoch in executions of 3: Keras reports indices 2, 5, 8,
    # 11; the last execution ran one batch.
    schedule = Schedule(every=5)
    schedule.configure(10)
    due = []
    for epoch in range(2):
        schedule.begin_epoch(epoch)
        for index, seen in ((2, 3), (5, 6), (8, 9), (11, 12)):
            if schedule.end_batch(index, execution_ran(seen, 10, 3)):
                due.append(schedule.batch)
        assert schedule.ends_epoch()
    assert schedule.batch == 20 and due == [6, 10, 16, 20]


def test_a_resume_point_seeds_the_count_whatever_the_optimizer_says():
    point = ResumePoint(path="ckpts/b12.keras", epoch=2, batch=12, batch_in_epoch=2,
                        end_of_epoch=False)  # fmt: skip
    schedule = Schedule(every=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert schedule.seed(point, fresh=True) == "ckpts/b12.keras"
    assert schedule.batch == 12


def test_initial_batch_seeds_a_model_that_no_record_describes():
    schedule = Schedule(every=5)
    assert schedule.seed(None, fresh=False, initial_batch=40) is None
    assert schedule.batch == 40 and schedule.pending is None


def test_initial_batch_that_contradicts_the_resume_point_is_an_error():
    point = ResumePoint(path="ckpts/b12.keras", epoch=2, batch=12, batch_in_epoch=2,
                        end_of_epoch=False)  # fmt: skip
    with pytest.raises(CountError) as info:
        Schedule(every=5).seed(point, fresh=True, initial_batch=10)
    assert str(info.value) == (
        "initial_batch=10 contradicts checkpoint 'ckpts/b12.keras', which resume() loaded into "
        "the model and which was saved after 12 batches; leave initial_batch out (the "
        "checkpoint records the count)"
    )


def test_a_restart_continues_from_the_count_the_folder_records():
    schedule = Schedule(every=5)
    assert schedule.seed(None, fresh=False, restart=Restart(2, 20, "ckpts")) is None
    assert schedule.batch == 20


@pytest.mark.parametrize(
    ("restart", "initial_batch", "message"),
    [
        (Restart(2, None, "ckpts"), None,
         "training restarts at epoch 3 (keras.callbacks.BackupAndRestore), but no checkpoint "
         "in 'ckpts' records how many batches ran before it; pass initial_batch (that number) "
         "to BatchAwareCheckpoint, or resume with ckptname.keras.resume(model, filepath) "
         "instead"),
        (Restart(2, 20, "ckpts"), 25,
         "initial_batch=25 contradicts the checkpoints in 'ckpts', which record 20 batches "
         "before epoch 3, where training restarts; leave initial_batch out"),
    ],
)  # fmt: skip
def test_a_restart_whose_count_is_unknown_or_contradicted_is_an_error(
    restart, initial_batch, message
):
    with pytest.raises(CountError) as info:
        Schedule(every=5).seed(None, fresh=False, initial_batch=initial_batch, restart=restart)
    assert str(info.value) == message


def test_a_restart_with_no_record_takes_initial_batch():
    schedule = Schedule(every=5)
    schedule.seed(None, fresh=False, initial_batch=30, restart=Restart(3, None, "ckpts"))
    assert schedule.batch == 30


@pytest.mark.parametrize(
    ("point", "epoch", "steps", "message"),
    [
        (ResumePoint(path="b25.keras", epoch=3, batch=25, batch_in_epoch=5, end_of_epoch=False,
                     steps_per_epoch=10), 2, 3,
         "checkpoint 'b25.keras' was saved by a run whose epochs had 10 batches, but epoch 3 "
         "of this fit has 8 (5 before the checkpoint and 3 now); another batch size, "
         "steps_per_epoch or data length would count other batches under the run's names: "
         "continue with the run's batch size and data (ckptname.keras.fit_resumed finishes "
         "the interrupted epoch), or start in another folder"),
        (ResumePoint(path="b20.keras", epoch=2, batch=20, batch_in_epoch=10, end_of_epoch=True,
                     steps_per_epoch=10), 2, 5,
         "checkpoint 'b20.keras' was saved by a run whose epochs had 10 batches, but epoch 3 "
         "of this fit has 5; another batch size, steps_per_epoch or data length would count "
         "other batches under the run's names: continue with the run's batch size and data "
         "(ckptname.keras.fit_resumed finishes the interrupted epoch), or start in another "
         "folder"),
    ],
)  # fmt: skip
def test_an_epoch_of_another_length_than_the_run_s_is_an_error(point, epoch, steps, message):
    schedule = Schedule(every=5)
    schedule.seed(point, fresh=True)
    schedule.configure(steps)
    with pytest.raises(CountError) as info:
        schedule.begin_epoch(epoch)
    assert str(info.value) == message


def test_an_epoch_of_the_run_s_length_or_of_unknown_length_goes_on():
    for steps in (5, None):
        schedule = Schedule(every=5)
        schedule.seed(ResumePoint(path="b25.keras", epoch=3, batch=25, batch_in_epoch=5,
                                  end_of_epoch=False, steps_per_epoch=10), fresh=True)  # fmt: skip
        schedule.configure(steps)
        schedule.begin_epoch(2)
        assert schedule.batch_in_epoch == 5


def test_seed_from_a_mid_epoch_checkpoint_continues_inside_its_epoch():
    point = ResumePoint(path="ckpts/b12.keras", epoch=2, batch=12, batch_in_epoch=2,
                        end_of_epoch=False, metric_state={"loss": [1.0, 2.0]})  # fmt: skip
    schedule = Schedule(every=5)
    schedule.configure(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert schedule.seed(point, fresh=True) == "ckpts/b12.keras"
    restore = schedule.begin_epoch(1)
    assert restore is not None and restore.metric_state == {"loss": [1.0, 2.0]}
    due = [schedule.batch for index in range(8) if schedule.end_batch(index)]
    assert due == [15, 20] and schedule.batch_in_epoch == 10 and schedule.ends_epoch() is False
    assert schedule.steps_per_epoch == 12  # the 2 batches before the resume, then 10 configured


def test_entering_an_earlier_epoch_than_the_interrupted_one_warns_with_the_fix():
    schedule = Schedule(every=5)
    schedule.seed(ResumePoint(path="b25.keras", epoch=3, batch=25, batch_in_epoch=5,
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
    schedule.configure(6)
    run(schedule, epochs=1, steps=6)
    schedule.seed(None, fresh=False)
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
        ({"epoch": 2, "batch": 20, "batch_in_epoch": 10, "end_of_epoch": True,
          "steps_per_epoch": 10, "name": "b20.keras"},
         Position(1, 20, 10, True, None, 10, "b20.keras")),
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


# ----------------------------------------------------------------- save_freq forms


@pytest.mark.parametrize(
    ("save_freq", "expected"),
    [
        ("epoch", SaveFreq(epochs=1)),
        ("1ep", SaveFreq(epochs=1)),
        ("2ep", SaveFreq(epochs=2)),
        (500, SaveFreq(batches=500)),
        ("500ba", SaveFreq(batches=500)),
        ("30s", SaveFreq(seconds=30.0)),
        ("10min", SaveFreq(seconds=600.0)),
        ("2h", SaveFreq(seconds=7200.0)),
    ],
)
def test_save_freq_forms_read_as_batches_epochs_or_seconds(save_freq, expected):
    assert parse_save_freq(save_freq) == expected


@pytest.mark.parametrize("save_freq", ["bogus", "0ba", "2 ep", "1.5h", "10m", -3, 2.0, True, None])
def test_save_freq_fail_lists_the_accepted_forms(save_freq):
    with pytest.raises(ValueError) as info:
        parse_save_freq(save_freq)
    assert str(info.value) == (
        f"Unrecognized save_freq: {save_freq}. Expected save_freq are 'epoch' or integer values; "
        "ckptname accepts 'epoch', a whole number of batches above 0 (500), or a string: "
        "'500ba' (batches), '2ep' (epochs), '30s', '10min' or '2h' (wall-clock time), "
        f"got {save_freq!r}"
    )


def test_every_k_epochs_saves_at_epochs_whose_number_k_divides():
    schedule = Schedule(0, epochs=2)
    assert [e + 1 for e in range(7) if schedule.epoch_due(e)] == [2, 4, 6]
    assert not schedule.saves_at_batches


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_wall_clock_interval_saves_at_the_first_batch_end_after_it():
    clock = Clock()
    schedule = Schedule(0, seconds=3.0, clock=clock)
    schedule.seed(None, fresh=False)
    schedule.begin_epoch(0)
    due = []
    for index in range(12):
        clock.now += 1.0  # a batch takes a second
        if schedule.end_batch(index):
            due.append(schedule.batch)
    assert due == [3, 6, 9, 12] and schedule.saves_at_batches
    assert not schedule.epoch_due(0)


def test_a_wall_clock_interval_survives_a_resume_from_the_checkpoint_s_time():
    clock = Clock(now=1010.0)
    point = ResumePoint(path="b7.keras", epoch=1, batch=7, batch_in_epoch=7,
                        end_of_epoch=False, saved_at=1008.5)  # fmt: skip
    schedule = Schedule(0, seconds=3.0, clock=clock)
    schedule.seed(point, fresh=True)
    schedule.begin_epoch(0)
    clock.now = 1011.0
    assert schedule.end_batch(0) is False  # 2.5 s since the checkpoint
    clock.now = 1011.6
    assert schedule.end_batch(1) is True and schedule.batch == 9
