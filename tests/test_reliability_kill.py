"""Kill and resume: a real fit, SIGKILLed again and again, loses nothing.

A child process trains a tiny model with ``BatchAwareCheckpoint`` (integer
``save_freq``, ``keep_last`` and ``keep_best``), resuming with ``resume`` and
``fit_resumed`` from whatever the folder holds. The parent kills it with
SIGKILL at seeded random moments, most of them inside a save, and after every
kill checks what a user would rely on: ``find_latest`` and ``find_best`` only
return checkpoints that load, every checkpoint there loads and has its
sidecar. When the last child finishes, the folder must hold exactly what one
uninterrupted run leaves, and the saves, read from their sidecars, must follow
the uninterrupted run's, counter for counter, without gaps or repeats.

To know where a kill lands, the child reports each batch end and each save
start on stdout and waits for the parent's go-ahead on stdin before going on:
the parent starts its timer exactly when the save starts, and a kill before
the child reports the save finished (after retention) provably landed inside
it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import keras_util as ku
import pytest

import ckptname
from ckptname import read_metadata

TEMPLATE = "e{epoch:02d}-b{batch:03d}-loss{loss:.4f}.keras"
EPOCHS = 6  # of 10 batches: 60 batches
SAVE_FREQ = 3  # 20 saves
KILLS = 12
SEED = 20240611

_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import keras
    import keras_util as ku
    from ckptname import read_metadata
    from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume

    folder, template = sys.argv[1], sys.argv[2]
    epochs, save_freq = int(sys.argv[3]), int(sys.argv[4])
    go = sys.stdin.buffer

    def say(*parts):
        sys.stdout.write(" ".join(str(p) for p in parts) + "\\n")
        sys.stdout.flush()

    def wait():
        if not go.read(1):
            sys.exit(0)  # the parent went away

    class Before(keras.callbacks.Callback):
        # Runs before the checkpoint callback at each batch end.
        def __init__(self, ckpt):
            super().__init__()
            self.ckpt = ckpt
            self.started = 0.0

        def on_train_batch_end(self, batch, logs=None):
            done = self.ckpt.batch + 1
            if done % save_freq == 0:
                say("SAVE", done)
                wait()
                self.started = time.perf_counter()
            else:
                say("B", done)
                wait()

    class After(keras.callbacks.Callback):
        # Runs after the checkpoint callback: the save, sidecar, state and
        # retention are done.
        def __init__(self, ckpt, before):
            super().__init__()
            self.ckpt, self.before = ckpt, before

        def on_train_batch_end(self, batch, logs=None):
            if self.ckpt.batch % save_freq == 0:
                meta = read_metadata(self.ckpt.last_checkpoint)
                meta["seconds"] = time.perf_counter() - self.before.started
                say("SAVED", json.dumps(meta))

    x, y = ku.data()
    m = ku.model()
    # Started ahead of time (TensorFlow takes seconds to import): look at the
    # folder only once the parent says the previous run is dead.
    say("READY")
    wait()
    filepath = os.path.join(folder, template)
    point = resume(m, filepath)
    say("RESUMED", point.batch)
    ckpt = BatchAwareCheckpoint(filepath, monitor="loss", save_freq=save_freq, keep_last=2,
                                keep_best=1)
    before = Before(ckpt)
    fit_resumed(m, x, y, resume=point, epochs=epochs, batch_size=10, shuffle=False, verbose=0,
                callbacks=[before, ckpt, After(ckpt, before)])
    say("DONE", int(m.optimizer.iterations))
    """
)

COUNTERS = ("name", "epoch", "batch", "batch_in_epoch", "iterations", "end_of_epoch")


