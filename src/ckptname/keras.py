"""Keras integration: a checkpoint callback with global batch names, and exact resume.

:class:`BatchAwareCheckpoint` is a drop-in for ``keras.callbacks.ModelCheckpoint``
whose names carry counters that survive epochs and restarts, whose saves are
atomic, and which can prune old checkpoints; :func:`resume` loads the latest
checkpoint and says where training stopped; :func:`fit_resumed` finishes an
interrupted epoch exactly (instead of replaying it) and continues::

    model = build_and_compile()
    filepath = "ckpts/b{batch:06d}.keras"
    point = resume(model, filepath)         # a fresh start when there is nothing yet
    ckpt = BatchAwareCheckpoint(filepath, save_freq=500, keep_last=3)
    fit_resumed(model, x, y, resume=point, epochs=10, batch_size=64, callbacks=[ckpt])

The callback is a thin edge: counting and the save schedule
(``ckptname._schedule``), the best tracker (``ckptname._best``), the fields a
save needs (``ckptname._fields``) and the save transaction
(``ckptname._transaction``) import no Keras; what only Keras can answer is in
``ckptname._keras_backend``, and resuming in ``ckptname._resume`` and
``ckptname._fit_resumed``.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import keras

from ._background import in_worker
from ._best import BestTracker
from ._cluster import Settings, check_clock_shared, check_cluster_preemption
from ._errors import (
    CheckpointSaveError,
    CkptnameWarning,
    MissingFieldError,
    MonitorError,
)
from ._fields import (
    announce,
    check_extras,
    check_extras_clash,
    check_fields_for_batches,
    check_fields_for_preemption,
    monitor_value,
    not_validated,
    render_name,
    skipped_for_validation,
)
from ._fit_resumed import fit_resumed
from ._keras_backend import (
    FitLoop,
    direction_from_model,
    jsonable,
    metric_state,
    pythonify,
    read_fit_loop,
    restore_metrics,
    save_model,
    sidecar_for,
)
from ._keras_cluster import (
    Link,
    agree_at_train_begin,
    cluster_link,
    is_chief,
    process_count,
    unshared,
)
from ._lock import LockKeeper
from ._options import (
    check_choices,
    check_filepath,
    check_initial_batch,
    check_reversible,
    check_suffix,
    parse_save_freq,
)
from ._preemption import PreemptionWatch, check_preemption_signals, held_by_keras
from ._rank import Mode, resolve_mode
from ._resume import resume, resumed_point
from ._retention import check_keep
from ._schedule import Restart, ResumePoint, Schedule, position_from_sidecar
from ._snapshot import BackgroundSaves, SaveFailed
from ._transaction import CheckpointFolder, StartCheck, normalized, split_filepath

__all__ = ["BatchAwareCheckpoint", "ResumePoint", "fit_resumed", "resume", "split_filepath"]


class BatchAwareCheckpoint(keras.callbacks.Callback):  # type: ignore[misc]  # Keras is untyped
    """Save a Keras model or its weights under names that carry global counters.

    Accepts every argument of ``keras.callbacks.ModelCheckpoint``, in the same
    order and with the same meaning and file-suffix rules. Where it differs
    (the README's "The callback" section has each rule, and the module that
    holds it says why):

    * ``{batch}`` is the global batch count, and an integer ``save_freq`` N
      saves when it crosses a multiple of N, resumes included
      (``ckptname._schedule``); ``{batch_in_epoch}`` is Keras's ``{batch}``.
    * A field or monitor that can never have a value fails before training; a
      missing one is an error at the save, or, on an epoch that ran no
      validation, a skipped save with one warning (``ckptname._fields``).
    * Saves are atomic, safe to kill, and get a sidecar and the folder's state
      file; retention runs after the new checkpoint is complete; later
      checkpoints are refused unless this job restarted behind them
      (``ckptname._transaction``). With ``save_on_background=True`` the file is
      written by a background thread from a snapshot (``ckptname._snapshot``).
    * The best survives a resume; NaN never improves; an equal value keeps the
      earlier best (``ckptname._best``).
    * Only the chief writes and locks the folder; the others count and name
      identically, and every process checks with the others at train begin
      that they share the writer and the settings (``ckptname._cluster``).
      The batch hook reads no metric unless a save is due.

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
        save_freq: ``"epoch"``; a number N of batches (or ``"Nba"``): save when
            the global batch count crosses a multiple of N; ``"Kep"``: at the
            end of every K-th epoch; ``"30s"``, ``"10min"``, ``"2h"``: at the
            first batch end once that long has passed since the last save
            (or since the checkpoint a run resumed from was saved).
        initial_value_threshold: the value ``monitor`` must beat for the first
            best-only save.
        keep_last: keep only the N latest checkpoints of this template
            (with ``keep_best``, the union is kept; 0 keeps only the newest).
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
            configuration (the README's "Many workers" has the rule per
            backend); a configuration that does not say is a
            :class:`~ckptname.ClusterError`.
        lock: ``True`` takes the folder's lock (``.ckptname.lock``: owner pid,
            host and start time) at ``on_train_begin``, so a second live run
            pointed at the folder stops with a :class:`~ckptname.FolderLockedError`,
            and a lock left by a killed run is taken over with a warning;
            ``"takeover"`` also takes over a lock held by a live run or another
            host (with a warning); ``False`` takes no lock. Only the chief takes
            it, and only on local folders (``ckptname._lock`` has the rules).
        save_on_background: ``True`` takes a snapshot of the model's state at
            each due save (a copy of every variable the file holds, weights
            and optimizer state, into a twin of the model built once) and
            writes the file, its sidecar and the state file, then applies
            retention, on a background thread while training goes on. The
            files are those a synchronous save writes at that step. One save
            is in flight at a time: the next one waits for it, and so do
            ``on_train_end``, :func:`fit_resumed`, :meth:`wait` and interpreter
            exit. Memory: one extra copy of the weights and optimizer state,
            from the first save to the end of the fit. A failure is raised
            (or warned about, with ``on_save_error="warn"``) at the next save,
            at ``on_train_end`` or at :meth:`wait`. A model whose config
            cannot be rebuilt (a subclassed model without ``get_config``) is
            saved synchronously, with one warning.

        initial_batch: the global batch count to start from for a model
            that arrives trained with no record of it (weights loaded by
            hand); ignored where ``resume`` or this callback's own count says.
        save_on_preemption: ``True`` watches ``preemption_signals``: one
            arriving during ``fit`` leads to a checkpoint at the next batch
            boundary, after which ``fit`` returns and :attr:`preempted` is
            ``True``; on a cluster, a signal to any process stops every
            process at the same step (the README's "Preemption" section has
            the rules).
        preemption_signals: the signals ``save_on_preemption`` watches.

    Raises:
        ValueError: an argument that ModelCheckpoint would refuse, an unknown
            ``save_freq`` or ``on_save_error``, a bad ``keep_*``.
        MonitorError: an unknown ``mode``.
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
        save_on_background: bool = False,
        initial_batch: int | None = None,
        save_on_preemption: bool = False,
        preemption_signals: Iterable[int] = (signal.SIGTERM,),
    ) -> None:
        super().__init__()
        check_filepath(filepath)
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
        check_choices(lock, save_freq, mode, on_save_error)
        check_keep("keep_last", keep_last)
        check_keep("keep_best", keep_best)
        check_suffix(self.filepath, self.save_weights_only)
        check_extras(extras)
        check_initial_batch(initial_batch)
        self.initial_batch = initial_batch
        self.save_on_preemption = bool(save_on_preemption)
        self.preemption_signals = check_preemption_signals(save_on_preemption, preemption_signals)
        self._folder = CheckpointFolder(self.filepath, fsync=fsync)
        self.template = self._folder.template
        check_reversible(self.template)
        if self.save_on_preemption and "batch" not in self.template.fields:
            raise ValueError(
                f"save_on_preemption=True needs '{{batch}}' in the template, got "
                f"'{self.template.text}': a preemption checkpoint comes at any batch and must "
                "have a name of its own, never replace another checkpoint"
            )
        self.save_on_background = bool(save_on_background)
        self._init_state()

    def _init_state(self) -> None:
        """The run state the hooks keep: counting, the best, the folder's checks, the lock."""
        fixed: Mode | None = None if self.mode == "auto" else cast(Mode, self.mode)
        self._tracker = BestTracker(self.monitor, fixed, self.initial_value_threshold)
        freq = parse_save_freq(self.save_freq)
        self._schedule = Schedule(freq.batches, epochs=freq.epochs or 1, seconds=freq.seconds)
        self._start: StartCheck | None = None  # checked when the first epoch begins
        self._protect: set[str] = set()
        self._saved_this_run: str | None = None
        self._resume_seen: ResumePoint | None = None
        self._is_chief = True
        self._last_path: str | None = None
        self._unwrap: Callable[[], None] | None = None
        self._skip_warned = False
        # Later checkpoints of this run's own past (a restart) or skipped by
        # resume as broken: replaced as training reaches them.
        self._superseded: list[tuple[Any, int]] = []
        self._written: set[str] = set()
        self._locks = LockKeeper(self.lock, self.filepath, before_release=self._join_saver)
        self._loop: FitLoop | None = None
        # Created at train begin (signal handlers are process state, and a
        # callback may be deep-copied before, as KerasTuner does).
        self._watch: PreemptionWatch | None = None
        # The channel to the cluster's other processes, for one fit (None: one process).
        self._link: Link | None = None
        self._preempted = False
        self._train_logs: Mapping[str, Any] | None = None
        self._last_saved_batch: int | None = None
        # The last save of this epoch that was recorded as inside it: (path, batch).
        self._open_save: tuple[str, int] | None = None
        self._background = BackgroundSaves() if self.save_on_background else None

    @property
    def directory(self) -> str:
        """The folder the checkpoints of this callback live in (the template's root)."""
        return self._folder.root

    @property
    def batch(self) -> int:
        """The global count of training batches done, as the next name would carry it."""
        return self._schedule.batch

    @property
    def best(self) -> float | None:
        """The best value of ``monitor`` so far (or the threshold to beat), as in Keras."""
        return self._tracker.value

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the folder (decided at ``on_train_begin``)."""
        return self._is_chief

    @property
    def preempted(self) -> bool:
        """Whether the last ``fit`` stopped for a preemption signal, after saving a checkpoint."""
        return self._preempted

    @property
    def last_checkpoint(self) -> str | None:
        """The path of the latest checkpoint this callback saved, or ``None``.

        With ``save_on_background``, the latest one whose save has finished.
        """
        return self._last_path

    def wait(self) -> None:
        """Wait for the checkpoint being saved in the background, if any.

        Raises:
            CheckpointSaveError: that save (or an earlier one not yet
                reported) failed and ``on_save_error="raise"``; with ``"warn"``
                a :class:`~ckptname.CkptnameWarning` instead.
        """
        self._collect_background()

    # ------------------------------------------------------------------ hooks

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Check the template against ``save_freq``, seed counters, restore the best.

        Raises:
            MissingFieldError: a field or the monitor can never have a value at
                the saves that ``save_freq`` makes (validation metrics with an
                integer ``save_freq``).
            MonitorError: ``mode='auto'`` and the direction of ``monitor`` is
                unknown while ``save_best_only`` or ``keep_best`` needs it.
            CheckpointError: the folder holds checkpoints of this template from a
                later point than this run's counter, or its lock cannot be taken.
            FolderLockedError: another live run holds the folder's lock.
            ClusterError: the cluster's configuration does not say which one
                process writes (a bad ``TF_CONFIG`` or cluster resolver), or the
                processes of a cluster disagree: ``chief=True`` on more or
                fewer than one, another ``filepath``, ``save_freq`` or
                ``save_on_preemption`` (raised on every process alike).
        """
        # A fit that raised never reached on_train_end: its last save may
        # still be in flight.
        self._collect_background()
        model = self.model
        self._is_chief = is_chief(model) if self.chief is None else bool(self.chief)
        # Before anything reads or writes the folder, every process of a
        # cluster checks with the others that they share the settings.
        self._link = cluster_link(model)
        if self._link is not None:
            agree_at_train_begin(self._link, self._settings())
        check_fields_for_batches(
            self.template, self._batch_saves(), self._extras_now(), self.monitor, self._needs()
        )
        if self._schedule.seconds and self._link is None:
            check_clock_shared(process_count(model), self.save_freq, unshared(model))
        self._resolve_mode(required=self.save_best_only or self.keep_best is not None)
        if self.save_on_preemption:
            check_fields_for_preemption(self.template, self._extras_now())
            if self._link is None:
                check_cluster_preemption(process_count(model), unshared(model))
        steps, self._loop = read_fit_loop(model, (self.params or {}).get("steps"))
        self._schedule.configure(steps)
        self._saved_this_run = None
        self._skip_warned = False
        # Folder fields filled from extras say which checkpoints are this run's.
        self._folder.bind_run(self._extras_now())
        if self._is_chief and not self._folder.remote:
            # Taken before the folder is cleaned or checked.
            self._locks.take(self._folder.lock_folder, self._folder.root)
        try:
            self._seed(model)
        except BaseException:
            self._locks.release()
            raise
        self._preempted = False
        self._last_saved_batch = None
        if self.save_on_preemption:
            if self._watch is None:
                self._watch = PreemptionWatch(self.preemption_signals, self)
            self._watch.arm(in_fit=held_by_keras(sys._getframe(), self))

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Start counting an epoch (``epoch`` is 0-based, as Keras passes it)."""
        start, self._start = self._start, None
        if start is not None:
            self._folder.check_first_epoch(start, epoch + 1)
        restore = self._schedule.begin_epoch(epoch)
        if restore is not None and restore.metric_state:
            schedule = self._schedule
            self._unwrap = restore_metrics(
                self.model,
                restore.metric_state,
                epoch,
                lambda: schedule.epoch == epoch and schedule.done == 0,
            )

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Count the batches that ran; save when the count crosses a multiple of ``save_freq``.

        Args:
            batch: the 0-based index inside the epoch of the last batch that ran
                (as Keras passes it; with ``steps_per_execution`` N it grows by N).
            logs: the metrics; read only when a save is due.
        """
        loop = self._loop
        due = self._schedule.end_batch(batch, None if loop is None else loop.ran())
        if self._watch is not None:
            self._train_logs = logs
        due, stop = self._at_boundary(due, clock=True)
        if due:
            self._save(logs, end_of_epoch=self._schedule.ends_epoch())
        if stop:
            self._preempt(logs, end_of_epoch=self._schedule.ends_epoch())

    def on_test_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """During validation, act on a preemption signal (see ``save_on_preemption``).

        The epoch's training batches have run: the checkpoint closes the
        epoch (unless training stopped inside it), with the training logs of
        its last batch; validation stops after this batch.
        """
        if self._watch is None or not self._at_boundary(False, clock=False)[1]:
            return
        s = self._schedule
        self._preempt(self._train_logs, end_of_epoch=s.epoch_steps is None or s.ends_epoch())
        self.model.stop_evaluating = True

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Mark the epoch complete; save if ``save_freq='epoch'``.

        A save on the epoch's last batch, whose length was not known ahead
        (data of unknown length), was recorded as inside the epoch: its
        sidecar now says the epoch ended there, so a resume from it starts
        the next epoch.
        """
        self._schedule.end_epoch()
        self._unwrap_first_step()
        if self._preempted:
            return  # the preemption checkpoint is this fit's last
        if self._schedule.epoch_due(epoch):
            self._save(logs, end_of_epoch=True)
        elif (
            self._schedule.saves_at_batches
            and self._open_save is not None
            and self._open_save[1] == self._schedule.batch
        ):
            self._close_epoch_of(self._open_save[0])
        self._open_save = None

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Apply retention once more, now without sparing the resumed-from checkpoint.

        A preemption signal that came after the last batch boundary still gets
        its checkpoint here, unless the count has one already.
        """
        watch = self._watch
        if watch is not None:
            try:
                stop = self._at_boundary(False, clock=False)[1]
            finally:
                watch.disarm()
            if stop and self._schedule.counted_any:
                s = self._schedule
                self._preempt(self._train_logs, end_of_epoch=s.complete)
        link, self._link = self._link, None
        if link is not None:
            link.close()
        self._train_logs = None
        self._schedule.pending = None
        self._loop = None  # it holds Keras's epoch iterator, and its data
        self._unwrap_first_step()
        try:
            self._collect_background()
        except BaseException:
            self._drop_twin()
            self._locks.end_of_fit()
            raise
        self._drop_twin()  # its copy of the state is not needed between fits
        newest, self._saved_this_run = self._saved_this_run, None
        protected, self._protect = self._protect, set()
        retention = self.keep_last is not None or self.keep_best is not None
        try:
            if newest is not None and protected and retention and self._is_chief:
                self._prune(newest)
        finally:
            self._locks.end_of_fit()

    # ------------------------------------------------------------------ train begin

    def _settings(self) -> Settings:
        """What every process of a cluster must have been given alike (see ``_cluster``)."""
        return Settings(
            writes=self._is_chief,
            root=self._folder.root,
            template=self.template.text,
            save_freq=repr(self.save_freq),
            schedule=repr(parse_save_freq(self.save_freq)),
            save_on_preemption=self.save_on_preemption,
        )

    def _at_boundary(self, due: bool, *, clock: bool) -> tuple[bool, bool]:
        """Whether to save and whether to stop for a preemption signal, at this batch boundary.

        ``due`` is this process's schedule's answer. On a cluster, the
        processes agree in one exchange of the channel, made by every process
        at the same boundaries (they share ``save_freq`` and
        ``save_on_preemption``, checked at train begin):

        * a wall-clock ``save_freq`` (``clock`` marks the training batch
          ends it applies to): the chief's clock decides, and every process
          names the checkpoint at the same step;
        * ``save_on_preemption``: a signal reaches one process; every
          process stops at the step where any of them has it.
        """
        watch = self._watch
        stop = watch is not None and watch.requested and not self._preempted
        shared = watch is not None and watch.armed and not self._preempted
        timed = clock and bool(self._schedule.seconds)
        link = self._link
        if link is None or not (timed or shared):
            return due, stop
        flags = [due and self._is_chief] if timed else []
        agreed = link.any_of([*flags, stop] if shared else flags)
        return (agreed[0] if timed else due), (agreed[-1] if shared else stop)

    def _join_saver(self) -> None:
        # Never give the folder up while a save is still writing to it (its
        # error, if any, stays for the next wait).
        if self._background is not None:
            self._background.saver.join()

    def _drop_twin(self) -> None:
        if self._background is not None:
            self._background.snapshots.drop()

    def _hold_lock(self) -> Any:
        """Keep the folder's lock across the fits of ``fit_resumed`` (a context manager)."""
        return self._locks.hold()

    def _unwrap_first_step(self) -> None:
        unwrap, self._unwrap = self._unwrap, None
        if unwrap is not None:
            unwrap()

    def _extras_now(self) -> dict[str, Any]:
        extras = self.extras
        if extras is None:
            return {}
        got = extras() if callable(extras) else extras
        if not isinstance(got, Mapping):
            raise TypeError(f"the extras function must return a dict, got {type(got).__name__}")
        check_extras(got)
        return {str(k): jsonable(k, v) for k, v in got.items()}

    def _batch_saves(self) -> int | str:
        """What makes saves at batch ends, for messages: N batches, a time, or 0 (none)."""
        s = self._schedule
        return s.every or (str(self.save_freq) if s.seconds else 0)

    def _needs(self) -> str | None:
        """What needs the monitored value: ``"save_best_only"``, ``"keep_best"`` or ``None``."""
        if self.save_best_only:
            return "save_best_only"
        return "keep_best" if self.keep_best is not None else None

    def _resolve_mode(self, *, required: bool) -> str | None:
        tracker = self._tracker
        if tracker.mode is not None:
            return tracker.mode
        direction = direction_from_model(self.model, self.monitor)
        if direction is None:
            try:
                direction = resolve_mode(self.monitor, "auto")
            except MonitorError:
                if required:
                    raise
                return None
        tracker.mode = cast(Mode, direction)
        return direction

    def _seed(self, model: Any) -> None:
        """Seed the global count and the resume position; check the folder.

        Every worker of a cluster does this, reading the folder they share,
        so that all reach the same decisions (a refused start, the best so
        far, where a resumed epoch stands); only the chief cleans it.
        """
        resumed = resumed_point(model)
        fresh = resumed is not None and resumed is not self._resume_seen
        self._resume_seen = resumed
        folder = self._folder
        records = folder.records()
        restart = self._restart(model, records)
        continues_from = self._schedule.seed(
            resumed, fresh=fresh, initial_batch=self.initial_batch, restart=restart
        )
        if continues_from is not None:
            self._protect.add(normalized(continues_from))
        # Every worker reads the folder and makes the same checks and the same
        # best; only the chief writes to it (here: removes leftovers).
        if self._is_chief:
            folder.clean_leftovers(records)
        restarted = restart is not None and continues_from is None
        skipped = resumed.skipped if resumed is not None else ()
        start = folder.check_start(self._schedule.batch, records, restarted=restarted,
                                   skipped=skipped)  # fmt: skip
        self._superseded = list(start.superseded)
        self._written = set()
        gone = {normalized(rec.path) for rec, _ in start.superseded}
        records = [rec for rec in records if normalized(rec.path) not in gone]
        for rec in start.at_seed:
            # The checkpoint the counters continue from: never pruned.
            self._protect.add(normalized(rec.path))
            if self._schedule.pending is None:
                meta = folder.sidecar(rec)
                pending = None if meta is None else position_from_sidecar(meta, rec.path)
                self._schedule.pending = pending
        self._start = start
        exact = None
        if self.save_best_only or self.keep_best is not None:

            def exact() -> list[tuple[str, object]]:
                return [(rec.name, self._exact_value(rec, read=True)) for rec in records]

        names = [r.name for r in records]
        self._tracker.restore(folder.read_state(), self.template.text, names, exact)

    def _restart(self, model: Any, records: list[Any]) -> Restart | None:
        """A restart by Keras's ``BackupAndRestore`` at this fit's start, if one happened.

        ``BackupAndRestore`` (listed before this callback) puts the model back
        to its last backup and makes ``fit`` start at the epoch after it
        (``model._initial_epoch``). The count at the start of that epoch is
        the one the folder's own checkpoints record; the checkpoints after it
        are this job's own future, replaced as training reaches them.
        """
        if self._schedule.counted_any:
            return None
        epoch = getattr(model, "_initial_epoch", None)
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            return None
        return Restart(epoch, self._folder.count_before_epoch(records, epoch), self.directory)

    def _exact_value(self, rec: Any, *, read: bool) -> object:
        """The monitor's exact value from a checkpoint's sidecar (else, with ``read``, its name)."""
        meta = rec.metadata if rec.metadata is not None or not read else self._folder.sidecar(rec)
        if meta is None:
            return rec.values.get(self.monitor) if read else None
        metrics = meta.get("metrics")
        return metrics.get(self.monitor) if isinstance(metrics, dict) else None

    # ------------------------------------------------------------------ saving

    def _preempt(self, logs: Mapping[str, Any] | None, *, end_of_epoch: bool) -> None:
        """Save a checkpoint at the count training stands at, complete it, and stop training.

        Where the count already has a checkpoint (a scheduled save at this
        very batch), that one serves. A background save in flight is
        completed first, and the preemption save itself before training stops.
        """
        self._preempted = True
        self.model.stop_training = True
        if self._last_saved_batch != self._schedule.batch:
            self._save(logs, end_of_epoch=end_of_epoch, preempted=True)
        self._collect_background()

    def _save(
        self, logs: Mapping[str, Any] | None, *, end_of_epoch: bool, preempted: bool = False
    ) -> None:
        # One save in flight: the previous one finishes (or reports) first.
        self._collect_background()
        # Reading `self.model` puts the values of the last step back into the
        # model's variables on JAX, before anything (extras included) reads
        # them; once a save, since the sync copies every variable.
        model = self.model
        # Every worker reads the running metric sums of a save inside an
        # epoch, at the same step and before any decision: under a
        # multi-worker strategy the read is a collective all must join.
        state = None if end_of_epoch else metric_state(model)
        plain = pythonify(logs)
        extras = self._extras_now()
        check_extras_clash(extras, plain)
        s = self._schedule
        where = f"epoch {s.epoch + 1}, batch {s.batch}"
        counters = {"epoch": s.epoch + 1, "batch": s.batch, "batch_in_epoch": s.batch_in_epoch}
        found = self._name_and_value({**plain, **extras, **counters}, plain, end_of_epoch, where)
        if found is None:
            return
        name, current = found
        shown = self._folder.url(self._folder.path(name))
        # A preemption checkpoint is a point to resume from, not a candidate best.
        improved = not preempted and current is not None and self._tracker.improves(current)
        best_only, epoch = self.save_best_only and not preempted, self._schedule.epoch + 1
        if not announce(self.verbose, best_only, self.monitor, epoch, self._tracker.value,
                        improved, current, shown):  # fmt: skip
            return
        self._last_saved_batch = s.batch
        snapshot, previous = self._tracker.snapshot(), self._tracker.entry()
        if improved and current is not None:
            self._tracker.record(current, name)
        if not self._is_chief:
            self._last_path = shown
            return
        self._open_save = None if end_of_epoch else (self._folder.path(name), s.batch)
        weights_only = self.save_weights_only
        meta = sidecar_for(model, self._schedule, self.template.text, name, plain, extras,
                           state, end_of_epoch=end_of_epoch, weights_only=weights_only)  # fmt: skip
        if preempted:
            meta["preempted"] = True
        batch, epoch = s.batch, s.epoch + 1
        # A preemption checkpoint is written at once: handing it to the
        # background thread (and, on the first save, building the twin) would
        # only add to the wait before fit returns.
        if not preempted and self._background is not None and self._background.submit(
            model, self._folder, name, meta, weights_only=weights_only,
            best=self._tracker.entry(), previous=previous, tracker=snapshot,
            done=lambda path: self._saved(path, shown, batch, epoch),
        ):  # fmt: skip
            return

        def write(target: str) -> None:
            save_model(model, target, weights_only=weights_only)

        try:
            path = self._folder.save(
                name, meta, write, best=self._tracker.entry(), previous_best=previous
            )
        except CheckpointSaveError as exc:
            self._tracker.reset(snapshot)
            self._failed(exc)
            return
        self._saved(path, shown, s.batch, s.epoch + 1)

    def _saved(self, path: str, shown: str, batch: int, epoch: int) -> None:
        """After a complete save: record it, drop what it replaced, apply retention."""
        self._last_path = shown
        self._saved_this_run = path
        self._written.add(normalized(path))
        if self._superseded:
            self._drop_replaced(batch)
        if self.verbose > 0:
            print(f"\nEpoch {epoch}: finished saving model to {shown}")
        if self.keep_last is not None or self.keep_best is not None:
            self._prune(path)

    def _close_epoch_of(self, path: str) -> None:
        """Record in ``path``'s sidecar that its epoch ended with it (see :meth:`on_epoch_end`)."""
        self._collect_background()
        try:
            self._folder.close_epoch(path)
        except CheckpointSaveError as exc:
            self._failed(exc)

    def _collect_background(self) -> None:
        """Wait for the save in flight; raise or warn about a failure, as ``on_save_error`` says."""
        if self._background is None:
            return
        error = self._background.collect()
        if error is None:
            return
        if isinstance(error, SaveFailed):
            # The failed save is the last one the tracker recorded.
            self._tracker.reset(error.tracker)
            error = error.error
        if isinstance(error, CheckpointSaveError):
            self._failed(error)
            return
        raise error

    def _name_and_value(
        self, values: dict[str, Any], logs: dict[str, Any], end_of_epoch: bool, where: str
    ) -> tuple[str, float | None] | None:
        """The checkpoint's name and the monitored value; ``None`` to skip the save.

        A save that needs a validation value at the end of an epoch that ran
        no validation (``validation_freq``) is skipped, with one warning a fit.
        """
        unvalidated = not_validated(logs, end_of_epoch)
        use = self._needs()
        if unvalidated and use == "keep_best":
            use = None  # keep_best ignores the epoch; the checkpoint is saved
        try:
            name = render_name(self.template, values, where)
            current = monitor_value(logs, self.monitor, use, where)
        except MissingFieldError as exc:
            if exc.fields == (self.monitor,) and self.monitor not in self.template.fields:
                subject = f"monitor '{self.monitor}' ({use})"
            else:
                word = "field" if len(exc.fields) == 1 else "fields"
                listed = ", ".join(map(repr, exc.fields))
                subject = f"{word} {listed} of template '{self.template.text}'"
            message = skipped_for_validation(exc, subject, where) if unvalidated else None
            if message is None:
                raise
            if not self._skip_warned:
                self._skip_warned = True
                warnings.warn(message, CkptnameWarning, stacklevel=5)
            return None
        if current is not None and self._tracker.mode is None and use:
            self._resolve_mode(required=True)
        return name, current

    def _drop_replaced(self, batch: int) -> None:
        """Delete this run's superseded checkpoints that the saves up to ``batch`` replaced."""
        try:
            self._superseded = self._folder.drop_replaced(self._superseded, batch, self._written)
        except OSError as exc:
            self._failed(CheckpointSaveError(f"removing replaced checkpoints failed: {exc}"))

    def _failed(self, error: CheckpointSaveError) -> None:
        """Raise or warn about a failed save or prune, as ``on_save_error`` says.

        On the background thread it always raises: the training thread
        reports the error (see :meth:`_collect_background`).
        """
        if self.on_save_error == "raise" or in_worker():
            raise error
        warnings.warn(
            f"{error}; training continues (on_save_error='warn')", CkptnameWarning, stacklevel=4
        )

    def _prune(self, newest: str) -> None:
        tracker = self._tracker
        try:
            plan = self._folder.prune(
                newest,
                keep_last=self.keep_last,
                keep_best=self.keep_best,
                monitor=self.monitor,
                mode=tracker.mode or self.mode,
                protect=self._protect,
                exclude=[rec.path for rec, _ in self._superseded],
            )
            if tracker.name is not None and any(rec.name == tracker.name for rec in plan.delete):
                # keep_last alone may prune the best: the state file must name
                # a checkpoint that exists, so take the best of those kept.
                kept = [self._folder.with_sidecar(rec) for rec in plan.keep]
                tracker.best_of((rec.name, self._exact_value(rec, read=False)) for rec in kept)
                self._folder.write_state(tracker.entry())
        except OSError as exc:
            err = CheckpointSaveError(
                f"pruning old checkpoints of '{self.template.text}' in "
                f"{self._folder.root!r} failed: {exc}"
            )
            if self.on_save_error == "raise":
                raise err from exc
            self._failed(err)


