"""Every file operation ckptname performs, on the local disk or through fsspec.

This module is the one place that lists, reads, writes, renames, removes and
flushes files, and the one place that names temporary files. Everything above
it (formats, locks, scanning, retention, the callback) asks a :class:`Storage`.

Local paths use ``os`` directly (``os.scandir`` lists a folder with sizes in
one system call per entry batch). URLs (``s3://bucket/run``, ``memory://x``,
``file://...``) go through fsspec, imported only when a URL is used.

Listing never globs. A folder is one ``ls`` (:meth:`Storage.listdir`). A
whole tree is one flat listing (:meth:`Storage.find`) only where the store
lists every key under a prefix in one paginated request sequence, without
asking folder by folder:

==========================================  ===================================
storage                                     :meth:`Storage.find`
==========================================  ===================================
``s3``, ``s3a``, ``gs``, ``gcs``, ``az``,   fsspec ``find(detail=True)``: one
``abfs``, ``abfss``, ``memory``             listing without a delimiter, 1,000
                                            keys a page on S3
local disk, other fsspec protocols          ``None``: list folder by folder
                                            (a generic fsspec ``find`` walks
                                            the tree one ``ls`` per folder, and
                                            the local disk has its own paths)
==========================================  ===================================

A file is written so that it appears under its name complete or not at all:

=============================  ===============================================
storage                        :meth:`Storage.write_bytes`
=============================  ===============================================
local (:class:`LocalStorage`)  write ``.ckptname-tmp-<id>-<name>`` next to the
                               file, flush it to disk if asked, then
                               ``os.replace`` it onto the name; the temporary
                               file is removed if any step fails
object store                   one PUT (``pipe_file``), which the store makes
(:class:`FsspecStorage`)       visible whole or not at all
=============================  ===============================================

Temporary names come from :func:`temp_name` alone, and :func:`temp_target`
reads them back: ``.ckptname-tmp-1a2b3c4d5e6f-ep03.keras`` is a write of
``ep03.keras`` in progress, or left by a run that died (12 random hex digits,
then the final name). They carry ``.ckptname``, so no template ever matches
one and scanning skips them.

Local writes call ``open``, ``os.replace`` and ``os.unlink`` when they run
(never a reference taken at import), so that a test can make them fail.

Small files that anyone with write access to a folder could replace (the
sidecars, the state file, the lock) are read with :meth:`Storage.read_small`:
only a regular file, opened without blocking (a FIFO never hangs a reader),
and at most ``limit`` bytes (a link to ``/dev/zero`` never fills memory).

On object stores the same bound holds, with one ranged GET (``Range: bytes=0-
<limit>``): a hostile object of any size costs at most ``limit`` bytes of
memory. :meth:`Storage.read_many` reads sidecars the same way, at most
:data:`SMALL_FILE_LIMIT` bytes of each.

Failures of object stores (:class:`FsspecStorage`): whatever the file system
library raises (an ``OSError``, a botocore or aiohttp client error, a
timeout) becomes a :class:`~ckptname.StorageError`, a ``CkptnameError`` and
an ``OSError`` that names the operation, the URL and the cause, with the
original chained; only an absent file stays ``FileNotFoundError`` (or
``NotADirectoryError``, ``IsADirectoryError``). Reads (listing, looking up,
reading) that fail for a transient reason are tried again; writes and
deletes are not (a failed save is reported, and ``on_save_error`` decides):

====================================  ==========================================
failure                               read retried?
====================================  ==========================================
refused, reset or dropped             yes: :data:`READ_ATTEMPTS` attempts in all,
connection, timeout, HTTP 5xx, 429,   pausing :data:`READ_RETRY_DELAYS` seconds
throttling (``SlowDown``)             before the 2nd and the 3rd
anything else (403, 400, ...)         no
====================================  ==========================================

The file system's own retries come inside each attempt (s3fs retries dropped
connections, timeouts and ``SlowDown`` 5 times; botocore retries connection
errors, 5xx and throttling up to 5 attempts in its default "legacy" mode,
which ``config_kwargs={"retries": {"max_attempts": N}}`` changes).

Deleting inside a local tree goes through :class:`LocalTree`, which walks
down from the root with directory file descriptors and removes names
relative to them, so that no path is resolved twice: a folder swapped for a
symbolic link between a check and a delete cannot send the delete elsewhere.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat as _stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from ._errors import StorageError

__all__ = [
    "NAME_LIMIT",
    "READ_ATTEMPTS",
    "READ_RETRY_DELAYS",
    "SMALL_FILE_LIMIT",
    "TEMP_NAME_OVERHEAD",
    "TMP_PREFIX",
    "Entry",
    "FsspecStorage",
    "LinkLeavesRootError",
    "LocalStorage",
    "LocalTree",
    "Storage",
    "UnsafeFileError",
    "local_failures",
    "storage_for",
    "temp_name",
    "temp_target",
    "transient",
]

T = TypeVar("T")

TMP_PREFIX = ".ckptname-tmp-"
_ID_LENGTH = 12  # hex digits: 48 random bits, so two writers never pick one name
# The bytes a temporary name adds to the name it stands for: the prefix, the
# id and the dash after it (27).
TEMP_NAME_OVERHEAD = len(TMP_PREFIX) + _ID_LENGTH + 1
# The most bytes a file system allows in one name (a path part): 255 on
# ext4, XFS, btrfs, APFS, NTFS (in UTF-16 units there), tmpfs, NFS.
NAME_LIMIT = 255
# The most bytes read_many takes of one file (16 MiB): the limit ckptname
# reads its sidecars and state files under.
SMALL_FILE_LIMIT = 16 << 20
# A read that fails for a transient reason is tried this many times in all,
# pausing before each retry (seconds); see the module docstring.
READ_ATTEMPTS = 3
READ_RETRY_DELAYS = (0.25, 1.0)


def temp_name(name: str) -> str:
    """A fresh temporary name for a write of the file ``name``.

    Args:
        name: the final base name (no folder), e.g. ``"ep03.keras"``.

    Returns:
        ``".ckptname-tmp-<12 hex digits>-<name>"``, a new id at every call.

    Raises:
        ValueError: ``name`` is empty or holds a ``/``.
    """
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"a temporary name is made from a base name, got {name!r}")
    return f"{TMP_PREFIX}{os.urandom(_ID_LENGTH // 2).hex()}-{name}"


def temp_target(name: str) -> str | None:
    """The final base name a temporary name (see :func:`temp_name`) stands for.

    ==========================================  ==============
    name                                        result
    ==========================================  ==============
    ``.ckptname-tmp-1a2b3c4d5e6f-b3.keras``     ``"b3.keras"``
    ``.ckptname-tmp-x7_q2-b3.keras`` (old id)   ``"b3.keras"``
    ``b3.keras``, ``.ckptname-tmp-b3``          ``None``
    ==========================================  ==============

    Ids are not checked beyond holding no ``-``: a temporary file left by an
    older version (``tempfile`` ids of letters, digits and ``_``) still names
    its target.

    Args:
        name: a base name, as listed in a folder.

    Returns:
        The final name, or ``None`` where ``name`` is not a temporary name.
    """
    if not name.startswith(TMP_PREFIX) or "/" in name or os.sep in name:
        return None
    token, dash, final = name[len(TMP_PREFIX) :].partition("-")
    if not token or not dash or not final:
        return None
    return final


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed name in a folder.

    ``link`` is true for a symbolic link on the local disk (``is_dir`` then
    describes its target); object stores have none.
    """

    name: str
    is_dir: bool
    size: int | None
    mtime: float | None
    link: bool = field(default=False, compare=False)


