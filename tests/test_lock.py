"""Two runs, one folder: the lock file, its owner, stale locks and takeovers."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import keras_util as ku
import pytest
from keras_util import Interrupt, InterruptAt, data, finish, fit, interrupt, model, names, ours

import ckptname
from ckptname import CheckpointError, CkptnameWarning, FolderLockedError
from ckptname import _lock as lockmod
from ckptname._lock import LockOwner, acquire, read_owner
from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume

LOCK = ".ckptname.lock"
HOST = socket.gethostname()


def write_lock(folder: Path, **fields) -> Path:
    """A lock file as another run would have left it."""
    data = {
        "format": "ckptname.lock/1",
        "pid": 1,
        "host": HOST,
        "started": 1_700_000_000.0,
        "process_start": None,
        "boot_id": None,
        "token": "f" * 32,
        **fields,
    }
    path = folder / LOCK
    path.write_text(json.dumps(data))
    return path


def since(started: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ----------------------------------------------------------------- the lock file


def test_lock_file_names_its_owner_and_is_released(tmp_path):
    lock = acquire(str(tmp_path), filepath="ckpts/b{batch}.keras")
    data = json.loads((tmp_path / LOCK).read_text())
    assert data["format"] == "ckptname.lock/1"
    assert (data["pid"], data["host"]) == (os.getpid(), HOST)
    assert abs(data["started"] - time.time()) < 60
    assert data["filepath"] == "ckpts/b{batch}.keras"
    assert sorted(data) == sorted(
        [
            "boot_id",
            "ckptname_version",
            "filepath",
            "format",
            "host",
            "pid",
            "process_start",
            "started",
            "token",
        ]
    )
    assert lock.held
    assert [p.name for p in tmp_path.iterdir()] == [LOCK]  # no temporary file left
    lock.release()
    assert list(tmp_path.iterdir()) == []


def test_the_same_process_shares_its_lock(tmp_path):
    first = acquire(str(tmp_path))
    again = acquire(str(tmp_path))
    assert again is first
    first.release()
    assert not (tmp_path / LOCK).exists()


def test_a_lock_this_process_forgot_is_its_own(tmp_path):
    # An exception inside fit skips on_train_end; the lock on disk still names
    # this process, which must not lock itself out.
    write_lock(
        tmp_path, pid=os.getpid(), process_start=lockmod._process_start(os.getpid()), token="a" * 32
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lock = acquire(str(tmp_path))
    assert lock.owner.token == "a" * 32
    lock.release()
    assert not (tmp_path / LOCK).exists()


def test_release_leaves_a_lock_that_was_taken_over(tmp_path):
    lock = acquire(str(tmp_path))
    write_lock(tmp_path, token="b" * 32)  # another run took it over meanwhile
    lock.release()
    assert json.loads((tmp_path / LOCK).read_text())["token"] == "b" * 32


def test_the_folder_is_created(tmp_path):
    lock = acquire(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b" / LOCK).exists()
    lock.release()


# ----------------------------------------------------------------- who holds it


def test_a_live_process_on_this_host_keeps_its_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = write_lock(
            tmp_path, pid=holder.pid, process_start=lockmod._process_start(holder.pid)
        )
        with pytest.raises(FolderLockedError) as info:
            acquire(str(tmp_path))
    finally:
        holder.kill()
        holder.wait()
    assert str(info.value) == (
        f"checkpoint folder {str(tmp_path)!r} is in use by another run: process {holder.pid} "
        f"on host {HOST!r} (since {since(1_700_000_000.0)}) holds its lock {str(path)!r}; "
        "wait for it to finish or stop it, or point this run at another folder (two runs "
        "writing one folder would overwrite and prune each other's checkpoints); if it is "
        "alive but no longer training (an interrupted notebook, say), pass lock='takeover' "
        "to BatchAwareCheckpoint"
    )
    assert (info.value.pid, info.value.host, info.value.path) == (holder.pid, HOST, str(path))
    assert isinstance(info.value, CheckpointError)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"pid": "dead"}, "that process is no longer running"),
        (
            {"pid": "parent", "process_start": "1"},
            "that process is no longer running (its pid now belongs to another process)",
        ),
        ({"pid": "parent", "boot_id": "another-boot"}, "the machine has restarted since"),
    ],
    ids=["dead-pid", "reused-pid", "restarted-host"],
)
def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, fields, reason):
    pid = dead_pid() if fields["pid"] == "dead" else os.getppid()
    if fields.get("boot_id") and lockmod._boot_id() is None:
        pytest.skip("this system does not report a boot id")
    if fields.get("process_start") and lockmod._process_start(pid) is None:
        pytest.skip("this system does not report process start times")
    write_lock(tmp_path, **{**fields, "pid": pid})
    with pytest.warns(CkptnameWarning) as record:
        lock = acquire(str(tmp_path))
    assert ours(record) == [
        f"taking over the lock of checkpoint folder {str(tmp_path)!r} from process {pid} on "
        f"host {HOST!r} (since {since(1_700_000_000.0)}): {reason}"
    ]
    assert read_owner(str(tmp_path / LOCK)).pid == os.getpid()
    lock.release()


UNREADABLE_LOCKS = {
    "empty": lambda path: path.write_bytes(b""),
    "truncated": lambda path: path.write_bytes(b'{"format": "ckptname.lock/1", "pi'),
    "a list": lambda path: path.write_bytes(b"[1, 2]"),
    "nested 100,000 deep": lambda path: path.write_bytes(b"[" * 100_000 + b"]" * 100_000),
    "a FIFO": os.mkfifo,
    "a link to nowhere": lambda path: path.symlink_to(path.parent / "gone"),
    "a link to a real lock": lambda path: path.symlink_to(write_lock(path.parent / "elsewhere")),
    "a link to /dev/zero": lambda path: path.symlink_to("/dev/zero"),
}


@pytest.mark.parametrize("kind", UNREADABLE_LOCKS)
def test_an_unreadable_lock_is_stale(tmp_path, kind, monkeypatch):
    monkeypatch.setattr(lockmod.time, "sleep", lambda s: None)
    (tmp_path / "elsewhere").mkdir()
    UNREADABLE_LOCKS[kind](tmp_path / LOCK)

    def timeout(signum, frame):
        raise TimeoutError("acquire blocked for 5 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        with pytest.warns(CkptnameWarning) as record:
            lock = acquire(str(tmp_path))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert ours(record) == [
        f"taking over the unreadable lock of checkpoint folder {str(tmp_path)!r}: it is not a "
        "ckptname lock file (empty, truncated, not a regular file, or written by something "
        "else)"
    ]
    assert (tmp_path / LOCK).is_file() and not (tmp_path / LOCK).is_symlink()
    assert read_owner(str(tmp_path / LOCK)).pid == os.getpid()
    assert (tmp_path / "elsewhere" / LOCK).exists() == (kind == "a link to a real lock")
    lock.release()


def test_another_hosts_lock_is_respected_unless_taken_over(tmp_path):
    path = write_lock(tmp_path, host="node-17", pid=4242)
    with pytest.raises(FolderLockedError) as info:
        acquire(str(tmp_path))
    assert str(info.value) == (
        f"checkpoint folder {str(tmp_path)!r} is in use by another run: process 4242 on host "
        f"'node-17' (since {since(1_700_000_000.0)}) holds its lock {str(path)!r}; ckptname "
        "cannot tell from here whether it is still running; if it is, point this run at "
        "another folder; if it has ended, delete the lock file or pass lock='takeover' to "
        "BatchAwareCheckpoint"
    )
    with pytest.warns(CkptnameWarning) as record:
        lock = acquire(str(tmp_path), takeover=True)
    assert ours(record) == [
        f"taking over the lock of checkpoint folder {str(tmp_path)!r} from process 4242 on "
        f"host 'node-17' (since {since(1_700_000_000.0)}): lock='takeover' was given"
    ]
    assert read_owner(str(path)).pid == os.getpid()
    lock.release()


def test_a_forked_child_does_not_release_its_parents_lock(tmp_path):
    # What a forked child's exit would do: the held lock names the parent's pid.
    lock = acquire(str(tmp_path))
    inherited = lockmod.FolderLock(lock.path, dataclasses.replace(lock.owner, pid=os.getpid() + 1))
    inherited.release()
    assert lock.held
    lock.release()


def test_a_process_that_dies_of_an_exception_releases_its_lock(tmp_path):
    script = "import sys; from ckptname._lock import acquire; acquire(sys.argv[1]); 1 / 0"
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
    )
    assert "ZeroDivisionError" in done.stderr
    assert not (tmp_path / LOCK).exists()


def test_the_lock_is_never_a_checkpoint_and_never_pruned(tmp_path):
    for batch in (5, 10, 15):
        (tmp_path / f"b{batch:03d}.keras").write_bytes(b"x")
    lock = acquire(str(tmp_path))
    records = ckptname.scan(str(tmp_path), "b{batch:03d}.keras")
    assert [r.name for r in records] == ["b005.keras", "b010.keras", "b015.keras"]
    plan = ckptname.plan_retention(records, keep_last=1)
    ckptname.apply_retention(plan, str(tmp_path), template="b{batch:03d}.keras")
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK, "b015.keras"]
    assert lock.held
    lock.release()


# ----------------------------------------------------------------- with fit


class LockProbe(ku.keras.callbacks.Callback):
    """Records whose the folder's lock is at each epoch end (training) and train end.

    Placed after the checkpoint callback, so it looks after it at each hook.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.lock = folder / LOCK
        self.seen: list[tuple[str, int | None]] = []

    def _look(self, hook: str) -> None:
        owner = read_owner(str(self.lock)) if self.lock.exists() else None
        self.seen.append((hook, None if owner is None else owner.pid))

    def on_epoch_end(self, epoch, logs=None):
        self._look("training")

    def on_train_end(self, logs=None):
        self._look("train_end")


