"""Counting training batches, and when a save is due.

This module is reserved for *where training stands*: the global batch count,
the position inside an epoch, the point a run resumed from, and the save
schedule. It imports neither Keras nor TensorFlow, so the rules can be tested
with plain integers.

The rules:

* ``batch`` is the global count of training batches since the run began
  (1-based, across epochs and resumes); ``batch_in_epoch`` is the count inside
  the current epoch, including the part an earlier run did before a mid-epoch
  resume.
* With ``save_freq=N``, a save is due when the global count crosses a multiple
  of N (``prev // N != now // N``), so a resumed run saves at the same batches
  as an uninterrupted one, and with ``steps_per_execution`` (where the count
  moves by more than one) no multiple is skipped.
* At train begin the count is seeded from the optimizer's batch counter when it
  is above 0, else from the callback's own count (a second ``fit`` in the same
  process), else from the checkpoint :func:`ckptname.keras.resume` loaded. The
  optimizer wins because learning-rate schedules follow it; a disagreement with
  the resumed checkpoint is a :class:`~ckptname.CkptnameWarning`.
* A checkpoint saved inside an epoch makes the next epoch that enters it start
  counting ``batch_in_epoch`` after it (what ``fit_resumed`` relies on).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import CkptnameWarning
from ._rank import as_counter

__all__ = ["Position", "ResumePoint", "Schedule", "position_from_sidecar"]


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
    metrics, to put back when the epoch is entered again.
    """

    epoch: int
    batch: int
    batch_in_epoch: int
    complete: bool
    metric_state: Mapping[str, Any] | None = None


def position_from_sidecar(meta: Mapping[str, Any]) -> Position | None:
    """The position a checkpoint's sidecar records, or ``None`` where it lacks the counters."""
    epoch = as_counter(meta.get("epoch"))
    in_epoch = as_counter(meta.get("batch_in_epoch"))
    if epoch is None or in_epoch is None:
        return None
    state = meta.get("metric_state")
    return Position(
        max(epoch - 1, 0),
        as_counter(meta.get("batch")) or 0,
        in_epoch,
        bool(meta.get("end_of_epoch")),
        state if isinstance(state, dict) and state else None,
    )


class Schedule:
    """The global batch count, the position inside the epoch, and when a save is due.

    Driven by the callback's hooks: :meth:`seed` at train begin,
    :meth:`begin_epoch`, :meth:`end_batch` after every batch (the hot path:
    integer work only), :meth:`end_epoch`.

    Args:
        every: save every ``every`` global batches; 0 saves at epoch ends only.
    """

    __slots__ = (
        "batch",
        "clamp",
        "complete",
        "counted_any",
        "done",
        "epoch",
        "epoch_start",
        "epoch_steps",
        "every",
        "exact",
        "offset",
        "pending",
        "raw_epoch_start",
    )

    def __init__(self, every: int) -> None:
        self.every = every
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
        self.clamp = sys.maxsize
        self.exact: Callable[[], int] | None = None
        self.raw_epoch_start = 0
        self.epoch_steps: int | None = None
        self.pending: Position | None = None

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

    def configure(
        self,
        steps: object,
        steps_per_execution: int,
        batch_counter: Callable[[], int] | None,
    ) -> None:
        """Take in how ``fit`` will run: steps per epoch and per execution.

        With ``steps_per_execution`` N, Keras reports the last index of each
        execution, and runs whole executions: an epoch of 7 steps with N=3
        runs 9 batches on a repeated stream, 7 on a finite one whose last
        execution comes up short. The count is then read from
        ``batch_counter`` (the optimizer's count of batches, once per
        execution), which is what ran; without one (a hand-written loop with
        no optimizer) the reported index is clamped to the epoch's length.
        """
        self.epoch_steps = steps if isinstance(steps, int) and steps > 0 else None
        many = steps_per_execution > 1
        self.exact = batch_counter if many else None
        unread = many and batch_counter is None and self.epoch_steps
        self.clamp = self.epoch_steps if unread and self.epoch_steps else sys.maxsize

    def seed(self, raw: int | None, resumed: ResumePoint | None, *, fresh: bool) -> str | None:
        """Seed the global count at train begin (see the module docstring).

        Args:
            raw: the optimizer's batch counter, or ``None`` without one.
            resumed: the point ``resume`` loaded for the model, if any.
            fresh: whether ``resumed`` is new since the last seed (its
                disagreements with ``raw`` are warned about once).

        Returns:
            The path of the resumed checkpoint where counting continues from
            it (the caller protects it from retention), else ``None``.
        """
        loaded = resumed if resumed is not None and resumed.resumed else None
        if raw:
            seed = raw
        elif self.counted_any:
            seed = self.batch
        elif loaded is not None:
            seed = loaded.batch
        else:
            seed = 0
        if fresh and loaded is not None:
            _warn_if_counters_disagree(raw, loaded)
        position: Position | None = None
        continues_from = None
        if self.counted_any and seed == self.batch:
            position = Position(self.epoch, self.batch, self.batch_in_epoch, self.complete)
        elif loaded is not None and loaded.batch == seed:
            position = Position(
                max(loaded.epoch - 1, 0),
                loaded.batch,
                loaded.batch_in_epoch,
                loaded.end_of_epoch,
                loaded.metric_state or None,
            )
            continues_from = loaded.path
        self.batch = seed
        self.pending = position
        return continues_from

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
        if self.exact is not None:
            self.raw_epoch_start = self.exact()
        return restore

    def end_batch(self, batch: int) -> bool:
        """Count the batches up to 0-based index ``batch`` of the epoch; whether a save is due."""
        done = batch + 1
        if done > self.clamp:
            done = self.clamp
        if self.exact is not None:
            done = self.exact() - self.raw_epoch_start
        if done <= self.done:
            # The index went back without begin_epoch (a hand-written loop
            # that does not call it): a new epoch of counting, as Keras assumes.
            self.epoch_start = self.batch
            self.offset = 0
        self.done = done
        prev = self.batch
        now = self.epoch_start + done
        self.batch = now
        self.counted_any = True
        every = self.every
        return bool(every) and now // every != prev // every

    def end_epoch(self) -> None:
        """Mark the current epoch complete."""
        self.complete = True


def _warn_if_counters_disagree(raw: int | None, resumed: ResumePoint) -> None:
    if raw is not None and raw > 0 and raw != resumed.batch:
        warnings.warn(
            f"the optimizer has run {raw} batches but checkpoint {resumed.path!r} "
            f"was saved after {resumed.batch}; counting continues from {raw}, the "
            "optimizer's count (learning-rate schedules follow it)",
            CkptnameWarning,
            stacklevel=5,
        )
    elif raw == 0 and resumed.batch > 0:
        warnings.warn(
            f"the optimizer's batch counter is 0 after resuming from {resumed.path!r} "
            f"(saved after {resumed.batch} batches): its state was not in the "
            f"checkpoint; counting continues from {resumed.batch}, but learning-rate "
            "schedules restart",
            CkptnameWarning,
            stacklevel=5,
        )
