"""Storage: temporary names, atomic writes, and the file operations, local and fsspec."""

from __future__ import annotations

import builtins
import errno
import os
import re
from pathlib import Path
from typing import Any

import pytest

from ckptname._errors import CheckpointError, StorageError
from ckptname._metadata import is_reserved
from ckptname._storage import (
    TMP_PREFIX,
    Entry,
    FsspecStorage,
    LocalStorage,
    storage_for,
    temp_name,
    temp_target,
    transient,
)

_real_open = builtins.open
_real_replace = os.replace


def listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def open_path(fd: int) -> str:
    """The path a file descriptor was opened with (Linux)."""
    return os.readlink(f"/proc/self/fd/{fd}")


needs_proc = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="reads open files' paths from /proc"
)


# ------------------------------------------------------------------ temporary names

FINAL_NAMES = [
    "ep03.keras",
    "ep03-0.52.keras",  # dashes in the final name
    "b10.keras.ckptname.json",
    ".ckptname-state.json",
    ".ckptname.lock",
    "weights.h5",
    "ünïcode-名前.keras",
]


@pytest.mark.parametrize("name", FINAL_NAMES)
def test_temp_name_reads_back_to_its_target(name: str) -> None:
    tmp = temp_name(name)
    assert re.fullmatch(r"\.ckptname-tmp-[0-9a-f]{12}-" + re.escape(name), tmp)
    assert temp_target(tmp) == name


@pytest.mark.parametrize("name", FINAL_NAMES)
def test_temp_names_are_reserved(name: str) -> None:
    assert is_reserved(temp_name(name))


def test_temp_names_differ_at_every_call() -> None:
    assert len({temp_name("ep03.keras") for _ in range(100)}) == 100


@pytest.mark.parametrize("name", ["", "runs/ep03.keras"])
def test_temp_name_fail(name: str) -> None:
    with pytest.raises(ValueError) as info:
        temp_name(name)
    assert str(info.value) == f"a temporary name is made from a base name, got {name!r}"


TEMP_TARGET_PASS = [
    (".ckptname-tmp-0123456789ab-b010.keras", "b010.keras"),
    (".ckptname-tmp-0123456789ab-ep03-0.52.keras", "ep03-0.52.keras"),
    # Left by older versions: tempfile ids, and hand-made ones.
    (".ckptname-tmp-k3_x9q2a-b010.keras", "b010.keras"),
    (".ckptname-tmp-1-ep101-0.100.keras", "ep101-0.100.keras"),
    (".ckptname-tmp-0123456789ab-.ckptname.lock", ".ckptname.lock"),
]


@pytest.mark.parametrize(("name", "target"), TEMP_TARGET_PASS)
def test_temp_target(name: str, target: str) -> None:
    assert temp_target(name) == target


TEMP_TARGET_FAIL = [
    "b010.keras",
    ".ckptname-state.json",
    ".ckptname.lock",
    "b010.keras.ckptname.json",
    ".ckptname-tmp-",
    ".ckptname-tmp-b010.keras",  # no id
    ".ckptname-tmp--b010.keras",  # an empty id
    ".ckptname-tmp-0123456789ab-",  # no final name
    "x.ckptname-tmp-0123456789ab-b010.keras",  # the prefix not at the start
    "sub/.ckptname-tmp-0123456789ab-b010.keras",  # not a base name
]


@pytest.mark.parametrize("name", TEMP_TARGET_FAIL)
def test_temp_target_fail(name: str) -> None:
    assert temp_target(name) is None


def test_tmp_prefix_is_what_temp_names_start_with() -> None:
    assert temp_name("a").startswith(TMP_PREFIX)
    assert TMP_PREFIX == ".ckptname-tmp-"


# ------------------------------------------------------------------ local: reads


@pytest.fixture
def local() -> LocalStorage:
    return LocalStorage()


