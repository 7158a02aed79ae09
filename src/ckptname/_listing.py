"""Listing a root: the folders a template leads to, and the checkpoints in them.

This module is reserved for reading what a root holds, local or remote, into
:class:`Checkpoint` records; which of them a query wants (the latest, the
best, every one in order) is decided in ``ckptname._scan``.

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
                                       the names of a folder read back in one
                                       search (:meth:`Template.parse_many`)
object store that lists a prefix       one flat listing of the tree below the
flatly (S3, GCS, Azure, memory), a     template's leading literal folders,
template with a field in a folder      1,000 keys a request on S3
other remote roots and templates       one ``ls`` per folder level
=====================================  ========================================
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from functools import partial
from itertools import compress, repeat
from operator import contains, itemgetter, not_
from stat import S_ISREG
from typing import Any

from ._metadata import SIDECAR_SUFFIX, STATE_NAME, is_reserved, sidecar_path
from ._rank import as_counter
from ._roots import Layout, Root
from ._storage import Entry, local_failures
from ._template import Template, same_value

__all__ = [
    "Checkpoint",
    "Folder",
    "all_records",
    "checked_local",
    "complete",
    "folders",
    "inside_root",
    "listdir_bytes",
    "listdir_names",
    "make_record",
    "merge_values",
    "records_in_bulk",
    "unchecked_records",
]


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


# A listing turns every match into a record, and the dataclass's __init__
# (one object.__setattr__ per field, as a frozen dataclass must) costs twice
# what setting the slots does. Records made in bulk are therefore filled slot
# by slot (_RecordMaker.many), every field; tests check that they equal the
# records the constructor makes.
_SLOT_SETTERS: dict[str, Callable[[Checkpoint, Any], None]] = {
    f.name: getattr(Checkpoint, f.name).__set__ for f in fields(Checkpoint)
}


def _counter_of(values: dict[str, Any], name: str) -> int | None:
    value = values.get(name)
    # Most templates write counters with 'd': as_counter only for the others.
    return value if value is None or type(value) is int else as_counter(value)


def make_record(
    path: str,
    name: str,
    values: dict[str, Any],
    template: str,
    *,
    size: int | None = None,
    mtime: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> Checkpoint:
    """The record of a name read back with ``template``: its counters taken from ``values``."""
    return Checkpoint(
        path,
        name,
        values,
        _counter_of(values, "epoch"),
        _counter_of(values, "batch"),
        _counter_of(values, "batch_in_epoch"),
        size=size,
        mtime=mtime,
        template=template,
        metadata=metadata,
    )


class _RecordMaker:
    """Makes the records of one leaf folder, each as :func:`make_record` would.

    Everything that is the same for the folder's records (where it is, its
    values, which counters the template has and whether they are always
    ints) is worked out once, and the records are filled a field at a time
    for all of them: a column of paths, of names, of counters.
    """

    __slots__ = ("_counters", "_outer", "_prefix", "_text", "_user_base")

    def __init__(self, root: Root, layout: Layout, folder: Folder) -> None:
        self._text = layout.text
        self._prefix = folder.prefix
        self._user_base = root.path(folder.prefix)  # joined once, not once per name
        self._outer = folder.values
        views = layout.template.field_views
        # For each counter: whether the template has it, and whether every
        # place it is written reads back as an int (so as_counter has nothing to do).
        self._counters = tuple(
            (
                any(v.name == counter for v in views),
                all(v.kind == "int" for v in views if v.name == counter),
            )
            for counter in _COUNTER_SLOTS
        )

    def values(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """A name's values merged with the folder's, or ``None`` where they disagree."""
        return merge_values(self._outer, values) if self._outer else values

    def many(
        self,
        names: list[str],
        values: list[dict[str, Any]],
        sizes: list[int] | None = None,
        mtimes: list[float] | None = None,
    ) -> list[Checkpoint]:
        """Records of names (relative to the folder) and their values, with sizes where stat'ed."""
        count = len(names)
        records = list(map(_new_record, repeat(Checkpoint, count)))

        def fill(slot: str, column: Iterable[Any]) -> None:
            deque(map(_SLOT_SETTERS[slot], records, column), maxlen=0)

        prefix = self._prefix
        fill("path", map(self._user_base.__add__, names))
        fill("name", map(prefix.__add__, names) if prefix else names)
        fill("values", values)
        for counter, (present, ints) in zip(_COUNTER_SLOTS, self._counters):
            if not present:
                fill(counter, repeat(None, count))
                continue
            column = list(map(itemgetter(counter), values))
            if not ints:
                column = [c if type(c) is int else as_counter(c) for c in column]
            fill(counter, column)
        fill("size", repeat(None, count) if sizes is None else sizes)
        fill("mtime", repeat(None, count) if mtimes is None else mtimes)
        fill("template", repeat(self._text, count))
        fill("metadata", repeat(None, count))
        return records


