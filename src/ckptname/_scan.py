"""Find checkpoints: list them, and pick the latest and the best.

A template says where checkpoints are and what their names mean; scanning
reads names back with it instead of guessing from times or string order:

===============================================  ===============================
template (relative to ``root``)                  names it finds
===============================================  ===============================
``ep{epoch:02d}-{val_loss:.2f}.keras``           ``ep07-0.52.keras``,
                                                 ``ep100-0.31.keras`` (after ep99)
``at_{batch:05d}.weights.h5``                    ``at_100000.weights.h5``
                                                 (after ``at_99999``)
``lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}.h5``   ``lr=1e-03/seed=2/ep012.h5``,
                                                 with ``lr`` and ``seed`` in
                                                 ``Checkpoint.values``
===============================================  ===============================

What counts as a checkpoint:

* the whole name matches the template (``step-100.backup`` is not
  ``step-{step}``), part by part: each folder part with its folder level of
  the template, never a glob;
* it is a file of at least one byte (a directory or an empty file is never a
  checkpoint: an empty file is what a crash during a non-atomic save leaves).
  Locally, a file whose sidecar sits next to it was renamed into place
  complete by the callback: the sidecar vouches for it, and it is taken
  without a ``stat`` (so, whatever its size); any other file is stat'ed;
* its name holds no ``.ckptname`` (temporary files, sidecars, the state file
  and the lock belong to ckptname);
* on the local disk, it is reached without leaving the root: a symbolic link
  (to a checkpoint or to a folder) is followed only where it leads inside
  the root, the rule pruning follows too;
* on remote (fsspec) roots, where there is no atomic rename, a checkpoint in a
  folder that ckptname writes into counts only once its sidecar exists: the
  callback writes the sidecar last, as a commit marker. A folder counts as
  written by ckptname when it, or a folder listed on the way down from
  ``root``, holds the state file, or when it holds any sidecar. In other
  remote folders (checkpoints uploaded by other tools) every matching,
  non-empty object counts: object stores make each upload visible whole or
  not at all. Local saves are atomic by rename, so local checkpoints need no
  marker.

How a tree is listed:

=====================================  ========================================
root                                   listing
=====================================  ========================================
local folder                           one ``os.scandir`` per folder level of
                                       the template (entry types, no stat);
                                       ``find_latest`` one ``os.listdir`` of
                                       names as bytes, searched in one pass
object store that lists a prefix       one flat listing of the tree below the
flatly (S3, GCS, Azure, memory), a     template's leading literal folders,
template with a field in a folder      1,000 keys a request on S3
other remote roots and templates       one ``ls`` per folder level
=====================================  ========================================

Sidecars are read only where a rule needs them: to order checkpoints whose
names hold no counter, to break a tie on a rounded metric, and to rank by a
metric the names lack; on object stores all at once, each in one GET.

The order of checkpoints is :func:`ckptname._rank.progress_key`.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import filterfalse
from operator import contains
from typing import Any, AnyStr

from ._errors import (
    Advice,
    CkptnameWarning,
    MetadataError,
    MissingFieldError,
    TemplateError,
    advised,
)
from ._metadata import (
    SIDECAR_SUFFIX,
    STATE_NAME,
    decode,
    is_reserved,
    read_sidecar,
    read_state,
    sidecar_path,
)
from ._rank import (
    COUNTERS,
    Mode,
    _natural,
    as_counter,
    best_key,
    can_win,
    in_sequence,
    metric_value,
    progress_key,
    resolve_mode,
    sort_by_progress,
    tie_break,
)
from ._roots import Layout, Root, cached_template, layout_for, open_root
from ._storage import Entry, Storage, storage_for, temp_target
from ._template import Template, same_value

__all__ = ["Checkpoint", "best_per_group", "find_best", "find_latest", "scan"]

_EXAMPLE_TEMPLATE = "ep{epoch:02d}-{val_loss:.2f}.keras"


# --------------------------------------------------------------------------- record


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint found on disk or in an object store.

    Records are values: frozen, cheap, comparable, hashable and picklable.
    Two records are equal when they name the same checkpoint the same way
    (``path``, ``name``, ``values``, counters, ``template``); ``size``,
    ``mtime`` and ``metadata`` are what was read along the way, where it
    was, and take no part in comparisons, so that a record from
    :func:`find_latest` (which stats the file it returns) equals the same
    checkpoint's record from :func:`scan` (which may not).

    Attributes:
        path: the full path, or the URL for a URL root (``root`` joined with
            ``name``, spelled as ``root`` was given).
        name: the path relative to ``root``, with ``/`` between parts.
        values: everything read from the name, directory parts included
            (``{"lr": 0.001, "seed": 2, "epoch": 12}``).
        epoch: the ``epoch`` field of the name, or ``None`` where the template
            lacks it.
        batch: the ``batch`` field (the global batch count), or ``None``.
        batch_in_epoch: the ``batch_in_epoch`` field, or ``None``.
        size: the size in bytes where it was read, else ``None``: every
            remote checkpoint (from the listing); the local checkpoint that
            :func:`find_latest` or :func:`find_best` returns; local records
            of ``scan(..., sizes=True)``, and those ``scan`` stat'ed anyway
            (no sidecar vouched for them, or they are links).
        mtime: the modification time of a local file where it was read (as
            for ``size``); it orders checkpoints only when neither name nor
            sidecar hold a counter.
        template: the text of the template the name matched.
        metadata: the checkpoint's sidecar where it was read (to order by its
            counters, or to break a tie by its exact metric values), else
            ``None``. Not compared.
    """

    path: str
    name: str
    values: dict[str, Any] = field(hash=False)
    epoch: int | None = None
    batch: int | None = None
    batch_in_epoch: int | None = None
    size: int | None = field(default=None, kw_only=True, compare=False, hash=False)
    mtime: float | None = field(default=None, kw_only=True, compare=False, hash=False)
    template: str | None = field(default=None, kw_only=True)
    metadata: dict[str, Any] | None = field(
        default=None, kw_only=True, compare=False, hash=False, repr=False
    )

    def as_dict(self) -> dict[str, Any]:
        """A flat dict for ``pandas.DataFrame``: the record's attributes and its values.

        Keys are ``path``, ``name``, ``epoch``, ``batch``, ``batch_in_epoch``,
        ``size``, ``mtime``, ``template``, then every field of ``values``. A
        field whose name is one of those attributes and whose value differs
        from it (a template field called ``size``) is kept as ``values.<name>``.
        """
        out: dict[str, Any] = {
            "path": self.path,
            "name": self.name,
            "epoch": self.epoch,
            "batch": self.batch,
            "batch_in_epoch": self.batch_in_epoch,
            "size": self.size,
            "mtime": self.mtime,
            "template": self.template,
        }
        for key, value in self.values.items():
            if key not in out:
                out[key] = value
            elif out[key] != value or type(out[key]) is not type(value):
                out[f"values.{key}"] = value
        return out