def locking_fit(folder: Path, epochs=1, *, callbacks=(), **kwargs):
    """A fresh model's fit, saving every 5 batches as ``b{batch:03d}.keras`` in ``folder``."""
    ckpt = BatchAwareCheckpoint(str(folder / "b{batch:03d}.keras"), save_freq=5, **kwargs)
    m = model()
    fit(m, [ckpt, *callbacks], epochs, shuffle=True)
    return ckpt, m


def test_fit_holds_the_lock_while_training_and_releases_it(tmp_path):
    probe = LockProbe(tmp_path)
    ckpt, m = locking_fit(tmp_path, callbacks=[probe])
    assert probe.seen == [("training", os.getpid()), ("train_end", None)]
    assert not (tmp_path / LOCK).exists()
    # A second fit of the same model and callback takes it again.
    fit(m, [ckpt, probe], epochs=2, initial_epoch=1, shuffle=True)
    assert probe.seen[2:] == [("training", os.getpid()), ("train_end", None)]
    assert names(tmp_path) == ["b005.keras", "b010.keras", "b015.keras", "b020.keras"]
    assert not (tmp_path / LOCK).exists()


def test_no_lock_for_workers_or_when_switched_off(tmp_path):
    probe = LockProbe(tmp_path / "a")
    locking_fit(tmp_path / "a", callbacks=[probe], lock=False)
    probe_b = LockProbe(tmp_path / "b")
    locking_fit(tmp_path / "b", callbacks=[probe_b], chief=False)
    assert probe.seen == probe_b.seen == [("training", None), ("train_end", None)]
    with pytest.raises(ValueError) as info:
        BatchAwareCheckpoint(str(tmp_path / "b{batch}.keras"), lock="yes")
    assert str(info.value) == "lock must be True, False or 'takeover', got 'yes'"


