"""Find checkpoints: every one in progress order, the latest, the best.

A template says where checkpoints are and what their names mean; the queries
here read names back with it instead of guessing from times or string order:

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

This module is reserved for the queries; what counts as a checkpoint, and how
a root is listed, is ``ckptname._listing``'s. Each query reads no more of a
local folder than its answer needs:

=================  ============================================================
query              what it reads of a local folder
=================  ============================================================
``scan``           every name with its type (``os.scandir``), all read back in
                   one search; a ``stat`` of each match no sidecar vouches for
``find_latest``    the names as bytes (``os.listdir``); the newest counter in
                   an even sample of them is a bound that only the newest
                   names reach, one search finds those, and only they are read
                   back; then a ``stat`` per candidate, newest first, until one
                   is complete
``find_best``      the names, and of each only the monitored field; the names
                   that share the best value are read back, and stat'ed in
                   order until one is complete
=================  ============================================================

Sidecars are read only where a rule needs them: to order checkpoints whose
names hold no counter, to break a tie on a rounded metric, and to rank by a
metric the names lack; on object stores all at once, each in one GET.

The order of checkpoints is :func:`ckptname._rank.progress_key`.
"""

from __future__ import annotations

import heapq
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from itertools import filterfalse
from typing import Any, AnyStr

from ._errors import (
    Advice,
    CkptnameWarning,
    MetadataError,
    MissingFieldError,
    TemplateError,
    advised,
)
from ._listing import (
    Checkpoint,
    Folder,
    all_records,
    checked_local,
    folders,
    inside_root,
    listdir_bytes,
    listdir_names,
    make_record,
    merge_values,
    records_in_bulk,
    unchecked_records,
)
from ._metadata import (
    SIDECAR_SUFFIX,
    STATE_NAME,
    decode,
    is_reserved,
    read_sidecar,
    read_state,
    settle,
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
    is_number,
    metric_value,
    progress_key,
    resolve_mode,
    sort_by_progress,
    tie_break,
)
from ._roots import Layout, Root, cached_template, layout_for, open_root
from ._storage import Storage, storage_for, temp_target
from ._template import Template

__all__ = ["Checkpoint", "best_per_group", "find_best", "find_latest", "scan"]

_EXAMPLE_TEMPLATE = "ep{epoch:02d}-{val_loss:.2f}.keras"


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
                what = f"sidecar {storage.url(path)!r}"
                meta = settle(decode(raw, what), storage, path[: -len(SIDECAR_SUFFIX)], what)
            except MetadataError as exc:
                problems.messages.append(str(exc))
                continue
            out[i] = replace(out[i], metadata=meta)
    return out


# --------------------------------------------------------------------------- order


def _ordered(root: Root, layout: Layout, records: list[Checkpoint]) -> list[Checkpoint]:
    """Records in progress order, reading what the order needs where names lack counters."""
    if not layout.has_counter and records:
        problems = _SidecarProblems()
        records = _with_sidecars(records, problems, _in_root(root))
        if root.local:
            records = [_with_mtime(root, r) for r in records]
        problems.warn(stacklevel=5)
    with records_in_bulk():
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
    if not in_sequence(make_record(name, name, values, template.text)):
        return None  # not a name of the sequence: never the latest; list instead
    found = make_record(root.path(name), name, values, template.text)
    if root.local:
        if "/" in name and not inside_root(root, root.inner_path(name)):
            return None  # through a folder that is a link out of the root
        return checked_local(root, found)
    entry = root.storage.stat(root.inner_path(name))
    if entry is None or entry.is_dir or entry.size == 0:
        return None
    return replace(found, size=entry.size, mtime=entry.mtime)


# --------------------------------------------------------------------------- latest

