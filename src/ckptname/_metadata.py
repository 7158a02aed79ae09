"""The formats of the files ckptname writes next to checkpoints, read and written.

This module knows what the sidecar and the state file hold and checks what it
reads back; every byte goes through :mod:`ckptname._storage`, which makes the
writes atomic.

Files that belong to ckptname all carry ``.ckptname`` in their name, so no
checkpoint template ever matches them (scanning skips such names):

=================================  =============================================
file                               what it is
=================================  =============================================
``<checkpoint>.ckptname.json``     the sidecar of one checkpoint: exact metric
                                   values, counters, extras; locally in place
                                   before the complete checkpoint is renamed to
                                   its name (so no checkpoint of ckptname's is
                                   ever seen without it), on object stores
                                   written after the upload, as the
                                   checkpoint's commit marker
``.ckptname-state.json``           the state of a checkpoint folder: template,
                                   latest, best, counters (one per folder the
                                   callback writes into)
``.ckptname-tmp-<id>-<name>``      a save in progress (of a checkpoint, sidecar,
                                   state or lock file); renamed into place when
                                   complete; never a checkpoint (named by
                                   ``ckptname._storage.temp_name``)
``.ckptname.lock``                 the owner (pid, host, start time) of a
                                   folder a live run writes into (format
                                   ``ckptname.lock/1``, see ``ckptname._lock``)
=================================  =============================================

The sidecar (format ``ckptname.checkpoint/1``)::

    {"format": "ckptname.checkpoint/1", "name": "ep03-0.52.keras",
     "template": "ep{epoch:02d}-{val_loss:.2f}.keras",
     "epoch": 3, "batch": 120, "batch_in_epoch": 40, "iterations": 120,
     "end_of_epoch": true, "steps_per_epoch": 40,
     "metrics": {"loss": 0.5123456, "val_loss": 0.5187654},
     "extras": {"lr": 0.001}, "time": 1763859000.25,
     "ckptname_version": "0.1.0", "save_weights_only": false}

``epoch`` is 1-based, ``batch`` the global count of training batches since the
run began, ``batch_in_epoch`` the count inside ``epoch``; ``iterations`` is
``optimizer.iterations`` (``null`` without an optimizer). ``end_of_epoch`` says
whether ``epoch`` was complete at the save (a resume then starts the next
epoch rather than finishing this one), ``steps_per_epoch`` is the length of
the epoch where the saving run knew it, else ``null``. Readers must ignore
keys they do not know.

A save inside an epoch (``end_of_epoch`` false) also records
``metric_state``: the values of the variables of ``model.metrics``, by metric
name, in the order of each metric's ``variables`` — for a model compiled with
``loss="mse", metrics=["mae"]``::

    "metric_state": {"loss": [41.25, 3.0],
                     "compile_metrics": [15.5, 3.0]}

These are the running sums behind the epoch's logged means (a ``Mean`` holds
``total`` and ``count``); a resume into the middle of the epoch puts them back
so that the means, and the names and sidecars of later saves in that epoch,
continue as if training had not stopped. A few numbers per metric (metrics
with thresholds, such as ``AUC``, hold a few hundred). Sidecars without the
key (end-of-epoch saves, older versions, other writers) resume as before: the
means of the rest of the interrupted epoch cover only the batches after the
resume.

The state file (format ``ckptname.state/1``)::

    {"format": "ckptname.state/1", "template": "ep{epoch:02d}-{val_loss:.2f}.keras",
     "latest": {"name": "ep03-0.52.keras", "epoch": 3, "batch": 120,
                "batch_in_epoch": 40, "iterations": 120},
     "best": {"name": "ep02-0.49.keras", "monitor": "val_loss", "mode": "min",
              "value": 0.4912345} or null,
     "time": 1763859000.3}

On object stores the state file also holds ``"since": 1763850000.0``, the time
ckptname first wrote it into the folder, kept on every rewrite: an upload
without its sidecar from before then was there before ckptname (another
tool's checkpoint), one from after it is a save of ckptname's that did not
finish (see ``ckptname._transaction``).

While an upload replaces a checkpoint on an object store (a template without
counters, such as ``last.keras``), its sidecar holds one key more,
``"replacing": {"over": <the old object's version>, "sidecar": <the new
sidecar, as JSON text>}``: readers take the new record once the object under
the name is no longer the old one (see :func:`settle`), so a save stopped
between the upload and its sidecar never leaves the new model described by
the old record.

Names in both are relative to the folder that holds the state file. Floats that
JSON cannot hold (NaN, inf) are written as the strings ``"nan"``, ``"inf"``,
``"-inf"`` and read back as floats.

Reading is defensive, since anyone who can write into a checkpoint folder can
put anything under these names. A sidecar or state file is read only if it
is a regular file (opened without blocking: a FIFO never hangs a reader) of
at most :data:`METADATA_LIMIT` bytes (16 MiB; ckptname writes a few hundred
bytes, a few KiB with ``metric_state``), on object stores with one ranged
GET of at most 16 MiB and a byte, so that a hostile object of any size
costs no more memory than that; its JSON may nest at most as deep as
the interpreter's recursion allows; and the sections readers rely on must
have their types: ``metrics`` an object of numbers (or text), ``extras`` an
object, ``metric_state`` an object of lists of numbers nested at most
:data:`_MAX_STATE_DEPTH` deep, ``latest`` and ``best`` objects or ``null``.
Anything else is a :class:`~ckptname.MetadataError` naming the file, which
every caller turns into a warning and a listing of the folder.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

from ._errors import MetadataError
from ._storage import SMALL_FILE_LIMIT, Storage, UnsafeFileError, storage_for
from ._version import __version__

__all__ = [
    "CHECKPOINT_FORMAT",
    "LOCK_NAME",
    "METADATA_LIMIT",
    "REPLACING_KEY",
    "SIDECAR_SUFFIX",
    "STATE_FORMAT",
    "STATE_NAME",
    "decode",
    "encode",
    "is_reserved",
    "read_metadata",
    "read_sidecar",
    "read_state",
    "replacing_record",
    "settle",
    "sidecar_path",
    "state_record",
    "write_state",
]

SIDECAR_SUFFIX = ".ckptname.json"
STATE_NAME = ".ckptname-state.json"
LOCK_NAME = ".ckptname.lock"
CHECKPOINT_FORMAT = "ckptname.checkpoint/1"
STATE_FORMAT = "ckptname.state/1"
_RESERVED_MARK = ".ckptname"
REPLACING_KEY = "replacing"
"""The sidecar key of a replacement in progress on an object store (see :func:`settle`)."""
# The largest sidecar or state file read (16 MiB): far above what ckptname
# writes, far below what would strain memory. Storage.read_many reads at most
# one byte more of each file.
METADATA_LIMIT = SMALL_FILE_LIMIT
_READ_RULE = "ckptname reads its files only as regular files of at most 16 MiB"
# metric_state holds each metric variable as a nested list of its shape.
_MAX_STATE_DEPTH = 32


def is_reserved(name: str) -> bool:
    """Whether a file name belongs to ckptname (sidecar, state, temp, lock)."""
    return _RESERVED_MARK in name


def sidecar_path(checkpoint_path: str) -> str:
    """The sidecar of a checkpoint: its path with ``.ckptname.json`` appended."""
    return checkpoint_path + SIDECAR_SUFFIX


def _safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, Mapping):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value


_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _restore_non_finite(value: Any) -> Any:
    """Turn the strings ``_safe`` wrote for NaN and inf back into floats, at any depth."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _restore_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_non_finite(v) for v in value]
    return value