def test_the_same_process_resumes_after_an_exception_without_locking_itself_out(tmp_path):
    filepath = str(tmp_path / "b{batch:03d}.keras")
    interrupt(model(), filepath, 7, epochs=2)
    # Keras skipped on_train_end: the lock is still this process's.
    assert read_owner(str(tmp_path / LOCK)).pid == os.getpid()
    m = model()
    point = resume(m, filepath)
    probe = LockProbe(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CkptnameWarning)
        finish(m, point, filepath, epochs=2, callbacks=[probe])
    # Two fits (the rest of epoch 1, then epoch 2), one lock held across both,
    # given back when fit_resumed returns.
    assert probe.seen == [("training", os.getpid()), ("train_end", os.getpid())] * 2
    assert names(tmp_path) == ["b005.keras", "b010.keras", "b015.keras", "b020.keras"]
    assert not (tmp_path / LOCK).exists()


def test_fit_resumed_releases_the_lock_when_training_raises(tmp_path):
    x, y = data()
    with pytest.raises(Interrupt):
        fit_resumed(
            model(),
            x,
            y,
            resume=None,
            epochs=1,
            batch_size=10,
            verbose=0,
            callbacks=[
                BatchAwareCheckpoint(str(tmp_path / "b{batch}.keras"), save_freq=5),
                InterruptAt(3),
            ],
        )
    assert not (tmp_path / LOCK).exists()


