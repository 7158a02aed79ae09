"""Counting training batches, and when a save is due.

This module is reserved for *where training stands*: the global batch count,
the position inside an epoch, the point a run resumed from, where a count
comes from, and the save schedule. It imports neither Keras nor TensorFlow,
so the rules can be tested with plain integers.

The count is the number of training batches the loop ran: never an
optimizer's update counter (a loss-scale optimizer skips the updates of
steps that overflow, a GAN has two optimizers, none of them counts batches).

========================================  ============================================
what happens                              what the count does
========================================  ============================================
a batch runs (``steps_per_execution=1``)  moves by one: Keras reports each batch's
                                          index to the batch hook
an execution of N steps runs              moves by the batches it ran
                                          (:func:`execution_ran`): N, but fewer where
                                          finite data ran out inside it
an epoch ends, a new one begins           carries on; ``batch_in_epoch`` restarts
a second ``fit`` with the same callback   carries on from this callback's count
``resume`` loaded a checkpoint            starts from the batch its sidecar (or its
                                          name) records
a restart at epoch *e* by Keras's         starts from the count the folder's own
``BackupAndRestore``                      checkpoints record for the start of *e*
none of these                             starts from ``initial_batch`` (0 unless
                                          given)
========================================  ============================================

* ``batch`` is the global count (1-based, across epochs and resumes);
  ``batch_in_epoch`` the count inside the current epoch, including the part an
  earlier run did before a mid-epoch resume.
* With ``save_freq=N``, a save is due when the global count crosses a multiple
  of N (``prev // N != now // N``), so a resumed run saves at the same batches
  as an uninterrupted one, and with ``steps_per_execution`` (where the count
  moves by more than one) no multiple is skipped. With ``"Kep"``, at the end of
  every epoch whose 1-based number is a multiple of K. With a wall-clock
  interval (``"30s"``), at the first batch end once that long has passed since
  the last save, or since the time recorded with the checkpoint a run
  resumed from (so the interval survives a restart).
* A checkpoint saved inside an epoch makes the next epoch that enters it start
  counting ``batch_in_epoch`` after it (what ``fit_resumed`` relies on).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import CkptnameWarning, CountError
from ._rank import as_counter

__all__ = [
    "Position",
    "Restart",
    "ResumePoint",
    "Schedule",
    "epoch_length",
    "execution_ran",
    "position_from_sidecar",
]


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a run stands after :func:`ckptname.keras.resume`: what ``fit`` needs to continue.

    Attributes:
        path: the checkpoint that was loaded, or ``None`` for a fresh start.
        epoch: the 1-based epoch the checkpoint was saved in (as names show it);
            0 for a fresh start.
        batch: the global count of training batches done, since the run began.
        batch_in_epoch: batches done inside ``epoch`` (1-based count).
        end_of_epoch: whether ``epoch`` was complete when the checkpoint was saved.
        iterations: ``optimizer.iterations`` as recorded in the checkpoint, if known.
        steps_per_epoch: batches per epoch of the saving run, if it knew them.
        metrics: the exact metric values recorded with the checkpoint.
        extras: the extras recorded with the checkpoint.
        saved_at: when the checkpoint was saved (seconds since the epoch), if
            recorded.
        metric_state: the values of the variables of ``model.metrics`` (the
            running sums behind the logged means) at a mid-epoch save, by
            metric name; empty where the sidecar has none (an end-of-epoch
            save, or a sidecar written by an older or another writer).
        skipped: later checkpoints that did not load or recorded a loss or
            metric that is not finite, which the resume passed over (with a
            warning each); the callback replaces them as training reaches
            them.
    """

    path: str | None = None
    epoch: int = 0
    batch: int = 0
    batch_in_epoch: int = 0
    end_of_epoch: bool = True
    iterations: int | None = None
    steps_per_epoch: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict, hash=False)
    extras: Mapping[str, Any] = field(default_factory=dict, hash=False)
    metric_state: Mapping[str, Any] = field(default_factory=dict, hash=False)
    skipped: tuple[str, ...] = ()
    saved_at: float | None = None

    @property
    def resumed(self) -> bool:
        """Whether a checkpoint was loaded (``False`` for a fresh start)."""
        return self.path is not None

    @property
    def initial_epoch(self) -> int:
        """The ``initial_epoch`` to pass to ``fit`` (0-based, as Keras counts).

        After a checkpoint from the end of epoch 3 this is 3 (the next epoch);
        after one from the middle of epoch 3 it is 2: the interrupted epoch is
        entered again, and :func:`ckptname.keras.fit_resumed` runs only its
        remaining batches.
        """
        return self.epoch if self.end_of_epoch else self.epoch - 1

    @property
    def mid_epoch(self) -> bool:
        """Whether the checkpoint was saved inside an epoch, after at least one batch."""
        return self.resumed and not self.end_of_epoch and self.batch_in_epoch > 0


