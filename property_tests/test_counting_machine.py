"""Counting and saving through random training histories, against plain integers as the model.

The machine drives the Keras-free half of ckptname (``_schedule``,
``_transaction``, ``_retention``, ``_metadata``) in the order
``ckptname.keras.BatchAwareCheckpoint`` calls it, on a real folder, with a
fake model writer. A history has a fixed epoch length, ``save_freq`` and
``keep_last``; it runs fits of a few epochs in executions of
``steps_per_execution`` batches (the last one of an epoch runs what is left),
over an input whose length the callback knows ahead or only learns at the
epoch's end, with optimizer updates skipped at random (a loss-scale
optimizer on overflow). It is killed at any batch (also between an epoch's
last batch and its end), and resumes from the newest checkpoint as
``ckptname.keras.resume`` and ``fit_resumed`` do: the rest of an interrupted
epoch in a fit of its own, then fits of whole epochs with the same callback.

The model is the number of batches that truly ran (reset to a checkpoint's
count by a resume: the weights are those of that checkpoint), where the
epoch stands, and the checkpoints retention must keep. After every step:

* each save was due exactly when the true count crossed a multiple of
  ``save_freq``, and its name, sidecar and file carry the true counts (never
  the optimizer's);
* the folder holds exactly the newest ``keep_last`` checkpoints ever saved,
  plus the one a fit continues from, until that fit ends (or, for a fit that
  was killed, until the next prune): nothing retention keeps is deleted,
  nothing is deleted but by retention;
* the start check at each fit finds nothing later than the count and
  supersedes nothing;
* nothing outside the checkpoint folder is touched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ckptname import Checkpoint, find_latest, read_metadata
from ckptname._fields import render_name
from ckptname._metadata import SIDECAR_SUFFIX, STATE_NAME, sidecar_record
from ckptname._schedule import ResumePoint, Schedule, execution_ran, position_from_sidecar
from ckptname._transaction import CheckpointFolder, StartCheck, normalized

TEMPLATE = "e{epoch}-b{batch:04d}-{batch_in_epoch}.keras"
SENTINEL = "outside.txt"


@dataclasses.dataclass(frozen=True)
class Model:
    """A fake model: the batches it was truly trained on, and its optimizer's updates."""

    batches: int
    updates: int


def write_model(model: Model) -> Callable[[str], None]:
    """A model writer for ``CheckpointFolder.save``: the file records the model."""

    def write(path: str) -> None:
        with open(path, "wb") as fh:
            fh.write(f"trained on {model.batches} batches, {model.updates} updates".encode())

    return write


def read_model(path: str) -> Model:
    with open(path, "rb") as fh:
        words = fh.read().decode().split()
    return Model(int(words[2]), int(words[4]))