def _make(
    path: str,
    name: str,
    values: dict[str, Any],
    template: str,
    *,
    size: int | None = None,
    mtime: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> Checkpoint:
    get = values.get
    # This runs once per listed checkpoint: as_counter only where a counter
    # is not already a plain int (most templates write counters with 'd').
    epoch = get("epoch")
    if epoch is not None and type(epoch) is not int:
        epoch = as_counter(epoch)
    batch = get("batch")
    if batch is not None and type(batch) is not int:
        batch = as_counter(batch)
    in_epoch = get("batch_in_epoch")
    if in_epoch is not None and type(in_epoch) is not int:
        in_epoch = as_counter(in_epoch)
    return Checkpoint(
        path,
        name,
        values,
        epoch,
        batch,
        in_epoch,
        size=size,
        mtime=mtime,
        template=template,
        metadata=metadata,
    )


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True, slots=True)
class _Folder:
    """A leaf folder found by walking the template's folder levels."""

    inner: str
    prefix: str  # the folder's name relative to root, ending in '/', or ''
    values: dict[str, Any]
    managed: bool  # a state file was seen on the way down (remote commit rule)


def _merge(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any] | None:
    """Values of a name's parts, merged; ``None`` where one field reads two ways."""
    if not outer:
        return inner
    merged = dict(outer)
    for key, value in inner.items():
        if key in merged and not same_value(merged[key], value):
            return None
        merged[key] = value
    return merged


def _folders(root: Root, layout: Layout) -> list[_Folder]:
    """The leaf folders: one listing per folder level, only as deep as the template."""
    folders = [_Folder(root.inner, "", {}, False)]
    storage = root.storage
    for segment in layout.dirs:
        found: list[_Folder] = []
        if not segment.fields:
            # A literal folder name needs no listing: descend into it, and let
            # the listing below find out whether it exists.
            part = segment.render({})
            for f in folders:
                inner = root.join(f.inner, part)
                if root.local and os.path.islink(inner) and not _inside_root(root, inner):
                    continue  # a link out of the root is never followed
                found.append(_Folder(inner, f.prefix + part + "/", f.values, f.managed))
            folders = found
            continue
        for f in folders:
            try:
                entries = storage.listdir(f.inner)
            except (FileNotFoundError, NotADirectoryError):
                continue
            managed = f.managed or any(e.name == STATE_NAME for e in entries)
            for entry in sorted(entries, key=lambda e: e.name):
                if not entry.is_dir or is_reserved(entry.name):
                    continue
                values = segment.parse(entry.name)
                if values is None:
                    continue
                merged = _merge(f.values, values)
                if merged is None:
                    continue
                if entry.link and not _inside_root(root, root.join(f.inner, entry.name)):
                    continue  # a link out of the root is never followed
                found.append(
                    _Folder(
                        root.join(f.inner, entry.name),
                        f.prefix + entry.name + "/",
                        merged,
                        managed,
                    )
                )
        folders = found
    return folders


def _listdir_names(path: str) -> list[str]:
    try:
        return os.listdir(path or ".")
    except (FileNotFoundError, NotADirectoryError):
        return []