class Child:
    """One training process, stepped batch by batch from the parent."""

    def __init__(self, script: Path, folder: Path) -> None:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(Path(ku.__file__).parent), *sys.path]),
            TF_CPP_MIN_LOG_LEVEL="3",
            CUDA_VISIBLE_DEVICES="",
        )
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(folder), TEMPLATE, str(EPOCHS), str(SAVE_FREQ)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.saved: list[dict] = []
        self.done: int | None = None
        self.resumed_at: int | None = None

    def next_event(self) -> tuple[str, str] | None:
        """The next line the child reports, as (kind, rest); None when it has exited."""
        raw = self.proc.stdout.readline()
        if not raw:
            return None
        kind, _, rest = raw.decode().rstrip("\n").partition(" ")
        if kind == "SAVED":
            self.saved.append(json.loads(rest))
        elif kind == "DONE":
            self.done = int(rest)
        elif kind == "RESUMED":
            self.resumed_at = int(rest)
        return kind, rest

    def go(self) -> None:
        self.proc.stdin.write(b"g")
        self.proc.stdin.flush()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)

    def finish(self, timeout: float = 120) -> str:
        """Drain the output until the child exits; return its stderr."""
        while self.next_event() is not None:
            pass
        self.proc.wait(timeout=timeout)
        err = self.proc.stderr.read().decode()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(BrokenPipeError):  # a killed child's stdin
                stream.close()
        return err

    def start(self) -> None:
        """Let the child (imported and waiting) resume from the folder."""
        event = self.next_event()
        if event != ("READY", ""):
            self.kill()
            raise AssertionError(f"expected READY, got {event}: {self.finish()}")
        self.go()

    def run_to_end(self, *, started: bool = False) -> str:
        if not started:
            self.start()
        while (event := self.next_event()) is not None:
            if event[0] in ("SAVE", "B"):
                self.go()
        return self.finish()


def loads(path: str) -> None:
    keras.models.load_model(path)


def check_folder(folder: Path) -> dict:
    """What must hold after any kill; returns the newest checkpoint's sidecar (or {})."""
    latest = ckptname.find_latest(str(folder), TEMPLATE)
    by_state = (
        ckptname.find_latest(str(folder)) if (folder / ".ckptname-state.json").exists() else latest
    )
    if latest is None:
        assert by_state is None
        return {}
    # The state file and a listing agree, and what they return loads.
    assert by_state is not None and by_state.name == latest.name
    loads(latest.path)
    best = ckptname.find_best(str(folder), monitor="loss", template=TEMPLATE)
    assert best is not None
    loads(best.path)
    best_by_state = ckptname.find_best(str(folder), monitor="loss")
    assert best_by_state is not None and best_by_state.name == best.name
    # Every checkpoint there is complete, loads, and has its sidecar.
    for rec in ckptname.scan(str(folder), TEMPLATE):
        loads(rec.path)
        assert read_metadata(rec.path)["name"] == rec.name
    return read_metadata(latest.path)