class Callback:
    """The calls ``BatchAwareCheckpoint`` makes into the counting and save machinery.

    Hook for hook as in ``ckptname.keras`` (``on_train_begin``/``_seed``,
    ``on_epoch_begin``, ``on_train_batch_end``, ``_save``/``_saved``/``_prune``,
    ``on_epoch_end``, ``on_train_end``) for a chief that takes no lock, with an
    integer ``save_freq``, ``keep_last`` only, no monitor, and no
    ``BackupAndRestore`` (so no restart).
    """

    def __init__(self, filepath: str, *, save_freq: int, keep_last: int) -> None:
        self.folder = CheckpointFolder(filepath, fsync=False)
        self.template = self.folder.template
        self.schedule = Schedule(save_freq)
        self.keep_last = keep_last
        self.protect: set[str] = set()
        self.resume_seen: ResumePoint | None = None
        self.saved_this_run: str | None = None
        self.superseded: list[tuple[Checkpoint, int]] = []
        self.written: set[str] = set()
        self.start: StartCheck | None = None
        self.open_save: tuple[str, int] | None = None

    def on_train_begin(self, epoch_steps: int | None, resumed: ResumePoint | None) -> StartCheck:
        self.schedule.configure(epoch_steps)
        self.saved_this_run = None
        fresh = resumed is not None and resumed is not self.resume_seen
        self.resume_seen = resumed
        folder = self.folder
        records = folder.records()
        continues_from = self.schedule.seed(resumed, fresh=fresh)
        if continues_from is not None:
            self.protect.add(normalized(continues_from))
        folder.clean_leftovers(records)
        skipped = resumed.skipped if resumed is not None else ()
        start = folder.check_start(self.schedule.batch, records, skipped=skipped)
        self.superseded = list(start.superseded)
        self.written = set()
        for rec in start.at_seed:
            self.protect.add(normalized(rec.path))
            if self.schedule.pending is None:
                meta = folder.sidecar(rec)
                pending = None if meta is None else position_from_sidecar(meta, rec.path)
                self.schedule.pending = pending
        self.start = start
        return start

    def on_epoch_begin(self, epoch: int) -> None:
        start, self.start = self.start, None
        if start is not None:
            self.folder.check_first_epoch(start, epoch + 1)
        self.schedule.begin_epoch(epoch)

    def on_train_batch_end(self, index: int, ran: int | None, model: Model) -> str | None:
        """Count an execution; the path saved, or ``None`` where no save was due."""
        if self.schedule.end_batch(index, ran):
            return self._save(model, end_of_epoch=self.schedule.ends_epoch())
        return None

    def on_epoch_end(self) -> None:
        self.schedule.end_epoch()
        if self.open_save is not None and self.open_save[1] == self.schedule.batch:
            self.folder.close_epoch(self.open_save[0])
        self.open_save = None

    def on_train_end(self) -> None:
        self.schedule.pending = None
        newest, self.saved_this_run = self.saved_this_run, None
        protected, self.protect = self.protect, set()
        if newest is not None and protected:
            self._prune(newest)

    def _save(self, model: Model, *, end_of_epoch: bool) -> str:
        s = self.schedule
        counters = {"epoch": s.epoch + 1, "batch": s.batch, "batch_in_epoch": s.batch_in_epoch}
        name = render_name(self.template, counters, f"epoch {s.epoch + 1}, batch {s.batch}")
        self.open_save = None if end_of_epoch else (self.folder.path(name), s.batch)
        meta = sidecar_record(
            name=name,
            template=self.template.text,
            iterations=model.updates,  # what optimizer.iterations says
            end_of_epoch=end_of_epoch,
            steps_per_epoch=s.steps_per_epoch,
            metrics={},
            extras={},
            save_weights_only=False,
            **counters,
        )
        path = self.folder.save(name, meta, write_model(model), best=None, previous_best=None)
        self.saved_this_run = path
        self.written.add(normalized(path))
        if self.superseded:
            self.superseded = self.folder.drop_replaced(self.superseded, s.batch, self.written)
        self._prune(path)
        return path

    def _prune(self, newest: str) -> None:
        self.folder.prune(
            newest,
            keep_last=self.keep_last,
            keep_best=None,
            monitor="loss",
            mode="min",
            protect=self.protect,
            exclude=[rec.path for rec, _ in self.superseded],
        )


def resume_point(root: str) -> ResumePoint | None:
    """What ``ckptname.keras.resume`` returns for a folder, without loading a model.

    ``None`` where the folder holds no checkpoint (``resume`` then forgets the
    model, and the callback sees no resume point).
    """
    latest = find_latest(root, TEMPLATE)
    if latest is None:
        return None
    path = str(latest.path)
    meta = read_metadata(path)
    return ResumePoint(
        path=path,
        epoch=meta["epoch"],
        batch=meta["batch"],
        batch_in_epoch=meta["batch_in_epoch"],
        end_of_epoch=bool(meta["end_of_epoch"]),
        iterations=meta["iterations"],
        steps_per_epoch=meta["steps_per_epoch"],
    )


@dataclasses.dataclass(frozen=True)
class Saved:
    """A checkpoint as the model knows it: where training truly stood at its save."""

    name: str
    epoch: int  # 1-based, as names show it
    batch: int
    batch_in_epoch: int
    end_of_epoch: bool
    iterations: int


@dataclasses.dataclass
class Fit:
    """One ``fit`` in progress: the epochs it has left and how far the current one is."""

    epochs: list[int]  # 0-based, the current one first
    data_length: int  # batches in a pass of this fit's input
    steps_seen: int = 0  # as Keras's epoch iterator counts them: whole executions
    saved: bool = False
    protected: frozenset[str] = frozenset()
    open_save: str | None = None  # this epoch's last save, where it did not close the epoch


class CountingMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.parent = tempfile.mkdtemp(prefix="ckptname-counting-")
        self.root = os.path.join(self.parent, "ckpts")
        with open(os.path.join(self.parent, SENTINEL), "wb") as fh:
            fh.write(b"not the callback's")
        # Where training truly stands.
        self.batches = 0
        self.epochs_done = 0  # complete epochs
        self.in_epoch = 0  # batches done in the epoch after them
        self.iterations = 0  # optimizer updates: lags the batches when some are skipped
        # The checkpoints that must be on disk, and all ever saved, by name.
        self.disk: dict[str, Saved] = {}
        self.saved: dict[str, Saved] = {}
        self.fit: Fit | None = None
        self.point: ResumePoint | None = None
        # Whether the callback has begun a fit, and counted a batch, since it was made.
        self.seeded = False
        self.counted = False

    def teardown(self) -> None:
        shutil.rmtree(self.parent, ignore_errors=True)

    # -------------------------------------------------------------- history

    @initialize(
        save_freq=st.integers(min_value=1, max_value=7),
        keep_last=st.integers(min_value=1, max_value=4),
        epoch_length=st.integers(min_value=1, max_value=12),
        known=st.booleans(),
        steps_per_execution=st.integers(min_value=1, max_value=4),
    )
    def history(
        self,
        save_freq: int,
        keep_last: int,
        epoch_length: int,
        known: bool,
        steps_per_execution: int,
    ) -> None:
        """Fix what a history keeps: ``save_freq``, ``keep_last``, the epoch length.

        An input whose length is not known ahead (``known`` false: the end of
        the pass tells where an epoch ends) runs one batch an execution, as
        the callback refuses more.
        """
        self.save_freq = save_freq
        self.keep_last = keep_last
        self.epoch_length = epoch_length
        self.known = known
        self.spe = steps_per_execution if known else 1
        self.callback = self._new_callback()

    def _new_callback(self) -> Callback:
        filepath = os.path.join(self.root, TEMPLATE)
        return Callback(filepath, save_freq=self.save_freq, keep_last=self.keep_last)

    @rule(
        epochs=st.integers(min_value=0, max_value=3),
        executions=st.integers(min_value=0, max_value=16),
        data=st.data(),
    )
    def train(self, epochs: int, executions: int, data: st.DataObject) -> None:
        """Run a few executions, in a new ``fit`` of ``epochs`` epochs where none is running.

        The hooks after an epoch's last batch count as a step of their own, so
        that a kill can come between them and that batch's save.
        """
        if self.fit is None:
            self._start_fit(epochs)
        for _ in range(executions):
            if self.fit is None:
                return
            if self.fit.steps_seen < self.fit.data_length:
                self._execute(data)
            else:
                self._end_epoch()

    def _start_fit(self, epochs: int) -> None:
        """``fit`` with ``initial_epoch`` the epochs done (or one resumed mid-epoch: its rest)."""
        point = self.point
        length = self.epoch_length
        if self.in_epoch == length and self.known and epochs:
            # Nothing is left of the interrupted epoch, and this input's length
            # is known: fit_resumed goes straight on to the next epoch.
            event("nothing is left of an interrupted epoch: on to the next")
            self.epochs_done += 1
            self.in_epoch = 0
        if self.in_epoch and epochs:
            # Resumed inside an epoch: fit_resumed's first fit runs its remaining batches.
            assert point is not None and point.mid_epoch and not self.counted
            length -= self.in_epoch
            epochs = 1
            event("the rest of an interrupted epoch")
        epoch_indices = list(range(self.epochs_done, self.epochs_done + epochs))
        start = self.callback.on_train_begin(length if self.known else None, point)
        self.seeded = True
        assert start.superseded == (), "a history that resumes from its newest supersedes nothing"
        assert start.seed == self.batches
        # Until this fit ends, the checkpoint the count continues from is kept.
        at_count = {s.name for s in self.disk.values() if s.batch == self.batches}
        protected = frozenset(at_count) if self.batches else frozenset()
        self.fit = Fit(epoch_indices, length, protected=protected)
        if not epoch_indices:
            self._end_fit()
            return
        self.callback.on_epoch_begin(epoch_indices[0])
        if not length:
            # Killed after a save on the last batch of an epoch whose end only the
            # end of the pass tells: nothing is left of it.
            event("the rest of an interrupted epoch is empty")

    def _execute(self, data: st.DataObject) -> None:
        """Run one execution and the batch hook after it."""
        fit = self.fit
        assert fit is not None
        ran = min(self.spe, fit.data_length - fit.steps_seen)
        fit.steps_seen += self.spe
        # Keras reports the index of the execution's last step, from its
        # whole-execution count, and the loop tells what really ran.
        index = fit.steps_seen - 1
        loop_ran = None
        if self.spe > 1:
            loop_ran = execution_ran(fit.steps_seen, fit.data_length, self.spe)
            assert loop_ran == ran
        skipped = data.draw(st.integers(min_value=0, max_value=ran), label="updates skipped")
        before = self.batches
        self.batches += ran
        self.in_epoch += ran
        self.iterations += ran - skipped
        self.counted = True
        due = before // self.save_freq != self.batches // self.save_freq
        model = Model(self.batches, self.iterations)
        path = self.callback.on_train_batch_end(index, loop_ran, model)
        assert (path is not None) == due, f"save due at batch {self.batches}: {due}"
        if path is not None:
            self._check_save(path, fit)

    def _end_epoch(self) -> None:
        """The hooks at the end of an epoch, and of the fit after its last."""
        fit = self.fit
        assert fit is not None
        self.callback.on_epoch_end()
        last = None if fit.open_save is None else self.saved[fit.open_save]
        fit.open_save = None
        if last is not None and last.batch == self.batches:
            # Saved on the epoch's last batch before that was known: its sidecar
            # now says the epoch ended there.
            assert not self.known
            event("a save on an epoch's last batch is closed at the epoch's end")
            closed = dataclasses.replace(last, end_of_epoch=True)
            self.saved[last.name] = closed
            if last.name in self.disk:
                self.disk[last.name] = closed
            meta = read_metadata(os.path.join(self.root, last.name))
            assert (meta["end_of_epoch"], meta["steps_per_epoch"]) == (True, self.epoch_length)
        self.epochs_done += 1
        self.in_epoch = 0
        fit.epochs.pop(0)
        fit.steps_seen = 0
        fit.data_length = self.epoch_length
        if fit.epochs:
            self.callback.on_epoch_begin(fit.epochs[0])
        else:
            self._end_fit()

    def _check_save(self, path: str, fit: Fit) -> None:
        name = os.path.relpath(path, self.root)
        want = Saved(
            name,
            self.epochs_done + 1,
            self.batches,
            self.in_epoch,
            self.known and self.in_epoch == self.epoch_length,
            self.iterations,
        )
        assert name not in self.saved, f"{name} saved twice"
        assert self.callback.template.parse(name) == {
            "epoch": want.epoch,
            "batch": want.batch,
            "batch_in_epoch": want.batch_in_epoch,
        }
        meta = read_metadata(path)
        got = {k: meta[k] for k in ("epoch", "batch", "batch_in_epoch", "end_of_epoch")}
        assert got == {
            "epoch": want.epoch,
            "batch": want.batch,
            "batch_in_epoch": want.batch_in_epoch,
            "end_of_epoch": want.end_of_epoch,
        }
        assert meta["steps_per_epoch"] == (self.epoch_length if self.known else None)
        assert meta["iterations"] == self.iterations
        assert read_model(path) == Model(self.batches, self.iterations)
        self.saved[name] = want
        fit.saved = True
        fit.open_save = None if want.end_of_epoch else name
        self.disk[name] = want
        self._retain(fit.protected)

    def _retain(self, protected: frozenset[str]) -> None:
        """The reference policy: the newest ``keep_last`` by batch count, and the protected."""
        newest = sorted(self.disk.values(), key=lambda s: s.batch)[-self.keep_last :]
        keep = {s.name for s in newest} | (protected & set(self.disk))
        if len(keep) > len(newest):
            event("retention spares the checkpoint the fit continues from")
        self.disk = {name: s for name, s in self.disk.items() if name in keep}

    def _end_fit(self) -> None:
        fit = self.fit
        assert fit is not None
        self.callback.on_train_end()
        if fit.saved and fit.protected:
            self._retain(frozenset())
        self.fit = None

    @rule(known=st.booleans(), steps_per_execution=st.integers(min_value=1, max_value=4))
    def kill_and_resume(self, known: bool, steps_per_execution: int) -> None:
        """The process dies (no more hooks); a new one resumes from the newest checkpoint.

        The new process may compile the model with another
        ``steps_per_execution``, and give the input's length where the old one
        did not (or the other way round); the batches are the same.
        """
        self.fit = None
        point = resume_point(self.root)
        newest = max(self.disk.values(), key=lambda s: s.batch, default=None)
        if newest is None:
            assert point is None
            self.batches = self.epochs_done = self.in_epoch = self.iterations = 0
        else:
            assert point is not None and point.path is not None
            assert os.path.relpath(point.path, self.root) == newest.name
            assert read_model(point.path) == Model(newest.batch, newest.iterations)
            assert (point.epoch, point.batch, point.batch_in_epoch, point.end_of_epoch) == (
                newest.epoch,
                newest.batch,
                newest.batch_in_epoch,
                newest.end_of_epoch,
            )
            self.batches, self.iterations = newest.batch, newest.iterations
            self.epochs_done = newest.epoch if newest.end_of_epoch else newest.epoch - 1
            self.in_epoch = 0 if newest.end_of_epoch else newest.batch_in_epoch
            assert point.initial_epoch == self.epochs_done
            assert point.mid_epoch == bool(self.in_epoch)
        if point is None:
            event("resumed: a fresh start")
        else:
            event("resumed inside an epoch" if point.mid_epoch else "resumed at an epoch's end")
        self.point = point
        self.known = known
        self.spe = steps_per_execution if known else 1
        self.callback = self._new_callback()
        self.seeded = self.counted = False

    # -------------------------------------------------------------- invariants

    @invariant()
    def folder_holds_what_retention_keeps(self) -> None:
        want = {s.name for s in self.disk.values()}
        want |= {name + SIDECAR_SUFFIX for name in want}
        if self.saved:
            want.add(STATE_NAME)
        on_disk = set(os.listdir(self.root)) if os.path.isdir(self.root) else set()
        assert on_disk == want, f"missing {want - on_disk}, unexpected {on_disk - want}"

    @invariant()
    def nothing_outside_the_folder_is_touched(self) -> None:
        want = ["ckpts", SENTINEL] if self.saved else [SENTINEL]
        assert sorted(os.listdir(self.parent)) == want
        with open(os.path.join(self.parent, SENTINEL), "rb") as fh:
            assert fh.read() == b"not the callback's"

    @invariant()
    def the_count_is_the_batches_that_ran(self) -> None:
        if self.seeded:
            assert self.callback.schedule.batch == self.batches
        if self.fit is not None and self.fit.epochs:
            assert self.callback.schedule.batch_in_epoch == self.in_epoch
            assert self.callback.schedule.epoch == self.epochs_done