def encode(data: Mapping[str, Any]) -> bytes:
    """JSON bytes of a sidecar or state record; NaN and inf become strings."""
    return json.dumps(_safe(data), indent=1, sort_keys=True, allow_nan=False).encode()


def decode(raw: bytes, what: str) -> dict[str, Any]:
    """Parse sidecar or state bytes, and check the types of the sections readers use.

    Raises:
        MetadataError: the bytes are more than :data:`METADATA_LIMIT` (what
            ``Storage.read_many`` gives of a larger file), not a JSON object,
            nest too deeply, or a section has the wrong type (see the module
            docstring).
    """
    if len(raw) > METADATA_LIMIT:
        raise MetadataError(f"{what} is larger than 16 MiB; {_READ_RULE}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MetadataError(f"{what} is not valid JSON ({exc}); it may be truncated") from None
    except RecursionError:
        raise MetadataError(
            f"{what} nests its JSON too deeply to read; it was not written by ckptname"
        ) from None
    if not isinstance(data, dict):
        raise MetadataError(f"{what} holds {type(data).__name__}, expected a JSON object")
    problem = _schema_problem(data)
    if problem is not None:
        raise MetadataError(f"{what} {problem}; it was not written by ckptname, or is damaged")
    for key in ("metrics",):
        section = data.get(key)
        if isinstance(section, dict):
            data[key] = {
                k: _NON_FINITE.get(v, v) if isinstance(v, str) else v for k, v in section.items()
            }
    if isinstance(data.get("metric_state"), dict):
        data["metric_state"] = _restore_non_finite(data["metric_state"])
    best = data.get("best")
    if isinstance(best, dict) and isinstance(best.get("value"), str):
        best["value"] = _NON_FINITE.get(best["value"], best["value"])
    return data


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


_SCALARS = (int, float, str, bool, type(None))


def _schema_problem(data: dict[str, Any]) -> str | None:
    """What is wrong with the types of the sections readers use, or ``None``."""
    for key in ("metrics", "extras"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"has {key!r} of type {_type_name(data[key])}, expected a JSON object"
    metrics = data.get("metrics")
    if isinstance(metrics, dict):
        for name, value in metrics.items():
            if not isinstance(value, _SCALARS):
                return f"has metric {name!r} of type {_type_name(value)}, expected a number"
    if data.get("metric_state") is not None:
        state = data["metric_state"]
        if not isinstance(state, dict):
            return f"has 'metric_state' of type {_type_name(state)}, expected a JSON object"
        for name, values in state.items():
            if not isinstance(values, list) or not _numbers_nested(values):
                return (
                    f"has 'metric_state' entry {name!r} that is not a list of numbers "
                    f"(nested at most {_MAX_STATE_DEPTH} deep)"
                )
    for key in ("latest", "best"):
        if key in data and data[key] is not None and not isinstance(data[key], dict):
            return f"has {key!r} of type {_type_name(data[key])}, expected a JSON object or null"
    return None


def _numbers_nested(values: list[Any]) -> bool:
    """Whether ``values`` holds only numbers (or NaN/inf text), in lists at most so deep."""
    stack = [(values, 1)]
    while stack:
        items, depth = stack.pop()
        if depth > _MAX_STATE_DEPTH:
            return False
        for item in items:
            if isinstance(item, list):
                stack.append((item, depth + 1))
            elif isinstance(item, str):
                if item not in _NON_FINITE:
                    return False
            elif not isinstance(item, (int, float)):  # bools are ints: bool variables
                return False
    return True


def _read(storage: Storage, path: str, what: str) -> bytes:
    """A sidecar's or state file's bytes, read by :meth:`Storage.read_small`.

    Raises:
        FileNotFoundError, NotADirectoryError: nothing is there.
        MetadataError: it is not a regular file, or is over :data:`METADATA_LIMIT`.
        OSError: the storage cannot read it.
    """
    try:
        return storage.read_small(path, METADATA_LIMIT)
    except UnsafeFileError as exc:
        raise MetadataError(f"{what} is {exc.reason}; {_READ_RULE}") from None


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata sidecar of a checkpoint, as a dict.

    Args:
        path: the checkpoint's path or URL (not the sidecar's).

    Returns:
        The sidecar's fields: ``epoch``, ``batch``, ``batch_in_epoch``,
        ``iterations``, ``metrics`` (exact, unrounded), ``extras``, ``time``,
        ``template``, ``ckptname_version``.

    Raises:
        FileNotFoundError: the checkpoint has no sidecar.
        MetadataError: the sidecar cannot be read.
    """
    target = os.fspath(path)
    storage, inner = storage_for(target)
    side = sidecar_path(inner)
    what = f"sidecar {side!r}"
    try:
        raw = _read(storage, side, what)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"checkpoint {target!r} has no metadata sidecar ({os.path.basename(side)}); "
            "it was not written by ckptname, or its save did not complete"
        ) from None
    return settle(decode(raw, what), storage, inner, what)


def read_sidecar(storage: Storage, checkpoint_inner_path: str) -> dict[str, Any] | None:
    """The sidecar of a checkpoint, or ``None`` where it has none.

    Args:
        storage: the storage that holds the checkpoint (see ``storage_for``).
        checkpoint_inner_path: the checkpoint's path in that storage (not the
            sidecar's).

    Returns:
        The sidecar's fields (see :func:`read_metadata`), or ``None`` where
        no file is at the sidecar's path.

    Raises:
        MetadataError: the sidecar is not a JSON object (truncated, or
            written by something else), not a regular file, or too large; the
            message names it by URL.
        OSError: the sidecar exists but the storage fails to read it.
    """
    side = sidecar_path(checkpoint_inner_path)
    what = f"sidecar {storage.url(side)!r}"
    try:
        raw = _read(storage, side, what)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return settle(decode(raw, what), storage, checkpoint_inner_path, what)


def replacing_record(old: Mapping[str, Any], version: str, new: bytes) -> bytes:
    """The sidecar written before an upload replaces a checkpoint on an object store.

    It is the old record, with the old object's ``version`` and the new
    sidecar's bytes under ``"replacing"``: until the new sidecar is written,
    :func:`settle` tells readers which of the two describes the object the
    name holds.
    """
    return encode({**old, REPLACING_KEY: {"over": version, "sidecar": new.decode()}})


def settle(
    meta: dict[str, Any], storage: Storage, checkpoint_inner_path: str, what: str
) -> dict[str, Any]:
    """The record that describes the object now under the checkpoint's name.

    A sidecar written before a replacing upload (:func:`replacing_record`)
    holds two records: the old one stands while the object is the one it
    replaces (same version: the upload failed, or has not happened), the
    new one once the object is another (the upload went through, and the
    save stopped before writing the new sidecar over it). Every other
    sidecar is its own record. Only such a sidecar costs a look-up of the
    object.

    Raises:
        MetadataError: the new record in it cannot be read.
    """
    pending = meta.pop(REPLACING_KEY, None)
    if not isinstance(pending, dict):
        return meta
    version = storage.version(checkpoint_inner_path)
    new = pending.get("sidecar")
    if version is None or version == pending.get("over") or not isinstance(new, str):
        return meta
    return decode(new.encode(), f"{what} (the record of the checkpoint that replaced its own)")


def read_state(storage: Storage, folder: str) -> dict[str, Any] | None:
    """The state file of a checkpoint folder, checked against its format.

    Only what every reader needs is checked here (the format and the
    template); callers check the ``latest`` and ``best`` entries they use.

    Args:
        storage: the storage that holds ``folder`` (see ``storage_for``).
        folder: the folder's path in that storage.

    Returns:
        The state as a dict (``template``, ``latest``, ``best``...), or
        ``None`` where the folder has no state file.

    Raises:
        MetadataError: the file is not valid JSON, is of another format, has
            no template, is not a regular file or is too large; it may be
            truncated or written by something else.
    """
    path = storage.join(folder, STATE_NAME) if folder else STATE_NAME
    what = f"state file {storage.url(path)!r}"
    try:
        raw = _read(storage, path, what)
    except (FileNotFoundError, NotADirectoryError):
        return None
    data = decode(raw, what)
    if data.get("format") != STATE_FORMAT:
        raise MetadataError(f"{what} has format {data.get('format')!r}, expected {STATE_FORMAT!r}")
    if not isinstance(data.get("template"), str) or not data["template"]:
        raise MetadataError(f"{what} has no template")
    return data


def state_record(
    template: str,
    latest: Mapping[str, Any] | None,
    best: Mapping[str, Any] | None,
    *,
    since: float | None = None,
) -> dict[str, Any]:
    """A state file's content (format ``ckptname.state/1``), stamped with the time now.

    Args:
        template: the text of the template the folder's checkpoints follow.
        latest: the newest checkpoint's entry (``name``, counters), or ``None``.
        best: the best checkpoint's entry (``name``, ``monitor``, ``mode``,
            ``value``), or ``None``.
        since: when ckptname first wrote the folder's state file (object
            stores), or ``None`` to leave it out.
    """
    record: dict[str, Any] = {
        "format": STATE_FORMAT,
        "template": template,
        "latest": latest,
        "best": best,
        "time": time.time(),
    }
    if since is not None:
        record["since"] = since
    return record


def write_state(storage: Storage, folder: str, state: Mapping[str, Any]) -> None:
    """Write a folder's state file, complete or not at all.

    Not flushed to disk: the state file is small and is rebuilt from the
    checkpoints' names if a power loss empties it.

    Args:
        storage: the storage that holds ``folder``.
        folder: the folder's path in that storage.
        state: the content, e.g. from :func:`state_record`.

    Raises:
        OSError: the file cannot be written; nothing is left behind.
    """
    path = storage.join(folder, STATE_NAME) if folder else STATE_NAME
    storage.write_bytes(path, encode(state))


def sidecar_record(
    *,
    name: str,
    template: str,
    epoch: int,
    batch: int,
    batch_in_epoch: int,
    iterations: int | None,
    end_of_epoch: bool,
    steps_per_epoch: int | None,
    metrics: Mapping[str, Any],
    extras: Mapping[str, Any],
    save_weights_only: bool,
) -> dict[str, Any]:
    """The sidecar of one checkpoint (format ``ckptname.checkpoint/1``, see the module docstring).

    ``metric_state`` is added by the caller where a save inside an epoch has it.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "name": name,
        "template": template,
        "epoch": epoch,
        "batch": batch,
        "batch_in_epoch": batch_in_epoch,
        "iterations": iterations,
        "end_of_epoch": bool(end_of_epoch),
        "steps_per_epoch": steps_per_epoch,
        "metrics": dict(metrics),
        "extras": dict(extras),
        "time": time.time(),
        "ckptname_version": __version__,
        "save_weights_only": save_weights_only,
    }