def test_kill_and_resume_again_and_again(tmp_path, capsys):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)

    folder = tmp_path / "run"
    child = Child(script, folder)  # imports while the reference runs
    # One uninterrupted run: the names, the saves and how long a save takes.
    ref = Child(script, tmp_path / "ref")
    err = ref.run_to_end()
    assert ref.proc.returncode == 0, err
    reference_saves = ref.saved
    assert [s["batch"] for s in reference_saves] == list(range(3, 61, 3))
    save_seconds = statistics.median(s["seconds"] for s in reference_saves[1:])
    reference_names = ku.names(tmp_path / "ref")
    assert len(reference_names) in (2, 3)  # keep_last=2, plus the best if older

    rng = random.Random(SEED)
    planned = sorted(rng.sample(range(3, 60, 3), KILLS))  # never the last save
    # Three of four kills aim inside a save (at a random moment of it), the
    # others at a random moment of the batches between saves.
    aim_inside = set(rng.sample(planned, KILLS * 3 // 4))
    completed: list[dict] = []  # the saves that finished, in order, from all children
    kills: list[dict] = []
    stale_takeovers = 0
    latest: dict = {}
    while True:
        targets = [t for t in planned if t > latest.get("batch", 0)]
        child.start()
        if not targets:
            err = child.run_to_end(started=True)
            assert child.proc.returncode == 0, err
            completed.extend(child.saved)
            stale_takeovers += "taking over the lock of checkpoint folder" in err
            break
        target = targets[0]
        planned.remove(target)
        inside = target in aim_inside
        delay = rng.uniform(0, 0.9 * save_seconds) if inside else rng.uniform(0, 0.004)
        kill_after_batch = target if inside else target + rng.randint(1, SAVE_FREQ - 1)
        following = Child(script, folder)  # imports while this one trains
        while True:
            event = child.next_event()
            assert event is not None, child.finish()
            kind, rest = event
            if kind in ("SAVE", "B") and int(rest) == kill_after_batch:
                child.go()
                # Timer starts as the child goes on: into the save, or into
                # the batches after it.
                time.sleep(delay)
                child.kill()
                break
            if kind in ("SAVE", "B"):
                child.go()
        err = child.finish()
        assert child.proc.returncode == -signal.SIGKILL, err
        killed, child = child, following
        if kills:
            # The killed run before it could not give its lock back.
            stale_takeovers += "taking over the lock of checkpoint folder" in err
        finished = {s["batch"] for s in killed.saved}
        mid_save = inside and target not in finished
        leftovers = ku.leftovers(folder)
        target_saved = any(rec.batch == target for rec in ckptname.scan(str(folder), TEMPLATE))
        if not mid_save:
            phase = "between saves" if not inside else "after the save"
        elif any(n.endswith(".keras") for n in leftovers):
            phase = "writing the model"
        elif not target_saved:
            phase = "after the sidecar, before the rename"
        else:
            phase = "after the rename (retention)"
        kills.append({"target": target, "inside": inside, "mid_save": mid_save, "phase": phase})

        # A save that finished but was killed before it could say so is
        # complete on disk: count it from its sidecar.
        completed.extend(killed.saved)
        latest = check_folder(folder)
        if latest and (not completed or completed[-1]["batch"] < latest["batch"]):
            completed.append(latest)

    # The folder ends as the uninterrupted run's, and everything in it loads.
    check_folder(folder)
    assert ku.names(folder) == reference_names
    assert child.done == ref.done == EPOCHS * ku.STEPS
    for name in reference_names:
        got, want = read_metadata(folder / name), read_metadata(tmp_path / "ref" / name)
        assert {k: got[k] for k in COUNTERS} == {k: want[k] for k in COUNTERS}
        assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-6)
    # ckptname's own files: the state and one sidecar per checkpoint; no
    # temporary file, no lock, no orphan sidecar.
    assert sorted(p.name for p in folder.iterdir() if ".ckptname" in p.name) == sorted(
        [".ckptname-state.json", *(f"{n}.ckptname.json" for n in reference_names)]
    )
    # The saves of all the runs, in order, are the uninterrupted run's: same
    # names and counters, no gap, no repeat.
    assert [s["batch"] for s in completed] == [s["batch"] for s in reference_saves]
    for got, want in zip(completed, reference_saves, strict=True):
        assert {k: got[k] for k in COUNTERS} == {k: want[k] for k in COUNTERS}
        assert got["metrics"] == pytest.approx(want["metrics"], rel=1e-6)

    mid_save = sum(k["mid_save"] for k in kills)
    assert len(kills) >= 10
    assert mid_save >= 3, kills  # provably inside: the save started, never finished
    assert stale_takeovers == len(kills)  # every run after a kill took the stale lock over
    phases: dict[str, int] = {}
    for k in kills:
        phases[k["phase"]] = phases.get(k["phase"], 0) + 1
    with capsys.disabled():
        print(
            f"\nkill and resume: {len(kills)} kills survived, {mid_save} inside a save "
            f"({', '.join(f'{n} {p}' for p, n in sorted(phases.items()))}); "
            f"median save {save_seconds * 1000:.0f} ms"
        )
