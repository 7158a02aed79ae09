"""Where checkpoints live: the local file system, or any fsspec file system.

Local paths use ``os`` directly (``os.scandir`` lists a folder with sizes in
one system call per entry batch). URLs (``s3://bucket/run``, ``memory://x``,
``file://...``) go through fsspec, imported only when a URL is used. Listing
is always one ``ls`` per folder: never a glob, never a walk of the whole tree.
"""

from __future__ import annotations

import os
import stat as _stat
from dataclasses import dataclass
from typing import Any

__all__ = ["Entry", "FsspecStorage", "LocalStorage", "Storage", "storage_for"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One listed name in a folder."""

    name: str
    is_dir: bool
    size: int | None
    mtime: float | None


class Storage:
    """The few file operations ckptname needs, on one kind of file system."""

    remote = False

    def join(self, *parts: str) -> str:
        raise NotImplementedError

    def listdir(self, path: str) -> list[Entry]:
        raise NotImplementedError

    def exists(self, path: str) -> bool:
        raise NotImplementedError

    def stat(self, path: str) -> Entry | None:
        """The entry for one path (its name is the last part), or ``None`` if absent."""
        raise NotImplementedError

    def size(self, path: str) -> int | None:
        raise NotImplementedError

    def read_bytes(self, path: str) -> bytes:
        raise NotImplementedError

    def write_bytes(self, path: str, data: bytes) -> None:
        """Write a file so that it appears complete or not at all."""
        raise NotImplementedError

    def put_file(self, local_path: str, path: str) -> None:
        raise NotImplementedError

    def remove(self, path: str) -> None:
        raise NotImplementedError

    def url(self, path: str) -> str:
        """The path as the user would pass it back (a URL for remote storage)."""
        return path


class LocalStorage(Storage):
    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def listdir(self, path: str) -> list[Entry]:
        out = []
        with os.scandir(path or ".") as it:
            for e in it:
                try:
                    is_dir = e.is_dir()
                except OSError:
                    continue
                out.append(Entry(e.name, is_dir, None, None))
        return out

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def stat(self, path: str) -> Entry | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        is_dir = _stat.S_ISDIR(st.st_mode)
        return Entry(os.path.basename(path), is_dir, None if is_dir else st.st_size, st.st_mtime)

    def size(self, path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except OSError:
            return None

    def read_bytes(self, path: str) -> bytes:
        with open(path, "rb") as fh:
            return fh.read()

    def write_bytes(self, path: str, data: bytes) -> None:
        from ._metadata import write_bytes_atomic

        write_bytes_atomic(path, data)

    def put_file(self, local_path: str, path: str) -> None:
        os.replace(local_path, path)

    def remove(self, path: str) -> None:
        os.unlink(path)


class FsspecStorage(Storage):
    remote = True

    def __init__(self, fs: Any, protocol: str) -> None:
        self.fs = fs
        self.protocol = protocol

    def join(self, *parts: str) -> str:
        return "/".join(p.rstrip("/") for p in parts if p != "")

    def listdir(self, path: str) -> list[Entry]:
        # Listings are cached by some file systems (s3fs); a checkpoint folder
        # is written by other processes, so always ask the store itself.
        self.fs.invalidate_cache(path)
        try:
            infos = self.fs.ls(path, detail=True)
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

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def stat(self, path: str) -> Entry | None:
        self.fs.invalidate_cache(path)
        try:
            info = self.fs.info(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        is_dir = info.get("type") == "directory"
        size = None if is_dir else info.get("size")
        return Entry(path.rstrip("/").rsplit("/", 1)[-1], is_dir, size, None)

    def size(self, path: str) -> int | None:
        try:
            return int(self.fs.size(path))
        except (FileNotFoundError, OSError):
            return None

    def read_bytes(self, path: str) -> bytes:
        data: bytes = self.fs.cat_file(path)
        return data

    def write_bytes(self, path: str, data: bytes) -> None:
        # Object stores make a single PUT visible whole or not at all.
        self.fs.pipe_file(path, data)

    def put_file(self, local_path: str, path: str) -> None:
        self.fs.put_file(local_path, path)

    def remove(self, path: str) -> None:
        self.fs.rm_file(path)

    def url(self, path: str) -> str:
        if self.protocol in ("file", "local"):
            return path
        return f"{self.protocol}://{path}"


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