TestCountingMachine = CountingMachine.TestCase
TestCountingMachine.settings = settings(stateful_step_count=30)


# ------------------------------------------------------------------ pinned histories


def fit(
    callback: Callback,
    point: ResumePoint | None,
    epochs: range,
    data_length: int,
    steps_per_execution: int,
    *,
    known: bool = True,
    killed_at: int | None = None,
) -> list[str]:
    """One ``fit`` over a pass of ``data_length`` batches an epoch; the names it saved.

    ``known``: whether the callback knows the length ahead. ``killed_at``: the
    process dies once the count reaches it, after that execution's hooks (a
    save due there included) and before any other.
    """
    spe = steps_per_execution
    callback.on_train_begin(data_length if known else None, point)
    names = []
    for epoch in epochs:
        callback.on_epoch_begin(epoch)
        for seen in range(spe, data_length + spe, spe):
            ran = None if spe == 1 else execution_ran(seen, data_length, spe)
            path = callback.on_train_batch_end(seen - 1, ran, Model(callback.schedule.batch, 0))
            if path is not None:
                names.append(os.path.basename(path))
            if callback.schedule.batch == killed_at:
                return names
        callback.on_epoch_end()
    callback.on_train_end()
    return names


def listing(root: str) -> list[str]:
    """The checkpoints in a folder (not their sidecars, not the state file)."""
    return sorted(name for name in os.listdir(root) if name.endswith(".keras"))