def _listdir_bytes(path: str) -> list[bytes]:
    try:
        return os.listdir(os.fsencode(path or "."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _inside_root(root: Root, path: str) -> bool:
    """Whether a local path, once links are resolved, lies inside the root.

    Called only where a link was met: a link is followed only where it
    leads inside the root (the root itself may be a link: the user named
    it), for reading as for pruning (``ckptname._storage.LocalTree``).
    """
    base = os.path.realpath(root.inner or ".")
    real = os.path.realpath(path)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def _local_stat(root: Root, path: str) -> os.stat_result | None:
    """``os.stat`` of a local checkpoint file, or ``None`` where it is gone or a link out."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if not _inside_root(root, path):
                return None
            st = os.stat(path)
    except OSError:
        return None
    return st


# --------------------------------------------------------------------------- sidecars


class _SidecarProblems:
    """Collects unreadable sidecars so that one call warns once, not once per file."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def read(self, storage: Storage, inner_path: str) -> dict[str, Any] | None:
        try:
            return read_sidecar(storage, inner_path)
        except MetadataError as exc:
            self.messages.append(str(exc))
            return None

    def warn(self, stacklevel: int = 3) -> None:
        if not self.messages:
            return
        count = len(self.messages)
        more = f" (and {count - 1} more)" if count > 1 else ""
        warnings.warn(
            f"{self.messages[0]}{more}; ordering and ranking those checkpoints "
            "without their metadata",
            CkptnameWarning,
            stacklevel=stacklevel,
        )


def _in_root(root: Root) -> Callable[[Checkpoint], tuple[Storage, str] | None]:
    """Where the records of one root are: its storage, and the name joined to it."""

    def locate(record: Checkpoint) -> tuple[Storage, str] | None:
        return root.storage, root.inner_path(record.name)

    return locate


def _by_path(record: Checkpoint) -> tuple[Storage, str] | None:
    """Where a record is, from its path alone (records of any root)."""
    try:
        return storage_for(record.path)
    except ImportError:
        return None  # a URL whose file system is not installed: no sidecar to read


def _with_sidecars(
    records: Sequence[Checkpoint],
    problems: _SidecarProblems,
    locate: Callable[[Checkpoint], tuple[Storage, str] | None],
) -> list[Checkpoint]:
    """The records, each with its sidecar where it has one (``metadata``).

    Records that carry their metadata already are not read again. Local
    sidecars are read one by one (a read is a system call or two); remote
    ones with one :meth:`Storage.read_many` per file system, so that an
    object store serves them concurrently, each in one GET.
    """
    out = list(records)
    remote: dict[int, tuple[Storage, list[int], list[str]]] = {}
    for i, record in enumerate(out):
        if record.metadata is not None:
            continue
        where = locate(record)
        if where is None:
            continue
        storage, inner = where
        if not storage.remote:
            meta = problems.read(storage, inner)
            if meta is not None:
                out[i] = replace(record, metadata=meta)
            continue
        # Requests to one file system go out together, however the records
        # reached it (fsspec shares one instance per file system and options).
        key = id(getattr(storage, "fs", storage))
        _, indices, paths = remote.setdefault(key, (storage, [], []))
        indices.append(i)
        paths.append(sidecar_path(inner))
    for storage, indices, paths in remote.values():
        for i, path, raw in zip(indices, paths, storage.read_many(paths)):
            if isinstance(raw, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
                continue
            if isinstance(raw, OSError):
                raise raw
            try:
                meta = decode(raw, f"sidecar {storage.url(path)!r}")
            except MetadataError as exc:
                problems.messages.append(str(exc))
                continue
            out[i] = replace(out[i], metadata=meta)
    return out


# --------------------------------------------------------------------------- listing


def _local_records(
    root: Root,
    layout: Layout,
    folder: _Folder,
    *,
    check: bool,
    names: list[str] | None = None,
) -> list[Checkpoint]:
    """Every name in a local leaf folder that reads back with the template.

    With ``check``, each is also stat'ed: only complete files are kept (see
    :func:`_complete`), with their size and time. Without it, records are
    unchecked (the caller checks the few it returns). ``names`` is the
    folder's listing where the caller has it already.
    """
    if names is None:
        names = _listdir_names(folder.inner)
    with _records_in_bulk():
        return _records_of_names(root, layout, folder, names, check=check)


def _records_of_names(
    root: Root, layout: Layout, folder: _Folder, names: list[str], *, check: bool
) -> list[Checkpoint]:
    parse = layout.leaf.parse
    out: list[Checkpoint] = []
    text = layout.text
    prefix = folder.prefix
    # Joined once per folder, not once per name: this loop runs per file.
    user_base = root.path(prefix)
    inner_base = os.path.join(folder.inner, "") if folder.inner else ""
    for name in names:
        if is_reserved(name):
            continue
        values = parse(name)
        if values is None:
            continue
        merged = _merge(folder.values, values)
        if merged is None:
            continue
        if not check:
            out.append(_make(user_base + name, prefix + name, merged, text))
            continue
        st = _local_stat(root, inner_base + name)
        vouched = partial(os.path.lexists, sidecar_path(inner_base + name))
        if st is None or not _complete(st, vouched):
            continue  # deleted since the listing, a dangling link or one out of the root
        size, mtime = st.st_size, st.st_mtime
        out.append(_make(user_base + name, prefix + name, merged, text, size=size, mtime=mtime))
    return out


@contextlib.contextmanager
def _records_in_bulk() -> Iterator[None]:
    """Pause the cyclic garbage collector while a listing is turned into records.

    Each record is an object the collector tracks, so making 100,000 of them
    sets off collections, and each of those walks the objects of the whole
    process: with Keras loaded, they double the cost of a scan. Records hold
    no reference cycles, so there is nothing for the collector to find
    among them. It is paused only for loops over listed names (no I/O but
    ``stat``), and runs again as before when the block ends, if it was on.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _local_checked(
    root: Root, layout: Layout, folder: _Folder, *, sizes: bool
) -> list[Checkpoint]:
    """Every complete checkpoint in a local leaf folder, reading no more than the rules need.

    One ``os.scandir``: entry types come with the listing (no system call),
    so folders and other non-files are dropped unread. A regular file whose
    sidecar is listed next to it is a checkpoint the callback committed (it
    renames the complete file into place after writing the sidecar) and is
    not stat'ed; any other match is stat'ed once, and dropped if it is
    empty (see :func:`_complete`). A symbolic link is followed with a
    ``stat`` only where it leads inside the root: it counts where it leads to
    a regular file that is complete by the same rule. With ``sizes``, every
    match is stat'ed, and its record carries its size and time.
    """
    with _LocalFolder(folder.inner) as listing, _records_in_bulk():
        if listing.missing:
            return []
        files = listing.files
        suffix = SIDECAR_SUFFIX
        listed = set(files)
        parse = layout.leaf.parse
        text = layout.text
        prefix = folder.prefix
        outer = folder.values
        user_base = root.path(prefix)  # joined once per folder: the loop runs per file
        stat_at = listing.stat
        out: list[Checkpoint] = []
        for names, follow in ((files, False), (listing.links, True)):
            for name in names:
                if _RESERVED in name:
                    continue
                values = parse(name)
                if values is None:
                    continue
                if outer:
                    values = _merge(outer, values)
                    if values is None:
                        continue
                if not sizes and not follow and name + suffix in listed:
                    out.append(_make(user_base + name, prefix + name, values, text))
                    continue
                if follow and not _inside_root(root, os.path.join(folder.inner or ".", name)):
                    continue  # a link that leads out of the root is never followed
                try:
                    st = stat_at(name, follow)
                except OSError:
                    continue  # deleted since the listing, or a dangling link
                if not _complete(st, partial(contains, listed, name + suffix)):
                    continue
                out.append(
                    _make(
                        user_base + name,
                        prefix + name,
                        values,
                        text,
                        size=st.st_size,
                        mtime=st.st_mtime,
                    )
                )
        return out


_RESERVED = ".ckptname"  # what is_reserved looks for, inlined into the loop above


class _LocalFolder:
    """A local folder's regular files and symbolic links, and a ``stat`` for its names.

    A context manager: on entry the folder is listed once with
    ``os.scandir`` (entries whose type the listing does not give, on some
    file systems, are typed by ``os.scandir`` with one ``lstat`` each).
    Where the platform allows, the folder stays open until exit and
    :meth:`stat` reads names relative to it, so no path is resolved again.
    ``missing`` is true where the folder does not exist.
    """

    def __init__(self, path: str) -> None:
        self.path = path or "."
        self.files: list[str] = []
        self.links: list[str] = []
        self.missing = False
        self._fd: int | None = None

    def __enter__(self) -> _LocalFolder:
        target: str | int = self.path
        if os.scandir in os.supports_fd and os.stat in os.supports_dir_fd:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except (FileNotFoundError, NotADirectoryError):
                self.missing = True
                return self
            target = self._fd
        try:
            with os.scandir(target) as it:
                for entry in it:
                    if entry.is_file(follow_symlinks=False):
                        self.files.append(entry.name)
                    elif entry.is_symlink():
                        self.links.append(entry.name)
        except (FileNotFoundError, NotADirectoryError):
            self.missing = True
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def stat(self, name: str, follow: bool) -> os.stat_result:
        """``os.stat`` of a name in this folder (``follow``: through a link)."""
        if self._fd is not None:
            return os.stat(name, dir_fd=self._fd, follow_symlinks=follow)
        return os.stat(os.path.join(self.path, name), follow_symlinks=follow)


def _leaf_records(
    root: Root,
    layout: Layout,
    prefix: str,
    outer: dict[str, Any],
    managed: bool,
    entries: Iterable[Entry],
    names: set[str],
) -> list[Checkpoint]:
    """Every complete, non-empty object of a remote leaf folder that reads back.

    Args:
        prefix: the folder relative to root, ending in ``/``, or ``''``.
        outer: the values read from the folder's path.
        managed: a state file was seen in a folder listed on the way down.
        entries: the folder's entries (folders among them are skipped).
        names: the names of every entry of the folder, folders included.
    """
    managed = (
        managed or STATE_NAME in names or any(name.endswith(SIDECAR_SUFFIX) for name in names)
    )
    parse = layout.leaf.parse
    out: list[Checkpoint] = []
    for entry in entries:
        name = entry.name
        if entry.is_dir or is_reserved(name) or entry.size == 0:
            continue
        if managed and name + SIDECAR_SUFFIX not in names:
            continue  # uploaded, but its save has not been committed
        values = parse(name)
        if values is None:
            continue
        merged = _merge(outer, values)
        if merged is None:
            continue
        rel = prefix + name
        out.append(_make(root.path(rel), rel, merged, layout.text, size=entry.size))
    return out


def _remote_by_level(root: Root, layout: Layout) -> list[Checkpoint]:
    """Every complete checkpoint of a remote tree, listing folder by folder."""
    records: list[Checkpoint] = []
    for folder in _folders(root, layout):
        entries = root.storage.listdir(folder.inner)
        names = {e.name for e in entries}
        records.extend(
            _leaf_records(
                root, layout, folder.prefix, folder.values, folder.managed, entries, names
            )
        )
    return records


def _remote_flat(root: Root, layout: Layout) -> list[Checkpoint] | None:
    """Every complete checkpoint of a remote tree, from one flat listing of it.

    The tree below the template's leading literal folders (``runs/`` in
    ``runs/lr={lr}/ep{epoch}.h5``) is listed once (:meth:`Storage.find`),
    and each path is read part by part with the template's folder
    templates, as the walk folder by folder reads them: the same records,
    the same values, and the same commit rule, where a state file counts in
    the folders that walk lists (those that hold a field level, and the leaf
    folder).

    Returns ``None`` where the walk lists only one folder anyway (no field
    in a folder part), or where the storage cannot list a tree flatly.
    """
    dirs = layout.dirs
    lead = 0
    while lead < len(dirs) and not dirs[lead].fields:
        lead += 1
    if lead == len(dirs):
        return None
    base = root.inner
    lead_prefix = ""
    for segment in dirs[:lead]:
        part = segment.render({})
        base = root.join(base, part)
        lead_prefix += part + "/"
    entries = root.storage.find(base)
    if entries is None:
        return None
    with _records_in_bulk():
        return _tree_records(root, layout, lead_prefix, dirs[lead:], entries)


def _tree_records(
    root: Root, layout: Layout, lead_prefix: str, below: tuple[Template, ...], entries: list[Entry]
) -> list[Checkpoint]:
    """The records of a flat listing of a tree (see :func:`_remote_flat`).

    Args:
        lead_prefix: the template's leading literal folders, ending in ``/``
            (or ``''``): where the listing was made, relative to root.
        below: the template's folder levels below them.
        entries: every file below, named relative to where it was listed.
    """
    depth = len(below)
    literal = [None if seg.fields else seg.render({}) for seg in below]
    # The folders the walk folder by folder would list on the way down: the
    # folder above each field level.
    listed_depths = [d for d in range(depth) if below[d].fields]
    states: set[str] = set()  # folders (relative to base) that hold a state file
    leaf_names: dict[str, set[str]] = {}
    leaf_files: dict[str, list[Entry]] = {}
    for entry in entries:
        parts = entry.name.split("/")
        if "" in parts:
            continue  # an empty key part: no folder the walk would see
        if STATE_NAME in parts:
            for j, part in enumerate(parts[: depth + 1]):
                if part == STATE_NAME:
                    states.add("/".join(parts[:j]))
        if len(parts) <= depth:
            continue  # above the leaf folders
        folder = "/".join(parts[:depth])
        names = leaf_names.get(folder)
        if names is None:
            names = leaf_names[folder] = set()
            leaf_files[folder] = []
        names.add(parts[depth])
        if len(parts) == depth + 1:
            leaf_files[folder].append(Entry(parts[depth], False, entry.size, None))
    records: list[Checkpoint] = []
    for folder in sorted(leaf_names):
        parts = folder.split("/")
        values: dict[str, Any] | None = {}
        for segment, fixed, part in zip(below, literal, parts):
            if fixed is not None:
                if part != fixed:
                    values = None
                    break
                continue
            read = None if is_reserved(part) else segment.parse(part)
            values = None if read is None else _merge(values or {}, read)
            if values is None:
                break
        if values is None:
            continue
        managed = any("/".join(parts[:d]) in states for d in listed_depths)
        records.extend(
            _leaf_records(
                root,
                layout,
                lead_prefix + folder + "/",
                values,
                managed,
                leaf_files[folder],
                leaf_names[folder],
            )
        )
    return records


def _all_records(
    root: Root, layout: Layout, *, check: bool, sizes: bool = False
) -> list[Checkpoint]:
    """Every checkpoint under ``root``, unordered.

    ``check=False`` asks local roots only for names (the caller checks the
    few records it returns); remote records are always complete, as the
    listing gives sizes.
    """
    if not root.local:
        flat = _remote_flat(root, layout)
        return flat if flat is not None else _remote_by_level(root, layout)
    records: list[Checkpoint] = []
    for folder in _folders(root, layout):
        if check:
            records.extend(_local_checked(root, layout, folder, sizes=sizes))
        else:
            records.extend(_local_records(root, layout, folder, check=False))
    return records


def _ordered(root: Root, layout: Layout, records: list[Checkpoint]) -> list[Checkpoint]:
    """Records in progress order, reading what the order needs where names lack counters."""
    if not layout.has_counter and records:
        problems = _SidecarProblems()
        records = _with_sidecars(records, problems, _in_root(root))
        if root.local:
            records = [_with_mtime(root, r) for r in records]
        problems.warn(stacklevel=5)
    with _records_in_bulk():
        sort_by_progress(records)
    return records


def _with_mtime(root: Root, record: Checkpoint) -> Checkpoint:
    if record.mtime is not None:
        return record
    try:
        st = os.stat(root.inner_path(record.name))
    except OSError:
        return record
    return replace(record, mtime=st.st_mtime)


# --------------------------------------------------------------------------- state


def _state_template(root: Root, call: str) -> tuple[Template | None, dict[str, Any] | None]:
    """The template named by the root's state file, and the state itself.

    Only the template is compiled here, not the layout for walking folders:
    answering from the state file needs no more, and compiling is most of
    the cost of a first call.

    Returns ``(None, None)`` where the root does not exist (nothing to find),
    and ``(template, None)`` where the state file cannot be read but the
    sidecars in the root agree on a template (with a warning).

    Raises:
        TemplateError: no usable state file, so the caller must pass a template.
    """
    try:
        state = read_state(root.storage, root.inner)
    except MetadataError as exc:
        recovered = _template_from_sidecars(root)
        if recovered is None:
            raise _no_template(f"{exc}, and no template was given", root, call) from None
        warnings.warn(
            f"{exc}; finding checkpoints by listing the folder, with the template "
            f"{recovered.text!r} that their sidecars record",
            CkptnameWarning,
            stacklevel=3,
        )
        return recovered, None
    if state is None:
        if root.storage.stat(root.inner or ".") is None:
            return None, None
        raise _no_template(
            f"no template given, and {root.text!r} has no state file ({STATE_NAME}) to "
            "read one from",
            root,
            call,
        )
    try:
        template = cached_template(state["template"])
        if not template.reversible:
            template.parse("")  # raises the TemplateError that says why
    except TemplateError as exc:
        raise _unusable_state_template(root, call, exc) from None
    return template, state


def _template_from_sidecars(root: Root) -> Template | None:
    """The template the sidecars in ``root`` record, where they agree on one.

    Used only where the state file cannot be read: a truncated state file
    should not stop a resume when the checkpoints themselves say how they
    are named. Reads at most a few sidecars, newest names first; each must
    name a checkpoint that its template reads back.
    """
    try:
        entries = root.storage.listdir(root.inner)
    except (FileNotFoundError, NotADirectoryError):
        return None
    sidecars = sorted(
        (
            e.name
            for e in entries
            if not e.is_dir
            and e.name.endswith(SIDECAR_SUFFIX)
            and temp_target(e.name) is None
        ),
        key=_natural,
        reverse=True,
    )
    problems = _SidecarProblems()
    found: set[str] = set()
    for side in sidecars[:5]:
        meta = problems.read(root.storage, root.inner_path(side[: -len(SIDECAR_SUFFIX)]))
        text = meta.get("template") if meta else None
        if not isinstance(text, str):
            continue
        try:
            if cached_template(text).parse(side[: -len(SIDECAR_SUFFIX)]) is not None:
                found.add(text)
        except TemplateError:
            continue
    return cached_template(found.pop()) if len(found) == 1 else None


def _unusable_state_template(root: Root, call: str, exc: TemplateError) -> TemplateError:
    return _no_template(
        f"state file {root.path(STATE_NAME)!r} holds a template that cannot be used "
        f"({exc.reason}), and no template was given",
        root,
        call,
    )


def _no_template(problem: str, root: Root, call: str) -> TemplateError:
    """An error for a call without a template that needs one, saying how to pass it."""
    advice = Advice(
        "pass the template the checkpoints were saved with, e.g. "
        f"{call}({root.text!r}, template={_EXAMPLE_TEMPLATE!r})",
        "pass --template with the template the checkpoints were saved with, e.g. "
        f"--template {_EXAMPLE_TEMPLATE!r}",
    )
    return advised(TemplateError(f"{problem}; {advice.api}"), advice)


def _layout_to_walk(root: Root, template: Template | str | None, call: str) -> Layout | None:
    """The layout of ``template``, or where it is ``None`` of the state file's template.

    Returns ``None`` where no template was given and ``root`` does not exist.
    """
    if template is not None:
        return layout_for(template)
    named, _ = _state_template(root, call)
    if named is None:
        return None
    return _state_walk_layout(root, call, named)


def _state_walk_layout(root: Root, call: str, template: Template) -> Layout:
    try:
        return layout_for(template)
    except TemplateError as exc:
        raise _unusable_state_template(root, call, exc) from None


def _from_state(root: Root, template: Template, state: dict[str, Any]) -> Checkpoint | None:
    """The checkpoint the state file names as latest, if it is still there.

    One ``stat`` (one ``info`` request on remote roots), no listing. A state
    entry that does not read back with its template is corrupt: warn, and let
    the caller list the folder. A named file that is gone or empty is stale:
    the caller lists the folder, without a warning (retention or a person may
    have removed it).
    """
    latest = state.get("latest")
    if latest is None:
        return None
    name = latest.get("name") if isinstance(latest, dict) else None
    values = None
    if isinstance(name, str) and not is_reserved(name) and "\\" not in name:
        parts = name.split("/")
        if all(part not in ("", ".", "..") for part in parts):
            values = template.parse(name)
    if values is None:
        warnings.warn(
            f"state file {root.path(STATE_NAME)!r} names {name!r} as the latest "
            f"checkpoint, which does not match its template {template.text!r}; "
            "finding the latest checkpoint by listing the folder instead",
            CkptnameWarning,
            stacklevel=3,
        )
        return None
    assert isinstance(name, str)
    if not in_sequence(_make(name, name, values, template.text)):
        return None  # not a name of the sequence: never the latest; list instead
    found = _make(root.path(name), name, values, template.text)
    if root.local:
        if "/" in name and not _inside_root(root, root.inner_path(name)):
            return None  # through a folder that is a link out of the root
        return _checked_local(root, found)
    entry = root.storage.stat(root.inner_path(name))
    if entry is None or entry.is_dir or entry.size == 0:
        return None
    return replace(found, size=entry.size, mtime=entry.mtime)


# --------------------------------------------------------------------------- latest


def _descending_local(root: Root, layout: Layout, folder: _Folder) -> Iterator[Checkpoint]:
    """Unchecked records of one local folder, newest first, computed lazily.

    The fast path lists the folder once, finds the first progress counter of
    every match with one search over the joined listing, and parses only the
    names that carry the largest; the next largest is looked at only when the
    caller refuses every record it was given (an empty file, say).

    Where the template's pattern is ASCII, the folder is listed as bytes and
    searched with the same pattern compiled for bytes: the kernel's answer is
    the same, and the 100,000 names the search rejects are never decoded.
    On ASCII names and an ASCII pattern, bytes and text patterns match alike;
    a folder with any other name is searched as text.
    """
    if layout.fast is None:
        yield from _descending_general(root, layout, folder, _listdir_names(folder.inner))
        return
    if layout.fast_bytes is not None:
        raw = _listdir_bytes(folder.inner)
        if not raw:
            return
        joined_bytes = b"\x00".join([b"", *raw, b""])
        if joined_bytes.isascii():
            yield from _descending_fast(
                root,
                layout,
                folder,
                joined_bytes,
                layout.fast_bytes.findall(joined_bytes),
                lambda: [name.decode("ascii") for name in raw],
            )
            return
        names = [os.fsdecode(name) for name in raw]
    else:
        names = _listdir_names(folder.inner)
    if not names:
        return
    joined = "\x00".join(["", *names, ""])
    yield from _descending_fast(
        root, layout, folder, joined, layout.fast.findall(joined), lambda: names
    )


def _descending_fast(
    root: Root,
    layout: Layout,
    folder: _Folder,
    joined: AnyStr,
    texts: list[AnyStr],
    all_names: Callable[[], list[str]],
) -> Iterator[Checkpoint]:
    """Records newest first from the counter texts a fast search found."""
    if not texts:
        return
    try:
        # The newest first, in one pass: most calls need no more.
        text = max(texts, key=int)
    except ValueError:
        # A field without a format type also matches text that is no integer
        # ('step-abc' for 'step-{batch}'); let parse decide about those.
        yield from _descending_general(root, layout, folder, all_names())
        return
    top: int | None = int(text)
    count = texts.count(text)  # where one number is written two ways, parse disagrees below
    counters: list[int] = []
    refused: set[int] = set()
    given: set[str] = set()
    for _ in range(8):
        if refused:
            # The newest were all refused (empty files, say): the next newest.
            if not counters:
                counters = list(map(int, texts))
            top = max(filterfalse(refused.__contains__, counters), default=None)
            if top is None:
                return
            text = texts[counters.index(top)]
            count = counters.count(top)
        assert top is not None
        matched, records = _names_with_counter(root, layout, folder, joined, text, top)
        if len(matched) != count:
            break  # parse and the search disagree: trust parse
        records.sort(key=progress_key, reverse=True)
        for record in records:
            given.add(record.name)
            yield record
        refused.add(top)
    for record in _descending_general(root, layout, folder, all_names()):
        if record.name not in given:
            yield record


def _names_with_counter(
    root: Root, layout: Layout, folder: _Folder, joined: AnyStr, text: AnyStr, value: int
) -> tuple[list[str], list[Checkpoint]]:
    """The names in ``joined`` whose first progress counter is ``value`` (written
    ``text``): the names that match, and records of those whose parts agree."""
    leaf = layout.leaf
    counter = next(c for c in COUNTERS if c in leaf.fields)
    sep = joined[:1]  # the NUL that separates names, as str or bytes
    matched: list[str] = []
    records: list[Checkpoint] = []
    pos = joined.find(text)
    while pos != -1:
        start = joined.rfind(sep, 0, pos) + 1
        end = joined.find(sep, pos)
        name = os.fsdecode(joined[start:end])
        pos = joined.find(text, end)
        values = leaf.parse(name)
        # The counter as the record will hold it: where that differs from
        # int(text) ('+5' in a field without a type), the counts disagree and
        # the caller falls back to parsing every name.
        if values is None or as_counter(values.get(counter)) != value:
            continue
        matched.append(name)
        if is_reserved(name):
            continue
        merged = _merge(folder.values, values)
        if merged is None:
            continue
        rel = folder.prefix + name
        records.append(_make(root.path(rel), rel, merged, layout.text))
    return matched, records


def _descending_general(
    root: Root, layout: Layout, folder: _Folder, names: list[str]
) -> Iterator[Checkpoint]:
    records = _local_records(root, layout, folder, check=not layout.has_counter, names=names)
    if not records:
        return
    records = _ordered(root, layout, records)
    yield from reversed(records)


def _checked_local(root: Root, record: Checkpoint) -> Checkpoint | None:
    """The record with its size and time, if it is a complete file (see :func:`_complete`)."""
    path = root.inner_path(record.name)
    st = _local_stat(root, path)
    if st is None or not _complete(st, partial(os.path.lexists, sidecar_path(path))):
        return None
    return replace(record, size=st.st_size, mtime=st.st_mtime)


def _complete(st: os.stat_result, vouched: Callable[[], bool]) -> bool:
    """Whether a local file counts as a checkpoint: a regular file, and not empty.

    An empty file is what a crash during a non-atomic save leaves (Keras
    writes in place). A file whose sidecar sits next to it was renamed into
    place complete by the callback: it counts whatever its size, as it does
    where :func:`scan` takes it without a stat. ``vouched`` is asked only
    for an empty file.
    """
    return stat.S_ISREG(st.st_mode) and (st.st_size > 0 or vouched())


def _latest_by_listing(root: Root, layout: Layout) -> Checkpoint | None:
    if not root.local:
        records = [r for r in _all_records(root, layout, check=True) if in_sequence(r)]
        if not records:
            return None
        if layout.has_counter:
            return max(records, key=progress_key)
        return _ordered(root, layout, records)[-1]
    folders = _folders(root, layout)
    streams = [_descending_local(root, layout, folder) for folder in folders]
    if not streams:
        return None
    # Each stream is newest first; merging them lazily reads further into a
    # folder only when everything newer has been refused.
    merged = (
        streams[0] if len(streams) == 1 else heapq.merge(*streams, key=progress_key, reverse=True)
    )
    for record in merged:
        if not in_sequence(record):
            continue  # 'ckpt-final' for 'ckpt-{epoch}': never the latest
        checked = _checked_local(root, record)
        if checked is not None:
            return checked
    return None


def find_latest(
    root: str | os.PathLike[str], template: Template | str | None = None
) -> Checkpoint | None:
    """The newest complete checkpoint under ``root``.

    Without a template, the folder's state file (``.ckptname-state.json``,
    kept by ``ckptname.keras.BatchAwareCheckpoint``) names the latest
    checkpoint and its template; one ``stat`` confirms that the file is still
    there and not empty, and no listing is made. Where that file is gone, the
    folder is listed with the state's template instead. With a template, the
    folder is always listed, so the answer never depends on the state file.

    Newest means last in progress order: by global batch, then epoch, then
    batch in epoch, then name, numbers compared as numbers (``ep100`` is newer
    than ``ep99``); only for templates with none of these counters, by the
    counters in the sidecars, then by modification time (see
    ``ckptname._rank.progress_key``). A name whose counter does not read as a
    number (``ckpt-final.keras`` for ``ckpt-{epoch}.keras``) is never the
    latest (see ``ckptname._rank.in_sequence``).

    Args:
        root: a folder path or an fsspec URL (``s3://bucket/run``).
        template: the template the checkpoints were saved with, relative to
            ``root`` (a ``Template`` or its text); ``None`` reads it from the
            state file.

    Returns:
        The newest checkpoint, or ``None`` where there is none (or ``root``
        does not exist). Temporary files, sidecars, empty files, names that do
        not fully match and, on remote roots, uncommitted uploads are never
        returned.

    Raises:
        TemplateError: the template is invalid or would reach outside
            ``root``; or no template was given and there is no usable state
            file.
    """
    where = open_root(root)
    if template is None:
        named, state = _state_template(where, "find_latest")
        if named is None:
            return None
        if state is not None:
            hit = _from_state(where, named, state)
            if hit is not None:
                return hit
        layout = _state_walk_layout(where, "find_latest", named)
    else:
        layout = layout_for(template)
    return _latest_by_listing(where, layout)


# --------------------------------------------------------------------------- scan


def scan(
    root: str | os.PathLike[str],
    template: Template | str | None = None,
    *,
    sizes: bool = False,
) -> list[Checkpoint]:
    """Every complete checkpoint under ``root``, oldest first.

    A local folder is listed once per folder level of the template
    (``lr={lr}/ep{epoch}.h5`` lists ``root`` and each matching ``lr=...``
    folder), with ``os.scandir``, whose entry types need no system call. A
    match is stat'ed only where a rule needs it: to drop an empty file where
    no sidecar vouches for the checkpoint, to follow a symbolic link, or
    because ``sizes`` was asked for.

    A remote tree whose store lists a prefix flatly (S3, GCS, Azure,
    ``memory://``) is listed once, page by page, and each path is read with
    the template's folder parts; elsewhere, folder by folder. Sizes come with
    the listing; no sidecar is read unless the template has no progress
    counter (the sidecars' counters order the checkpoints then).

    Args:
        root: a folder path or an fsspec URL (``s3://bucket/run``).
        template: the template the checkpoints were saved with, relative to
            ``root``; ``None`` reads it from the folder's state file.
        sizes: read every local checkpoint's size and modification time
            (one ``stat`` each) into its record. Without it, a local record
            carries them only where it was stat'ed anyway; remote records
            always carry the size the listing gave.

    Returns:
        Checkpoints in progress order (see :func:`find_latest`); empty where
        ``root`` does not exist.

    Raises:
        TemplateError: the template is invalid or would reach outside
            ``root``; or no template was given and there is no usable state
            file.
    """
    where = open_root(root)
    layout = _layout_to_walk(where, template, "scan")
    if layout is None:
        return []
    return _ordered(where, layout, _all_records(where, layout, check=True, sizes=sizes))


# --------------------------------------------------------------------------- best


def _top_ties(records: Iterable[Checkpoint], monitor: str, mode: Mode) -> list[list[Checkpoint]]:
    """Records that can win, in groups of equal value in their names, best group first.

    Each group is in descending progress order; sidecars are not read.
    """
    sign = -1.0 if mode == "min" else 1.0

    def named(record: Checkpoint) -> float:
        value, _ = metric_value(record, monitor)
        assert value is not None
        return sign * value

    ranked = sorted(
        ((named(r), r) for r in records if can_win(r, monitor)),
        key=lambda pair: (pair[0], tie_break(pair[1])),
        reverse=True,
    )
    groups: list[list[Checkpoint]] = []
    last: float | None = None
    for value, record in ranked:
        if groups and value == last:
            groups[-1].append(record)
        else:
            groups.append([record])
            last = value
    return groups


def _by_exact_value(group: list[Checkpoint], monitor: str, mode: Mode) -> list[Checkpoint]:
    """Records that tie on the value in their names, best first by :func:`best_key`."""
    if len(group) == 1:
        return group
    return sorted(group, key=lambda r: best_key(r, monitor, mode), reverse=True)


def _pick_best(
    records: Iterable[Checkpoint],
    monitor: str,
    mode: Mode,
    read_metadata: Callable[[list[Checkpoint]], list[Checkpoint]],
    check: Callable[[Checkpoint], Checkpoint | None],
) -> Checkpoint | None:
    """The best record by ``monitor``, reading sidecars only to break ties.

    Records are ranked by the value in their names; where several share the
    best value, their sidecars are read (all at once) and
    :func:`ckptname._rank.best_key` orders them by exact value, then
    progress. ``check`` may refuse a record (an empty file), and the next
    best is taken.
    """
    for group in _top_ties(records, monitor, mode):
        if len(group) > 1:
            group = _by_exact_value(read_metadata(group), monitor, mode)
        for record in group:
            checked = check(record)
            if checked is not None:
                return checked
    return None


def find_best(
    root: str | os.PathLike[str],
    monitor: str,
    mode: str = "auto",
    template: Template | str | None = None,
) -> Checkpoint | None:
    """The complete checkpoint under ``root`` with the best value of ``monitor``.

    Values are read from the names. NaN never wins. Checkpoints whose names
    tie on the (rounded) value are told apart by the exact value in their
    sidecars, read only for those; then the earlier one wins (as in Keras's
    ``ModelCheckpoint``: a later checkpoint must be strictly better), so the answer
    does not depend on listing order. Where the template has no ``monitor``
    field, every checkpoint's sidecar is read for it.

    Args:
        root: a folder path or an fsspec URL.
        monitor: the metric, e.g. ``"val_loss"``.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (from the metric's name, see
            :func:`ckptname.resolve_mode`).
        template: the template the checkpoints were saved with; ``None``
            reads it from the folder's state file.

    Returns:
        The best checkpoint, or ``None`` where no checkpoint has a value that
        is not NaN (or ``root`` does not exist).

    Raises:
        MonitorError: ``mode`` is invalid, or ``"auto"`` cannot tell.
        MissingFieldError: neither the template nor any sidecar holds
            ``monitor``.
        TemplateError: as for :func:`find_latest`.
    """
    resolved = resolve_mode(monitor, mode)
    where = open_root(root)
    layout = _layout_to_walk(where, template, "find_best")
    if layout is None:
        return None
    records = _all_records(where, layout, check=not where.local)
    if not records:
        return None
    problems = _SidecarProblems()
    locate = _in_root(where)
    if monitor not in layout.template.fields:
        records = _with_sidecar_metric(layout, records, monitor, problems, locate)
    if not layout.has_counter:
        records = _ordered(where, layout, records)

    def check(record: Checkpoint) -> Checkpoint | None:
        return _checked_local(where, record) if where.local else record

    best = _pick_best(
        records, monitor, resolved, lambda group: _with_sidecars(group, problems, locate), check
    )
    problems.warn()
    return best


def _with_sidecar_metric(
    layout: Layout,
    records: list[Checkpoint],
    monitor: str,
    problems: _SidecarProblems,
    locate: Callable[[Checkpoint], tuple[Storage, str] | None],
) -> list[Checkpoint]:
    """Records with their sidecars, for a monitor that is not in the names.

    Raises:
        MissingFieldError: no sidecar holds ``monitor`` either.
    """
    records = _with_sidecars(records, problems, locate)
    if not any(metric_value(r, monitor)[0] is not None for r in records):
        raise _no_monitor(monitor, layout.text, layout.template.fields)
    return records


def _no_monitor(monitor: str, template: str, fields: Sequence[str]) -> MissingFieldError:
    return MissingFieldError(
        f"monitor {monitor!r} is not a field of template {template!r} and no "
        f"checkpoint's sidecar records it; rank by one of the template's fields "
        f"({', '.join(fields) or 'none'}) or by a metric the sidecars hold",
        (monitor,),
        tuple(fields),
    )


def best_per_group(
    records: Iterable[Checkpoint],
    monitor: str,
    mode: str = "auto",
    by: Sequence[str] | str | None = None,
) -> dict[tuple[Any, ...], Checkpoint]:
    """The best checkpoint of each group of records, e.g. per learning rate of a sweep.

    ::

        template = "lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}-{val_loss:.4f}.keras"
        records = ckptname.scan("sweeps", template)
        ckptname.best_per_group(records, "val_loss", by=("lr",))
        # {(0.001,): Checkpoint(...lr=1e-03/seed=2/ep041-0.3120.keras), (0.01,): ...}

    Ranking is :func:`find_best`'s: NaN never wins, ties on the value in the
    name are broken by the exact value in the sidecars (read only for those
    records), then by progress. A record whose name lacks ``monitor`` is
    ranked by the value in its sidecar. Sidecars are read only for such
    records and for ties, all at once (concurrently on object stores).

    Args:
        records: checkpoints, e.g. from :func:`scan`.
        monitor: the metric to rank by.
        mode: ``"min"``, ``"max"`` or ``"auto"``.
        by: the fields to group by (a name or a sequence of names); ``None``
            groups by every field that comes from a folder level of the
            records' template (``lr`` and ``seed`` above), and ``()`` makes
            one group.

    Returns:
        ``{group values: best checkpoint}``, one entry per group that has a
        checkpoint with a value, ordered by group values.

    Raises:
        MonitorError: ``mode`` is invalid, or ``"auto"`` cannot tell.
        MissingFieldError: a record lacks a field of ``by``; or no record
            has a value for ``monitor``, in its name or its sidecar.
        TemplateError: ``by`` is ``None`` and a record has no template.
    """
    resolved = resolve_mode(monitor, mode)
    records = list(records)
    groups = _grouped(records, by)  # checks ``by`` before anything is read
    problems = _SidecarProblems()
    lacking = [i for i, r in enumerate(records) if monitor not in r.values]
    if lacking:
        # A metric that is not in the names is read from the sidecars, all at once.
        found = _with_sidecars([records[i] for i in lacking], problems, _by_path)
        for i, record in zip(lacking, found):
            records[i] = record
        if not any(metric_value(r, monitor)[0] is not None for r in records):
            problems.warn()
            raise _no_monitor_in(records, monitor)
        groups = _grouped(records, by)
    tops: dict[tuple[Any, ...], list[Checkpoint]] = {}
    for group in _sorted_groups(groups):
        ties = _top_ties(groups[group], monitor, resolved)
        if ties:
            tops[group] = ties[0]
    # Ties on the value in the names are broken by the exact values in the
    # sidecars: those of every group are read at once.
    tied = [r for top in tops.values() if len(top) > 1 for r in top]
    read = iter(_with_sidecars(tied, problems, _by_path))
    out: dict[tuple[Any, ...], Checkpoint] = {}
    for group, top in tops.items():
        if len(top) > 1:
            top = _by_exact_value([next(read) for _ in top], monitor, resolved)
        out[group] = top[0]
    problems.warn()
    return out


def _no_monitor_in(records: list[Checkpoint], monitor: str) -> MissingFieldError:
    """The error for a monitor that no record has, in its name or its sidecar."""
    templates = {r.template for r in records}
    if len(templates) == 1 and None not in templates:
        (text,) = templates
        assert text is not None
        return _no_monitor(monitor, text, cached_template(text).fields)
    fields = tuple(dict.fromkeys(k for r in records for k in r.values))
    return MissingFieldError(
        f"no checkpoint has a value for monitor {monitor!r}, in its name or its sidecar; "
        f"rank by one of the fields the names hold ({', '.join(fields) or 'none'}) or by a "
        "metric the sidecars hold",
        (monitor,),
        fields,
    )


def _grouped(
    records: Iterable[Checkpoint], by: Sequence[str] | str | None
) -> dict[tuple[Any, ...], list[Checkpoint]]:
    """Records by the values of their ``by`` fields (see :func:`best_per_group`)."""
    fields: tuple[str, ...] | None
    if isinstance(by, str):
        fields = (by,)
    elif by is None:
        fields = None
    else:
        fields = tuple(by)
    groups: dict[tuple[Any, ...], list[Checkpoint]] = {}
    for record in records:
        keys = fields if fields is not None else _folder_fields(record)
        try:
            group = tuple(record.values[k] for k in keys)
        except KeyError as exc:
            raise MissingFieldError(
                f"checkpoint {record.name!r} has no value for {exc.args[0]!r} to group by "
                f"(its values: {', '.join(record.values) or 'none'}); group by fields of "
                "its template",
                (str(exc.args[0]),),
                tuple(record.values),
            ) from None
        groups.setdefault(group, []).append(record)
    return groups


def _folder_fields(record: Checkpoint) -> tuple[str, ...]:
    if record.template is None:
        raise TemplateError(
            f"checkpoint {record.name!r} has no template to tell its folder fields; "
            "pass by=, e.g. by=('lr',)"
        )
    layout = layout_for(record.template)
    return tuple(dict.fromkeys(f for segment in layout.dirs for f in segment.fields))


def _sorted_groups(groups: dict[tuple[Any, ...], list[Checkpoint]]) -> list[tuple[Any, ...]]:
    def key(group: tuple[Any, ...]) -> tuple[Any, ...]:
        # Numbers before text, each in its own order, so mixed groups still sort.
        return tuple(
            (0, v, "") if isinstance(v, (int, float)) and v == v else (1, 0, str(v)) for v in group
        )

    return sorted(groups, key=key)