_COUNTER_SLOTS = ("epoch", "batch", "batch_in_epoch")


# An empty record, for _RecordMaker.many to fill.
_new_record: Callable[[type[Checkpoint]], Checkpoint] = object.__new__


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True, slots=True)
class Folder:
    """A leaf folder found by walking the template's folder levels."""

    inner: str
    prefix: str  # the folder's name relative to root, ending in '/', or ''
    values: dict[str, Any]
    managed: bool  # a state file was seen on the way down (remote commit rule)


def merge_values(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any] | None:
    """Values of a name's parts, merged; ``None`` where one field reads two ways."""
    if not outer:
        return inner
    merged = dict(outer)
    for key, value in inner.items():
        if key in merged and not same_value(merged[key], value):
            return None
        merged[key] = value
    return merged


def folders(root: Root, layout: Layout) -> list[Folder]:
    """The leaf folders: one listing per folder level, only as deep as the template."""
    found_so_far = [Folder(root.inner, "", {}, False)]
    storage = root.storage
    for segment in layout.dirs:
        found: list[Folder] = []
        if not segment.fields:
            # A literal folder name needs no listing: descend into it, and let
            # the listing below find out whether it exists.
            part = segment.render({})
            for f in found_so_far:
                inner = root.join(f.inner, part)
                if root.local and os.path.islink(inner) and not inside_root(root, inner):
                    continue  # a link out of the root is never followed
                found.append(Folder(inner, f.prefix + part + "/", f.values, f.managed))
            found_so_far = found
            continue
        for f in found_so_far:
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
                merged = merge_values(f.values, values)
                if merged is None:
                    continue
                if entry.link and not inside_root(root, root.join(f.inner, entry.name)):
                    continue  # a link out of the root is never followed
                found.append(
                    Folder(
                        root.join(f.inner, entry.name),
                        f.prefix + entry.name + "/",
                        merged,
                        managed,
                    )
                )
        found_so_far = found
    return found_so_far


def listdir_names(path: str) -> list[str]:
    """A local folder's names, or none where it does not exist.

    Raises:
        StorageError: the folder cannot be listed (permission denied, an I/O error).
    """
    try:
        with local_failures("list", path or "."):
            return os.listdir(path or ".")
    except (FileNotFoundError, NotADirectoryError):
        return []


def listdir_bytes(path: str) -> list[bytes]:
    """A local folder's names as bytes (none decoded), or none where it does not exist.

    Raises:
        StorageError: the folder cannot be listed (permission denied, an I/O error).
    """
    try:
        with local_failures("list", path or "."):
            return os.listdir(os.fsencode(path or "."))
    except (FileNotFoundError, NotADirectoryError):
        return []


# --------------------------------------------------------------------------- local files


def inside_root(root: Root, path: str) -> bool:
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
            if not inside_root(root, path):
                return None
            st = os.stat(path)
    except OSError:
        return None
    return st


