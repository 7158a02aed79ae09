"""The save transaction of one checkpoint folder, and the folder's upkeep around it.

This module is reserved for what the callback does to its folder: write a
checkpoint, its sidecar and the state file so that a kill at any moment is
safe; check the folder at train begin; remove what killed saves left; and
prune. The model itself is written by a function the caller passes in, so
this module imports neither Keras nor TensorFlow and can be tested with a
fake writer.

The local save order (see :meth:`CheckpointFolder.save`):

1. the model is written (and flushed) under a temporary name;
2. the sidecar is written under a temporary name and renamed into place;
3. the state file is rewritten to name the new checkpoint;
4. the model is renamed to its name.

Replacing a checkpoint (a name that already holds one: a template without
counters, such as ``last.keras``) writes new, then retires old. Steps 1 to 3
leave the old checkpoint and its sidecar as they are (the new sidecar waits
under its temporary name), so a failure or a kill up to there leaves the old
checkpoint complete. Then the old sidecar is renamed aside (to a temporary
name), the model renamed onto the name, and the new sidecar into place, and
the old sidecar removed. A failed rename puts the old sidecar back; a kill
between those renames leaves a checkpoint without a sidecar for that
moment, never with the other checkpoint's.

On an object store:

0. before the first upload into a root that has no state file yet, the
   state file is written (naming no checkpoint): it marks the folder as
   ckptname's, so that from the very first save an upload without its
   sidecar is an unfinished save, never a checkpoint;
1. the model is uploaded under its name;
2. the sidecar, its commit marker, is written;
3. the state file is rewritten to name the new checkpoint.

A replacing save writes new, then retires old as well, in one more step:

1. the sidecar is rewritten as the old record plus the old object's version
   and the new sidecar (``"replacing"``, see ``ckptname._metadata.settle``);
2. the model is uploaded under its name, one request that replaces the old
   object whole or not at all;
3. the new sidecar is written over the old;
4. the state file is rewritten.

Nothing is deleted before the new checkpoint is complete, and after a
failure or a kill at any step the name holds one complete checkpoint and
readers take the record that describes it: the old one while the object is
the old one (a failed upload, an HTTP 500, a refused connection), the new one
once the upload went through, even where step 3 never came. An object store
has no rename to put model and sidecar in place at once; the version the
sidecar records (S3's ETag, with size and time) stands in for it.

What a killed or failed save leaves is removed when the next run of the
folder begins (:meth:`CheckpointFolder.clean_leftovers`), by the chief and
only in the run's own folders: temporary files, sidecars without their
checkpoint, and on object stores uploads without their commit marker made
after ckptname first wrote the root's state file and before the run's start.
Sweep members share the root's state file; a member touches nothing of the
shared root but its own temporary state files.

A save adds up to :data:`SAVE_NAME_OVERHEAD` bytes to a checkpoint's name
(the temporary name of its sidecar), so a local checkpoint's name holds at
most :data:`MAX_NAME_BYTES` bytes; :func:`check_name_length` refuses longer
names before anything is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import re
import shutil
import stat as _stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ._errors import (
    CheckpointError,
    CheckpointSaveError,
    CkptnameError,
    MetadataError,
    RenderError,
    StorageError,
    TemplateError,
)
from ._metadata import (
    LOCK_NAME,
    METADATA_LIMIT,
    SIDECAR_SUFFIX,
    STATE_NAME,
    decode,
    encode,
    is_reserved,
    read_sidecar,
    read_state,
    replacing_record,
    sidecar_path,
    state_record,
)
from ._rank import as_counter, can_win, progress_key
from ._retention import RetentionPlan, apply_retention, plan_retention
from ._roots import layout_for
from ._scan import Checkpoint, scan
from ._storage import (
    NAME_LIMIT,
    TEMP_NAME_OVERHEAD,
    TMP_PREFIX,
    LocalTree,
    storage_for,
    temp_target,
)
from ._template import Template

__all__ = [
    "MAX_NAME_BYTES",
    "SAVE_NAME_OVERHEAD",
    "CheckpointFolder",
    "StartCheck",
    "check_name_length",
    "least_name_bytes",
    "split_filepath",
]

T = TypeVar("T")

# A temporary lock file younger than this may belong to a run taking the lock
# right now; older ones were left by a run killed while taking it.
_STALE_LOCK_TEMP_SECONDS = 60

# The most bytes a local save adds to a checkpoint's name (41): the temporary
# name of its sidecar, ".ckptname-tmp-<id>-" before it and ".ckptname.json"
# after it. On object stores nothing is added to the name on the local disk
# (the model is written there under its own name before the upload).
SAVE_NAME_OVERHEAD = TEMP_NAME_OVERHEAD + len(SIDECAR_SUFFIX)
# The longest local checkpoint name (214 bytes).
MAX_NAME_BYTES = NAME_LIMIT - SAVE_NAME_OVERHEAD
_OVERHEAD_WORDS = (
    f"the temporary name of its sidecar, '{TMP_PREFIX}<id>-' + name + '{SIDECAR_SUFFIX}'"
)
# The width in a format spec: [[fill]align][sign][z][#][0][width]...
_SPEC_WIDTH = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)")


def least_name_bytes(template: Template, values: Mapping[str, Any] | None = None) -> int:
    """The fewest bytes a checkpoint name (the last path part) of ``template`` can take.

    Fields with a value in ``values`` count as that value renders; the
    others as their narrowest rendering (their width, else one character, or
    none for a string).

    =================================  ===============  ======
    template                           values           bytes
    =================================  ===============  ======
    ``b{batch:05d}.keras``             none             11
    ``run-{run}/b{batch}.keras``       none             8
    ``{run}-b{batch}.keras``           ``run="abc"``    12
    =================================  ===============  ======
    """
    leaf = template.segments[-1]
    given = values or {}
    total = sum(len(literal.encode()) for literal in leaf.literals)
    for view in leaf.field_views:
        if view.name in given:
            try:
                total += len(format(given[view.name], view.spec).encode())
                continue
            except (TypeError, ValueError):
                pass  # counted as its narrowest below; rendering will say what is wrong
        match = _SPEC_WIDTH.match(view.spec)
        width = int(match.group(1)) if match and match.group(1) else 0
        total += max(width, 0 if view.kind == "str" else 1)
    return total


def _over_limit(size: int, overhead: int) -> str:
    return (
        f"a save adds {overhead} bytes to a name ({_OVERHEAD_WORDS}): {size + overhead} "
        f"bytes, more than the {NAME_LIMIT} that file systems allow in a name"
    )


def check_name_length(
    template: Template,
    values: Mapping[str, Any] | None = None,
    *,
    overhead: int = SAVE_NAME_OVERHEAD,
    filepath: str | None = None,
) -> None:
    """Refuse a template whose checkpoint names cannot be saved: too long with what a save adds.

    Args:
        template: the checkpoints' template.
        values: values fixed before training (extras); ``None`` checks the
            template alone.
        overhead: the bytes a save adds to a name (:data:`SAVE_NAME_OVERHEAD`
            locally, 0 on object stores).
        filepath: the text to show in a :class:`TemplateError` (the
            callback's filepath), else the template's.

    Raises:
        TemplateError: without ``values``: the template's text alone makes
            names too long.
        RenderError: with ``values``: those values make them too long.
    """
    least = least_name_bytes(template, values)
    if least + overhead <= NAME_LIMIT:
        return
    most = NAME_LIMIT - overhead
    if values is None:
        text = filepath or template.text
        leaf = template.segments[-1].text
        raise TemplateError(
            f"checkpoint names of this template take at least {least} bytes, and "
            f"{_over_limit(least, overhead)}; make its last part give names of at most "
            f"{most} bytes",
            text,
            len(text) - len(leaf),
        )
    names = dict.fromkeys(view.name for view in template.segments[-1].field_views)
    shown = ", ".join(f"{name}={_short(values[name])}" for name in names if name in values)
    raise RenderError(
        f"checkpoint names of template '{template.text}' take at least {least} bytes"
        f"{' with ' + shown if shown else ''}, and {_over_limit(least, overhead)}; shorten "
        f"the values or the template's last part to give names of at most {most} bytes"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:36] + "...'"


def split_filepath(filepath: str) -> tuple[str, Template]:
    """Split a callback filepath into its fixed folder (the root) and the template below it.

    The root is the part before the first path part with a field; the state
    file, the checks and retention work in it.

    ==================================  ==============  =========================
    filepath                            folder          template
    ==================================  ==============  =========================
    ``ckpts/b{batch}.keras``            ``ckpts``       ``b{batch}.keras``
    ``/runs/a/lr{lr}/b{batch}.keras``   ``/runs/a``     ``lr{lr}/b{batch}.keras``
    ``b{batch}.keras``                  ``.``           ``b{batch}.keras``
    ``s3://bk/run/b{batch}.keras``      ``s3://bk/run``  ``b{batch}.keras``
    ``ckpts/best.keras``                ``ckpts``       ``best.keras``
    ==================================  ==============  =========================

    Raises:
        TemplateError: ``filepath`` is not a valid template.
    """
    segments = Template(filepath).segments
    first = next((i for i, seg in enumerate(segments) if seg.fields), len(segments) - 1)
    root = "/".join(seg.render({}) for seg in segments[:first])
    if not root and first > 0:
        root = "/"  # an absolute path: the empty part before the first '/'
    rel = "/".join(seg.text for seg in segments[first:])
    return root or ".", Template(rel)


@dataclass(frozen=True, slots=True)
class _Save:
    """One save in progress: where, the sidecar's bytes, the model writer, the state entries."""

    path: str
    data: bytes
    write_model: Callable[[str], None]
    entry: dict[str, Any]
    best: Mapping[str, Any] | None
    previous_best: Mapping[str, Any] | None


@dataclass(frozen=True, slots=True)
class StartCheck:
    """What the folder says at train begin, for a run whose count starts at ``seed``.

    Attributes:
        at_seed: the checkpoints saved at exactly the seed count (the one the
            counters continue from), in progress order.
        epoch_without_batch: the latest epoch among checkpoints whose batch
            count is unknown (names and sidecars without it), or ``None``.
        earlier_by_epoch: for a template whose names carry the epoch but not
            the batch, ``(epoch, name, batch)`` of each checkpoint saved before
            ``seed``: a run that numbers its epochs from 1 again would write
            those names again (see :meth:`CheckpointFolder.check_first_epoch`).
        seed: the run's batch count at train begin.
        superseded: checkpoints from later than ``seed`` that belong to this
            run's own past future (a restart) or that the resume skipped as
            broken, with their batch counts: replaced as training reaches
            them (see :meth:`CheckpointFolder.drop_replaced`), never counted by
            retention meanwhile.
    """

    at_seed: tuple[Checkpoint, ...]
    epoch_without_batch: int | None
    earlier_by_epoch: tuple[tuple[int, str, int], ...] = ()
    seed: int = 0
    superseded: tuple[tuple[Checkpoint, int], ...] = ()


def _escape(text: str, style: str) -> str:
    """Literal text for a template of ``style``: its field delimiters doubled."""
    if style == "angle":
        return text.replace("<", "<<").replace(">", ">>")
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True, slots=True)
class _Scope:
    """The part of a template's tree that one run writes into.

    Attributes:
        template: the template with the folder levels the run fixes filled in
            (``lr=0.1/b{batch:04d}.keras`` for ``lr={lr}/b{batch:04d}.keras``
            and ``lr=0.1``), relative to the root.
        prefix: the leading folder levels it fixes (``"lr=0.1"``), or ``""``.
    """

    template: Template
    prefix: str


