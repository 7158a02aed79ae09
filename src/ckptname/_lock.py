"""One training run per checkpoint folder: the lock file ``.ckptname.lock``.

Two runs that write checkpoints of the same template into one folder
interleave their names, remove each other's half-written saves and prune each
other's checkpoints. ``BatchAwareCheckpoint`` therefore takes this lock at
``on_train_begin`` (before it cleans or checks anything) and gives it back at
``on_train_end``; a second run pointed at the folder while the first is alive
stops at train begin with a :class:`~ckptname.FolderLockedError`.

The lock file (format ``ckptname.lock/1``), in the checkpoint folder::

    {"format": "ckptname.lock/1", "pid": 4242, "host": "node-17",
     "started": 1763859000.25, "process_start": "8812345",
     "boot_id": "2f6c...", "token": "9b1f0c...", "filepath": "ckpts/b{batch}.keras",
     "ckptname_version": "0.1.0"}

It is created complete or not at all: written under a temporary name, then
hard-linked to ``.ckptname.lock``, which fails when the name exists (on file
systems without hard links, ``os.open(O_CREAT | O_EXCL)`` and one write).

Who holds a lock, and what happens:

========================================  ======================================
lock found                                outcome
========================================  ======================================
none                                      taken
this process's (same host, pid and        shared: a second ``fit``, the two fits
process start)                            of ``fit_resumed``, a retry after an
                                          exception in this process
another live process on this host         :class:`~ckptname.FolderLockedError`
                                          naming its pid and host
a process on this host that is gone       stale: taken over, with a
(pid not running, pid reused by another   :class:`~ckptname.CkptnameWarning`
process, or the machine restarted)
another host                              :class:`~ckptname.FolderLockedError`:
                                          ckptname cannot see processes there;
                                          ``lock="takeover"`` takes it over
unreadable (not ckptname's format)        stale, with a warning
========================================  ======================================

``lock="takeover"`` takes over any lock, a live one included, with a warning
naming the owner (for a run on another host known to be gone, or a live
process that no longer trains, such as a notebook whose ``fit`` was
interrupted).

Decisions:

* A process is one owner. Locks this process holds are released at
  ``on_train_end``, by ``fit_resumed`` when its fits end (also when they
  raise), and at interpreter exit (``atexit``: a script that dies of an
  exception leaves no lock). Keras has no ``finally`` around ``fit``, so after
  an exception in ``model.fit`` the lock stays with the process until its next
  ``on_train_end`` there or its exit; a process killed outright (``SIGKILL``,
  out of memory) leaves a lock that the next run finds stale.
* A forked child does not release its parent's locks at exit.
* Process start times come from ``/proc`` (Linux); elsewhere a reused pid
  looks alive, and the error says how to take the lock over.
* Only local folders are locked: object stores (fsspec URLs) offer no
  portable exclusive create, so remote roots are not locked.
* The lock is a reserved name (it contains ``.ckptname``): never a
  checkpoint, never listed, never pruned.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import json
import os
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._errors import CheckpointError, CkptnameWarning, FolderLockedError
from ._metadata import LOCK_NAME
from ._storage import LocalStorage, UnsafeFileError, temp_name
from ._version import __version__

__all__ = ["LOCK_FORMAT", "FolderLock", "LockKeeper", "LockOwner", "acquire", "read_owner"]

LOCK_FORMAT = "ckptname.lock/1"
# A lock file is a few hundred bytes; anything larger is not one.
_LOCK_LIMIT = 1 << 16

# Locks this process holds, by lock path: shared by every acquire in the
# process, released at exit.
_HELD: dict[str, FolderLock] = {}
_ATEXIT_REGISTERED = False


@dataclass(frozen=True, slots=True)
class LockOwner:
    """What a lock file says about the run that holds it.

    Attributes:
        pid: the owner's process id.
        host: the owner's host name (``socket.gethostname()``).
        started: when the lock was taken (seconds since the epoch).
        process_start: the owner process's start time as the OS reports it
            (Linux: clock ticks since boot), to tell a reused pid; ``None``
            where unknown.
        boot_id: the owner machine's boot id (Linux), to tell a restart.
        token: a random id of this taking of the lock.
        filepath: the callback filepath the owner writes, for people.
    """

    pid: int
    host: str
    started: float
    process_start: str | None
    boot_id: str | None
    token: str
    filepath: str | None = None

    def describe(self) -> str:
        """``process 4242 on host 'node-17' (since 2025-11-23 10:10:00)``."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"process {self.pid} on host {self.host!r} (since {when})"


@dataclass(eq=False, slots=True)
class FolderLock:
    """A lock this process holds; :meth:`release` gives it back."""

    path: str
    owner: LockOwner

    def release(self) -> None:
        """Remove the lock file if it is still this one; forget it either way.

        Never raises: a lock that is already gone, or was taken over, is left
        as it is.
        """
        if _HELD.get(self.path) is self:
            del _HELD[self.path]
        if self.owner.pid != os.getpid():
            return  # a forked child: the lock is its parent's
        with contextlib.suppress(OSError):
            current = read_owner(self.path)
            if current is not None and current.token == self.owner.token:
                os.unlink(self.path)

    @property
    def held(self) -> bool:
        """Whether the lock file on disk is still this lock."""
        try:
            current = read_owner(self.path)
        except (OSError, ValueError):
            return False
        return current is not None and current.token == self.owner.token