def complete(st: os.stat_result, vouched: Callable[[], bool]) -> bool:
    """Whether a local file counts as a checkpoint: a regular file, and not empty.

    An empty file is what a crash during a non-atomic save leaves (Keras
    writes in place). A file whose sidecar sits next to it was renamed into
    place complete by the callback: it counts whatever its size, as it does
    where :func:`ckptname.scan` takes it without a stat. ``vouched`` is asked
    only for an empty file.
    """
    return stat.S_ISREG(st.st_mode) and (st.st_size > 0 or vouched())


def checked_local(root: Root, record: Checkpoint) -> Checkpoint | None:
    """The record with its size and time, if it is a complete file (see :func:`complete`)."""
    path = root.inner_path(record.name)
    st = _local_stat(root, path)
    if st is None or not complete(st, partial(os.path.lexists, sidecar_path(path))):
        return None
    return _with_stat(record, st)


def _with_stat(record: Checkpoint, st: os.stat_result) -> Checkpoint:
    return replace(record, size=st.st_size, mtime=st.st_mtime)


@contextlib.contextmanager
def records_in_bulk() -> Iterator[None]:
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


_RESERVED = ".ckptname"  # what is_reserved looks for, inlined into the loops below


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
        self.fd: int | None = None  # the open folder, where stat can read relative to it

    def __enter__(self) -> _LocalFolder:
        with local_failures("list", self.path):
            return self._list()

    def _list(self) -> _LocalFolder:
        target: str | int = self.path
        if os.scandir in os.supports_fd and os.stat in os.supports_dir_fd:
            try:
                self.fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            except (FileNotFoundError, NotADirectoryError):
                self.missing = True
                return self
            target = self.fd
        others: list[os.DirEntry[Any]] = []
        set_aside = others.append  # returns None: the entry is left out of files
        try:
            with os.scandir(target) as it:
                # A comprehension costs less per entry than a loop that branches.
                self.files = [
                    entry.name
                    for entry in it
                    if entry.is_file(follow_symlinks=False) or set_aside(entry)
                ]
            self.links = [entry.name for entry in others if entry.is_symlink()]
        except (FileNotFoundError, NotADirectoryError):
            self.missing = True
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def stat(self, name: str, follow: bool) -> os.stat_result:
        """``os.stat`` of a name in this folder (``follow``: through a link)."""
        if self.fd is not None:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=follow)
        return os.stat(os.path.join(self.path, name), follow_symlinks=follow)