def _scope_of(template: Template, values: Mapping[str, Any]) -> _Scope | None:
    """The scope of a run whose folder fields take ``values``, or ``None`` where none is fixed.

    A folder level is fixed where ``values`` hold every field it has; levels
    without fields are fixed as they are.
    """
    segments = template.segments
    parts: list[str] = []
    prefix: list[str] = []
    leading = True
    any_field = False
    for segment in segments[:-1]:
        rendered = None
        if all(f in values for f in segment.fields):
            try:
                rendered = segment.render(values)
            except CkptnameError:
                rendered = None
        if rendered is None:
            leading = False
            parts.append(segment.text)
            continue
        any_field = any_field or bool(segment.fields)
        parts.append(_escape(rendered, template.style))
        if leading:
            prefix.append(rendered)
    if not any_field:
        return None
    try:
        scoped = Template("/".join([*parts, segments[-1].text]))
        layout_for(scoped)  # walkable: inside the root, readable back
    except CkptnameError:
        return None
    return _Scope(scoped, "/".join(prefix))


class CheckpointFolder:
    """One checkpoint folder (the root) and the template of its checkpoints.

    Several runs may share one root: sweep members writing
    ``runs/lr={lr}/b{batch:04d}.keras`` with ``lr`` from their extras, or a run
    whose root lies inside another's (``runs/lr=0.01``). A run's own
    checkpoints are those in the folders its fixed values name
    (:meth:`bind_run`), and never those below a folder that holds another
    run's state file or lock: the start checks, retention and the advice in
    errors look only at those, and the lock is taken in the deepest folder
    the run fixes, so that two runs writing one folder still exclude each
    other.

    Attributes:
        root: the folder as the user gave it (a path or URL).
        template: the checkpoints' template, relative to ``root``.
        storage: the storage holding the folder; ``inner`` its path there.
        latest: the ``latest`` entry of the state file this run last wrote.
    """

    def __init__(self, filepath: str, *, fsync: bool = True) -> None:
        """Open the folder of a callback's ``filepath``.

        Raises:
            TemplateError: ``filepath`` is not a valid template, or its
                checkpoint names would be too long to save (see
                :func:`check_name_length`).
        """
        self.root, self.template = split_filepath(filepath)
        self.storage, self.inner = storage_for(self.root)
        self.fsync = fsync
        self.latest: dict[str, Any] | None = None
        self._scopes: list[_Scope] = []
        self._marked = False  # the remote root is known to hold a state file
        # When ckptname first wrote the remote root's state file (see clean_leftovers).
        self._since: float | None = None
        self.name_overhead = 0 if self.remote else SAVE_NAME_OVERHEAD
        check_name_length(self.template, overhead=self.name_overhead, filepath=filepath)

    def bind_run(self, values: Mapping[str, Any]) -> None:
        """Fix what the run's own values decide: the folder levels it writes into, name lengths.

        Called at train begin, before any batch, with the run's extras: with
        ``lr={lr}/b{batch:04d}.keras`` and ``{"lr": 0.1}``, this run's
        checkpoints are those under ``lr=0.1/``. Folder fields the values do
        not hold (metrics, counters) fix nothing.

        Raises:
            RenderError: with these values, checkpoint names would be too
                long to save (see :func:`check_name_length`).
        """
        scope = _scope_of(self.template, values)
        self._scopes = [] if scope is None else [scope]
        check_name_length(self.template, values, overhead=self.name_overhead)

    def _claim(self, name: str) -> None:
        """Count the folder of a name this run saves among its own (extras that changed)."""
        if not self._scopes or any(s.template.parse(name) is not None for s in self._scopes):
            return
        values = self.template.parse(name)
        scope = None if values is None else _scope_of(self.template, values)
        if scope is not None:
            self._scopes.append(scope)

    @property
    def lock_folder(self) -> str:
        """The folder whose lock this run takes: the deepest one its values fix."""
        if self._scopes and self._scopes[0].prefix:
            return self.path(self._scopes[0].prefix)
        return self.inner

    @property
    def resume_hint(self) -> str:
        """What to pass to ``resume`` for this run's checkpoints (a folder or a filepath)."""
        if not self._scopes:
            return self.root
        text = self._scopes[0].template.text
        if self.root in (".", ""):
            return text
        return self.root.rstrip("/") + "/" + text

    @property
    def remote(self) -> bool:
        return self.storage.remote

    def path(self, name: str) -> str:
        """The storage path of a checkpoint name relative to the root."""
        return self.storage.join(self.inner, name)

    def url(self, path: str) -> str:
        return self.storage.url(path)

    def relative(self, path: str) -> str:
        """A checkpoint's storage path as a name relative to the root."""
        prefix = self.storage.join(self.inner, "")
        return path[len(prefix) :] if path.startswith(prefix) else path

    # ------------------------------------------------------------------ reading

    def records(self) -> list[Checkpoint]:
        """This run's complete checkpoints of the template, oldest first.

        Only those of its scope (see :meth:`bind_run`), and none below a
        folder that is another run's root (see :meth:`_nested_root`).
        """
        try:
            if not self._scopes:
                found = list(scan(self.root, self.template))
            else:
                by_path: dict[str, Checkpoint] = {}
                for scope in self._scopes:
                    for rec in scan(self.root, scope.template):
                        values = self.template.parse(rec.name)
                        by_path.setdefault(
                            rec.path,
                            dataclasses.replace(
                                rec,
                                values=rec.values if values is None else values,
                                template=self.template.text,
                            ),
                        )
                found = sorted(by_path.values(), key=progress_key)
        except FileNotFoundError:
            return []
        if self.remote:
            return found
        own = [s.prefix for s in self._scopes if s.prefix] or [""]
        foreign: dict[str, bool] = {}
        return [r for r in found if not self._nested_root(r.name, own, foreign)]

    def _nested_root(self, name: str, own: list[str], seen: dict[str, bool]) -> bool:
        """Whether ``name`` lies below a folder that is another run's root.

        A folder strictly below this run's own folder that holds a state file
        or a lock is the root of another run (``runs/lr=0.01`` inside
        ``runs``): its checkpoints are that run's, whatever their names.
        """
        folder = name.rpartition("/")[0]
        if not folder:
            return False
        base = max(
            (p for p in own if not p or folder == p or folder.startswith(p + "/")),
            key=len,
            default="",
        )
        parts = folder.split("/")
        start = len(base.split("/")) if base else 0
        for depth in range(start + 1, len(parts) + 1):
            level = "/".join(parts[:depth])
            if level not in seen:
                path = self.path(level)
                seen[level] = any(
                    self.storage.lexists(self.storage.join(path, marker))
                    for marker in (STATE_NAME, LOCK_NAME)
                )
            if seen[level]:
                return True
        return False

    def read_state(self) -> dict[str, Any] | None:
        """The folder's state file, or ``None`` where it is missing or unreadable."""
        try:
            return read_state(self.storage, self.inner)
        except MetadataError:
            return None

    def sidecar(self, record: Checkpoint) -> dict[str, Any] | None:
        """A checkpoint's sidecar, or ``None`` where it is missing or unreadable."""
        try:
            return read_sidecar(self.storage, self._inner_of(record))
        except (MetadataError, OSError):
            return None

    def with_sidecar(self, record: Checkpoint) -> Checkpoint:
        if record.metadata is not None:
            return record
        meta = self.sidecar(record)
        return record if meta is None else dataclasses.replace(record, metadata=meta)

    def _inner_of(self, record: Checkpoint) -> str:
        return storage_for(record.path)[1] if self.remote else record.path

    # ------------------------------------------------------------------ train begin

    def check_start(
        self,
        seed: int,
        records: Sequence[Checkpoint],
        *,
        restarted: bool = False,
        skipped: Iterable[str] = (),
    ) -> StartCheck:
        """Refuse a folder holding later checkpoints than the run's count ``seed``.

        Later checkpoints are another run's, and refused, unless ``restarted``
        (the model arrived at train begin already trained by something other
        than ckptname's resume, such as Keras's ``BackupAndRestore``: the job
        that wrote the folder was put back to an earlier step of itself) or
        the resume skipped them as broken (``skipped``, their paths). Those
        are returned as ``superseded``.

        Raises:
            CheckpointError: a checkpoint of the template was saved after a
                later batch than ``seed``: the run would overwrite or shadow it.
        """
        skipped = {normalized(path) for path in skipped}
        superseded: list[tuple[Checkpoint, int]] = []
        later: tuple[Checkpoint, int] | None = None
        unknown_epoch = 0
        at_seed: list[Checkpoint] = []
        earlier: list[tuple[int, str, int]] = []
        epoch_only = "epoch" in self.template.fields and "batch" not in self.template.fields
        for rec in records:
            batch = self._batch_of(rec)
            if batch is None:
                unknown_epoch = max(unknown_epoch, rec.epoch or 0)
            elif batch > seed and (restarted or normalized(rec.path) in skipped):
                superseded.append((rec, batch))
            elif batch > seed and (later is None or batch > later[1]):
                later = (rec, batch)
            elif batch == seed and seed > 0:
                at_seed.append(rec)
            elif batch < seed and epoch_only and rec.epoch is not None:
                earlier.append((rec.epoch, rec.name, batch))
        if later is not None:
            rec, batch = later
            raise CheckpointError(
                f"folder {self.root!r} already holds checkpoint {rec.name!r} of template "
                f"'{self.template.text}' from batch {batch}, later than this run's "
                f"batch count {seed}; resume from it "
                f"(ckptname.keras.resume(model, {self.resume_hint!r})) or use another folder"
            )
        return StartCheck(
            tuple(at_seed), unknown_epoch or None, tuple(earlier), seed, tuple(superseded)
        )

    def check_first_epoch(self, start: StartCheck, epoch: int) -> None:
        """Refuse a first epoch whose names would overwrite or shadow checkpoints.

        Called when the run's first epoch begins (``epoch`` 1-based), once the
        epoch numbering is known: names of the template without a batch
        count cannot tell this run's epoch 1 from an earlier run's.

        Raises:
            CheckpointError: the folder holds checkpoints from a later epoch
                of unknown batch count (another run's future), or, of this
                template's epoch-only names, ones saved before this run's
                count that it would write again (a second ``fit`` that numbers
                its epochs from 1 again): never a silent overwrite.
        """
        latest = start.epoch_without_batch
        if latest is not None and latest > epoch:
            raise CheckpointError(
                f"folder {self.root!r} already holds checkpoints of template "
                f"'{self.template.text}' from epoch {latest}, later than the epoch "
                f"this run starts at ({epoch}); resume from them "
                f"(ckptname.keras.resume(model, {self.resume_hint!r})) or use another folder"
            )
        clashes = sorted(item for item in start.earlier_by_epoch if item[0] >= epoch)
        if clashes:
            epochs = [item[0] for item in start.earlier_by_epoch]
            last = max(epochs + [rec.epoch for rec in start.at_seed if rec.epoch is not None])
            _, name, batch = clashes[0]
            raise CheckpointError(
                f"folder {self.root!r} already holds checkpoint {name!r} of template "
                f"'{self.template.text}', saved at batch {batch}, which this run would "
                f"overwrite: it starts at epoch {epoch} with {start.seed} batches done; pass "
                f"initial_epoch={last} to fit so that epochs are numbered on, or use "
                "another folder"
            )

    def count_before_epoch(self, records: Sequence[Checkpoint], epoch: int) -> int | None:
        """The batch count the folder's checkpoints record for the start of 0-based ``epoch``.

        Read from the sidecars (else the names) of checkpoints that closed
        the epoch before it (``batch``) or were saved inside it (``batch -
        batch_in_epoch``). ``None`` where none records it, or where they
        disagree (the folder then cannot say). Epoch 0 starts at 0.
        """
        if epoch == 0:
            return 0
        found: set[int] = set()
        for rec in records:
            if rec.epoch is not None and rec.epoch not in (epoch, epoch + 1):
                continue
            meta = self.sidecar(rec) or {}
            at = as_counter(meta.get("epoch", rec.epoch))
            batch = as_counter(meta.get("batch", rec.batch))
            inside = as_counter(meta.get("batch_in_epoch", rec.batch_in_epoch))
            if batch is None:
                continue
            if at == epoch and meta.get("end_of_epoch") is True:
                found.add(batch)
            elif at == epoch + 1 and inside is not None and inside <= batch:
                found.add(batch - inside)
        return found.pop() if len(found) == 1 else None

    def close_epoch(self, path: str) -> None:
        """Record in the sidecar of checkpoint ``path`` that its epoch ended with it.

        For a save on the last batch of an epoch whose length was not known
        when it was saved. The sidecar is replaced whole (an atomic rename
        locally, one upload on object stores); a missing or unreadable one is
        left as it is.

        Raises:
            CheckpointSaveError: the new sidecar could not be written.
        """
        try:
            meta = read_sidecar(self.storage, path)
        except (MetadataError, OSError):
            return
        if meta is None or meta.get("end_of_epoch") is True:
            return
        meta["end_of_epoch"] = True
        meta["steps_per_epoch"] = meta.get("batch_in_epoch")
        meta.pop("metric_state", None)  # only a resume inside the epoch needs it
        side = sidecar_path(path)
        _step("write the sidecar", side, self.storage.write_bytes, side, encode(meta))

    def _batch_of(self, record: Checkpoint) -> int | None:
        if record.batch is not None:
            return record.batch
        meta = self.sidecar(record)
        return None if meta is None else as_counter(meta.get("batch"))

    def clean_leftovers(
        self, records: Iterable[Checkpoint], *, started: float | None = None
    ) -> None:
        """Remove what a killed or failed save of this run left behind.

        Run at train begin by the chief, after the folder's lock is taken
        (so no live run of this folder is saving). In the run's own folders
        (the root, or with :meth:`bind_run` the folders its values fix) and
        in every folder that holds one of its checkpoints, it removes:

        * temporary files of this template's checkpoints and of their
          sidecars, and of the state file;
        * temporary lock files older than a minute (a run killed while taking
          the lock; younger ones may belong to a run taking it right now);
        * sidecars whose checkpoint does not exist (a save killed before its
          rename, or a prune killed between a checkpoint and its sidecar);
        * on object stores, uploads of this template without their sidecar
          (the commit marker) made after ckptname first wrote the root's
          state file (its ``since``) and before ``started``: a save killed or
          failed between the upload and its sidecar. Younger ones may be
          another writer's save in progress; older ones, and every upload in
          a root whose state file does not say since when it is ckptname's,
          were there before: checkpoints of another tool.

        A sweep member (a run whose values fix its folders, under a root that
        other members share) touches nothing in the shared root but its own
        temporary state files (those that name its own checkpoints): another
        member may be writing the state file right now.

        Scanning ignores all of these anyway; removing them keeps the folder
        as an uninterrupted run leaves it. Other templates' and other runs'
        files are left alone. Local folders are listed and cleaned through
        descriptors walked down from the root (``ckptname._storage.LocalTree``):
        a folder swapped for a link out of the root meanwhile is never cleaned.

        Args:
            records: the run's checkpoints (:meth:`records`).
            started: when the run started (POSIX time); now by default.
        """
        started = time.time() if started is None else started
        own = {s.prefix for s in self._scopes if s.prefix}
        shared_root = bool(self._scopes) and all(s.prefix for s in self._scopes)
        folders = own | {rec.name.rpartition("/")[0] for rec in records}
        if not shared_root:
            folders.add("")
        if self.remote:
            state = self.read_state() or {}
            since = state.get("since")
            if isinstance(since, (int, float)) and not isinstance(since, bool):
                self._since = float(since)
            self._clean_remote(sorted(folders), started)
            return
        try:
            tree = LocalTree(self.inner or ".")
        except OSError:
            return
        with tree:
            for folder in sorted(folders | ({""} if shared_root else set())):
                try:
                    names = tree.listdir(folder)
                except OSError:
                    continue  # gone, or a link out of the root
                present = set(names)
                for name in names:
                    if not is_reserved(name):
                        continue
                    rel = f"{folder}/{name}" if folder else name

                    def mtime(rel: str = rel) -> float | None:
                        return tree.lstat(rel).st_mtime

                    with contextlib.suppress(OSError):
                        if _stat.S_ISDIR(tree.lstat(rel).st_mode):
                            continue
                        if folder == "" and shared_root:
                            leftover = temp_target(name) == STATE_NAME and self._own_state(rel)
                        else:
                            leftover = self._is_leftover(name, present, mtime)
                        if leftover:
                            tree.remove(rel)

    def _own_state(self, rel: str) -> bool:
        """Whether a temporary state file in the root names one of this run's checkpoints.

        A run writes the state file only once it has saved (its ``latest``
        is then a checkpoint of its own folders): a temporary state file
        that names another member's checkpoint is that member's, perhaps
        being renamed into place right now; one that cannot be read is left
        alone.
        """
        try:
            raw = self.storage.read_small(self.path(rel), METADATA_LIMIT, follow=False)
            latest = decode(raw, "state file").get("latest")
        except (OSError, MetadataError):
            return False
        name = latest.get("name") if isinstance(latest, dict) else None
        return isinstance(name, str) and self._is_own(name)

    def _is_own(self, name: str) -> bool:
        """Whether a name relative to the root is one of this run's checkpoints' names."""
        if self.template.parse(name) is None:
            return False
        return not self._scopes or any(s.template.parse(name) is not None for s in self._scopes)

    def _clean_remote(self, folders: list[str], started: float) -> None:
        # Object stores keep times to the second: an upload in the second the
        # root became ckptname's counts as ckptname's.
        since = None if self._since is None else math.floor(self._since)
        for rel in folders:
            folder = self.path(rel) if rel else self.inner
            try:
                entries = list(self.storage.listdir(folder))
            except OSError:
                continue
            present = {entry.name for entry in entries}
            for entry in entries:
                if entry.is_dir:
                    continue
                path = self.storage.join(folder, entry.name)
                if is_reserved(entry.name):

                    def mtime(path: str = path) -> float | None:
                        return self.storage.modified(path)

                    with contextlib.suppress(OSError):
                        if self._is_leftover(entry.name, present, mtime):
                            self.storage.remove(path)
                    continue
                name = f"{rel}/{entry.name}" if rel else entry.name
                if since is None or entry.name + SIDECAR_SUFFIX in present:
                    continue
                if not self._is_own(name):
                    continue
                with contextlib.suppress(OSError):
                    when = self.storage.modified(path)
                    if when is not None and since <= when < started:
                        # An upload whose commit marker never came.
                        self.storage.remove(path)

    def _is_leftover(
        self, name: str, present: set[str], mtime: Callable[[], float | None]
    ) -> bool:
        leaf = self.template.segments[-1]
        target = temp_target(name)
        if target is not None:
            if target == LOCK_NAME:
                # Younger ones may belong to a run taking the lock right now.
                when = mtime()
                return when is not None and time.time() - when > _STALE_LOCK_TEMP_SECONDS
            if target == STATE_NAME:
                return True
            return leaf.parse(target.removesuffix(SIDECAR_SUFFIX)) is not None
        if name.endswith(SIDECAR_SUFFIX):
            checkpoint = name[: -len(SIDECAR_SUFFIX)]
            return checkpoint not in present and leaf.parse(checkpoint) is not None
        return False

    # ------------------------------------------------------------------ saving

    def save(
        self,
        name: str,
        meta: Mapping[str, Any],
        write_model: Callable[[str], None],
        *,
        best: Mapping[str, Any] | None,
        previous_best: Mapping[str, Any] | None,
    ) -> str:
        """Write a checkpoint, its sidecar and the state file: all or nothing.

        Killed before the final rename, a local folder holds no file under the
        checkpoint's name, only a temporary file and a sidecar without its
        checkpoint (removed by :meth:`clean_leftovers`, ignored by scanning
        meanwhile) and a state file naming a missing file (readers then list
        the folder). After it, the checkpoint is complete, has its sidecar,
        and the state file names it.

        Where the name already holds a checkpoint (a template without
        counters, such as ``best.keras``), the old checkpoint stays complete,
        sidecar included, until the new one is written: new, then retire old
        (the module docstring has the order, locally and on object stores).

        A failed step removes what this save wrote and puts the state file
        back as it was (naming ``previous_best``); a failed replace leaves
        the old checkpoint as it was.

        Args:
            name: the checkpoint's name relative to the root.
            meta: the sidecar record (see :func:`ckptname._metadata.sidecar_record`).
            write_model: writes the model to the path it is given.
            best: the state file's ``best`` entry with this save.
            previous_best: the ``best`` entry before this save.

        Returns:
            The checkpoint's storage path.

        Raises:
            CheckpointSaveError: a step failed, whatever it raised (the writer's
                own errors and a storage library's included); the message names
                the step, the path and the cause, and ``errno`` is kept. A name
                too long to save is refused before anything is written.
        """
        self._claim(name)
        entry = {"name": name}
        entry.update((key, meta[key]) for key in ("epoch", "batch", "batch_in_epoch", "iterations"))
        save = _Save(self.path(name), encode(dict(meta)), write_model, entry, best, previous_best)
        self._check_saved_name(save.path)
        previous_latest = self.latest
        try:
            if self.remote:
                self._save_remote(save)
            else:
                self._save_local(save)
        except BaseException:
            self.latest = previous_latest
            raise
        return save.path

    def _check_saved_name(self, path: str) -> None:
        size = len(path.rpartition("/")[2].rpartition(os.sep)[2].encode())
        if size + self.name_overhead <= NAME_LIMIT:
            return
        err = CheckpointSaveError(
            f"could not write the checkpoint {self.url(path)!r}: its name is {size} bytes, "
            f"and {_over_limit(size, self.name_overhead)}; keep names to at most "
            f"{NAME_LIMIT - self.name_overhead} bytes"
        )
        err.errno = errno.ENAMETOOLONG
        raise err

    def _save_local(self, save: _Save) -> None:
        storage = self.storage
        path, write_model = save.path, save.write_model
        side = sidecar_path(path)
        previous_latest = self.latest
        folder = os.path.dirname(path)
        if folder:
            _step("create the folder", folder, storage.makedirs, folder)
        replacing = storage.lexists(path)
        # Same folder (so the rename is atomic), a name no template matches,
        # and the real suffix (so Keras accepts it).
        tmp: str | None = storage.temp_path(path)
        side_tmp: str | None = None
        aside: str | None = None  # the old sidecar, set aside while the name changes hands
        placed: list[str] = []
        state_written = False
        try:
            _step("write the checkpoint", path, write_model, tmp)
            if self.fsync:
                _step("flush the checkpoint to disk", path, storage.fsync, tmp)
            side_tmp = _step("write the sidecar", side, storage.write_temp, side, save.data)
            if not replacing:
                _step("write the sidecar", side, storage.replace, side_tmp, side)
                side_tmp = None
                placed.append(side)
            self.latest = save.entry
            self.write_state(save.best)
            state_written = True
            if replacing and storage.lexists(side):
                # An older checkpoint's sidecar must never describe the new file.
                aside = storage.temp_path(side)
                _step("set the old sidecar aside", side, storage.replace, side, aside)
            _step("rename the checkpoint into place", path, storage.replace, tmp, path)
            tmp = None
            if side_tmp is not None:
                _step("write the sidecar", side, storage.replace, side_tmp, side)
                side_tmp = None
        except BaseException as exc:
            for leftover in (tmp, side_tmp):
                if leftover is not None:
                    with contextlib.suppress(OSError):
                        storage.remove(leftover)
            if aside is not None and tmp is not None:
                # The new model never took the name: the old checkpoint is whole again.
                restore, aside = aside, None  # if even this fails, it stays for the next start
                with contextlib.suppress(OSError):
                    storage.replace(restore, side)
            if isinstance(exc, CheckpointSaveError) and tmp is not None:
                # All or nothing: a checkpoint whose save did not finish is
                # not left for a resume to pick.
                for target in placed:
                    with contextlib.suppress(OSError):
                        storage.remove(target)
                if state_written:
                    self.latest = previous_latest
                    with contextlib.suppress(OSError):
                        self.write_state(save.previous_best)
            raise
        finally:
            if aside is not None:
                with contextlib.suppress(OSError):
                    storage.remove(aside)

    def _save_remote(self, save: _Save) -> None:
        storage = self.storage
        path = save.path
        side = sidecar_path(path)
        self._mark_remote(save.previous_best)
        # A name whose commit marker exists holds a checkpoint: it is
        # replaced, never uncommitted (nothing of it is removed first).
        replacing = _step("look up the sidecar", self.url(side), storage.exists, side)
        if replacing:
            self._announce_replacement(path, side, save.data)
        committed = False
        try:
            self._upload(path, save.write_model)
            _step("write the sidecar", self.url(side), storage.write_bytes, side, save.data)
            committed = True
            self.latest = save.entry
            self.write_state(save.best)
        except CheckpointSaveError:
            if not replacing:
                # All or nothing: the commit marker goes first, so the upload
                # is never a checkpoint without it, then the upload.
                for leftover in (side, path) if committed else (path,):
                    with contextlib.suppress(OSError):
                        storage.remove(leftover)
            raise

    def _announce_replacement(self, path: str, side: str, new: bytes) -> None:
        """Before an upload replaces a checkpoint: its sidecar names both records.

        The old record stays as it is, with the old object's version and the
        new sidecar beside it (:func:`~ckptname._metadata.replacing_record`):
        whichever object stands under the name after a failure or a kill,
        readers take the record that describes it. An old sidecar that does
        not read back, or an object whose store reports no version, is
        replaced as before.
        """
        storage, url = self.storage, self.url(side)
        try:
            old = decode(_step("read the sidecar", url, storage.read_small, side, METADATA_LIMIT),
                         f"sidecar {url!r}")  # fmt: skip
        except MetadataError:
            return
        version = _step("look up the checkpoint", self.url(path), storage.version, path)
        if version is not None:
            record = replacing_record(old, version, new)
            _step("write the sidecar", url, storage.write_bytes, side, record)

    def _mark_remote(self, best: Mapping[str, Any] | None) -> None:
        """Write the state file before the first upload into a root that has none.

        A remote folder counts as ckptname's (its checkpoints need their
        sidecars, the commit markers) once it holds the state file; without
        this, a kill between the first upload and its sidecar would leave a
        model that every reader takes for a checkpoint of another tool.
        """
        if self._marked:
            return
        url = self.url(self.path(STATE_NAME))
        state = _step("look up the state file", url, self._state_or_empty)
        if state is None:
            self._since = time.time()
            self.write_state(best)
        elif self._since is None and isinstance(state.get("since"), (int, float)):
            self._since = float(state["since"])
        self._marked = True

    def _state_or_empty(self) -> dict[str, Any] | None:
        """The state file; ``{}`` where it is there but unreadable; ``None`` where it is not."""
        try:
            return read_state(self.storage, self.inner)
        except MetadataError:
            return {}

    def _upload(self, path: str, write_model: Callable[[str], None]) -> None:
        url = self.url(path)
        folder = _step("write the checkpoint", url, tempfile.mkdtemp, "", "ckptname-")
        try:
            local = os.path.join(folder, os.path.basename(path))
            _step("write the checkpoint", url, write_model, local)
            _step("upload the checkpoint", url, self.storage.put_file, local, path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def write_state(self, best: Mapping[str, Any] | None) -> None:
        """Write the folder's state file: template, the latest this run saved, ``best``."""
        path = self.path(STATE_NAME)
        since = None
        if self.remote:
            # Kept on every rewrite; a state file without it gets it now.
            since = self._since = time.time() if self._since is None else self._since
        state = state_record(self.template.text, self.latest, best, since=since)
        _step("write the state file", self.url(path), self.storage.write_bytes, path, encode(state))


    # ------------------------------------------------------------------ retention

    def prune(
        self,
        newest: str,
        *,
        keep_last: int | None,
        keep_best: int | None,
        monitor: str,
        mode: str,
        protect: Iterable[str],
        exclude: Iterable[str] = (),
    ) -> RetentionPlan:
        """Apply ``keep_last``/``keep_best`` to the folder, never deleting ``newest``.

        Checkpoints whose paths are in ``exclude`` (superseded ones, waiting
        to be replaced) are left out of the plan: neither kept nor deleted.

        Returns:
            The plan that was applied.

        Raises:
            OSError: listing or deleting failed (a ``StorageError`` on object
                stores); any other failure is a ``CheckpointSaveError``.
        """
        with _upkeep():
            return self._prune(newest, keep_last, keep_best, monitor, mode, protect, exclude)

    def _prune(
        self,
        newest: str,
        keep_last: int | None,
        keep_best: int | None,
        monitor: str,
        mode: str,
        protect: Iterable[str],
        exclude: Iterable[str],
    ) -> RetentionPlan:
        left_out = {normalized(path) for path in exclude}
        records = [rec for rec in self.records() if normalized(rec.path) not in left_out]
        if keep_best is not None:
            # Names round metrics; the sidecars hold the exact values that
            # break ties between equal names.
            records = [self.with_sidecar(rec) for rec in records]
            if not any(can_win(rec, monitor) for rec in records):
                # Nothing has a value yet (epochs without validation): there
                # is no best to keep, and nothing is pruned for its sake.
                keep_best = None
        plan = plan_retention(
            records,
            keep_last=keep_last,
            keep_best=keep_best,
            monitor=monitor if keep_best is not None else None,
            mode=mode,
            protect=(self.url(newest), *sorted(protect)),
        )
        apply_retention(plan, self.root, template=self.template)
        return plan

    def drop_replaced(
        self, superseded: Sequence[tuple[Checkpoint, int]], batch: int, written: set[str]
    ) -> list[tuple[Checkpoint, int]]:
        """Delete the superseded checkpoints up to ``batch``, now that their replacements exist.

        Called after a save at ``batch`` is complete, so a superseded
        checkpoint is never deleted before the one that replaces it. One whose
        path this run has written itself (``written``: the same name, so the
        new save already replaced it) is not deleted.

        Returns:
            The superseded checkpoints that are left (later than ``batch``).

        Raises:
            OSError: deleting failed (a ``StorageError`` on object stores);
                any other failure is a ``CheckpointSaveError``.
        """
        due = [(rec, at) for rec, at in superseded if at <= batch]
        doomed = tuple(rec for rec, _ in due if normalized(rec.path) not in written)
        if doomed:
            plan = RetentionPlan(keep=(), delete=doomed)
            with _upkeep():
                apply_retention(plan, self.root, template=self.template)
        return [(rec, at) for rec, at in superseded if at > batch]


def normalized(path: str) -> str:
    """A checkpoint path spelled one way, to compare protected paths."""
    return path if "://" in path else os.path.normpath(path)


def _cause(exc: BaseException) -> str:
    """A failure's cause in words: an OS error's text, a storage error's cause, else the type."""
    if isinstance(exc, StorageError):
        return exc.cause
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    if isinstance(exc, OSError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _step(what: str, path: str, fn: Callable[..., T], *args: Any) -> T:
    """Run one step of a save; any failure becomes a ``CheckpointSaveError`` naming the step.

    Whatever the step raises (an ``OSError``, a storage library's own error,
    the model writer's ``ValueError``) is a failed save, which the caller's
    ``on_save_error`` governs; ``KeyboardInterrupt`` and other
    ``BaseException`` pass through.
    """
    try:
        return fn(*args)
    except CheckpointSaveError:
        raise
    except Exception as exc:
        err = CheckpointSaveError(f"could not {what} {path!r}: {_cause(exc)}")
        if isinstance(exc, OSError):
            # errno alone keeps `except OSError as e: e.errno == ENOSPC` working;
            # setting filename or strerror too would make OSError rewrite the message.
            err.errno = exc.errno
        raise err from exc


@contextlib.contextmanager
def _upkeep() -> Iterator[None]:
    """Pass ``OSError`` through; make any other failure of pruning a ``CheckpointSaveError``.

    So that the callback's ``on_save_error`` governs it like a failed delete.
    """
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        raise CheckpointSaveError(_cause(exc)) from exc