def test_executions_of_3_over_epochs_of_10_name_the_batches_that_ran(tmp_path):
    # Indices 2, 5, 8, 11 each epoch; the last execution runs one batch.
    callback = Callback(str(tmp_path / TEMPLATE), save_freq=4, keep_last=2)
    names = fit(callback, None, range(2), data_length=10, steps_per_execution=3)
    assert names == [
        "e1-b0006-6.keras",  # 3 -> 6 crosses 4
        "e1-b0009-9.keras",  # 6 -> 9 crosses 8; 9 -> 10 crosses nothing
        "e2-b0013-3.keras",
        "e2-b0016-6.keras",
        "e2-b0020-10.keras",  # the short execution: 19 -> 20
    ]
    assert listing(str(tmp_path)) == names[-2:]


def test_a_kill_right_after_a_save_on_an_epochs_last_batch_resumes_at_the_next_epoch(tmp_path):
    filepath = str(tmp_path / TEMPLATE)
    first = Callback(filepath, save_freq=5, keep_last=1)
    assert fit(first, None, range(3), 5, 1, killed_at=5) == ["e1-b0005-5.keras"]

    point = resume_point(str(tmp_path))
    assert point is not None
    assert (point.epoch, point.batch, point.end_of_epoch) == (1, 5, True)
    assert point.initial_epoch == 1 and not point.mid_epoch
    second = Callback(filepath, save_freq=5, keep_last=1)
    second.on_train_begin(5, point)
    second.on_epoch_begin(point.initial_epoch)
    saved = [second.on_train_batch_end(i, None, Model(6 + i, 0)) for i in range(5)]
    assert [s and os.path.basename(s) for s in saved] == [None] * 4 + ["e2-b0010-5.keras"]
    # keep_last=1, but the checkpoint this fit continues from is kept until it ends.
    assert listing(str(tmp_path)) == ["e1-b0005-5.keras", "e2-b0010-5.keras"]
    second.on_epoch_end()
    second.on_train_end()
    assert listing(str(tmp_path)) == ["e2-b0010-5.keras"]