@dataclass(slots=True)
class Position:
    """Where counting stands: 0-based epoch index, batches done in it, whether it ended.

    ``metric_state`` is what the save at that point recorded of the model's
    metrics, to put back when the epoch is entered again. A position read
    from a checkpoint also has its ``source`` (the path) and the
    ``steps_per_epoch`` of the run that saved it, which the next epoch is
    checked against.
    """

    epoch: int
    batch: int
    batch_in_epoch: int
    complete: bool
    metric_state: Mapping[str, Any] | None = None
    steps_per_epoch: int | None = None
    source: str | None = None


def position_from_sidecar(meta: Mapping[str, Any], source: str | None = None) -> Position | None:
    """The position a checkpoint's sidecar records, or ``None`` where it lacks the counters.

    ``source`` names the checkpoint (in messages); without it the sidecar's ``name``.
    """
    epoch = as_counter(meta.get("epoch"))
    in_epoch = as_counter(meta.get("batch_in_epoch"))
    if epoch is None or in_epoch is None:
        return None
    state = meta.get("metric_state")
    name = meta.get("name")
    return Position(
        max(epoch - 1, 0),
        as_counter(meta.get("batch")) or 0,
        in_epoch,
        bool(meta.get("end_of_epoch")),
        state if isinstance(state, dict) and state else None,
        as_counter(meta.get("steps_per_epoch")),
        source or (name if isinstance(name, str) else None),
    )


def execution_ran(steps_seen: int, data_length: int | None, steps_per_execution: int) -> int:
    """The batches the execution that just ended ran.

    Keras counts ``steps_seen`` in whole executions (it adds
    ``steps_per_execution`` before each one, from the start of the current
    pass over the data); an execution that reaches past the end of finite
    data of ``data_length`` batches runs only the batches that remain.

    ============================  ==========  =====
    steps_seen, data_length, N    execution   ran
    ============================  ==========  =====
    ``9, 10, 3``                  7-9         3
    ``12, 10, 3``                 10-12       1
    ``12, None, 3``               10-12       3
    ============================  ==========  =====
    """
    if data_length is None:
        return steps_per_execution
    return max(steps_per_execution - max(steps_seen - data_length, 0), 0)


def epoch_length(
    steps_per_epoch: int | None, data_length: int | None, steps_per_execution: int
) -> int | None:
    """The batches one epoch runs, where that is known before it runs.

    Without ``steps_per_epoch`` an epoch is one pass over the data. With it,
    Keras runs whole executions (``steps_per_execution`` N) from a stream, so
    an epoch of 7 steps with N=3 runs 9 batches; over finite data the epoch
    that reaches the end of a pass is cut short, so the length is not known
    ahead (``None``: the end of the epoch tells).
    """
    if steps_per_epoch is None:
        return data_length
    if data_length is None:
        return steps_per_execution * math.ceil(steps_per_epoch / steps_per_execution)
    return None


@dataclass(frozen=True, slots=True)
class Restart:
    """A job put back to the start of an epoch by something other than ckptname.

    Attributes:
        epoch: the 0-based epoch training starts at (Keras's
            ``BackupAndRestore`` sets it).
        batch: the count the folder's own checkpoints record for the start of
            that epoch, or ``None`` where none records it.
        folder: the checkpoint folder, for messages.
    """

    epoch: int
    batch: int | None
    folder: str