# A folder of at least this many names is first searched for its newest names
# alone (see _newest_above_sample); in smaller ones, one search of every
# counter costs about as much as taking the sample.
_SAMPLED_FROM = 2048
# Names in that sample, at most: the largest counter among them is passed by
# about one name in this many of the folder's, and those few are all that is
# read back. Smaller folders take the square root of their size, which makes
# the sample and the names found above it cost least together.
_SAMPLE = 512


def _descending_local(root: Root, layout: Layout, folder: Folder) -> Iterator[Checkpoint]:
    """Unchecked records of one local folder, newest first, computed lazily.

    The folder is listed once. In a large folder, the newest names are found
    first (:func:`_newest_above_sample`), and only they are read back; most
    calls need no more. Where the caller refuses all of them (empty files,
    say), or in a small folder, :func:`_descending_fast` finds the first
    progress counter of every match with one search of the joined listing
    and reads back only the names that carry the largest, then the next
    largest. Templates whose counters that search cannot read are parsed in
    full (:func:`_descending_general`).

    Where the template's pattern is ASCII, the folder is listed as bytes and
    searched with the same pattern compiled for bytes: the kernel's answer is
    the same, and the names the search rejects are never decoded.
    """
    if layout.fast is None:
        yield from _descending_general(root, layout, folder, listdir_names(folder.inner))
        return
    given: set[str] = set()
    if layout.fast_bytes is not None:
        raw = listdir_bytes(folder.inner)
        if len(raw) >= _SAMPLED_FROM:
            for record in _newest_above_sample(root, layout, folder, raw):
                given.add(record.name)
                yield record
        rest = _descending_bytes(root, layout, folder, raw)
    else:
        names = listdir_names(folder.inner)
        if len(names) >= _SAMPLED_FROM:
            for record in _newest_above_sample(root, layout, folder, names):
                given.add(record.name)
                yield record
        rest = _descending_names(root, layout, folder, names)
    for record in rest:
        if record.name not in given:
            yield record


def _newest_above_sample(
    root: Root, layout: Layout, folder: Folder, raw: Sequence[AnyStr]
) -> list[Checkpoint]:
    """Records of a folder's newest names, newest first; ``[]`` where there is no such search.

    An even sample of the listing is read back, and the largest counter in
    it is a bound that only the newest names of the folder reach: one search
    of the listing (:meth:`ckptname.Template.names_at_least`) finds every
    name that reads back with a counter at or above it, and a few more,
    without decoding or reading back the rest. The records are those of the
    names at or above the bound: every other record of the folder is older
    than each of them, so the caller goes on to the rest only where it
    refuses all of these.
    """
    leaf = layout.leaf
    counter = next(c for c in COUNTERS if c in leaf.fields)
    sample = [os.fsdecode(name) for name in raw[:: _sample_step(len(raw))]]
    counters = [as_counter(values.get(counter)) for values in leaf.parse_many(sample)[1]]
    bound = max([c for c in counters if c is not None], default=None)
    if bound is None or bound < 1:
        return []
    found = leaf.names_at_least(raw, counter, bound)
    if found is None:
        return []
    records = [
        record
        for record in unchecked_records(root, layout, folder, map(os.fsdecode, found))
        if _at_least(getattr(record, counter), bound)
    ]
    sort_by_progress(records)
    records.reverse()  # no two records of one folder share a name, so none tie
    return records