def test_local_listdir_stat_exists(tmp_path: Path, local: LocalStorage) -> None:
    (tmp_path / "ep01.keras").write_bytes(b"12345")
    (tmp_path / "sub").mkdir()
    entries = sorted(local.listdir(str(tmp_path)), key=lambda e: e.name)
    assert entries == [Entry("ep01.keras", False, None, None), Entry("sub", True, None, None)]
    file_entry = local.stat(str(tmp_path / "ep01.keras"))
    assert file_entry is not None
    assert (file_entry.name, file_entry.is_dir, file_entry.size) == ("ep01.keras", False, 5)
    assert file_entry.mtime == os.stat(tmp_path / "ep01.keras").st_mtime
    dir_entry = local.stat(str(tmp_path / "sub"))
    assert dir_entry is not None
    assert (dir_entry.is_dir, dir_entry.size) == (True, None)
    assert local.stat(str(tmp_path / "missing")) is None
    assert local.stat(str(tmp_path / "ep01.keras" / "below")) is None
    assert local.exists(str(tmp_path / "ep01.keras"))
    assert not local.exists(str(tmp_path / "missing"))
    assert local.read_bytes(str(tmp_path / "ep01.keras")) == b"12345"


def test_local_dangling_symlink(tmp_path: Path, local: LocalStorage) -> None:
    link = tmp_path / "ep01.keras"
    link.symlink_to(tmp_path / "gone.keras")
    assert local.listdir(str(tmp_path)) == [Entry("ep01.keras", False, None, None)]
    assert local.stat(str(link)) is None
    assert not local.exists(str(link))
    assert local.lexists(str(link))
    assert not local.lexists(str(tmp_path / "gone.keras"))


def test_local_join(local: LocalStorage) -> None:
    assert local.join("runs", "a", "ep01.keras") == os.path.join("runs", "a", "ep01.keras")


# ------------------------------------------------------------------ local: writes


def test_write_bytes_creates_and_replaces(tmp_path: Path, local: LocalStorage) -> None:
    target = tmp_path / "state.json"
    local.write_bytes(str(target), b"one")
    assert target.read_bytes() == b"one"
    local.write_bytes(str(target), b"two")
    assert target.read_bytes() == b"two"
    assert listing(tmp_path) == ["state.json"]


@needs_proc
@pytest.mark.parametrize("fsync", [False, True])
def test_write_bytes_flushes_before_the_rename_only_when_asked(
    tmp_path: Path, local: LocalStorage, monkeypatch: pytest.MonkeyPatch, fsync: bool
) -> None:
    events: list[str] = []
    real_fsync = os.fsync

    def record_fsync(fd: int) -> None:
        events.append(f"fsync {temp_target(os.path.basename(open_path(fd)))}")
        real_fsync(fd)

    def record_replace(src: str, dst: str) -> None:
        events.append("replace")
        _real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    local.write_bytes(str(tmp_path / "a.json"), b"x", fsync=fsync)
    assert events == (["fsync a.json", "replace"] if fsync else ["replace"])
    assert (tmp_path / "a.json").read_bytes() == b"x"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES, errno.EXDEV])