class Schedule:
    """The global batch count, the position inside the epoch, and when a save is due.

    Driven by the callback's hooks: :meth:`seed` at train begin,
    :meth:`begin_epoch`, :meth:`end_batch` after every batch or execution (the
    hot path: integer work only), :meth:`end_epoch`.

    Args:
        every: save every ``every`` global batches; 0 saves at epoch ends only
            (or by time).
        epochs: with ``every`` 0 and no ``seconds``, save at the end of every
            epoch whose 1-based number is a multiple of ``epochs``.
        seconds: save at the first batch end once this many seconds passed
            since the last save (0: not by time).
        clock: the wall clock (seconds since the epoch), for tests.
    """

    __slots__ = (
        "batch",
        "clock",
        "complete",
        "counted_any",
        "done",
        "epoch",
        "epoch_start",
        "epoch_steps",
        "epochs",
        "every",
        "last_save_time",
        "offset",
        "pending",
        "seconds",
    )

    def __init__(
        self,
        every: int,
        *,
        epochs: int = 1,
        seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.every = every
        self.epochs = epochs
        self.seconds = seconds
        self.clock = clock
        self.last_save_time = 0.0
        # `batch` is the global count; the in-epoch count is `offset + done`,
        # where `offset` is the part of the epoch done by an earlier run (a
        # mid-epoch resume).
        self.batch = 0
        self.epoch = 0
        self.epoch_start = 0
        self.offset = 0
        self.done = 0
        self.complete = False
        self.counted_any = False
        self.epoch_steps: int | None = None
        self.pending: Position | None = None

    @property
    def saves_at_batches(self) -> bool:
        """Whether saves fall at batch ends (by count or by time), not at epoch ends."""
        return bool(self.every or self.seconds)

    def epoch_due(self, epoch: int) -> bool:
        """Whether a save is due at the end of 0-based ``epoch`` (``"epoch"``, ``"Kep"``)."""
        return not self.saves_at_batches and (epoch + 1) % self.epochs == 0

    @property
    def batch_in_epoch(self) -> int:
        """Batches done inside the current epoch, an earlier run's part included."""
        return self.offset + self.done

    @property
    def steps_per_epoch(self) -> int | None:
        """The length of the current epoch where known (an earlier run's part included)."""
        return None if self.epoch_steps is None else self.offset + self.epoch_steps

    def ends_epoch(self) -> bool:
        """Whether the batch just counted was the last of the epoch (where that is known)."""
        return self.epoch_steps is not None and self.done >= self.epoch_steps

    def configure(self, epoch_steps: int | None) -> None:
        """Take in how many batches each epoch of this ``fit`` runs, where known."""
        self.epoch_steps = epoch_steps if epoch_steps is not None and epoch_steps > 0 else None

    def seed(
        self,
        resumed: ResumePoint | None,
        *,
        fresh: bool,
        initial_batch: int | None = None,
        restart: Restart | None = None,
    ) -> str | None:
        """Seed the global count at train begin (the table in the module docstring).

        Args:
            resumed: the point ``resume`` loaded into the model, if any.
            fresh: whether ``resumed`` is new since the last seed (then it
                wins over this callback's own count: the model was put back).
            initial_batch: the user's count for a model that arrives trained
                with no record of it; checked against a resume point.
            restart: a restart to the start of an epoch by another callback
                (used when nothing above says where the count stands).

        Returns:
            The path of the resumed checkpoint where counting continues from
            it (the caller protects it from retention), else ``None``.

        Raises:
            CountError: ``initial_batch`` contradicts the checkpoint ``resume``
                loaded or the folder's record of a restart, or a restart's
                count is recorded nowhere.
        """
        loaded = resumed if resumed is not None and resumed.resumed else None
        first = not self.counted_any
        if first or (loaded is not None and fresh):
            recorded = loaded.saved_at if loaded is not None else None
            self.last_save_time = self.clock() if recorded is None else recorded
        if loaded is not None and (fresh or first):
            if first and initial_batch is not None and initial_batch != loaded.batch:
                raise CountError(
                    f"initial_batch={initial_batch} contradicts checkpoint {loaded.path!r}, "
                    f"which resume() loaded into the model and which was saved after "
                    f"{loaded.batch} batches; leave initial_batch out (the checkpoint "
                    "records the count)"
                )
            self.batch = loaded.batch
            self.pending = Position(
                max(loaded.epoch - 1, 0),
                loaded.batch,
                loaded.batch_in_epoch,
                loaded.end_of_epoch,
                loaded.metric_state or None,
                loaded.steps_per_epoch,
                loaded.path,
            )
            return loaded.path
        if not first:
            self.pending = Position(self.epoch, self.batch, self.batch_in_epoch, self.complete)
            return None
        self.pending = None
        self.batch = _restart_count(restart, initial_batch) if restart else initial_batch or 0
        return None

    def begin_epoch(self, epoch: int) -> Position | None:
        """Start counting an epoch (0-based).

        Returns:
            The interrupted position whose metric state should be restored
            now (the run entered the epoch it stopped inside), else ``None``.
        """
        self.epoch = epoch
        self.offset = 0
        pending, self.pending = self.pending, None
        restore = None
        if pending is not None:
            self._check_length(pending, epoch)
        if pending is not None and not pending.complete:
            if epoch == pending.epoch:
                self.offset = pending.batch_in_epoch
                if pending.metric_state and self.offset > 0:
                    restore = pending
            elif epoch < pending.epoch:
                warnings.warn(
                    f"training starts at epoch {epoch + 1}, but the run stopped inside epoch "
                    f"{pending.epoch + 1} (after batch {pending.batch_in_epoch} of it); pass "
                    f"initial_epoch={pending.epoch} to fit (or use "
                    "ckptname.keras.fit_resumed) so that epochs are numbered as before",
                    CkptnameWarning,
                    stacklevel=3,
                )
        self.epoch_start = self.batch
        self.done = 0
        self.complete = False
        return restore

    def _check_length(self, pending: Position, epoch: int) -> None:
        """Refuse an epoch that continues a checkpoint's run with another epoch length.

        Another batch size, ``steps_per_epoch`` or data length would count
        other batches under the names of the run that saved the checkpoint
        (its epochs, its ``batch_in_epoch``). Checked where both lengths are
        known, for the first epoch after the checkpoint: the one it stopped
        inside (its part before the checkpoint included), else a later one.

        Raises:
            CountError: the lengths differ.
        """
        recorded, steps = pending.steps_per_epoch, self.epoch_steps
        if pending.source is None or recorded is None or steps is None:
            return
        if not pending.complete and epoch == pending.epoch:
            before = pending.batch_in_epoch
        elif epoch > pending.epoch:
            before = 0
        else:
            return
        if before + steps == recorded:
            return
        parts = f" ({before} before the checkpoint and {steps} now)" if before else ""
        raise CountError(
            f"checkpoint {pending.source!r} was saved by a run whose epochs had {recorded} "
            f"batches, but epoch {epoch + 1} of this fit has {before + steps}{parts}; another "
            "batch size, steps_per_epoch or data length would count other batches under the "
            "run's names: continue with the run's batch size and data "
            "(ckptname.keras.fit_resumed finishes the interrupted epoch), or start in another "
            "folder"
        )

    def end_batch(self, batch: int, ran: int | None = None) -> bool:
        """Count a batch or an execution that ran; whether a save is due.

        Args:
            batch: the 0-based index inside the epoch that Keras reports (the
                last of the execution).
            ran: the batches the execution ran, where the caller knows them
                (``steps_per_execution`` > 1, see :func:`execution_ran`);
                ``None`` counts up to ``batch``.
        """
        if ran is None:
            done = batch + 1
            if done <= self.done:
                # The index went back without begin_epoch (a hand-written loop
                # that does not call it): a new epoch of counting, as Keras assumes.
                self.epoch_start = self.batch
                self.offset = 0
        else:
            done = self.done + ran
        self.done = done
        prev = self.batch
        now = self.epoch_start + done
        self.batch = now
        self.counted_any = True
        every = self.every
        if every:
            return now // every != prev // every
        if self.seconds:
            moment = self.clock()
            if moment - self.last_save_time >= self.seconds:
                self.last_save_time = moment
                return True
        return False

    def end_epoch(self) -> None:
        """Mark the current epoch complete."""
        self.complete = True


def _restart_count(restart: Restart, initial_batch: int | None) -> int:
    """The count a restart at the start of ``restart.epoch`` continues from."""
    where = f"epoch {restart.epoch + 1}"
    if restart.batch is None:
        if initial_batch is not None:
            return initial_batch
        raise CountError(
            f"training restarts at {where} (keras.callbacks.BackupAndRestore), but no "
            f"checkpoint in {restart.folder!r} records how many batches ran before it; pass "
            "initial_batch (that number) to BatchAwareCheckpoint, or resume with "
            "ckptname.keras.resume(model, filepath) instead"
        )
    if initial_batch is not None and initial_batch != restart.batch:
        raise CountError(
            f"initial_batch={initial_batch} contradicts the checkpoints in "
            f"{restart.folder!r}, which record {restart.batch} batches before {where}, "
            "where training restarts; leave initial_batch out"
        )
    return restart.batch