def _sample_step(count: int) -> int:
    """Every how many names of a listing of ``count`` the sample takes one.

    About ``count / min(_SAMPLE, sqrt(count))``, and not a multiple of 2, 3, 5
    or 7: a listing may repeat a pattern (on tmpfs, newest first, each
    checkpoint next to its sidecar), and a step that is a multiple of its
    period would sample the sidecars alone.
    """
    step = max(1, count // min(_SAMPLE, max(1, math.isqrt(count))))
    while step > 1 and any(step % p == 0 for p in (2, 3, 5, 7)):
        step += 1
    return step


def _at_least(counter: int | None, bound: int) -> bool:
    return counter is not None and counter >= bound


def _descending_bytes(
    root: Root, layout: Layout, folder: Folder, raw: list[bytes]
) -> Iterator[Checkpoint]:
    """:func:`_descending_fast` over a listing in bytes: searched as bytes where it is ASCII.

    On ASCII names and an ASCII pattern, bytes and text patterns match
    alike; a folder with any other name is searched as text.
    """
    if not raw:
        return
    assert layout.fast_bytes is not None
    joined = b"\x00".join([b"", *raw, b""])
    if not joined.isascii():
        yield from _descending_names(root, layout, folder, [os.fsdecode(n) for n in raw])
        return
    yield from _descending_fast(
        root,
        layout,
        folder,
        joined,
        layout.fast_bytes.findall(joined),
        lambda: [name.decode("ascii") for name in raw],
    )


def _descending_names(
    root: Root, layout: Layout, folder: Folder, names: list[str]
) -> Iterator[Checkpoint]:
    if not names:
        return
    assert layout.fast is not None
    joined = "\x00".join(["", *names, ""])
    yield from _descending_fast(
        root, layout, folder, joined, layout.fast.findall(joined), lambda: names
    )


def _descending_fast(
    root: Root,
    layout: Layout,
    folder: Folder,
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
    root: Root, layout: Layout, folder: Folder, joined: AnyStr, text: AnyStr, value: int
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
        merged = merge_values(folder.values, values)
        if merged is None:
            continue
        rel = folder.prefix + name
        records.append(make_record(root.path(rel), rel, merged, layout.text))
    return matched, records


def _descending_general(
    root: Root, layout: Layout, folder: Folder, names: list[str]
) -> Iterator[Checkpoint]:
    records = unchecked_records(root, layout, folder, names)
    if not layout.has_counter:
        # The order needs each file's time: check every record now.
        records = [r for r in map(partial(checked_local, root), records) if r is not None]
    if not records:
        return
    records = _ordered(root, layout, records)
    yield from reversed(records)


def _latest_by_listing(root: Root, layout: Layout) -> Checkpoint | None:
    if not root.local:
        records = [r for r in all_records(root, layout, check=True) if in_sequence(r)]
        if not records:
            return None
        if layout.has_counter:
            return max(records, key=progress_key)
        return _ordered(root, layout, records)[-1]
    streams = [_descending_local(root, layout, folder) for folder in folders(root, layout)]
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
        checked = checked_local(root, record)
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
    return _ordered(where, layout, all_records(where, layout, check=True, sizes=sizes))


# --------------------------------------------------------------------------- best


def _top_ties(records: Iterable[Checkpoint], monitor: str, mode: Mode) -> list[list[Checkpoint]]:
    """Records that can win, in groups of equal value in their names, best group first.

    Each group is in :func:`_ranked_ties` order; sidecars are not read.
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


def _ranked_ties(group: list[Checkpoint]) -> list[Checkpoint]:
    """Records of equal value in their names, as :func:`_top_ties` orders them: earliest first."""
    return sorted(group, key=tie_break, reverse=True)


def _by_exact_value(group: list[Checkpoint], monitor: str, mode: Mode) -> list[Checkpoint]:
    """Records that tie on the value in their names, best first by :func:`best_key`."""
    if len(group) == 1:
        return group
    return sorted(group, key=lambda r: best_key(r, monitor, mode), reverse=True)


def _pick_best(
    groups: Iterable[list[Checkpoint]],
    monitor: str,
    mode: Mode,
    read_metadata: Callable[[list[Checkpoint]], list[Checkpoint]],
    check: Callable[[Checkpoint], Checkpoint | None],
) -> Checkpoint | None:
    """The best record by ``monitor``, reading sidecars only to break ties.

    ``groups`` are records of equal value in their names, best value first
    (:func:`_top_ties`); where several share a value, their sidecars are
    read (all at once) and :func:`ckptname._rank.best_key` orders them by
    exact value, then progress. ``check`` may refuse a record (an empty
    file), and the next best is taken.
    """
    for group in groups:
        if len(group) > 1:
            group = _by_exact_value(read_metadata(group), monitor, mode)
        for record in group:
            checked = check(record)
            if checked is not None:
                return checked
    return None


def _local_ties(
    root: Root, layout: Layout, monitor: str, mode: Mode
) -> Iterator[list[Checkpoint]] | None:
    """:func:`_top_ties` of a local tree, reading back only the names of the groups asked for.

    Each leaf folder is listed once, and of each name only ``monitor`` is
    read (:meth:`ckptname.Template.read_field`): the same value ``parse``
    reads, as the same pattern splits the name. The names that share the
    best value are then read back in full, made records, and ordered as
    :func:`_top_ties` orders them; the next best value only where the caller
    refuses every record of a group.

    Returns ``None`` where the template's monitored field cannot be read on
    its own: the caller reads every record.
    """
    leaf = layout.leaf
    if leaf.read_field([], monitor) is None:
        return None
    sign = -1.0 if mode == "min" else 1.0
    places: list[Folder] = []
    names: list[str] = []
    where: list[int] = []  # the folder of each name, by index in places
    scores: list[float] = []
    for folder in folders(root, layout):
        column = leaf.read_field(listdir_names(folder.inner), monitor)
        assert column is not None
        found, values = column
        places.append(folder)
        for name, value in zip(found, values):
            # As metric_value and can_win read a record: a number, never NaN.
            if is_number(value) and value == value:
                names.append(name)
                where.append(len(places) - 1)
                scores.append(sign * float(value))
    return _ties_of(root, layout, places, names, where, scores)


def _ties_of(
    root: Root,
    layout: Layout,
    places: list[Folder],
    names: list[str],
    where: list[int],
    scores: list[float],
) -> Iterator[list[Checkpoint]]:
    """Groups of records of equal score, best first, made only as they are asked for."""
    for indices in _equal_scores_best_first(scores):
        by_folder: dict[int, list[str]] = {}
        for i in indices:
            by_folder.setdefault(where[i], []).append(names[i])
        group = [
            record
            for place, members in by_folder.items()
            for record in unchecked_records(root, layout, places[place], members)
        ]
        if group:
            yield _ranked_ties(group)


def _equal_scores_best_first(scores: list[float]) -> Iterator[list[int]]:
    """Indices of ``scores`` in groups of equal score, highest first.

    The first group costs one pass; the rest are sorted only if asked for.
    """
    if not scores:
        return
    top = max(scores)
    yield [i for i, score in enumerate(scores) if score == top]
    rest = sorted((i for i, score in enumerate(scores) if score != top), key=scores.__getitem__)
    while rest:
        score = scores[rest[-1]]
        group = []
        while rest and scores[rest[-1]] == score:
            group.append(rest.pop())
        yield group[::-1]


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

    In a local folder, only the monitored field of each name is read, and
    only the names that share the best value are read back in full and
    checked.

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
    problems = _SidecarProblems()
    locate = _in_root(where)

    def read_metadata(group: list[Checkpoint]) -> list[Checkpoint]:
        return _with_sidecars(group, problems, locate)

    groups: Iterable[list[Checkpoint]] | None = None
    if where.local and layout.has_counter and monitor in layout.leaf.fields:
        groups = _local_ties(where, layout, monitor, resolved)
    if groups is None:
        records = all_records(where, layout, check=not where.local)
        if not records:
            return None
        if monitor not in layout.template.fields:
            records = _with_sidecar_metric(layout, records, monitor, problems, locate)
        if not layout.has_counter:
            records = _ordered(where, layout, records)
        groups = _top_ties(records, monitor, resolved)

    def check(record: Checkpoint) -> Checkpoint | None:
        return checked_local(where, record) if where.local else record

    best = _pick_best(groups, monitor, resolved, read_metadata, check)
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