def acquire(folder: str, *, filepath: str | None = None, takeover: bool = False) -> FolderLock:
    """Take the lock of a local checkpoint folder (created if missing).

    Args:
        folder: the checkpoint folder.
        filepath: recorded in the lock for people reading it.
        takeover: take over a lock held by a live process or another host
            (with a warning) instead of failing.

    Returns:
        The lock; this process's existing lock on the folder if it has one.

    Raises:
        FolderLockedError: another live run holds the folder (or a run on
            another host, whose liveness cannot be checked).
        OSError: the folder or the lock file cannot be written.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, LOCK_NAME)
    held = _HELD.get(path)
    if held is not None and held.owner.pid == os.getpid() and held.held:
        return held
    for _ in range(5):
        me = _this_process(filepath)
        if _create(path, me):
            return _register(FolderLock(path, me))
        try:
            owner = _read_settled(path)
        except FileNotFoundError:
            continue  # released between our attempt and the read: try again
        if owner is not None and _is_this_process(owner):
            # Left by this process (an exception in fit skipped on_train_end).
            return _register(FolderLock(path, owner))
        stale = _stale_reason(owner)
        if stale is None and not takeover:
            raise _locked_error(folder, path, owner)
        if not _remove_if_unchanged(path, owner):
            continue  # someone else took it over or released it meanwhile
        if owner is None:
            what = f"the unreadable lock of checkpoint folder {folder!r}"
        else:
            what = f"the lock of checkpoint folder {folder!r} from {owner.describe()}"
        why = stale if stale is not None else "lock='takeover' was given"
        warnings.warn(f"taking over {what}: {why}", CkptnameWarning, stacklevel=3)
    raise FolderLockedError(
        f"could not take the lock of checkpoint folder {folder!r}: other runs keep taking "
        "and releasing it; make sure one run writes into it at a time",
        path=path,
    )


def read_owner(path: str) -> LockOwner | None:
    """The owner a lock file names, or ``None`` if it is not a readable lock.

    Only a regular file of at most 64 KiB is read, opened without blocking and
    without following a link: a FIFO, a device, a folder or a symbolic link
    (one to nowhere included) under the lock's name is not a lock (``None``,
    so :func:`acquire` takes it over as stale, with a warning).

    Raises:
        FileNotFoundError: there is no lock file.
    """
    try:
        raw = LocalStorage().read_small(path, _LOCK_LIMIT, follow=False)
    except UnsafeFileError:
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != LOCK_FORMAT:
        return None
    pid, host, token = data.get("pid"), data.get("host"), data.get("token")
    started = data.get("started")
    if not (isinstance(pid, int) and isinstance(host, str) and isinstance(token, str)):
        return None
    return LockOwner(
        pid=pid,
        host=host,
        started=float(started) if isinstance(started, (int, float)) else 0.0,
        process_start=_str_or_none(data.get("process_start")),
        boot_id=_str_or_none(data.get("boot_id")),
        token=token,
        filepath=_str_or_none(data.get("filepath")),
    )


# --------------------------------------------------------------------------- internals


def _register(lock: FolderLock) -> FolderLock:
    global _ATEXIT_REGISTERED
    _HELD[lock.path] = lock
    if not _ATEXIT_REGISTERED:
        atexit.register(_release_all)
        _ATEXIT_REGISTERED = True
    return lock


def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.release()


def _this_process(filepath: str | None) -> LockOwner:
    pid = os.getpid()
    return LockOwner(
        pid=pid,
        host=socket.gethostname(),
        started=time.time(),
        process_start=_process_start(pid),
        boot_id=_boot_id(),
        token=uuid.uuid4().hex,
        filepath=filepath,
    )


def _encode(owner: LockOwner) -> bytes:
    data: dict[str, Any] = {
        "format": LOCK_FORMAT,
        "pid": owner.pid,
        "host": owner.host,
        "started": owner.started,
        "process_start": owner.process_start,
        "boot_id": owner.boot_id,
        "token": owner.token,
        "filepath": owner.filepath,
        "ckptname_version": __version__,
    }
    return json.dumps(data, indent=1, sort_keys=True).encode()


def _create(path: str, owner: LockOwner) -> bool:
    """Create the lock file holding ``owner``, complete; ``False`` if it exists."""
    data = _encode(owner)
    folder = os.path.dirname(path)
    tmp = os.path.join(folder, temp_name(LOCK_NAME))
    with open(tmp, "wb") as fh:
        fh.write(data)
    try:
        os.link(tmp, path)
        return True
    except (FileExistsError, FileNotFoundError):
        # Exists; or our temporary file was removed by the run that holds the
        # folder, cleaning up: the caller reads who holds it either way.
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    # No hard links here: create exclusively, then write in one call.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return True


def _read_settled(path: str) -> LockOwner | None:
    """Read a lock, giving one being written without hard links a moment to finish."""
    owner = read_owner(path)
    for _ in range(5):
        if owner is not None:
            break
        time.sleep(0.05)
        owner = read_owner(path)
    return owner


def _is_this_process(owner: LockOwner) -> bool:
    if owner.pid != os.getpid() or owner.host != socket.gethostname():
        return False
    mine = _process_start(owner.pid)
    return owner.process_start is None or mine is None or owner.process_start == mine


def _stale_reason(owner: LockOwner | None) -> str | None:
    """Why a lock's owner is certainly gone, or ``None`` if it may be alive."""
    if owner is None:
        return (
            "it is not a ckptname lock file (empty, truncated, not a regular file, or "
            "written by something else)"
        )
    if owner.host != socket.gethostname():
        return None  # its processes cannot be seen from here
    boot = _boot_id()
    if owner.boot_id is not None and boot is not None and owner.boot_id != boot:
        return "the machine has restarted since"
    if not _pid_alive(owner.pid):
        return "that process is no longer running"
    start = _process_start(owner.pid)
    if owner.process_start is not None and start is not None and start != owner.process_start:
        return "that process is no longer running (its pid now belongs to another process)"
    return None