class UnsafeFileError(OSError):
    """A file :meth:`Storage.read_small` refuses: not a regular file, or too large.

    Attributes:
        reason: what the file is, in words (``"a FIFO"``, ``"larger than 16 MiB"``).
    """

    def __init__(self, path: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{path!r} is {reason}")


def _kind(mode: int) -> str:
    for test, words in (
        (_stat.S_ISDIR, "a directory"),
        (_stat.S_ISFIFO, "a FIFO"),
        (_stat.S_ISCHR, "a character device"),
        (_stat.S_ISBLK, "a block device"),
        (_stat.S_ISSOCK, "a socket"),
        (_stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def _size_words(limit: int) -> str:
    if limit % (1 << 20) == 0:
        return f"{limit >> 20} MiB"
    if limit % (1 << 10) == 0:
        return f"{limit >> 10} KiB"
    return f"{limit} bytes"


class Storage:
    """The file operations ckptname needs, on one kind of file system."""

    remote = False

    def join(self, *parts: str) -> str:
        """The parts joined into one path."""
        raise NotImplementedError

    def listdir(self, path: str) -> list[Entry]:
        """The entries of a folder (a symbolic link to nothing is listed as a file)."""
        raise NotImplementedError

    def find(self, path: str) -> list[Entry] | None:
        """Every file below a folder, in one flat listing; ``None`` where there is none.

        Args:
            path: the folder.

        Returns:
            One entry per file at any depth below ``path``, its ``name`` the
            path relative to ``path`` with ``/`` between parts and its
            ``size`` as listed; ``[]`` where ``path`` holds nothing. ``None``
            where this storage cannot list a tree flatly: the caller lists
            folder by folder with :meth:`listdir` instead.
        """
        return None

    def read_many(self, paths: list[str], limit: int = SMALL_FILE_LIMIT) -> list[bytes | OSError]:
        """The contents of several small files, read concurrently where the storage can.

        Args:
            paths: the files.
            limit: the most bytes wanted of each file.

        Returns:
            For each path, in order, its bytes, or the ``OSError`` reading it
            raised (``FileNotFoundError`` where nothing is there). Of a file
            over ``limit`` bytes, only its first ``limit + 1`` bytes are read
            and returned: a result longer than ``limit`` says that the file is
            too large, and is all the memory it costs.
        """
        out: list[bytes | OSError] = []
        for path in paths:
            try:
                out.append(self.read_small(path, limit))
            except OSError as exc:
                out.append(exc)
        return out

    def exists(self, path: str) -> bool:
        """Whether ``path`` exists (a symbolic link to nothing does not)."""
        raise NotImplementedError

    def lexists(self, path: str) -> bool:
        """Whether ``path`` exists, a symbolic link to nothing included."""
        raise NotImplementedError

    def stat(self, path: str) -> Entry | None:
        """The entry for one path (its name is the last part), or ``None`` if absent."""
        raise NotImplementedError

    def version(self, path: str) -> str | None:
        """What tells the object at ``path`` from another written over it; ``None`` if absent.

        Object stores replace an object whole with each upload; a sidecar
        written before a replacing upload records the old object's version,
        so that readers can tell which of the two stands under the name (see
        ``ckptname._metadata.settle``). The local disk renames instead and
        needs none: there it is the size and the modification time.
        """
        entry = self.stat(path)
        return None if entry is None else f"{entry.size}|{entry.mtime}"

    def modified(self, path: str) -> float | None:
        """When a file was last written, as a POSIX time, where the storage says; else ``None``.

        Only for deciding what a killed save left behind: listings never read
        times (they order nothing).
        """
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        raise NotImplementedError

    def read_small(self, path: str, limit: int, *, follow: bool = True) -> bytes:
        """The content of a small regular file, read without blocking, at most ``limit`` bytes.

        For files that anyone who can write into a folder could replace
        (sidecars, state files, locks): a FIFO, a device, a socket or a
        folder is refused without reading (opening a FIFO does not wait for a
        writer), and so is a file over ``limit`` bytes, whatever its size
        claims (a link to ``/dev/zero`` says 0).

        Args:
            path: the file.
            limit: the most bytes to accept.
            follow: follow a symbolic link at ``path`` (local files); with
                ``False`` a link is refused as :class:`UnsafeFileError`.

        Raises:
            FileNotFoundError: nothing is at ``path`` (or a link leads nowhere).
            UnsafeFileError: ``path`` is not a regular file, or is larger than
                ``limit``.
            OSError: the storage cannot read it.
        """
        raise NotImplementedError

    def temp_path(self, path: str) -> str:
        """A fresh temporary path next to ``path``, named by :func:`temp_name`."""
        raise NotImplementedError

    def write_temp(self, path: str, data: bytes) -> str:
        """Write ``data`` to a fresh :meth:`temp_path` of ``path``; return that path.

        On failure the partial temporary file is removed and the error raised.
        """
        raise NotImplementedError

    def write_bytes(self, path: str, data: bytes, *, fsync: bool = False) -> None:
        """Write a file so that it appears complete under its name or not at all.

        Args:
            path: the file to write (replaced if it exists).
            data: its content.
            fsync: flush the content to disk before the rename (local files),
                so that a power loss leaves the old file or the new one, never
                an empty one.
        """
        raise NotImplementedError

    def put_file(self, local_path: str, path: str) -> None:
        """Move or upload the local file ``local_path`` to ``path``."""
        raise NotImplementedError

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, replacing ``dst`` if it exists."""
        raise NotImplementedError

    def remove(self, path: str) -> None:
        """Remove one file."""
        raise NotImplementedError

    def makedirs(self, path: str) -> None:
        """Create a folder and its parents, if missing."""
        raise NotImplementedError

    def fsync(self, path: str) -> None:
        """Flush a file (or, on POSIX, a folder's entries) to disk."""
        raise NotImplementedError

    def url(self, path: str) -> str:
        """The path as the user would pass it back (a URL for remote storage)."""
        return path


class LocalStorage(Storage):
    """Files on the local disk, through ``os``."""

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def listdir(self, path: str) -> list[Entry]:
        out = []
        with local_failures("list", path or "."), os.scandir(path or ".") as it:
            for e in it:
                try:
                    is_dir = e.is_dir()
                except OSError:
                    continue
                out.append(Entry(e.name, is_dir, None, None, e.is_symlink()))
        return out

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def lexists(self, path: str) -> bool:
        return os.path.lexists(path)

    def stat(self, path: str) -> Entry | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        is_dir = _stat.S_ISDIR(st.st_mode)
        return Entry(os.path.basename(path), is_dir, None if is_dir else st.st_size, st.st_mtime)

    def modified(self, path: str) -> float | None:
        try:
            return os.lstat(path).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def read_small(self, path: str, limit: int, *, follow: bool = True) -> bytes:
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        if not follow:
            flags |= getattr(os, "O_NOFOLLOW", 0)
        with local_failures("read", path):
            return self._read_small(path, limit, flags, follow)

    def _read_small(self, path: str, limit: int, flags: int, follow: bool) -> bytes:
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.ELOOP and not follow:
                raise UnsafeFileError(path, "a symbolic link") from None
            raise
        try:
            st = os.fstat(fd)
            if not _stat.S_ISREG(st.st_mode):
                raise UnsafeFileError(path, _kind(st.st_mode))
            if st.st_size > limit:
                raise UnsafeFileError(path, f"larger than {_size_words(limit)}")
            chunks = []
            left = limit + 1  # one byte more tells a file that grew past the limit
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
        data = b"".join(chunks)
        if len(data) > limit:
            raise UnsafeFileError(path, f"larger than {_size_words(limit)}")
        return data

    def temp_path(self, path: str) -> str:
        folder, base = os.path.split(path)
        return os.path.join(folder, temp_name(base))

    def write_temp(self, path: str, data: bytes) -> str:
        # Not flushed here: callers that need the bytes on disk ask for it
        # (write_bytes(fsync=True), or fsync before their rename).
        tmp = self.temp_path(path)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def write_bytes(self, path: str, data: bytes, *, fsync: bool = False) -> None:
        tmp = self.write_temp(path, data)
        try:
            if fsync:
                self.fsync(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def put_file(self, local_path: str, path: str) -> None:
        os.replace(local_path, path)

    def replace(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.unlink(path)

    def makedirs(self, path: str) -> None:
        if path:
            os.makedirs(path, exist_ok=True)

    def fsync(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# Protocols whose fsspec ``find`` lists a whole prefix without a delimiter
# (s3fs, gcsfs, adlfs) or from one mapping (memory), rather than walking it
# folder by folder as fsspec's generic ``find`` does.
_FLAT_LISTING = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})

# An absent file: an answer, not a failure.
_ABSENT = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EREMOTEIO",  # s3fs: HTTP 500 InternalError
        "ETIMEDOUT",
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "ENETDOWN",
        "EPIPE",
        "EAGAIN",
    )
    if hasattr(errno, name)
)
# Exception classes of the libraries below fsspec, by name (so none needs
# importing): a class or any of its bases with one of these names is transient.
_TRANSIENT_TYPES = frozenset(
    {
        "ConnectionError",  # built-in, and botocore's (EndpointConnectionError...)
        "TimeoutError",  # built-in and asyncio's; fsspec's FSTimeoutError
        "HTTPClientError",  # botocore: a connection dropped mid-request
        "ReadTimeoutError",  # botocore, urllib3
        "ConnectTimeoutError",
        "ClientConnectionError",  # aiohttp: ServerDisconnectedError, ClientOSError...
        "ClientPayloadError",  # aiohttp: a body cut short
        "IncompleteRead",
        "ResponseParserError",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and the ones it was raised from (``__cause__``, else ``__context__``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http(exc: BaseException) -> tuple[int | None, str | None]:
    """The HTTP status and the store's error code behind an exception, where it carries them."""
    for link in _chain(exc):
        response = getattr(link, "response", None)
        if isinstance(response, dict):  # botocore's ClientError
            meta = response.get("ResponseMetadata") or {}
            error = response.get("Error") or {}
            status = meta.get("HTTPStatusCode")
            code = error.get("Code")
            return (
                status if isinstance(status, int) else None,
                code if isinstance(code, str) else None,
            )
        status = getattr(link, "status", getattr(link, "code", None))  # aiohttp, gcsfs
        if isinstance(status, int) and not isinstance(status, bool) and 100 <= status < 600:
            return status, None
    return None, None


def transient(exc: BaseException) -> bool:
    """Whether a failure of a remote read may pass if the read is tried again.

    Refused, reset or dropped connections, timeouts, HTTP 5xx and 429, and
    throttling are; an absent file, a refused permission or a bad request
    are not.
    """
    if isinstance(exc, _ABSENT):
        return False
    status, code = _http(exc)
    if code in _TRANSIENT_CODES:
        return True
    if status is not None:
        return status >= 500 or status == 429
    for link in _chain(exc):
        if any(cls.__name__ in _TRANSIENT_TYPES for cls in type(link).__mro__):
            return True
        if isinstance(link, OSError) and link.errno in _TRANSIENT_ERRNOS:
            return True
    return False


def _cause(exc: BaseException) -> str:
    """What went wrong, in words: the store's message, with the HTTP status where there is one."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        message = str(exc)
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    status, _ = _http(exc)
    if status is not None and f"HTTP {status}" not in text:
        text = f"HTTP {status}: {text}"
    return text


@contextlib.contextmanager
def local_failures(what: str, path: str) -> Iterator[None]:
    """Turn the local disk's refusal to ``what`` ``path`` into a :class:`StorageError`.

    A folder or file that cannot be read (permission denied, an I/O error,
    a loop of links) fails the call with the path and the cause, as an
    object store's failure does. What is absent stays ``FileNotFoundError``
    or ``NotADirectoryError``, and a file refused by ckptname's own rules
    stays :class:`UnsafeFileError`: callers give those meanings of their own.
    """
    try:
        yield
    except (FileNotFoundError, NotADirectoryError, UnsafeFileError, StorageError):
        raise
    except OSError as exc:
        raise _storage_error(what, path, exc, 1) from exc


def _storage_error(what: str, url: str, exc: BaseException, attempts: int) -> StorageError:
    cause = _cause(exc)
    tried = f" (tried {attempts} times)" if attempts > 1 else ""
    error = StorageError(f"could not {what} {url!r}: {cause}{tried}", url=url, cause=cause,
                         attempts=attempts)  # fmt: skip
    errno_ = next((link.errno for link in _chain(exc) if isinstance(link, OSError)), None)
    if isinstance(errno_, int):
        # errno alone: setting strerror or filename would rewrite the message.
        error.errno = errno_
    error.__cause__ = exc
    return error


def _pause(attempt: int) -> None:
    time.sleep(READ_RETRY_DELAYS[min(attempt - 1, len(READ_RETRY_DELAYS) - 1)])


def _posix_time(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


# What fsspec's file systems report that changes when an object is written
# over: its content hash or generation (S3's ETag, GCS's generation and
# md5Hash, Azure's etag), its size and its time.
_VERSION_KEYS = (
    "ETag", "etag", "generation", "md5Hash", "crc32c", "VersionId", "version_id",
    "size", "LastModified", "last_modified", "mtime", "updated",
)  # fmt: skip


class FsspecStorage(Storage):
    """Files on any fsspec file system (object stores, ``memory://``...).

    Every call into the file system goes through :meth:`_call`: a failure
    becomes a :class:`~ckptname.StorageError` (an absent file stays
    ``FileNotFoundError``), and a read that failed for a transient reason is
    tried again (see the module docstring).
    """

    remote = True

    def __init__(self, fs: Any, protocol: str) -> None:
        self.fs = fs
        self.protocol = protocol

    def _call(self, what: str, path: str, fn: Callable[..., T], *args: Any, read: bool,
              **kwargs: Any) -> T:  # fmt: skip
        """``fn(*args, **kwargs)``, with failures as ``StorageError`` and reads retried.

        Raises:
            FileNotFoundError, NotADirectoryError, IsADirectoryError: nothing
                (or a folder) is at ``path``.
            StorageError: the file system failed; ``what`` says what was being
                done to ``path``.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(*args, **kwargs)
            except _ABSENT:
                raise
            except Exception as exc:  # any library's error: botocore, aiohttp, asyncio
                if read and attempt < READ_ATTEMPTS and transient(exc):
                    _pause(attempt)
                    continue
                raise _storage_error(what, self.url(path), exc, attempt) from exc

    def join(self, *parts: str) -> str:
        return "/".join(p.rstrip("/") for p in parts if p != "")

    def listdir(self, path: str) -> list[Entry]:
        # Listings are cached by some file systems (s3fs); a checkpoint folder
        # is written by other processes, so always ask the store itself.
        self.fs.invalidate_cache(path)
        try:
            infos = self._call("list", path, self.fs.ls, path, detail=True, read=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        here = path.rstrip("/")
        prefix = here + "/"
        for info in infos:
            full = info["name"].rstrip("/")
            if full == here or full == here.lstrip("/"):
                continue  # some stores list a folder's own marker object
            name = full[len(prefix) :] if full.startswith(prefix) else full.rsplit("/", 1)[-1]
            if not name or "/" in name:
                continue
            is_dir = info.get("type") == "directory"
            size = None if is_dir else info.get("size")
            out.append(Entry(name, is_dir, size, None))
        return out

    def find(self, path: str) -> list[Entry] | None:
        if self.protocol not in _FLAT_LISTING:
            return None
        # As for listdir: ask the store, not a cache.
        self.fs.invalidate_cache(path)
        try:
            infos = self._call(
                "list", path, self.fs.find, path, detail=True, withdirs=False, read=True
            )
        except (FileNotFoundError, NotADirectoryError):
            return []
        finally:
            self._forget_tree(path)
        here = path.rstrip("/")
        prefixes = (here + "/", here.lstrip("/") + "/")
        out = []
        for info in infos.values():
            if info.get("type") == "directory":
                continue
            full = info["name"]
            for prefix in prefixes:
                if full.startswith(prefix):
                    name = full[len(prefix) :]
                    break
            else:
                continue  # the folder itself, where it is also an object
            if name and not name.endswith("/"):  # "a/" is a folder's marker object
                out.append(Entry(name, False, info.get("size"), None))
        return out

    def _forget_tree(self, path: str) -> None:
        """Drop the listings of ``path`` and every folder below it from fsspec's cache.

        s3fs fills its cache with a listing of every folder a ``find``
        passed; this fsspec instance is shared by the whole process, and
        other callers would be answered from it long after the tree changed.
        """
        self.fs.invalidate_cache(path)
        cache = getattr(self.fs, "dircache", None)
        if not cache:
            return
        below = path.rstrip("/") + "/"
        for key in [k for k in list(cache) if isinstance(k, str) and k.startswith(below)]:
            cache.pop(key, None)

    def read_many(self, paths: list[str], limit: int = SMALL_FILE_LIMIT) -> list[bytes | OSError]:
        if not paths:
            return []
        # A ranged read from byte 0 is one GET (s3fs asks for the size first,
        # a HEAD, only for a read without a range), and it bounds the memory
        # a hostile object costs. Async file systems run the reads
        # concurrently; those that failed transiently are tried again together.
        results: list[bytes | OSError | None] = [None] * len(paths)
        failed: dict[int, BaseException] = {}
        pending = list(range(len(paths)))
        attempt = 0
        while pending:
            attempt += 1
            try:
                got = self.fs.cat_ranges(
                    [paths[i] for i in pending], 0, limit + 1, on_error="return"
                )
            except Exception as exc:  # the whole batch failed (a session, the event loop)
                got = [exc] * len(pending)
            again = []
            for i, result in zip(pending, got):
                if isinstance(result, (bytes, FileNotFoundError, NotADirectoryError)):
                    results[i] = result
                elif (
                    isinstance(result, BaseException)
                    and attempt < READ_ATTEMPTS
                    and transient(result)
                ):
                    again.append(i)
                else:
                    failed[i] = (
                        result
                        if isinstance(result, BaseException)
                        else TypeError(f"the file system returned {type(result).__name__}")
                    )
            if again:
                _pause(attempt)
            pending = again
        for i, failure in failed.items():
            if transient(failure):
                results[i] = _storage_error("read", self.url(paths[i]), failure, attempt)
                continue
            # Any other failure of the ranged read (an empty object refuses a
            # range on some stores) is settled by a single read, which says
            # what a read of that one file says.
            try:
                results[i] = self._head(paths[i], limit)
            except OSError as err:
                results[i] = err
        return [r if r is not None else FileNotFoundError(p) for r, p in zip(results, paths)]

    def _head(self, path: str, limit: int) -> bytes:
        """At most the first ``limit + 1`` bytes of a file, in one ranged GET."""
        try:
            data: bytes = self._call(
                "read", path, self.fs.cat_file, path, start=0, end=limit + 1, read=True
            )
        except StorageError as exc:
            if exc.__cause__ is None or transient(exc.__cause__):
                raise
            # Some stores refuse any range of an empty object (HTTP 416).
            entry = self.stat(path)
            if entry is not None and not entry.is_dir and entry.size == 0:
                return b""
            raise
        return data

    def exists(self, path: str) -> bool:
        return bool(self._call("look up", path, self.fs.exists, path, read=True))

    def lexists(self, path: str) -> bool:
        # Object stores have no symbolic links.
        return self.exists(path)

    def _info(self, path: str) -> dict[str, Any] | None:
        self.fs.invalidate_cache(path)
        try:
            info: dict[str, Any] = self._call("look up", path, self.fs.info, path, read=True)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return info

    def stat(self, path: str) -> Entry | None:
        info = self._info(path)
        if info is None:
            return None
        is_dir = info.get("type") == "directory"
        size = None if is_dir else info.get("size")
        return Entry(path.rstrip("/").rsplit("/", 1)[-1], is_dir, size, None)

    def version(self, path: str) -> str | None:
        info = self._info(path)
        if info is None:
            return None
        return "|".join(f"{key}={info[key]}" for key in _VERSION_KEYS if info.get(key) is not None)

    def modified(self, path: str) -> float | None:
        info = self._info(path)
        if info is None:
            return None
        for key in ("LastModified", "last_modified", "mtime", "updated", "created"):
            found = _posix_time(info.get(key))
            if found is not None:
                return found
        return None

    def read_bytes(self, path: str) -> bytes:
        data: bytes = self._call("read", path, self.fs.cat_file, path, read=True)
        return data

    def read_small(self, path: str, limit: int, *, follow: bool = True) -> bytes:
        # One ranged GET: an object store holds only whole objects (no FIFOs,
        # no links), so the size is the one thing to bound.
        try:
            data = self._head(path, limit)
        except IsADirectoryError:
            raise UnsafeFileError(path, "a directory") from None
        if len(data) > limit:
            raise UnsafeFileError(path, f"larger than {_size_words(limit)}")
        return data

    def temp_path(self, path: str) -> str:
        folder, slash, base = path.rpartition("/")
        return folder + slash + temp_name(base)

    def write_temp(self, path: str, data: bytes) -> str:
        raise NotImplementedError(
            "temporary files are for local folders; on an object store write_bytes "
            "is one PUT, complete or absent"
        )

    def write_bytes(self, path: str, data: bytes, *, fsync: bool = False) -> None:
        # Object stores make a single PUT visible whole or not at all, and
        # durable once it returns: there is nothing to flush.
        self._call("write", path, self.fs.pipe_file, path, data, read=False)

    def put_file(self, local_path: str, path: str) -> None:
        self._call("upload", path, self.fs.put_file, local_path, path, read=False)

    def replace(self, src: str, dst: str) -> None:
        # A copy then a delete on object stores: not atomic, unlike os.replace.
        self._call("move", src, self.fs.mv, src, dst, read=False)

    def remove(self, path: str) -> None:
        self._call("remove", path, self.fs.rm_file, path, read=False)

    def makedirs(self, path: str) -> None:
        # Object stores have no folders to create: a key's prefix is its folder.
        pass

    def fsync(self, path: str) -> None:
        pass  # a completed PUT is already durable

    def url(self, path: str) -> str:
        if self.protocol in ("file", "local"):
            return path
        return f"{self.protocol}://{path}"


class LinkLeavesRootError(OSError):
    """A folder on the way to a file is a symbolic link that leads out of the root."""


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# Walking with directory descriptors needs these; elsewhere (Windows) paths
# are used, each folder checked with realpath before it is used.
_BY_FD = (
    os.open in os.supports_dir_fd
    and os.unlink in os.supports_dir_fd
    and os.stat in os.supports_dir_fd
    and os.scandir in os.supports_fd
    and _NOFOLLOW != 0
)


class LocalTree:
    """A local root, opened to list and delete below it without resolving a path twice.

    Each folder is opened once, relative to its parent's descriptor, with
    ``O_NOFOLLOW``; a folder that is a symbolic link is followed only if the
    folder it opens lies inside the root (checked on the opened descriptor,
    by walking its ``..`` up to the root). Names are then listed, stat'ed and
    removed relative to the folder's descriptor. Whatever is renamed or
    swapped for a link meanwhile, a removal lands in a folder that was inside
    the root when it was opened.

    Use as a context manager; descriptors are closed on exit.

    Args:
        root: the root folder (followed if it is itself a link: the caller
            named it).
    """

    def __init__(self, root: str) -> None:
        self.root = root or "."
        self._fds: dict[str, int | None] = {}
        self._paths: dict[str, str | None] = {}
        if _BY_FD:
            fd = os.open(self.root, _DIR_FLAGS)
            st = os.fstat(fd)
            self._root_id = (st.st_dev, st.st_ino)
            self._fds[""] = fd
        else:  # pragma: no cover - platforms without dir_fd
            self._root_real = os.path.realpath(self.root)

    def __enter__(self) -> LocalTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _folder(self, rel: str) -> int | None:
        """The descriptor of the folder ``rel`` (``""`` is the root), ``None`` if it leaves it.

        Raises:
            FileNotFoundError, NotADirectoryError: there is no such folder.
        """
        if rel in self._fds:
            return self._fds[rel]
        parent, _, last = rel.rpartition("/")
        parent_fd = self._folder(parent)
        if parent_fd is None:
            self._fds[rel] = None
            return None
        try:
            fd = os.open(last, _DIR_FLAGS | _NOFOLLOW, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            # A symbolic link (or no folder at all, which this open reports):
            # follow it, then ask the opened folder where it lies.
            fd = os.open(last, _DIR_FLAGS, dir_fd=parent_fd)
            if not self._under_root(fd):
                os.close(fd)
                self._fds[rel] = None
                return None
        self._fds[rel] = fd
        return fd

    def _under_root(self, fd: int) -> bool:
        """Whether the folder open as ``fd`` lies inside the root, walking ``..`` up."""
        current = fd
        previous = os.fstat(fd)
        try:
            for _ in range(4096):
                if (previous.st_dev, previous.st_ino) == self._root_id:
                    return True
                up = os.open("..", _DIR_FLAGS, dir_fd=current)
                if current != fd:
                    os.close(current)
                current = up
                st = os.fstat(up)
                if (st.st_dev, st.st_ino) == (previous.st_dev, previous.st_ino):
                    return False  # '/' is its own parent
                previous = st
            return False
        finally:
            if current != fd:
                os.close(current)

    def _path_folder(self, rel: str) -> str | None:  # pragma: no cover - no dir_fd
        if rel not in self._paths:
            path = os.path.join(self.root, *rel.split("/")) if rel else self.root
            real = os.path.realpath(path)
            inside = real == self._root_real or real.startswith(
                self._root_real.rstrip(os.sep) + os.sep
            )
            if not os.path.isdir(path):
                raise FileNotFoundError(errno.ENOENT, "no such folder", path)
            self._paths[rel] = path if inside else None
        return self._paths[rel]

    def listdir(self, rel: str) -> list[str]:
        """The names in the folder ``rel`` (relative to the root, ``/`` between parts).

        Raises:
            LinkLeavesRootError: a folder on the way is a link out of the root.
            FileNotFoundError, NotADirectoryError: there is no such folder.
        """
        if not _BY_FD:  # pragma: no cover
            path = self._path_folder(rel)
            if path is None:
                raise LinkLeavesRootError(errno.ELOOP, "leads out of the root", rel)
            return os.listdir(path)
        fd = self._folder(rel)
        if fd is None:
            raise LinkLeavesRootError(errno.ELOOP, "leads out of the root", rel)
        with os.scandir(fd) as it:
            return [entry.name for entry in it]

    def lstat(self, name: str) -> os.stat_result:
        """``os.lstat`` of a name relative to the root (its last part not followed)."""
        folder, _, last = name.rpartition("/")
        if not _BY_FD:  # pragma: no cover
            path = self._path_folder(folder)
            if path is None:
                raise LinkLeavesRootError(errno.ELOOP, "leads out of the root", name)
            return os.lstat(os.path.join(path, last))
        fd = self._folder(folder)
        if fd is None:
            raise LinkLeavesRootError(errno.ELOOP, "leads out of the root", name)
        return os.stat(last, dir_fd=fd, follow_symlinks=False)

    def remove(self, name: str) -> bool:
        """Remove the file ``name`` (relative to the root); a link is removed, not its target.

        Returns:
            ``True`` where a file was removed, ``False`` where none was there
            (or its folder is gone, or it is now a folder).

        Raises:
            LinkLeavesRootError: a folder on the way is a link out of the root.
            OSError: removing failed (permission denied, say).
        """
        folder, _, last = name.rpartition("/")
        try:
            if not _BY_FD:  # pragma: no cover
                path = self._path_folder(folder)
                if path is None:
                    raise LinkLeavesRootError(errno.ELOOP, "leads out of the root", name)
                os.unlink(os.path.join(path, last))
                return True
            fd = self._folder(folder)
            if fd is None:
                raise LinkLeavesRootError(errno.ELOOP, "leads out of the root", name)
            os.unlink(last, dir_fd=fd)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return False
        return True


def storage_for(target: str | os.PathLike[str]) -> tuple[Storage, str]:
    """The storage that holds ``target`` and the path to use with it.

    Plain paths (and ``file://`` URLs) are local; anything else with ``://``
    goes through fsspec, which must then be installed (``pip install
    ckptname[remote]``, or ``ckptname[s3]`` for S3).
    """
    text = os.fspath(target)
    if "://" not in text:
        return LocalStorage(), text
    protocol, _, rest = text.partition("://")
    if protocol == "file":
        return LocalStorage(), rest
    try:
        import fsspec
    except ImportError:
        raise ImportError(
            f"{text!r} is a URL, which needs fsspec; install it with "
            "pip install 'ckptname[remote]' (or 'ckptname[s3]' for s3://)"
        ) from None
    fs, path = fsspec.core.url_to_fs(text)
    return FsspecStorage(fs, protocol), path.rstrip("/")