def test_failed_rename_leaves_the_old_file_and_no_temp(
    tmp_path: Path, local: LocalStorage, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    target = tmp_path / "a.json"
    target.write_bytes(b"old")

    def replace(src: str, dst: str) -> None:
        raise OSError(code, os.strerror(code), dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError) as info:
        local.write_bytes(str(target), b"new", fsync=True)
    assert info.value.errno == code
    assert listing(tmp_path) == ["a.json"]
    assert target.read_bytes() == b"old"


def test_interrupted_write_leaves_no_temp(
    tmp_path: Path, local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    def replace(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        local.write_bytes(str(tmp_path / "a.json"), b"new")
    assert listing(tmp_path) == []


def test_rename_onto_a_folder_fails_and_leaves_no_temp(tmp_path: Path, local: LocalStorage) -> None:
    # A real failure, no patching: os.replace refuses to put a file over a folder.
    (tmp_path / "a.json").mkdir()
    (tmp_path / "a.json" / "inside").write_bytes(b"x")
    with pytest.raises(OSError):
        local.write_bytes(str(tmp_path / "a.json"), b"new")
    assert listing(tmp_path) == ["a.json"]
    assert listing(tmp_path / "a.json") == ["inside"]


class _FullDisk:
    """A file whose write fails with ENOSPC after the file was created."""

    def __init__(self, fh: Any) -> None:
        self._fh = fh

    def __enter__(self) -> _FullDisk:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()

    def write(self, data: bytes) -> int:
        self._fh.write(data[:1])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_failed_write_removes_the_partial_temp(
    tmp_path: Path, local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []

    def full_disk(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if "w" in mode:
            opened.append(os.path.basename(file))
            return _FullDisk(_real_open(file, mode, *args, **kwargs))
        return _real_open(file, mode, *args, **kwargs)

    target = tmp_path / "a.json"
    target.write_bytes(b"old")
    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(OSError) as info:
        local.write_bytes(str(target), b"new")
    assert info.value.errno == errno.ENOSPC
    assert [temp_target(name) for name in opened] == ["a.json"]
    assert listing(tmp_path) == ["a.json"]
    assert target.read_bytes() == b"old"


def test_write_into_a_missing_folder_fails(tmp_path: Path, local: LocalStorage) -> None:
    with pytest.raises(FileNotFoundError):
        local.write_bytes(str(tmp_path / "missing" / "a.json"), b"x")
    assert listing(tmp_path) == []


def test_write_temp_writes_next_to_the_target(tmp_path: Path, local: LocalStorage) -> None:
    target = tmp_path / "b10.keras.ckptname.json"
    tmp = local.write_temp(str(target), b"{}")
    assert os.path.dirname(tmp) == str(tmp_path)
    assert temp_target(os.path.basename(tmp)) == target.name
    assert Path(tmp).read_bytes() == b"{}"
    assert not target.exists()


def test_failed_write_temp_removes_the_partial_file(
    tmp_path: Path, local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        builtins, "open", lambda file, mode="r", *a, **k: _FullDisk(_real_open(file, mode, *a, **k))
    )
    with pytest.raises(OSError):
        local.write_temp(str(tmp_path / "a.json"), b"data")
    monkeypatch.undo()
    assert listing(tmp_path) == []


def test_temp_path(local: LocalStorage) -> None:
    path = os.path.join("runs", "a", "ep01.keras")
    tmp = local.temp_path(path)
    assert os.path.dirname(tmp) == os.path.join("runs", "a")
    assert temp_target(os.path.basename(tmp)) == "ep01.keras"
    assert temp_target(local.temp_path("ep01.keras")) == "ep01.keras"


def test_replace_put_file_remove(tmp_path: Path, local: LocalStorage) -> None:
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    local.replace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert listing(tmp_path) == ["b"]
    assert (tmp_path / "b").read_bytes() == b"a"
    (tmp_path / "c").write_bytes(b"c")
    local.put_file(str(tmp_path / "c"), str(tmp_path / "d"))
    assert listing(tmp_path) == ["b", "d"]
    local.remove(str(tmp_path / "b"))
    assert listing(tmp_path) == ["d"]
    with pytest.raises(FileNotFoundError):
        local.remove(str(tmp_path / "b"))


def test_replace_calls_os_replace_when_it_runs(
    tmp_path: Path, local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    def replace(src: str, dst: str) -> None:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "a").write_bytes(b"a")
    with pytest.raises(OSError) as info:
        local.replace(str(tmp_path / "a"), str(tmp_path / "b"))
    assert info.value.errno == errno.EXDEV


def test_makedirs(tmp_path: Path, local: LocalStorage) -> None:
    deep = tmp_path / "a" / "b" / "c"
    local.makedirs(str(deep))
    assert deep.is_dir()
    local.makedirs(str(deep))  # already there
    local.makedirs("")  # the current folder
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(OSError):
        local.makedirs(str(tmp_path / "file" / "below"))


@needs_proc
def test_fsync_flushes_files_and_folders(
    tmp_path: Path, local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append(open_path(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", record)
    (tmp_path / "a").write_bytes(b"a")
    local.fsync(str(tmp_path / "a"))
    local.fsync(str(tmp_path))
    assert synced == [str(tmp_path / "a"), str(tmp_path)]
    with pytest.raises(FileNotFoundError):
        local.fsync(str(tmp_path / "missing"))


# ------------------------------------------------------------------ fsspec (memory://)


def test_storage_for() -> None:
    pytest.importorskip("fsspec")
    storage, path = storage_for("runs/a")
    assert (type(storage), path) == (LocalStorage, "runs/a")
    storage, path = storage_for("file:///runs/a")
    assert (type(storage), path) == (LocalStorage, "/runs/a")
    storage, path = storage_for("memory://x/runs/")
    assert (type(storage), storage.remote, path) == (FsspecStorage, True, "/x/runs")
    assert storage.url(path) == "memory:///x/runs"


def test_fsspec_write_read_list_stat(memory_folder: tuple[FsspecStorage, str]) -> None:
    storage, folder = memory_folder
    path = storage.join(folder, "ep01.keras")
    storage.write_bytes(path, b"12345", fsync=True)
    storage.makedirs(storage.join(folder, "sub"))
    storage.write_bytes(storage.join(folder, "sub", "x"), b"x")
    assert storage.read_bytes(path) == b"12345"
    assert storage.exists(path) and storage.lexists(path)
    missing = storage.join(folder, "missing")
    assert not storage.exists(missing) and not storage.lexists(missing)
    entries = sorted(storage.listdir(folder), key=lambda e: e.name)
    assert entries == [Entry("ep01.keras", False, 5, None), Entry("sub", True, None, None)]
    assert storage.stat(path) == Entry("ep01.keras", False, 5, None)
    assert storage.stat(missing) is None
    assert storage.listdir(missing) == []


def test_fsspec_replace_remove(memory_folder: tuple[FsspecStorage, str]) -> None:
    storage, folder = memory_folder
    a, b = storage.join(folder, "a"), storage.join(folder, "b")
    storage.write_bytes(a, b"a")
    storage.write_bytes(b, b"b")
    storage.replace(a, b)
    assert [e.name for e in storage.listdir(folder)] == ["b"]
    assert storage.read_bytes(b) == b"a"
    storage.remove(b)
    assert storage.listdir(folder) == []
    with pytest.raises(FileNotFoundError):
        storage.remove(b)


def test_fsspec_temp_path_and_no_temp_files(memory_folder: tuple[FsspecStorage, str]) -> None:
    storage, folder = memory_folder
    path = storage.join(folder, "ep01.keras")
    folder_part, _, base = storage.temp_path(path).rpartition("/")
    assert folder_part == folder
    assert temp_target(base) == "ep01.keras"
    with pytest.raises(NotImplementedError):
        storage.write_temp(path, b"x")
    storage.fsync(path)  # nothing to flush, even for a missing file
    assert storage.listdir(folder) == []


# ------------------------------------------------------------------ failures of object stores


class _ClientError(Exception):
    """What botocore raises for an error response: the response rides along."""

    def __init__(self, status: int, code: str) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


def _named(name: str, *bases: type[BaseException]) -> type[BaseException]:
    """An exception class called ``name``, as a library below fsspec defines it."""
    return type(name, bases or (Exception,), {})


def _translated(status: int, code: str, number: int) -> OSError:
    """What s3fs raises for an error response: an OSError caused by the client error."""
    error = OSError(number, "the store's message")
    error.__cause__ = _ClientError(status, code)
    return error


TRANSIENT = [
    _named("EndpointConnectionError", _named("ConnectionError")),  # botocore, refused
    _named("ReadTimeoutError"),  # botocore, urllib3
    _named("ServerDisconnectedError", _named("ClientConnectionError")),  # aiohttp
    _named("ClientPayloadError"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    TimeoutError("timed out"),
    _translated(500, "InternalError", 121),
    _translated(503, "SlowDown", errno.EBUSY),
    _translated(429, "TooManyRequests", errno.EIO),
    _ClientError(502, "BadGateway"),
    OSError(errno.ECONNREFUSED, "refused"),
]
NOT_TRANSIENT = [
    FileNotFoundError(errno.ENOENT, "missing"),
    PermissionError(errno.EACCES, "denied"),
    _translated(403, "AccessDenied", errno.EACCES),
    _translated(400, "InvalidArgument", errno.EINVAL),
    _translated(409, "OperationAborted", errno.EBUSY),  # a 409 is no outage, whatever errno
    _ClientError(404, "NoSuchKey"),
    ValueError("bad argument"),
]


@pytest.mark.parametrize("error", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_failures(error: BaseException) -> None:
    assert transient(error() if isinstance(error, type) else error)


@pytest.mark.parametrize("error", NOT_TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_failures_fail(error: BaseException) -> None:
    assert not transient(error)


def test_a_file_system_error_becomes_a_storage_error_and_reads_are_retried(
    memory_folder: tuple[FsspecStorage, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the library raises is a StorageError naming the URL and the cause; a
    transient failure of a read is tried again, with pauses; a write is tried once."""
    storage, folder = memory_folder
    path = storage.join(folder, "b1.keras")
    storage.write_bytes(path, b"model")
    pauses: list[float] = []
    monkeypatch.setattr("ckptname._storage.time.sleep", pauses.append)
    calls = []
    refused = _named("EndpointConnectionError", _named("ConnectionError"))
    real_cat = type(storage.fs).cat_file
    outage = {"requests": 2}  # refused before the store comes back

    def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        if len(calls) <= outage["requests"]:
            raise refused('Could not connect to the endpoint URL: "http://127.0.0.1:9/x"')
        return real_cat(self, *args, **kwargs)

    monkeypatch.setattr(type(storage.fs), "cat_file", flaky)
    assert storage.read_bytes(path) == b"model"  # the third attempt succeeds
    assert (len(calls), pauses) == (3, [0.25, 1.0])
    calls.clear()
    outage["requests"] = 100
    with pytest.raises(StorageError) as info:
        storage.read_small(path, 100)
    assert str(info.value) == (
        f"could not read 'memory://{path}': EndpointConnectionError: Could not connect to the "
        'endpoint URL: "http://127.0.0.1:9/x" (tried 3 times)'
    )
    assert isinstance(info.value, CheckpointError) and isinstance(info.value, OSError)

    def full(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        raise _translated(507, "InsufficientStorage", errno.EIO)

    calls.clear()
    monkeypatch.setattr(type(storage.fs), "pipe_file", full)
    with pytest.raises(StorageError) as writing:
        storage.write_bytes(path, b"new")
    assert len(calls) == 1  # a write is never tried twice
    assert str(writing.value) == (
        f"could not write 'memory://{path}': HTTP 507: the store's message"
    )
    assert writing.value.errno == errno.EIO
    with pytest.raises(FileNotFoundError):  # an absent file is an answer, not a failure
        storage.remove(storage.join(folder, "missing"))


def test_read_many_retries_only_what_failed_and_bounds_each_file(
    memory_folder: tuple[FsspecStorage, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    storage, folder = memory_folder
    paths = [storage.join(folder, name) for name in ("a", "b", "c", "missing")]
    for path, data in zip(paths, (b"a" * 10, b"b" * 11, b"")):
        storage.write_bytes(path, data)
    monkeypatch.setattr("ckptname._storage.time.sleep", lambda seconds: None)
    real = type(storage.fs).cat_ranges
    asked: list[list[str]] = []

    def once_refused(self: Any, paths: list[str], *args: Any, **kwargs: Any) -> Any:
        asked.append(list(paths))
        results = real(self, paths, *args, **kwargs)
        if len(asked) == 1:  # the first read of "a" is refused
            results[0] = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
        return results

    monkeypatch.setattr(type(storage.fs), "cat_ranges", once_refused)
    got = storage.read_many(paths, limit=10)
    assert got[:3] == [b"a" * 10, b"b" * 11, b""]  # "b" is over the limit: 11 bytes say so
    assert isinstance(got[3], FileNotFoundError)
    assert asked == [paths, paths[:1]]


def test_modified_is_the_stores_time(memory_folder: tuple[FsspecStorage, str]) -> None:
    import time

    storage, folder = memory_folder
    path = storage.join(folder, "a")
    storage.write_bytes(path, b"a")
    when = storage.modified(path)
    assert when is not None and abs(when - time.time()) < 60
    assert storage.modified(storage.join(folder, "missing")) is None