def test_a_run_resumed_inside_an_epoch_saves_the_names_of_an_uninterrupted_one(tmp_path):
    whole = Callback(str(tmp_path / "whole" / TEMPLATE), save_freq=4, keep_last=10)
    uninterrupted = fit(whole, None, range(2), 10, 3)

    filepath = str(tmp_path / "cut" / TEMPLATE)
    first = Callback(filepath, save_freq=4, keep_last=10)
    before = fit(first, None, range(2), 10, 3, killed_at=6)
    point = resume_point(str(tmp_path / "cut"))
    assert point is not None and point.mid_epoch
    assert (point.initial_epoch, point.batch, point.batch_in_epoch) == (0, 6, 6)
    # fit_resumed: the 4 batches left of epoch 1 (executions of 3 and 1), then epoch 2.
    callback = Callback(filepath, save_freq=4, keep_last=10)
    rest = fit(callback, point, range(1), 10 - point.batch_in_epoch, 3)
    after = fit(callback, point, range(1, 2), 10, 3)
    assert before + rest + after == uninterrupted


def test_a_kill_before_the_end_of_an_epoch_of_unknown_length_resumes_after_its_last_batch(tmp_path):
    # The save on the last batch cannot know it closes the epoch; killed before
    # on_epoch_end records that, it resumes inside the epoch with nothing left.
    filepath = str(tmp_path / TEMPLATE)
    first = Callback(filepath, save_freq=5, keep_last=1)
    assert fit(first, None, range(3), 5, 1, known=False, killed_at=5) == ["e1-b0005-5.keras"]
    point = resume_point(str(tmp_path))
    assert point is not None and point.mid_epoch
    assert (point.initial_epoch, point.batch, point.batch_in_epoch) == (0, 5, 5)

    callback = Callback(filepath, save_freq=5, keep_last=1)
    assert fit(callback, point, range(1), 0, 1, known=False) == []
    assert fit(callback, point, range(1, 2), 5, 1, known=False) == ["e2-b0010-5.keras"]
    assert listing(str(tmp_path)) == ["e2-b0010-5.keras"]