def test_a_failure_at_train_begin_releases_the_lock(tmp_path):
    locking_fit(tmp_path, epochs=2)
    with pytest.raises(CheckpointError) as info:
        locking_fit(tmp_path)  # a fresh count, below the folder's checkpoints
    assert "already holds checkpoint 'b020.keras'" in str(info.value)
    assert not (tmp_path / LOCK).exists()


_HOLDER = textwrap.dedent(
    """
    import os, sys, time
    import keras
    import keras_util as ku
    from ckptname.keras import BatchAwareCheckpoint

    folder, go = sys.argv[1], sys.argv[2]

    class Hold(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 5:  # after the save at batch 5
                print("HOLDING", flush=True)
                while not os.path.exists(go):
                    time.sleep(0.02)

    x, y = ku.data()
    ckpt = BatchAwareCheckpoint(folder + "/b{batch:03d}.keras", save_freq=5)
    ku.model().fit(x, y, epochs=1, batch_size=10, shuffle=False, verbose=0,
                   callbacks=[ckpt, Hold()])
    print("DONE", flush=True)
    """
)


def test_two_processes_one_folder(tmp_path):
    """A live run keeps the folder; once it is killed, the next run takes it over."""
    folder = tmp_path / "ckpts"
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(ku.__file__).parent), *sys.path]))
    holder = subprocess.Popen(
        [sys.executable, str(script), str(folder), str(tmp_path / "go")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = holder.stdout.readline()
        assert line == "HOLDING\n", holder.stderr.read()
        owner = read_owner(str(folder / LOCK))
        assert (owner.pid, owner.host) == (holder.pid, HOST)
        # The holder is between saves; pretend it is inside one (its temporary
        # file): a second run must not clean it up, nor write anything.
        (folder / ".ckptname-tmp-0123456789ab-b010.keras").write_bytes(b"half")
        before = sorted(p.name for p in folder.iterdir())

        with pytest.raises(FolderLockedError) as info:
            locking_fit(folder)
        assert str(info.value) == (
            f"checkpoint folder {str(folder)!r} is in use by another run: process "
            f"{holder.pid} on host {HOST!r} (since {since(owner.started)}) holds its lock "
            f"{str(folder / LOCK)!r}; wait for it to finish or stop it, or point this run at "
            "another folder (two runs writing one folder would overwrite and prune each "
            "other's checkpoints); if it is alive but no longer training (an interrupted "
            "notebook, say), pass lock='takeover' to BatchAwareCheckpoint"
        )
        assert sorted(p.name for p in folder.iterdir()) == before

        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
        holder.stderr.close()
    assert holder.returncode == -signal.SIGKILL
    assert (folder / LOCK).exists()  # a killed run cannot give its lock back

    filepath = str(folder / "b{batch:03d}.keras")
    m = model()
    point = resume(m, filepath)
    assert point.batch == 5
    with pytest.warns(CkptnameWarning) as record:
        finish(m, point, filepath, epochs=1)
    assert ours(record) == [
        f"taking over the lock of checkpoint folder {str(folder)!r} from process "
        f"{holder.pid} on host {HOST!r} (since {since(owner.started)}): that process is no "
        "longer running"
    ]
    assert sorted(p.name for p in folder.iterdir()) == [
        ".ckptname-state.json",
        "b005.keras",
        "b005.keras.ckptname.json",
        "b010.keras",
        "b010.keras.ckptname.json",
    ]


def test_lock_owner_describes_itself():
    owner = LockOwner(12, "h", 1_700_000_000.0, None, None, "t")
    assert owner.describe() == f"process 12 on host 'h' (since {since(1_700_000_000.0)})"
