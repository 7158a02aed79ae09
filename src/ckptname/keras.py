"""Keras integration: a checkpoint callback with global batch names, and exact resume.

This is the only ckptname module that imports Keras (and, through it,
TensorFlow); ``import ckptname`` stays light.

:class:`BatchAwareCheckpoint` is a drop-in for ``keras.callbacks.ModelCheckpoint``
whose names carry counters that survive epochs and restarts, whose saves are
atomic, and which can prune old checkpoints. :func:`resume` loads the latest
checkpoint into a model and returns where training stopped;
:func:`fit_resumed` finishes an interrupted epoch exactly (instead of replaying
it) and continues.

Template fields, for 3 epochs of 10 batches with ``save_freq=5``:

=========================================  ================================  =====================
template                                   names                             fields
=========================================  ================================  =====================
``b{batch:05d}.keras``                     ``b00005.keras`` … ``b00030…``    ``batch``: global,
                                                                             1-based, never resets
``e{epoch:02d}-{batch_in_epoch}.keras``    ``e01-5.keras``, ``e01-10…``,     ``batch_in_epoch``:
                                           ``e02-5…``                        Keras's ``{batch}``
``b{batch}-{loss:.3f}.weights.h5``         ``b5-0.912.weights.h5``           any key of the logs
``b{batch}-lr{lr:.0e}.keras``              ``b5-lr1e-03.keras``              any key of ``extras``
=========================================  ================================  =====================

A run that survives being killed (the same script starts and resumes it)::

    model = build_and_compile()
    filepath = "ckpts/b{batch:06d}.keras"
    point = resume(model, filepath)         # a fresh start when there is nothing yet
    ckpt = BatchAwareCheckpoint(filepath, save_freq=500, keep_last=3)
    fit_resumed(model, x, y, resume=point, epochs=10, batch_size=64, callbacks=[ckpt])
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from . import __version__
from ._errors import (
    CheckpointError,
    CheckpointSaveError,
    CkptnameWarning,
    MetadataError,
    MissingFieldError,
    TemplateError,
)
from ._lock import FolderLock
from ._lock import acquire as acquire_lock
from ._metadata import (
    CHECKPOINT_FORMAT,
    LOCK_NAME,
    SIDECAR_SUFFIX,
    STATE_FORMAT,
    STATE_NAME,
    TMP_PREFIX,
    decode,
    encode,
    is_reserved,
    read_metadata,
    sidecar_path,
)
from ._storage import Storage, storage_for
from ._template import Template

__all__ = ["BatchAwareCheckpoint", "ResumePoint", "fit_resumed", "resume"]

# Fields the callback fills itself; they win over keys of the logs.
COUNTER_FIELDS = ("epoch", "batch", "batch_in_epoch")
_MODES = ("auto", "min", "max")
_SAVE_ERROR_POLICIES = ("raise", "warn")

# Which checkpoint each model was resumed from, so that a callback created
# before or after `resume()` can pick the counters up without the user passing
# them around. Weak keys: the registry never keeps a model alive.
_RESUMED: weakref.WeakKeyDictionary[Any, ResumePoint] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where a run stands after :func:`resume`: what ``fit`` needs to continue.

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

    @property
    def resumed(self) -> bool:
        """Whether a checkpoint was loaded (``False`` for a fresh start)."""
        return self.path is not None

    @property
    def initial_epoch(self) -> int:
        """The ``initial_epoch`` to pass to ``fit`` (0-based, as Keras counts).

        After a checkpoint from the end of epoch 3 this is 3 (the next epoch);
        after one from the middle of epoch 3 it is 2: the interrupted epoch is
        entered again, and :func:`fit_resumed` runs only its remaining batches.
        """
        return self.epoch if self.end_of_epoch else self.epoch - 1

    @property
    def mid_epoch(self) -> bool:
        """Whether the checkpoint was saved inside an epoch, after at least one batch."""
        return self.resumed and not self.end_of_epoch and self.batch_in_epoch > 0


@dataclass(slots=True)
class _Position:
    """Where counting stands: 0-based epoch index, batches done in it, whether it ended.

    ``metric_state`` is what :func:`_metric_state` recorded at that point, to
    put back into the model's metrics when the epoch is entered again.
    """

    epoch: int
    batch: int
    batch_in_epoch: int
    complete: bool
    metric_state: Mapping[str, Any] | None = None


# --------------------------------------------------------------------------- callback


class BatchAwareCheckpoint(keras.callbacks.Callback):  # type: ignore[misc]  # Keras is untyped
    """Save a Keras model or its weights under names that carry global counters.

    Accepts every argument of ``keras.callbacks.ModelCheckpoint``, in the same
    order and with the same meaning and file-suffix rules, and differs where
    ``ModelCheckpoint`` loses work or names:

    * ``{batch}`` is the global count of training batches since the run began
      (1-based, across epochs and resumes); ``{batch_in_epoch}`` is what Keras
      calls ``{batch}``. Both work with ``save_freq='epoch'`` too.
    * An integer ``save_freq`` N saves when the global count crosses a multiple
      of N, so a resumed run saves at the same batches, under the same names,
      as an uninterrupted one; with ``steps_per_execution`` the names carry the
      true counts.
    * Fields that cannot have a value when saves happen fail at
      ``on_train_begin``; a missing field or monitor at save time raises
      :class:`~ckptname.MissingFieldError` (never a silent save or ``0``).
    * Saves are atomic, get a JSON sidecar with exact metrics and counters, and
      update the folder's state file; ``keep_last``/``keep_best`` prune after
      the new checkpoint is complete.
    * The best monitored value survives a resume, and a folder that already
      holds later checkpoints of the template is an error, not an overwrite.

    Examples, for 3 epochs of 10 batches:

    ==========================================  =================  ===========================
    filepath                                    save_freq          names
    ==========================================  =================  ===========================
    ``ckpts/b{batch:05d}.keras``                5                  ``b00005.keras`` …
                                                                   ``b00030.keras`` (6 files)
    ``ckpts/e{epoch:02d}-b{batch}.weights.h5``  ``'epoch'``        ``e01-b10.weights.h5``,
                                                                   ``e02-b20…``, ``e03-b30…``
    ``ckpts/best.keras``                        ``'epoch'``, with  one file, rewritten when
                                                best-only          ``val_loss`` improves
    ==========================================  =================  ===========================

    Decisions where ``ModelCheckpoint`` gives no guidance:

    * The folder of the checkpoints (the "root") is the part of ``filepath``
      before the first path part with a field; the template is the rest
      (``runs/a/lr{lr}/b{batch}.keras``: root ``runs/a``). The state file, the
      checks and retention work in that root, on this template only.
    * Counters are seeded at ``on_train_begin``, from the optimizer's batch
      counter when it is above 0, else from this callback's own count (a second
      ``fit`` in the same process), else from the checkpoint :func:`resume`
      loaded; a disagreement between the optimizer and that checkpoint is a
      :class:`~ckptname.CkptnameWarning`. The optimizer wins because learning
      rate schedules follow it.
    * A checkpoint saved inside an epoch makes the next ``fit`` that enters that
      epoch start counting ``batch_in_epoch`` after it (what :func:`fit_resumed`
      relies on).
    * Keras logs ``loss`` and compiled metrics as running means over the epoch.
      A save inside an epoch records the variables behind them (``model.metrics``:
      totals and counts) in the sidecar as ``metric_state``, and entering that
      epoch again puts them back after Keras resets the metrics, so the means,
      and the ``{loss}`` in later names of that epoch, are those of an
      uninterrupted run. A sidecar without the record (older versions, other
      writers) resumes as before: the means restart with the resume. (A plain
      ``fit`` that replays the whole interrupted epoch instead of
      :func:`fit_resumed` counts the batches done before the interruption twice,
      in the means as in ``batch_in_epoch``.)
    * At ``on_train_begin`` only what can never have a value fails: a
      ``val_*`` field or monitor with an integer ``save_freq``. Other unknown
      fields fail at the first save (another callback may add keys to the logs).
    * Extras may not reuse a counter name or a key of the logs (error at save).
    * A NaN monitor value is never an improvement (Keras makes it the best,
      after which nothing beats it).
    * Without ``save_best_only``, the best value is still tracked (for the state
      file and ``keep_best``) whenever the monitor is in the logs at a save and
      its direction is known.
    * ``initial_value_threshold`` and a best value restored from the folder
      combine: the better of the two is the bar to beat.
    * A failed save leaves the folder as it was before the save (the new file
      and sidecar are removed), except that a checkpoint that overwrote an older
      one of the same name is gone.
    * The checkpoint a run resumed from is not pruned while the run trains (it
      is the last known-good state should the new saves go wrong); when the run
      ends cleanly, retention runs once more without sparing it, so the folder
      ends as after an uninterrupted run.
    * A save is safe to kill at any moment (see ``_write_checkpoint``): a file
      under a checkpoint name is always complete and has its sidecar. What a
      killed save leaves (temporary files, a sidecar without its checkpoint)
      is removed at the next ``on_train_begin``; scanning ignores it anyway.
    * The chief takes the folder's lock (``.ckptname.lock``) at
      ``on_train_begin``, before it cleans or checks the folder, and gives it
      back at ``on_train_end``; Keras calls no hook when ``fit`` raises, so
      then the lock stays with the process until its next ``on_train_end``,
      the end of :func:`fit_resumed`, or its exit. The same process never
      locks itself out; a killed process's lock is stale and taken over with
      a warning (``ckptname._lock`` has the rules).
    * Only the chief writes (``chief=None`` reads ``TF_CONFIG``; on JAX,
      process 0); the others count and name identically but touch no file.
    * Keras converts the logs of every batch to floats on the TensorFlow
      backend whatever the callbacks are, so the batch hook adds one Python
      call and a few integer operations; on backends with asynchronous batch
      dispatch (JAX), overriding the batch hook turns that dispatch off, as any
      callback with a batch hook does.

    Args:
        filepath: where to save: a template such as
            ``"ckpts/e{epoch:02d}-b{batch:06d}-{loss:.3f}.keras"``, local or an
            fsspec URL (``"s3://bucket/run/b{batch}.keras"``). It must end in
            ``.keras`` or ``.h5`` for models, ``.weights.h5`` for weights.
        monitor: the metric that ``save_best_only``, ``keep_best`` and the
            folder's best track.
        verbose: 0 is silent; 1 prints a line when a checkpoint is saved or
            skipped.
        save_best_only: save only when ``monitor`` improves on the best so far
            (restored from the folder on resume).
        save_weights_only: save ``model.save_weights`` instead of ``model.save``.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (from the model's metric, then
            from the name: accuracy/auc/precision/... are maximised, loss/error
            minimised; anything else is an error asking for a mode).
        save_freq: ``"epoch"``, or a number N of batches: save when the global
            batch count crosses a multiple of N.
        initial_value_threshold: the value ``monitor`` must beat for the first
            best-only save.
        keep_last: keep only the N latest checkpoints of this template
            (with ``keep_best``, the union is kept).
        keep_best: keep only the K best checkpoints by ``monitor``/``mode``.
        extras: a dict, or a function returning one, of JSON-serialisable
            values recorded in each sidecar and offered as template fields; a
            function is called at ``on_train_begin`` (to check fields) and at
            each save.
        on_save_error: ``"raise"`` (stop training with a
            :class:`~ckptname.CheckpointSaveError`) or ``"warn"`` (warn and keep
            training) when writing a checkpoint fails.
        fsync: flush each checkpoint file to disk before it gets its name, so a
            power loss cannot leave an empty file under a checkpoint name.
            Sidecars and the state file are not flushed: they are rebuilt from
            names if lost.
        chief: whether this process writes; ``None`` decides from the cluster
            configuration.
        lock: ``True`` takes the folder's lock (``.ckptname.lock``: owner pid,
            host and start time) at ``on_train_begin`` and gives it back at
            ``on_train_end``, so a second live run pointed at the folder stops
            with a :class:`~ckptname.FolderLockedError`, and a lock left by a
            killed run is taken over with a warning; ``"takeover"`` also takes
            over a lock held by a live run or another host (with a warning);
            ``False`` takes no lock. Only the chief takes it, and only on local
            folders (see ``ckptname._lock`` for the rules).

    Raises:
        ValueError: an argument that ModelCheckpoint would refuse, an unknown
            ``mode``, ``save_freq`` or ``on_save_error``, a bad ``keep_*``.
        TemplateError: ``filepath`` is not a valid template, or its names cannot
            be read back (so checkpoints could not be found again).
    """

    def __init__(
        self,
        filepath: str | os.PathLike[str],
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        save_weights_only: bool = False,
        mode: str = "auto",
        save_freq: str | int = "epoch",
        initial_value_threshold: float | None = None,
        *,
        keep_last: int | None = None,
        keep_best: int | None = None,
        extras: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
        on_save_error: str = "raise",
        fsync: bool = True,
        chief: bool | None = None,
        lock: bool | str = True,
    ) -> None:
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = monitor
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        self.mode = mode
        self.save_freq = save_freq
        self.initial_value_threshold = initial_value_threshold
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.extras = extras
        self.on_save_error = on_save_error
        self.fsync = fsync
        self.chief = chief
        self.lock = lock
        if lock not in (True, False, "takeover"):
            raise ValueError(f"lock must be True, False or 'takeover', got {lock!r}")

        if not (save_freq == "epoch" or (type(save_freq) is int and save_freq > 0)):
            raise ValueError(
                f"save_freq must be 'epoch' or a positive number of batches, got {save_freq!r}"
            )
        if mode not in _MODES:
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if on_save_error not in _SAVE_ERROR_POLICIES:
            raise ValueError(f"on_save_error must be 'raise' or 'warn', got {on_save_error!r}")
        for name, value in (("keep_last", keep_last), ("keep_best", keep_best)):
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be None or a positive integer, got {value!r}")
        if self.save_weights_only:
            if not self.filepath.endswith(".weights.h5"):
                raise ValueError(
                    "with save_weights_only=True the filepath must end in '.weights.h5' "
                    f"(Keras weights format), got {self.filepath!r}"
                )
        elif not self.filepath.endswith((".keras", ".h5")) or self.filepath.endswith(".weights.h5"):
            raise ValueError(
                "the filepath must end in '.keras' (or '.h5') to save the whole model, "
                f"got {self.filepath!r}; to save weights only, end it in '.weights.h5' "
                "and pass save_weights_only=True"
            )
        if isinstance(extras, Mapping):
            _check_extras_keys(extras)
        elif extras is not None and not callable(extras):
            raise TypeError(
                f"extras must be a dict or a function returning one, got {type(extras).__name__}"
            )

        self._root, self.template = split_filepath(self.filepath)
        if not self.template.reversible:
            try:
                self.template.parse("")
            except TemplateError as exc:
                raise TemplateError(
                    f"{exc.reason}; ckptname must read names back to find and resume checkpoints"
                ) from None
        self._storage, self._inner_root = storage_for(self._root)
        self.best: float | None = initial_value_threshold
        self._best_name: str | None = None
        self._mode: str | None = None if mode == "auto" else mode
        self._every = 0 if save_freq == "epoch" else int(save_freq)

        # Counting state. `_batch` is the global count; the in-epoch count is
        # `_offset + _done`, where `_offset` is the part of the epoch done by an
        # earlier run (a mid-epoch resume).
        self._batch = 0
        self._epoch = 0
        self._epoch_start = 0
        self._offset = 0
        self._done = 0
        self._complete = False
        self._counted_any = False
        self._clamp = sys.maxsize
        self._exact: Callable[[], int] | None = None
        self._raw_epoch_start = 0
        self._epoch_steps: int | None = None
        self._pending: _Position | None = None
        self._first_epoch_check: int | None = None
        self._protect: set[str] = set()
        self._saved_this_run: str | None = None
        self._latest_entry: dict[str, Any] | None = None
        self._resume_seen: ResumePoint | None = None
        self._is_chief = True
        self._keras_model: Any = None
        self._last_path: str | None = None
        self._first_step: tuple[Any, Any, Any] | None = None
        self._lock: FolderLock | None = None
        # Set by fit_resumed while it runs several fits: the lock is kept
        # between them and released by fit_resumed itself.
        self._lock_hold = 0

    # ------------------------------------------------------------------ public

    @property
    def directory(self) -> str:
        """The folder the checkpoints of this callback live in (the template's root)."""
        return self._root

    @property
    def batch(self) -> int:
        """The global count of training batches done, as the next name would carry it."""
        return self._batch

    @property
    def last_checkpoint(self) -> str | None:
        """The path of the latest checkpoint this callback saved, or ``None``."""
        return self._last_path

    # ------------------------------------------------------------------ hooks

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        # `self.model` is a property that may sync state on some backends; keep
        # a plain reference for the hot path.
        self._keras_model = model

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Check the template against ``save_freq``, seed counters, restore the best.

        Raises:
            MissingFieldError: a field or the monitor can never have a value at
                the saves that ``save_freq`` makes (validation metrics with an
                integer ``save_freq``).
            ValueError: ``mode='auto'`` and the direction of ``monitor`` is unknown
                while ``save_best_only`` or ``keep_best`` needs it.
            CheckpointError: the folder holds checkpoints of this template from a
                later point than this run's counter, or its lock cannot be taken.
            FolderLockedError: another live run holds the folder's lock.
        """
        model = self._keras_model
        params = self.params or {}
        self._is_chief = _is_chief() if self.chief is None else bool(self.chief)
        extras = self._extras_now()
        self._check_fields(extras)
        self._resolve_mode(required=self.save_best_only or self.keep_best is not None)

        steps = params.get("steps")
        self._epoch_steps = steps if isinstance(steps, int) and steps > 0 else None
        spe = int(getattr(model, "steps_per_execution", 1) or 1)
        # With steps_per_execution N, Keras reports the last index of each
        # execution, which overshoots at an epoch's tail: clamp to the epoch's
        # length when known, else read the optimizer's batch counter (once per
        # execution, i.e. once per N batches).
        self._clamp = self._epoch_steps if spe > 1 and self._epoch_steps else sys.maxsize
        self._exact = None
        if spe > 1 and self._epoch_steps is None and _batch_counter(model) is not None:
            self._exact = lambda: _batch_counter(model) or 0

        self._saved_this_run = None
        if self._is_chief:
            self._take_lock()
        try:
            self._seed(model)
        except BaseException:
            self._release_lock()
            raise

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Start counting an epoch (``epoch`` is 0-based, as Keras passes it)."""
        if self._first_epoch_check is not None:
            latest_epoch = self._first_epoch_check
            self._first_epoch_check = None
            if latest_epoch > epoch + 1:
                raise CheckpointError(
                    f"folder {self._root!r} already holds checkpoints of template "
                    f"'{self.template.text}' from epoch {latest_epoch}, later than the epoch "
                    f"this run starts at ({epoch + 1}); resume from them "
                    f"(ckptname.keras.resume(model, {self._root!r})) or use another folder"
                )
        self._epoch = epoch
        self._offset = 0
        pending, self._pending = self._pending, None
        if pending is not None and not pending.complete:
            if epoch == pending.epoch:
                self._offset = pending.batch_in_epoch
                if pending.metric_state and self._offset > 0:
                    self._restore_metrics(pending.metric_state, epoch)
            elif epoch < pending.epoch:
                warnings.warn(
                    f"training starts at epoch {epoch + 1}, but the run stopped inside epoch "
                    f"{pending.epoch + 1} (after batch {pending.batch_in_epoch} of it); pass "
                    f"initial_epoch={pending.epoch} to fit (or use "
                    "ckptname.keras.fit_resumed) so that epochs are numbered as before",
                    CkptnameWarning,
                    stacklevel=2,
                )
        self._epoch_start = self._batch
        self._done = 0
        self._complete = False
        if self._exact is not None:
            self._raw_epoch_start = self._exact()

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Count the batches that ran; save when the count crosses a multiple of ``save_freq``.

        Args:
            batch: the 0-based index inside the epoch of the last batch that ran
                (as Keras passes it; with ``steps_per_execution`` N it grows by N).
            logs: the metrics; read only when a save is due.
        """
        # The hot path: integer work only; the logs are not touched unless a
        # save is due.
        done = batch + 1
        if done > self._clamp:
            done = self._clamp
        if self._exact is not None:
            done = self._exact() - self._raw_epoch_start
        if done <= self._done:
            # The index went back without on_epoch_begin (a hand-written loop
            # that does not call it): a new epoch of counting, as Keras assumes.
            self._epoch_start = self._batch
            self._offset = 0
        self._done = done
        prev = self._batch
        now = self._epoch_start + done
        self._batch = now
        self._counted_any = True
        if self._every and now // self._every != prev // self._every:
            steps = self._epoch_steps
            self._save(logs, end_of_epoch=steps is not None and done >= steps)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Mark the epoch complete; save if ``save_freq='epoch'``."""
        self._complete = True
        self._unwrap_first_step()
        if not self._every:
            self._save(logs, end_of_epoch=True)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Apply retention once more, now without sparing the resumed-from checkpoint.

        While the run trains, the checkpoint it resumed from is kept whatever
        the policy says (the last known-good state if the new saves go wrong);
        a run that ends cleanly leaves the folder as an uninterrupted run would.
        """
        self._pending = None
        self._unwrap_first_step()
        newest, self._saved_this_run = self._saved_this_run, None
        protected, self._protect = self._protect, set()
        retention = self.keep_last is not None or self.keep_best is not None
        try:
            if newest is not None and protected and retention and self._is_chief:
                self._prune(newest)
        finally:
            if not self._lock_hold:
                self._release_lock()

    # ------------------------------------------------------------------ lock

    def _take_lock(self) -> None:
        """Take the folder's lock (local folders, ``lock`` not ``False``).

        Taken before the folder is cleaned or checked: those steps must not
        touch another live run's files.
        """
        if self.lock is False or self._storage.remote:
            return
        if self._lock is not None and self._lock.held:
            return
        try:
            self._lock = acquire_lock(
                self._inner_root, filepath=self.filepath, takeover=self.lock == "takeover"
            )
        except OSError as exc:
            cause = exc.strerror or str(exc) or type(exc).__name__
            raise CheckpointError(
                f"could not take the lock of checkpoint folder {self._root!r}: {cause}; "
                "make the folder writable, or pass lock=False to write without a lock"
            ) from exc

    def _release_lock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    # ------------------------------------------------------------------ metric state

    def _restore_metrics(self, state: Mapping[str, Any], epoch: int) -> None:
        """Put the running sums of an interrupted epoch back into the model's metrics.

        Keras resets the metrics right before ``on_epoch_begin`` (TensorFlow
        trainer: ``reset_metrics()`` then ``callbacks.on_epoch_begin``), so
        what is assigned here is what the epoch's first step adds to, and the
        logged means continue as if training had not stopped.

        On the TensorFlow backend without a distribution strategy, Keras
        creates the variables of the compiled metrics only when it traces the
        first step. Those are restored at that first step instead: the
        model's ``train_function`` is wrapped for one call, which builds the
        metrics from the input's ``element_spec`` (Keras's own symbolic
        build, as it does under a strategy), restores them and runs the step.
        """
        model = self._keras_model
        unbuilt = _restore_metric_state(model, state, epoch, final=False)
        if not unbuilt:
            return
        rest = {name: state[name] for name in unbuilt}
        original = getattr(model, "train_function", None)
        if original is None:
            # A hand-written loop: no step of Keras's to hook into.
            _restore_metric_state(model, rest, epoch, final=True)
            return

        def first_step(iterator: Any, *args: Any, **kwargs: Any) -> Any:
            model.train_function = original
            self._first_step = None
            if self._epoch == epoch and self._done == 0:
                spec = getattr(iterator, "element_spec", None)
                build = getattr(model, "_symbolic_build", None)
                if spec is not None and build is not None:
                    with contextlib.suppress(Exception):  # then reported as not restored
                        build(data_batch=spec)
                _restore_metric_state(model, rest, epoch, final=True)
            return original(iterator, *args, **kwargs)

        model.train_function = first_step
        self._first_step = (model, original, first_step)

    def _unwrap_first_step(self) -> None:
        """Undo the one-call wrapper of :meth:`_restore_metrics` if no step ran."""
        hooked, self._first_step = self._first_step, None
        if hooked is not None:
            model, original, wrapper = hooked
            if getattr(model, "train_function", None) is wrapper:
                model.train_function = original

    # ------------------------------------------------------------------ train begin

    def _extras_now(self) -> dict[str, Any]:
        extras = self.extras
        if extras is None:
            return {}
        got = extras() if callable(extras) else extras
        if not isinstance(got, Mapping):
            raise TypeError(f"the extras function must return a dict, got {type(got).__name__}")
        _check_extras_keys(got)
        return {str(k): _jsonable(k, v) for k, v in got.items()}

    def _check_fields(self, extras: Mapping[str, Any]) -> None:
        if not self._every:
            return
        # Integer save_freq: saves happen at batch ends, where only training
        # metrics exist. Anything named val_* can never be there.
        for name in self.template.fields:
            if name in COUNTER_FIELDS or name in extras:
                continue
            if name.startswith("val_"):
                raise MissingFieldError(
                    f"field '{name}' of template '{self.template.text}' will not be in the "
                    f"logs when saving every {self._every} batches: validation metrics exist "
                    "only at epoch end; use save_freq='epoch', or a training metric such as "
                    f"'{name[4:]}'",
                    (name,),
                    (),
                )
        needs_monitor = self.save_best_only or self.keep_best is not None
        if needs_monitor and self.monitor.startswith("val_") and self.monitor not in extras:
            what = "save_best_only" if self.save_best_only else "keep_best"
            raise MissingFieldError(
                f"monitor '{self.monitor}' ({what}) will not be in the logs when saving every "
                f"{self._every} batches: validation metrics exist only at epoch end; use "
                f"save_freq='epoch', or monitor a training metric such as "
                f"'{self.monitor[4:]}'",
                (self.monitor,),
                (),
            )

    def _resolve_mode(self, *, required: bool) -> str | None:
        if self._mode is not None:
            return self._mode
        direction = _direction_from_model(self._keras_model, self.monitor)
        if direction is None:
            try:
                direction = _resolve_mode_by_name(self.monitor)
            except ValueError:
                if required:
                    raise
                return None
        self._mode = direction
        return direction

    def _seed(self, model: Any) -> None:
        """Seed the global count and the resume position; check the folder."""
        raw = _batch_counter(model)
        resumed = _RESUMED.get(model) if model is not None else None
        fresh_resume = resumed is not None and resumed is not self._resume_seen
        self._resume_seen = resumed

        if raw:
            seed = raw
        elif self._counted_any:
            seed = self._batch
        elif resumed is not None and resumed.resumed:
            seed = resumed.batch
        else:
            seed = 0

        if fresh_resume and resumed is not None and resumed.resumed:
            if raw is not None and raw > 0 and raw != resumed.batch:
                warnings.warn(
                    f"the optimizer has run {raw} batches but checkpoint {resumed.path!r} "
                    f"was saved after {resumed.batch}; counting continues from {raw}, the "
                    "optimizer's count (learning-rate schedules follow it)",
                    CkptnameWarning,
                    stacklevel=3,
                )
            elif raw == 0 and resumed.batch > 0:
                warnings.warn(
                    f"the optimizer's batch counter is 0 after resuming from {resumed.path!r} "
                    f"(saved after {resumed.batch} batches): its state was not in the "
                    f"checkpoint; counting continues from {resumed.batch}, but learning-rate "
                    "schedules restart",
                    CkptnameWarning,
                    stacklevel=3,
                )

        # Where the count stands inside an epoch: this callback's own position
        # (a second fit in this process), else the resumed checkpoint's.
        position: _Position | None = None
        if self._counted_any and seed == self._batch:
            position = _Position(
                self._epoch, self._batch, self._offset + self._done, self._complete
            )
        elif resumed is not None and resumed.resumed and resumed.batch == seed:
            position = _Position(
                max(resumed.epoch - 1, 0),
                resumed.batch,
                resumed.batch_in_epoch,
                resumed.end_of_epoch,
                resumed.metric_state or None,
            )
            if resumed.path is not None:
                self._protect.add(_norm(resumed.path))
        self._batch = seed

        if self._is_chief:
            records = self._records()
            self._clean_temp_files(records)
            later = None
            latest_epoch_unknown_batch = 0
            for rec in records:
                rec_batch = _record_batch(rec)
                if rec_batch is None:
                    latest_epoch_unknown_batch = max(latest_epoch_unknown_batch, rec.epoch or 0)
                elif rec_batch > seed and (later is None or rec_batch > later[1]):
                    later = (rec, rec_batch)
                elif rec_batch == seed and seed > 0:
                    # The checkpoint the counters continue from: never pruned.
                    self._protect.add(_norm(rec.path))
                    if position is None:
                        position = self._position_from_record(rec)
            if later is not None:
                rec, rec_batch = later
                raise CheckpointError(
                    f"folder {self._root!r} already holds checkpoint {rec.name!r} of template "
                    f"'{self.template.text}' from batch {rec_batch}, later than this run's "
                    f"batch count {seed}; resume from it "
                    f"(ckptname.keras.resume(model, {self._root!r})) or use another folder"
                )
            self._first_epoch_check = latest_epoch_unknown_batch or None
            self._restore_best(records)
        self._pending = position

    def _records(self) -> list[Any]:
        from . import scan

        try:
            return list(scan(self._root, self.template))
        except FileNotFoundError:
            return []

    def _position_from_record(self, rec: Any) -> _Position | None:
        try:
            meta = read_metadata(rec.path)
        except (FileNotFoundError, MetadataError):
            return None
        epoch = meta.get("epoch")
        bie = meta.get("batch_in_epoch")
        if not isinstance(epoch, int) or not isinstance(bie, int):
            return None
        state = meta.get("metric_state")
        return _Position(
            max(epoch - 1, 0),
            int(meta.get("batch", 0)),
            bie,
            bool(meta.get("end_of_epoch")),
            state if isinstance(state, dict) and state else None,
        )

    def _clean_temp_files(self, records: Sequence[Any]) -> None:
        """Remove what a killed save of this template left behind.

        Run at ``on_train_begin``, after the folder's lock is taken (so no
        live run of this folder is saving). In the root and in every folder
        that holds a checkpoint of the template, it removes:

        * temporary files (``.ckptname-tmp-<id>-<name>``) of this template's
          checkpoints and of their sidecars, and of the state file;
        * temporary lock files older than a minute (a run killed while taking
          the lock; younger ones may belong to a run taking it right now);
        * sidecars whose checkpoint does not exist (a save killed before its
          rename, or a prune killed between a checkpoint and its sidecar).

        Scanning ignores all of these anyway; removing them keeps the folder
        as an uninterrupted run leaves it. Other templates' files are left
        alone.
        """
        last = self.template.segments[-1]
        folders = {self._inner_root}
        for rec in records:
            folders.add(os.path.dirname(_inner_path(rec.path, self._storage)))
        for folder in folders:
            try:
                entries = list(self._storage.listdir(folder))
            except OSError:
                continue
            present = {entry.name for entry in entries}
            for entry in entries:
                name = entry.name
                if entry.is_dir or not is_reserved(name):
                    continue
                doomed = False
                if name.startswith(TMP_PREFIX):
                    # `.ckptname-tmp-<hex id>-<final name>`
                    _, _, final = name[len(TMP_PREFIX) :].partition("-")
                    if final == LOCK_NAME:
                        doomed = _older_than(self._storage, self._storage.join(folder, name), 60)
                    else:
                        doomed = final == STATE_NAME or (
                            last.parse(final.removesuffix(SIDECAR_SUFFIX)) is not None
                        )
                elif name.endswith(SIDECAR_SUFFIX):
                    checkpoint = name[: -len(SIDECAR_SUFFIX)]
                    doomed = checkpoint not in present and last.parse(checkpoint) is not None
                if doomed:
                    with contextlib.suppress(OSError):
                        self._storage.remove(self._storage.join(folder, name))

    def _restore_best(self, records: Sequence[Any]) -> None:
        mode = self._mode
        if mode is None or not records:
            return
        restored: tuple[float, str] | None = None
        state = self._read_state()
        best = state.get("best") if state else None
        names = {rec.name for rec in records}
        if (
            state is not None
            and state.get("template") == self.template.text
            and isinstance(best, dict)
            and best.get("monitor") == self.monitor
            and best.get("mode") == mode
            and best.get("name") in names
            and isinstance(best.get("value"), (int, float))
        ):
            restored = (float(best["value"]), str(best["name"]))
        elif self.save_best_only or self.keep_best is not None:
            for rec in records:
                try:
                    value = read_metadata(rec.path).get("metrics", {}).get(self.monitor)
                except (FileNotFoundError, MetadataError):
                    value = rec.values.get(self.monitor)
                usable = isinstance(value, (int, float)) and not math.isnan(value)
                if usable and (restored is None or _better(mode, float(value), restored[0])):
                    restored = (float(value), rec.name)
        if restored is None:
            return
        # The threshold is a bar to beat, not a checkpoint: keep it only where it
        # is better than what the folder already holds.
        threshold = self.initial_value_threshold
        if threshold is None or not _better(mode, float(threshold), restored[0]):
            self.best, self._best_name = restored

    def _best_of(self, records: Sequence[Any]) -> None:
        """Make the best of ``records`` by the monitor the tracked best (``None`` if none)."""
        self.best, self._best_name = None, None
        mode = self._mode
        if mode is None:
            return
        for rec in records:
            value = (rec.metadata or {}).get("metrics", {}).get(self.monitor)
            if not _is_number(value) or math.isnan(value):
                continue
            if self.best is None or _better(mode, float(value), self.best):
                self.best, self._best_name = float(value), rec.name

    def _read_state(self) -> dict[str, Any] | None:
        path = self._storage.join(self._inner_root, STATE_NAME)
        try:
            return decode(self._storage.read_bytes(path), f"state file {path!r}")
        except (FileNotFoundError, MetadataError):
            return None

    # ------------------------------------------------------------------ saving

    def _save(self, logs: Mapping[str, Any] | None, *, end_of_epoch: bool) -> None:
        logs = _pythonify(logs)
        extras = self._extras_now()
        for key in extras:
            if key in logs:
                raise ValueError(
                    f"extras key {key!r} is also a key of the logs; rename the extra so "
                    "that the template field is not ambiguous"
                )
        bie = self._offset + self._done
        counters = {"epoch": self._epoch + 1, "batch": self._batch, "batch_in_epoch": bie}
        values = {**logs, **extras, **counters}
        where = f"epoch {self._epoch + 1}, batch {self._batch}"
        try:
            name = self.template.render(values)
        except MissingFieldError as exc:
            hint = ""
            if any(f.startswith("val_") for f in exc.fields):
                hint = (
                    "; validation metrics exist only at epoch end, and only when fit has "
                    "validation data"
                )
            raise MissingFieldError(
                f"no value for {_fields_text(exc.fields)} of template '{self.template.text}' "
                f"at {where} (available: {', '.join(sorted(values))}){hint}",
                exc.fields,
                tuple(sorted(values)),
            ) from None
        path = self._storage.join(self._inner_root, name)
        shown = self._storage.url(path)

        current = self._monitor_value(logs, where)
        improved = False
        mode = self._mode
        if current is not None and mode is not None and not math.isnan(current):
            # NaN is never an improvement (Keras would make it the best, after
            # which nothing compares better and best-only saves stop).
            improved = self.best is None or _better(mode, current, self.best)
        if self.save_best_only:
            if not improved:
                if self.verbose > 0:
                    best_text = "None" if self.best is None else f"{self.best:.5f}"
                    print(
                        f"\nEpoch {self._epoch + 1}: {self.monitor} did not improve from "
                        f"{best_text}"
                    )
                return
            if self.verbose > 0:
                best_text = "None" if self.best is None else f"{self.best:.5f}"
                print(
                    f"\nEpoch {self._epoch + 1}: {self.monitor} improved from {best_text} to "
                    f"{current:.5f}, saving model to {shown}"
                )
        elif self.verbose > 0:
            print(f"\nEpoch {self._epoch + 1}: saving model to {shown}")

        previous_best = (self.best, self._best_name)
        if improved and current is not None:
            self.best, self._best_name = current, name
        if not self._is_chief:
            self._last_path = shown
            return

        model = self._keras_model
        iterations = _public_iterations(model)
        steps = self._epoch_steps
        meta = {
            "format": CHECKPOINT_FORMAT,
            "name": name,
            "template": self.template.text,
            "epoch": self._epoch + 1,
            "batch": self._batch,
            "batch_in_epoch": bie,
            "iterations": iterations,
            "end_of_epoch": bool(end_of_epoch),
            "steps_per_epoch": None if steps is None else self._offset + steps,
            "metrics": {k: v for k, v in logs.items() if _is_number(v)},
            "extras": extras,
            "time": time.time(),
            "ckptname_version": __version__,
            "save_weights_only": self.save_weights_only,
        }
        if not end_of_epoch:
            # Only a resume into the middle of this epoch needs the running
            # sums; end-of-epoch sidecars stay as small as before.
            state = _metric_state(model)
            if state:
                meta["metric_state"] = state
        try:
            self._write_checkpoint(path, name, meta, iterations, mode, previous_best)
        except CheckpointSaveError as exc:
            self.best, self._best_name = previous_best
            if self.on_save_error == "raise":
                raise
            warnings.warn(
                f"{exc}; training continues (on_save_error='warn')",
                CkptnameWarning,
                stacklevel=2,
            )
            return
        self._last_path = shown
        self._saved_this_run = path
        if self.verbose > 0:
            print(f"\nEpoch {self._epoch + 1}: finished saving model to {shown}")
        if self.keep_last is not None or self.keep_best is not None:
            self._prune(path)

    def _monitor_value(self, logs: Mapping[str, Any], where: str) -> float | None:
        needed = self.save_best_only or self.keep_best is not None
        value = logs.get(self.monitor)
        if value is None:
            if not needed:
                return None
            what = "save_best_only" if self.save_best_only else "keep_best"
            hint = ""
            if self.monitor.startswith("val_"):
                hint = "; validation metrics exist only when fit has validation data"
            raise MissingFieldError(
                f"monitor '{self.monitor}' ({what}) is not in the logs at {where} "
                f"(available: {', '.join(sorted(logs)) or 'nothing'}){hint}",
                (self.monitor,),
                tuple(sorted(logs)),
            )
        if not _is_number(value):
            if not needed:
                return None
            raise TypeError(
                f"monitor '{self.monitor}' is {value!r} at {where}; it must be a single "
                "number to compare checkpoints by"
            )
        if self._mode is None and needed:
            self._resolve_mode(required=True)
        return float(value)

    def _write_checkpoint(
        self,
        path: str,
        name: str,
        meta: dict[str, Any],
        iterations: int | None,
        mode: str | None,
        previous_best: tuple[float | None, str | None],
    ) -> None:
        """Write a checkpoint, its sidecar and the state file: all or nothing.

        Locally, the order makes a kill at any moment safe:

        1. the model is written (and flushed) under a temporary name;
        2. the sidecar is written under a temporary name and renamed into place;
        3. the state file is rewritten to name the new checkpoint;
        4. the model is renamed to its name.

        Killed before 4, the folder holds no file under the checkpoint's name,
        only a temporary file and a sidecar without its checkpoint (removed
        at the next ``on_train_begin``, ignored by scanning meanwhile) and a
        state file naming a missing file (readers then list the folder). After
        4 the checkpoint is complete, has its sidecar, and the state names it.

        Where the name already holds a checkpoint (a template without
        counters, such as ``best.keras``), the old sidecar is removed first and
        the new one is renamed into place right after the model: a kill
        between those two renames leaves the new checkpoint without a sidecar
        (its counters are then read from its name).

        On an object store the model is uploaded, then the sidecar (its commit
        marker), then the state file.

        A failed step removes what this save wrote and puts the state file
        back as it was, then raises :class:`~ckptname.CheckpointSaveError`.
        """
        storage = self._storage
        side = sidecar_path(path)
        data = encode(meta)
        previous_entry = self._latest_entry
        entry = {
            "name": name,
            "epoch": meta["epoch"],
            "batch": meta["batch"],
            "batch_in_epoch": meta["batch_in_epoch"],
            "iterations": iterations,
        }
        if storage.remote:
            self._write_checkpoint_remote(path, side, data, entry, mode)
            return
        folder = os.path.dirname(path)
        if folder:
            _step("create the folder", folder, os.makedirs, folder, exist_ok=True)
        overwrite = os.path.lexists(path)
        # Same folder (so the rename is atomic), a name no template matches
        # (reserved prefix), and the real suffix (so Keras accepts it).
        tmp: str | None = _temp_name(path)
        side_tmp: str | None = None
        side_placed = state_written = renamed = False
        try:
            if os.path.lexists(side):
                # An older checkpoint's sidecar would describe the new file.
                _step("remove the old sidecar", side, os.remove, side)
            _step("write the checkpoint", path, self._keras_save, tmp)
            if self.fsync:
                _step("flush the checkpoint to disk", path, _fsync_file, tmp)
            side_tmp = _step("write the sidecar", side, _write_temp_file, side, data)
            if not overwrite:
                _step("write the sidecar", side, os.replace, side_tmp, side)
                side_tmp, side_placed = None, True
            self._latest_entry = entry
            self._write_state(mode)
            state_written = True
            _step("rename the checkpoint into place", path, os.replace, tmp, path)
            tmp, renamed = None, True
            if side_tmp is not None:
                _step("write the sidecar", side, os.replace, side_tmp, side)
                side_tmp = None
        except BaseException as exc:
            for leftover in (tmp, side_tmp):
                if leftover is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(leftover)
            if isinstance(exc, CheckpointSaveError):
                # All or nothing: a checkpoint whose save did not finish is
                # not left for a resume to pick.
                for done, target in ((side_placed, side), (renamed, path)):
                    if done:
                        with contextlib.suppress(OSError):
                            os.unlink(target)
                self._latest_entry = previous_entry
                if state_written:
                    self.best, self._best_name = previous_best
                    with contextlib.suppress(OSError):
                        self._write_state(mode)
            raise

    def _write_checkpoint_remote(
        self, path: str, side: str, data: bytes, entry: dict[str, Any], mode: str | None
    ) -> None:
        storage = self._storage
        created = False
        try:
            if storage.exists(side):
                _step("remove the old sidecar", side, storage.remove, side)
            self._save_remote(path)
            created = True
            _step("write the sidecar", side, storage.write_bytes, side, data)
            self._latest_entry = entry
            self._write_state(mode)
        except CheckpointSaveError:
            if created:
                for leftover in (side, path):
                    with contextlib.suppress(OSError):
                        storage.remove(leftover)
            raise

    def _write_state(self, mode: str | None) -> None:
        """Write the folder's state file: template, latest, best."""
        storage = self._storage
        state = {
            "format": STATE_FORMAT,
            "template": self.template.text,
            "latest": self._latest_entry,
            "best": None
            if self._best_name is None or mode is None
            else {
                "name": self._best_name,
                "monitor": self.monitor,
                "mode": mode,
                "value": self.best,
            },
            "time": time.time(),
        }
        path = storage.join(self._inner_root, STATE_NAME)
        data = encode(state)
        if storage.remote:
            _step("write the state file", path, storage.write_bytes, path, data)
        else:
            _step("write the state file", path, _write_small_file, path, data)

    def _save_remote(self, path: str) -> None:
        folder = tempfile.mkdtemp(prefix="ckptname-")
        try:
            local = os.path.join(folder, os.path.basename(path))
            _step("write the checkpoint", path, self._keras_save, local)
            _step("upload the checkpoint", path, self._storage.put_file, local, path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _keras_save(self, target: str) -> None:
        model = self._keras_model
        with _saving_cache():
            if self.save_weights_only:
                model.save_weights(target, overwrite=True)
            else:
                model.save(target, overwrite=True)

    def _prune(self, newest: str) -> None:
        from . import apply_retention, plan_retention

        try:
            records = self._records()
            if self.keep_best is not None:
                # Names round metrics; the sidecars hold the exact values that
                # break ties between equal names.
                records = [_with_sidecar(rec) for rec in records]
            plan = plan_retention(
                records,
                keep_last=self.keep_last,
                keep_best=self.keep_best,
                monitor=self.monitor if self.keep_best is not None else None,
                mode=self._mode or self.mode,
                protect=(self._storage.url(newest), *sorted(self._protect)),
            )
            apply_retention(plan, self._root, template=self.template)
            if self._best_name is not None and any(
                rec.name == self._best_name for rec in plan.delete
            ):
                # keep_last alone may prune the best: the state file must name
                # a checkpoint that exists, so take the best of those kept.
                self._best_of([_with_sidecar(rec) for rec in plan.keep])
                self._write_state(self._mode)
        except OSError as exc:
            err = CheckpointSaveError(
                f"pruning old checkpoints of '{self.template.text}' in {self._root!r} failed: {exc}"
            )
            if self.on_save_error == "raise":
                raise err from exc
            warnings.warn(
                f"{err}; training continues (on_save_error='warn')", CkptnameWarning, stacklevel=3
            )


# --------------------------------------------------------------------------- resume


def resume(
    model: Any,
    directory: str | os.PathLike[str],
    *,
    template: str | Template | None = None,
) -> ResumePoint:
    """Load the latest complete checkpoint into ``model``; say where training stands.

    Weights and, where the checkpoint holds it, the optimizer state (its
    ``iterations`` included) are restored; the model must be built and
    compiled as it was when saved. The point is remembered for ``model`` so
    that a :class:`BatchAwareCheckpoint` picks the counters up.

    Args:
        model: a built (and, to restore the optimizer, compiled) Keras model.
        directory: the checkpoint folder, or the callback's ``filepath``
            (its template then says which checkpoints to consider).
        template: the names to consider, relative to ``directory``; by default
            the one in ``filepath``, else the one in the folder's state file.

    Returns:
        A :class:`ResumePoint`; for a folder with no checkpoint (or none yet),
        a fresh start (``path=None``, ``initial_epoch=0``).

    Raises:
        ValueError: the model is not built.
        CheckpointError: the folder's checkpoints cannot be told apart
            (propagated from the scan).
    """
    text = os.fspath(directory)
    root = text
    if template is None and _has_fields(text):
        root, template = split_filepath(text)
    from . import find_latest

    if not getattr(model, "built", False):
        raise ValueError(
            "the model must be built before resume() can load weights into it; call it on "
            "a batch, or give it an Input layer"
        )
    try:
        latest = find_latest(root, template=template)
    except FileNotFoundError:
        latest = None
    except TemplateError:
        # No template and no state file: a folder that nothing was saved into
        # yet is a fresh start; one with files needs the template to be named.
        if template is not None or _holds_files(root):
            raise
        latest = None
    if latest is None:
        point = ResumePoint()
        _RESUMED.pop(model, None)
        return point

    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not getattr(optimizer, "built", True):
        # Keras skips optimizer variables when loading into an unbuilt optimizer.
        optimizer.build(model.trainable_variables)
    path = str(latest.path)
    storage, inner = storage_for(path)
    if storage.remote:
        folder = tempfile.mkdtemp(prefix="ckptname-")
        try:
            local = os.path.join(folder, os.path.basename(inner))
            with open(local, "wb") as fh:
                fh.write(storage.read_bytes(inner))
            model.load_weights(local)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        model.load_weights(inner)

    try:
        meta = read_metadata(path)
    except (FileNotFoundError, MetadataError) as exc:
        warnings.warn(
            f"{exc}; counters are read from the name of {path!r} instead",
            CkptnameWarning,
            stacklevel=2,
        )
        meta = {}
    values = dict(getattr(latest, "values", {}) or {})
    epoch = _first_int(meta.get("epoch"), getattr(latest, "epoch", None), 0)
    batch = _first_int(meta.get("batch"), getattr(latest, "batch", None), None)
    if batch is None:
        batch = _batch_counter(model) or 0
    bie = _first_int(meta.get("batch_in_epoch"), getattr(latest, "batch_in_epoch", None), 0)
    # Without a sidecar, a checkpoint is taken to close its epoch: that is what
    # names without a batch field (Keras's epoch saves) mean.
    end_of_epoch = bool(meta.get("end_of_epoch", "end_of_epoch" not in meta))
    recorded_iterations = meta.get("iterations")
    point = ResumePoint(
        path=path,
        epoch=epoch,
        batch=batch,
        batch_in_epoch=bie,
        end_of_epoch=end_of_epoch,
        iterations=recorded_iterations if isinstance(recorded_iterations, int) else None,
        steps_per_epoch=_first_int(meta.get("steps_per_epoch"), None, None),
        metrics=dict(meta.get("metrics") or {}),
        extras=dict(meta.get("extras") or {}),
        metric_state=dict(meta.get("metric_state") or {}),
    )
    if not meta:
        point = _with_values(point, values)
    _RESUMED[model] = point
    return point


def _with_values(point: ResumePoint, values: Mapping[str, Any]) -> ResumePoint:
    metrics = {k: v for k, v in values.items() if k not in COUNTER_FIELDS and _is_number(v)}
    return ResumePoint(
        path=point.path,
        epoch=point.epoch,
        batch=point.batch,
        batch_in_epoch=point.batch_in_epoch,
        end_of_epoch=point.end_of_epoch,
        iterations=point.iterations,
        steps_per_epoch=point.steps_per_epoch,
        metrics=metrics,
        extras=point.extras,
        metric_state=point.metric_state,
    )


def fit_resumed(
    model: Any,
    x: Any = None,
    y: Any = None,
    *,
    resume: ResumePoint | None,
    epochs: int = 1,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    shuffle: bool | str = True,
    sample_weight: Any = None,
    validation_split: float = 0.0,
    validation_data: Any = None,
    **fit_kwargs: Any,
) -> Any:
    """``model.fit`` that continues exactly where ``resume`` says training stopped.

    A checkpoint from the end of an epoch needs only ``initial_epoch``, and this
    is one ``fit``. A checkpoint from inside epoch *e* after *k* of its batches
    is finished first: one ``fit`` of epoch *e* over its remaining batches
    (validation and epoch-end callbacks included), then one ``fit`` from epoch
    *e + 1* to ``epochs``. The run then ends with the same
    ``optimizer.iterations``, the same global batch counts and the same
    checkpoint names as one that was never interrupted; where the input order
    is deterministic it also sees the same batches:

    ==============================  ===============================================
    input                           the rest of the interrupted epoch
    ==============================  ===============================================
    NumPy arrays, ``shuffle=False``  the samples after the first *k* batches: the
                                    same batches
    NumPy arrays, shuffled          *k* batches' worth fewer samples, drawn from a
                                    fresh shuffle (which samples the lost epoch had
                                    seen is not recorded anywhere)
    finite ``tf.data.Dataset``      ``dataset.skip(k)``, an epoch being one pass
    ``tf.data`` with                the stream after the *batch*-th element
    ``steps_per_epoch``             (``.repeat()``-ed if finite), so epochs keep
                                    cutting the stream where they did
    ==============================  ===============================================

    Args:
        model: the compiled model, after :func:`resume`.
        x, y, batch_size, shuffle, sample_weight, validation_split,
            validation_data, steps_per_epoch: as for ``model.fit``.
        resume: what :func:`resume` returned (``None`` or a fresh start: a plain
            ``fit``).
        epochs: the total number of epochs of the run, as for ``model.fit``.
        **fit_kwargs: passed to every ``model.fit`` call (``callbacks``,
            ``verbose``, ``class_weight``, ``validation_freq`` ...). Callbacks
            see two ``fit`` calls when an epoch is finished first; a
            :class:`BatchAwareCheckpoint` among them keeps the folder's lock
            across both, and gives it back when ``fit_resumed`` returns or
            raises.

    Returns:
        A ``keras.callbacks.History`` holding the epochs of all the ``fit`` calls.

    Raises:
        TypeError: an input other than arrays or a ``tf.data.Dataset`` with a
            mid-epoch resume point.
        ValueError: ``initial_epoch`` given (it comes from ``resume``), or a
            combination whose epochs cannot be cut again where they were.
    """
    if "initial_epoch" in fit_kwargs:
        raise ValueError(
            "fit_resumed takes the initial epoch from `resume`; do not pass initial_epoch"
        )
    given = fit_kwargs.get("callbacks") or []
    ours = [cb for cb in getattr(given, "callbacks", given) if isinstance(cb, BatchAwareCheckpoint)]
    # The folder's lock is kept from the first fit's train begin to the end
    # of the last fit (no other run can slip in between), and given back here
    # also when a fit raises: Keras has no `finally` around `fit`.
    for cb in ours:
        cb._lock_hold += 1
    try:
        return _fit_resumed(
            model,
            x,
            y,
            resume,
            epochs,
            batch_size,
            steps_per_epoch,
            shuffle,
            sample_weight,
            validation_split,
            validation_data,
            fit_kwargs,
        )
    finally:
        for cb in ours:
            cb._lock_hold -= 1
            if not cb._lock_hold:
                cb._release_lock()


def _fit_resumed(
    model: Any,
    x: Any,
    y: Any,
    resume: ResumePoint | None,
    epochs: int,
    batch_size: int | None,
    steps_per_epoch: int | None,
    shuffle: bool | str,
    sample_weight: Any,
    validation_split: float,
    validation_data: Any,
    fit_kwargs: dict[str, Any],
) -> Any:
    common = dict(fit_kwargs, validation_data=validation_data)
    point = resume if resume is not None else ResumePoint()
    epoch_index = point.initial_epoch

    def fit(x_: Any, y_: Any, first: int, last: int, **kw: Any) -> Any:
        return model.fit(x_, y_, initial_epoch=first, epochs=last, **common, **kw)

    if not point.mid_epoch or epoch_index >= epochs:
        return fit(
            x,
            y,
            epoch_index,
            epochs,
            batch_size=batch_size,
            steps_per_epoch=steps_per_epoch,
            shuffle=shuffle,
            sample_weight=sample_weight,
            validation_split=validation_split,
        )

    k = point.batch_in_epoch
    tf = _tensorflow()
    if isinstance(x, tf.data.Dataset):
        if y is not None or sample_weight is not None or validation_split:
            raise ValueError(
                "with a tf.data.Dataset, y, sample_weight and validation_split are not "
                "accepted (as in model.fit)"
            )
        rest, cont = _dataset_parts(tf, x, point, steps_per_epoch)
        first_kw: dict[str, Any] = {}
        if steps_per_epoch is not None:
            first_kw["steps_per_epoch"] = steps_per_epoch - k
        histories = []
        if rest is not None:
            histories.append(fit(rest, None, epoch_index, epoch_index + 1, **first_kw))
        if epoch_index + 1 < epochs:
            histories.append(
                fit(cont, None, epoch_index + 1, epochs, steps_per_epoch=steps_per_epoch)
            )
        return _merge_histories(histories, model)

    if steps_per_epoch is not None:
        raise ValueError(
            "fit_resumed cuts NumPy arrays into epochs of whole passes; with steps_per_epoch, "
            "give a tf.data.Dataset (tf.data.Dataset.from_tensor_slices((x, y)).batch(n))"
        )
    n = _num_samples(x)
    if n is None:
        raise TypeError(
            "fit_resumed finishes an interrupted epoch for NumPy arrays (or lists and dicts "
            f"of them) and tf.data datasets; got {type(x).__name__}"
        )
    if validation_split and validation_data is None:
        # Split before cutting the epoch, exactly where Keras would.
        split_at = math.floor(n * (1.0 - validation_split))
        train = slice(0, split_at)
        held = slice(split_at, n)
        common["validation_data"] = tuple(
            part
            for part in (_take(x, held), _take(y, held), _take(sample_weight, held))
            if part is not None
        )
        x, y, sample_weight = _take(x, train), _take(y, train), _take(sample_weight, train)
        n = split_at
    size = batch_size or 32
    steps = math.ceil(n / size)
    histories = []
    if k < steps:
        order = np.random.permutation(n) if shuffle else np.arange(n)
        rest_idx = order[k * size :]
        histories.append(
            fit(
                _take(x, rest_idx),
                _take(y, rest_idx),
                epoch_index,
                epoch_index + 1,
                batch_size=size,
                shuffle=shuffle,
                sample_weight=_take(sample_weight, rest_idx),
            )
        )
    if epoch_index + 1 < epochs:
        histories.append(
            fit(
                x,
                y,
                epoch_index + 1,
                epochs,
                batch_size=size,
                shuffle=shuffle,
                sample_weight=sample_weight,
            )
        )
    return _merge_histories(histories, model)


def _dataset_parts(
    tf: Any, ds: Any, point: ResumePoint, steps_per_epoch: int | None
) -> tuple[Any, Any]:
    """The rest of the interrupted epoch and the input for the epochs after it."""
    k = point.batch_in_epoch
    card = int(ds.cardinality())
    infinite = card == int(tf.data.INFINITE_CARDINALITY)
    unknown = card == int(tf.data.UNKNOWN_CARDINALITY)
    if steps_per_epoch is None:
        if infinite:
            raise ValueError("an infinite dataset needs steps_per_epoch (as in model.fit)")
        # An epoch is one pass; the next epoch starts a fresh pass.
        if not unknown and k >= card:
            return None, ds
        return ds.skip(k), ds
    if k >= steps_per_epoch:
        return None, ds
    # Keras keeps one iterator across epochs when steps_per_epoch is given:
    # epochs are consecutive cuts of the stream, and the global batch count is
    # the position in it.
    if infinite or unknown:
        stream, pos = ds, point.batch
        return stream.skip(pos), stream.skip(pos + steps_per_epoch - k)
    if card % steps_per_epoch:
        raise ValueError(
            f"a dataset of {card} batches with steps_per_epoch={steps_per_epoch}: Keras cuts "
            "the last epoch of each pass short, which a resume cannot reproduce; use a "
            "steps_per_epoch that divides the number of batches, or .repeat() the dataset"
        )
    stream = ds.repeat()
    pos = point.batch % card
    return stream.skip(pos), stream.skip((pos + steps_per_epoch - k) % card)


def _merge_histories(histories: Sequence[Any], model: Any) -> Any:
    if not histories:
        return keras.callbacks.History()
    last = histories[-1]
    if len(histories) > 1:
        merged: dict[str, list[Any]] = {}
        epochs: list[int] = []
        for h in histories:
            for key, values in h.history.items():
                merged.setdefault(key, []).extend(values)
            epochs.extend(h.epoch)
        last.history = merged
        last.epoch = epochs
    return last


# --------------------------------------------------------------------------- helpers


def split_filepath(filepath: str) -> tuple[str, Template]:
    """Split a callback filepath into its fixed folder and the template below it.

    ==================================  ==============  =========================
    filepath                            folder          template
    ==================================  ==============  =========================
    ``ckpts/b{batch}.keras``            ``ckpts``       ``b{batch}.keras``
    ``/runs/a/lr{lr}/b{batch}.keras``   ``/runs/a``     ``lr{lr}/b{batch}.keras``
    ``b{batch}.keras``                  ``.``           ``b{batch}.keras``
    ``s3://bk/run/b{batch}.keras``      ``s3://bk/run``  ``b{batch}.keras``
    ``ckpts/best.keras``                ``ckpts``       ``best.keras``
    ==================================  ==============  =========================

    Raises:
        TemplateError: ``filepath`` is not a valid template.
    """
    segments = Template(filepath).segments
    first = next((i for i, seg in enumerate(segments) if seg.fields), len(segments) - 1)
    root = "/".join(seg.render({}) for seg in segments[:first])
    if not root and first > 0:
        root = "/"  # an absolute path: the empty part before the first '/'
    rel = "/".join(seg.text for seg in segments[first:])
    return root or ".", Template(rel)


def _holds_files(root: str) -> bool:
    storage, inner = storage_for(root)
    try:
        return any(not is_reserved(entry.name) for entry in storage.listdir(inner or "."))
    except OSError:
        return False


def _has_fields(text: str) -> bool:
    try:
        return bool(Template(text).fields)
    except TemplateError:
        return False


def _check_extras_keys(extras: Mapping[Any, Any]) -> None:
    for key in extras:
        if key in COUNTER_FIELDS:
            raise ValueError(
                f"extras key {key!r} is a counter the callback fills itself "
                f"({', '.join(COUNTER_FIELDS)}); rename the extra"
            )


def _jsonable(key: Any, value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    elif hasattr(value, "numpy") and callable(value.numpy):
        value = np.asarray(value.numpy())
        value = value.item() if value.ndim == 0 else value.tolist()
    elif isinstance(value, np.ndarray):
        value = value.item() if value.ndim == 0 else value.tolist()
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        raise TypeError(
            f"extras value for {key!r} is a {type(value).__name__}, which cannot be stored as "
            "JSON; pass numbers, strings, booleans, None, or lists and dicts of them"
        ) from None
    return value


def _pythonify(logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Logs as plain Python numbers (a hand-written loop may pass tensors)."""
    if not logs:
        return {}
    out: dict[str, Any] = {}
    for key, value in logs.items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[key] = value
            continue
        try:
            arr = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        except Exception:  # keep a value that does not convert as it is
            out[key] = value
            continue
        out[key] = arr.item() if arr.ndim == 0 and arr.dtype.kind in "iuf" else value
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _better(mode: str, value: float, best: float) -> bool:
    return value < best if mode == "min" else value > best


def _fields_text(fields: Sequence[str]) -> str:
    names = ", ".join(f"'{f}'" for f in fields)
    return f"field {names}" if len(fields) == 1 else f"fields {names}"


def _first_int(*candidates: Any) -> Any:
    for c in candidates:
        if isinstance(c, int) and not isinstance(c, bool):
            return c
    return candidates[-1]


def _norm(path: str) -> str:
    return path if "://" in path else os.path.normpath(path)


def _inner_path(path: str, storage: Storage) -> str:
    return storage_for(path)[1] if storage.remote else path


def _record_batch(rec: Any) -> int | None:
    batch = getattr(rec, "batch", None)
    if isinstance(batch, int):
        return batch
    try:
        value = read_metadata(rec.path).get("batch")
    except (FileNotFoundError, MetadataError):
        return None
    return value if isinstance(value, int) else None


def _with_sidecar(rec: Any) -> Any:
    if rec.metadata is not None:
        return rec
    try:
        return dataclasses.replace(rec, metadata=read_metadata(rec.path))
    except (FileNotFoundError, MetadataError):
        return rec


def _step(what: str, path: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one I/O step; an ``OSError`` becomes a ``CheckpointSaveError`` naming the step."""
    try:
        return fn(*args, **kwargs)
    except OSError as exc:
        if isinstance(exc, CheckpointSaveError):
            raise
        cause = exc.strerror or str(exc) or type(exc).__name__
        err = CheckpointSaveError(f"could not {what} {path!r}: {cause}")
        # errno alone keeps `except OSError as e: e.errno == ENOSPC` working;
        # setting filename or strerror too would make OSError rewrite the message.
        err.errno = exc.errno
        raise err from exc


def _temp_name(path: str) -> str:
    """``<folder>/.ckptname-tmp-<id>-<name>``: same folder, a name no template matches."""
    folder, base = os.path.split(path)
    return os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{base}")


def _write_temp_file(path: str, data: bytes) -> str:
    """Write ``data`` under a temporary name next to ``path``; return that name.

    Not flushed to disk: sidecars and the state file are small, rebuilt from
    the names if a power loss empties them, and a flush per save would cost
    more than the rest of the bookkeeping together.
    """
    tmp = _temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _write_small_file(path: str, data: bytes) -> None:
    """Write a sidecar or state file under a temporary name, then rename it into place."""
    tmp = _write_temp_file(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _older_than(storage: Storage, path: str, seconds: float) -> bool:
    entry = storage.stat(path)
    mtime = getattr(entry, "mtime", None)
    return isinstance(mtime, (int, float)) and time.time() - mtime > seconds


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _batch_counter(model: Any) -> int | None:
    """How many batches the model's optimizer has applied, or ``None`` without one.

    With gradient accumulation ``optimizer.iterations`` counts updates, not
    batches; the raw counter underneath counts batches. A loss-scale wrapper
    delegates to its inner optimizer.
    """
    opt = getattr(model, "optimizer", None)
    if opt is None:
        return None
    while hasattr(opt, "inner_optimizer"):
        opt = opt.inner_optimizer
    var = getattr(opt, "_iterations", None)
    if var is None:
        var = getattr(opt, "iterations", None)
    if var is None:
        return None
    return _int_of(var)


def _int_of(variable: Any) -> int | None:
    """The value of a scalar counter variable (read directly: half the cost of a conversion)."""
    try:
        read = getattr(variable, "numpy", None)
        return int(read() if read is not None else keras.ops.convert_to_numpy(variable))
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def _saving_cache() -> Iterator[None]:
    """Let Keras reuse the attribute skip-sets it computes on every save.

    Keras 3 (3.15) caches the sets of attributes its saver skips under
    ``saving_attr_skipset_<type>`` but looks them up under
    ``saving_attr_skiplist_<type>``, so each save builds reference layers and
    optimizers again: about a third of the time of a small model's
    ``model.save`` and half of ``save_weights``. For the duration of our own
    save, the sets Keras already computed are also put where it looks; they
    depend only on Keras's base classes, so reusing them changes nothing but
    the time. Afterwards Keras's state is as it was, so other code in the
    process sees stock Keras. Where the names match (a fixed Keras) or the
    internals differ, this does nothing.
    """
    added: list[str] = []
    try:
        from keras.src.backend.common import global_state

        tracker = vars(global_state.GLOBAL_STATE_TRACKER)
        for key in list(tracker):
            if key.startswith("saving_attr_skipset_") and tracker[key] is not None:
                alias = "saving_attr_skiplist_" + key[len("saving_attr_skipset_") :]
                if tracker.get(alias) is None:
                    tracker[alias] = tracker[key]
                    added.append(alias)
    except (ImportError, AttributeError, TypeError):
        added = []
    try:
        yield
    finally:
        if added:
            tracker = vars(global_state.GLOBAL_STATE_TRACKER)
            for alias in added:
                tracker.pop(alias, None)


def _metric_state(model: Any) -> dict[str, list[Any]] | None:
    """The values of the variables of ``model.metrics``, by metric name, as JSON lists.

    These are the running sums behind the means Keras logs for the current
    epoch (``loss``: ``[total, count]``; compiled metrics: each metric's
    variables in order). Read only at saves; a model whose metrics cannot be
    read gives ``None`` (the sidecar then has no ``metric_state``).
    """
    try:
        metrics = list(model.metrics)
    except Exception:  # no model, or one without compiled metrics
        return None
    state: dict[str, list[Any]] = {}
    for metric in metrics:
        name = getattr(metric, "name", None)
        variables = getattr(metric, "variables", None)
        if not isinstance(name, str) or not variables or name in state:
            continue
        try:
            values = [np.asarray(_variable_value(v)) for v in variables]
        except Exception:  # a variable that does not read back: leave the metric out
            continue
        state[name] = [a.item() if a.ndim == 0 else a.tolist() for a in values]
    return state or None


def _variable_value(variable: Any) -> Any:
    # `.numpy()` where the backend has it: converting the variable itself makes
    # NumPy 2 warn about TensorFlow's `__array__`.
    read = getattr(variable, "numpy", None)
    return read() if read is not None else keras.ops.convert_to_numpy(variable)


def _restore_metric_state(
    model: Any, state: Mapping[str, Any], epoch: int, *, final: bool
) -> list[str]:
    """Put recorded metric variables back (see :func:`_metric_state`).

    Returns the names of the recorded metrics whose variables do not exist
    yet (Keras builds compiled metrics lazily); with ``final`` those are
    reported instead. A metric whose recorded values do not fit its
    variables (the model was compiled with other metrics) is left as Keras
    reset it, with a :class:`~ckptname.CkptnameWarning`: its mean then covers
    only the batches after the resume. Metrics the record does not name are
    left alone silently.
    """
    try:
        metrics = list(model.metrics)
    except Exception:  # no metrics to restore into
        metrics = []
    skipped: list[str] = []
    unbuilt: list[str] = []
    for metric in metrics:
        name = getattr(metric, "name", None)
        values = state.get(name) if isinstance(name, str) else None
        if values is None:
            continue
        variables = list(getattr(metric, "variables", None) or [])
        if not variables and not final:
            unbuilt.append(str(name))
            continue
        arrays = []
        if isinstance(values, list) and len(values) == len(variables):
            for var, value in zip(variables, values, strict=True):
                try:
                    arr = np.asarray(value, dtype=keras.backend.standardize_dtype(var.dtype))
                except (TypeError, ValueError):
                    break
                if tuple(arr.shape) != tuple(var.shape):
                    break
                arrays.append(arr)
        if not variables or len(arrays) != len(variables):
            skipped.append(str(name))
            continue
        for var, arr in zip(variables, arrays, strict=True):
            var.assign(arr)
    if skipped:
        warnings.warn(
            f"the running values of {', '.join(repr(s) for s in skipped)} recorded in the "
            f"checkpoint do not fit the model's metrics; their means in epoch {epoch + 1} "
            "cover only the batches after the resume",
            CkptnameWarning,
            stacklevel=3,
        )
    return unbuilt


def _public_iterations(model: Any) -> int | None:
    opt = getattr(model, "optimizer", None)
    if opt is None or getattr(opt, "iterations", None) is None:
        return None
    return _int_of(opt.iterations)


def _direction_from_model(model: Any, monitor: str) -> str | None:
    """The direction Keras itself knows for a compiled metric (``_direction``)."""
    name = monitor.removeprefix("val_")
    if name == "loss":
        return "min"
    if model is None:
        return None
    try:
        metrics = list(model.metrics)
    except Exception:  # a model without metrics: decide by name
        return None
    flat: list[Any] = []
    for m in metrics:
        flat.extend(getattr(m, "metrics", None) or [m])
    for m in flat:
        if getattr(m, "name", None) == name:
            direction = getattr(m, "_direction", None)
            if direction == "up":
                return "max"
            if direction == "down":
                return "min"
    return None


def _resolve_mode_by_name(monitor: str) -> str:
    from . import resolve_mode

    mode: str = resolve_mode(monitor, "auto")
    return mode


def _is_chief() -> bool:
    """Whether this process is the one that writes, from the cluster configuration."""
    if keras.backend.backend() == "jax":
        import jax  # type: ignore[import-not-found,unused-ignore]  # only on the JAX backend

        return bool(jax.process_index() == 0)
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return True
    try:
        config = json.loads(raw)
    except ValueError:
        return True
    task = config.get("task") or {}
    kind = task.get("type")
    if kind in (None, "chief"):
        return True
    if kind == "worker":
        return int(task.get("index", 0)) == 0 and "chief" not in (config.get("cluster") or {})
    return False


def _tensorflow() -> Any:
    import tensorflow as tf

    return tf


def _num_samples(x: Any) -> int | None:
    leaves = keras.tree.flatten(x) if x is not None else []
    for leaf in leaves:
        if isinstance(leaf, np.ndarray) or hasattr(leaf, "shape"):
            shape = getattr(leaf, "shape", None)
            if shape is not None and len(shape) > 0 and shape[0] is not None:
                return int(shape[0])
    return None


def _take(data: Any, index: Any) -> Any:
    if data is None:
        return None
    return keras.tree.map_structure(lambda a: a[index], data)