def _local_checked(root: Root, layout: Layout, folder: Folder, *, sizes: bool) -> list[Checkpoint]:
    """Every complete checkpoint in a local leaf folder, reading no more than the rules need.

    One ``os.scandir``: entry types come with the listing (no system call),
    so folders and other non-files are dropped unread, and the names of the
    regular files are read back in one search
    (:meth:`ckptname.Template.parse_many`). A regular file whose sidecar is
    listed next to it is a checkpoint the callback committed (it renames
    the complete file into place after writing the sidecar) and is not
    stat'ed; any other match is stat'ed once, and dropped if it is empty
    (see :func:`complete`). A symbolic link is followed with a ``stat`` only
    where it leads inside the root: it counts where it leads to a regular
    file that is complete by the same rule. With ``sizes``, every match is
    stat'ed, and its record carries its size and time.
    """
    with _LocalFolder(folder.inner) as listing, records_in_bulk():
        if listing.missing:
            return []
        make = _RecordMaker(root, layout, folder)
        # The names read back, and those whose sidecar is listed beside them,
        # found in the same search (a sidecar is a regular file).
        names, read, with_sidecar = layout.leaf.read_listing(listing.files, SIDECAR_SUFFIX)
        listing.files = []  # the search made its own copies of the names it kept
        names, read = _not_reserved(names, read)
        if folder.values:
            names, read = _merged(make, names, read)
        vouched = [False] * len(names) if sizes else list(map(with_sidecar.__contains__, names))
        out = make.many(list(compress(names, vouched)), list(compress(read, vouched)))
        # The others are stat'ed: in a folder written without sidecars, this
        # loop runs once per checkpoint, so it calls os.stat itself.
        fd = listing.fd
        stat_names: list[str] = []
        stat_values: list[dict[str, Any]] = []
        sizes_: list[int] = []
        mtimes: list[float] = []
        for name, values in compress(zip(names, read), map(not_, vouched)):
            try:
                if fd is not None:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                else:
                    st = listing.stat(name, False)
            except OSError:
                continue  # deleted since the listing
            # complete(), inline
            if S_ISREG(st.st_mode) and (st.st_size > 0 or name in with_sidecar):
                stat_names.append(name)
                stat_values.append(values)
                sizes_.append(st.st_size)
                mtimes.append(st.st_mtime)
        # Links are rare: each is read back, checked and stat'ed on its own.
        parse = layout.leaf.parse
        for name in listing.links:
            if _RESERVED in name:
                continue
            link_values = parse(name)
            if link_values is None:
                continue
            link_values = make.values(link_values)
            if link_values is None:
                continue
            if not inside_root(root, os.path.join(folder.inner or ".", name)):
                continue  # a link that leads out of the root is never followed
            try:
                st = listing.stat(name, True)
            except OSError:
                continue  # a dangling link
            if complete(st, partial(contains, with_sidecar, name)):
                stat_names.append(name)
                stat_values.append(link_values)
                sizes_.append(st.st_size)
                mtimes.append(st.st_mtime)
        if stat_names:
            out += make.many(stat_names, stat_values, sizes_, mtimes)
        return out


def _not_reserved(
    names: list[str], read: list[dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Names and values without ckptname's own files, looked for all at once first."""
    if not names or _RESERVED not in "\x00".join(names):
        return names, read
    kept = [_RESERVED not in name for name in names]
    return list(compress(names, kept)), list(compress(read, kept))


def _merged(
    make: _RecordMaker, names: list[str], read: list[dict[str, Any]]
) -> tuple[list[str], list[dict[str, Any]]]:
    """Names and values merged with their folder's values, where those agree."""
    kept_names: list[str] = []
    kept: list[dict[str, Any]] = []
    for name, values in zip(names, read):
        merged = make.values(values)
        if merged is not None:
            kept_names.append(name)
            kept.append(merged)
    return kept_names, kept


def unchecked_records(
    root: Root, layout: Layout, folder: Folder, names: Iterable[str]
) -> list[Checkpoint]:
    """Records of the names of a local leaf folder that read back, none of them stat'ed.

    The caller checks the few it returns (:func:`checked_local`).
    """
    make = _RecordMaker(root, layout, folder)
    with records_in_bulk():
        matched, read = _not_reserved(*layout.leaf.parse_many(list(names)))
        if folder.values:
            matched, read = _merged(make, matched, read)
        return make.many(matched, read)


# --------------------------------------------------------------------------- remote


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
        merged = merge_values(outer, values)
        if merged is None:
            continue
        rel = prefix + name
        out.append(make_record(root.path(rel), rel, merged, layout.text, size=entry.size))
    return out


def _remote_by_level(root: Root, layout: Layout) -> list[Checkpoint]:
    """Every complete checkpoint of a remote tree, listing folder by folder."""
    records: list[Checkpoint] = []
    for folder in folders(root, layout):
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
    with records_in_bulk():
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
            values = None if read is None else merge_values(values or {}, read)
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


# --------------------------------------------------------------------------- any root


def all_records(
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
    for folder in folders(root, layout):
        if check:
            records.extend(_local_checked(root, layout, folder, sizes=sizes))
        else:
            records.extend(unchecked_records(root, layout, folder, listdir_names(folder.inner)))
    return records