def _locked_error(folder: str, path: str, owner: LockOwner | None) -> FolderLockedError:
    assert owner is not None  # an unreadable lock is always stale
    if owner.host == socket.gethostname():
        advice = (
            "wait for it to finish or stop it, or point this run at another folder (two "
            "runs writing one folder would overwrite and prune each other's checkpoints); "
            "if it is alive but no longer training (an interrupted notebook, say), pass "
            "lock='takeover' to BatchAwareCheckpoint"
        )
    else:
        advice = (
            "ckptname cannot tell from here whether it is still running; if it is, point "
            "this run at another folder; if it has ended, delete the lock file or pass "
            "lock='takeover' to BatchAwareCheckpoint"
        )
    return FolderLockedError(
        f"checkpoint folder {folder!r} is in use by another run: {owner.describe()} holds "
        f"its lock {path!r}; {advice}",
        path=path,
        pid=owner.pid,
        host=owner.host,
    )


def _remove_if_unchanged(path: str, seen: LockOwner | None) -> bool:
    """Remove the lock file if it still is the one read as ``seen``.

    The file is first renamed to a private name (only one of several racing
    processes can do that), then checked: a lock that changed in between (a
    third run took over first) is put back.
    """
    folder = os.path.dirname(path)
    private = os.path.join(folder, temp_name(LOCK_NAME))
    try:
        os.rename(path, private)
    except FileNotFoundError:
        return False
    try:
        moved = read_owner(private)
    except FileNotFoundError:
        return False
    same = (moved is None and seen is None) or (
        moved is not None and seen is not None and moved.token == seen.token
    )
    if not same:
        with contextlib.suppress(OSError):
            os.link(private, path)  # fails if yet another run created one: theirs stands
    with contextlib.suppress(OSError):
        os.unlink(private)
    return same


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return True  # cannot tell: assume alive (never steal a live lock)
    return True


def _process_start(pid: int) -> str | None:
    """The start time of a process, in clock ticks since boot (Linux), or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from
    # the last ')'. starttime is field 22, the 20th after it.
    fields = raw[raw.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


class LockKeeper:
    """A training run's hold on its folder's lock: taken at train begin, kept across
    the fits of ``fit_resumed``, given back when the last of them ends.

    Args:
        mode: ``True``, ``False`` (take none) or ``"takeover"`` (see :func:`acquire`).
        filepath: what the run writes, recorded in the lock for other runs to read.
        before_release: called before the lock is given back (to let a save
            in flight finish first), or ``None``.
    """

    def __init__(
        self, mode: bool | str, filepath: str, before_release: Callable[[], None] | None = None
    ) -> None:
        self.mode = mode
        self.filepath = filepath
        self.before_release = before_release
        self._lock: FolderLock | None = None
        self._holds = 0  # above 0 while several fits run as one (see hold)

    def take(self, folder: str, root: str) -> None:
        """Take the lock of local ``folder`` (shown to users as ``root``), unless held.

        Raises:
            FolderLockedError: another live run holds it.
            CheckpointError: the lock cannot be written.
        """
        if self.mode is False or (self._lock is not None and self._lock.held):
            return
        try:
            self._lock = acquire(folder, filepath=self.filepath, takeover=self.mode == "takeover")
        except OSError as exc:
            cause = exc.strerror or str(exc) or type(exc).__name__
            raise CheckpointError(
                f"could not take the lock of checkpoint folder {root!r}: {cause}; "
                "make the folder writable, or pass lock=False to write without a lock"
            ) from exc

    def release(self) -> None:
        """Give the lock back now (after ``before_release``)."""
        if self.before_release is not None:
            self.before_release()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def end_of_fit(self) -> None:
        """A fit ended: give the lock back unless several fits run as one."""
        if not self._holds:
            self.release()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the lock across the fits run inside; give it back after the last."""
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if not self._holds:
                self.release()
