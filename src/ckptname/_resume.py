"""Resume: load the latest checkpoint into a model and say where training stands.

This module is reserved for the way back into training: :func:`resume` (which
checkpoint, loading it, what ``fit`` needs to continue). Finishing an
interrupted epoch is ``ckptname._fit_resumed``. Public as
``ckptname.keras.resume``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
import weakref
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

from ._errors import CheckpointError, CkptnameWarning, MetadataError, TemplateError
from ._keras_backend import build_optimizers, distribution_scope, lost_optimizer_state
from ._metadata import is_reserved, read_metadata
from ._rank import COUNTERS, as_counter, is_number, progress_key
from ._scan import Checkpoint, find_latest, scan
from ._schedule import ResumePoint
from ._storage import storage_for
from ._template import Template
from ._transaction import split_filepath

__all__ = ["resume", "resumed_point"]

# Which checkpoint each model was resumed from, so that a callback created
# before or after `resume()` can pick the counters up without the user passing
# them around. Weak keys: the registry never keeps a model alive.
_RESUMED: weakref.WeakKeyDictionary[Any, ResumePoint] = weakref.WeakKeyDictionary()


def resumed_point(model: Any) -> ResumePoint | None:
    """The point :func:`resume` last loaded into ``model``, or ``None``."""
    return _RESUMED.get(model) if model is not None else None


def resume(
    model: Any,
    directory: str | os.PathLike[str],
    *,
    template: str | Template | None = None,
) -> ResumePoint:
    """Load the latest complete checkpoint into ``model``; say where training stands.

    Weights and, where the checkpoint holds it, the optimizer state (its
    ``iterations`` included) are restored; the model must be built and
    compiled as it was when saved. The point is remembered for ``model`` so
    that a :class:`ckptname.keras.BatchAwareCheckpoint` picks the counters up.

    Args:
        model: a built (and, to restore the optimizer, compiled) Keras model.
        directory: the checkpoint folder, or the callback's ``filepath``
            (its template then says which checkpoints to consider).
        template: the names to consider, relative to ``directory``; by default
            the one in ``filepath``, else the one in the folder's state file.

    Returns:
        A :class:`ResumePoint`; for a folder with no checkpoint (or none yet),
        a fresh start (``path=None``, ``initial_epoch=0``).

    Raises:
        ValueError: the model is not built.
        CheckpointError: the folder's checkpoints cannot be told apart
            (propagated from the scan).
    """
    text = os.fspath(directory)
    root = text
    if template is None and _has_fields(text):
        root, template = split_filepath(text)
    if not getattr(model, "built", False):
        raise ValueError(
            "the model must be built before resume() can load weights into it; call it on "
            "a batch, or give it an Input layer"
        )
    latest = _latest(root, template)
    if latest is None:
        _RESUMED.pop(model, None)
        return ResumePoint()
    skipped: list[tuple[str, str]] = []
    for candidate in _newest_first(root, latest):
        path = str(candidate.path)
        meta = _sidecar_or_none(path)
        meta = _agreeing_sidecar(candidate, path, meta)
        problem = _not_finite(candidate, meta)
        if problem is None:
            problem = _load_or_why_not(model, path, meta)
        if problem is None:
            point = _point_of(model, candidate, path, meta, tuple(p for p, _ in skipped))
            _RESUMED[model] = point
            return point
        warnings.warn(
            f"not resuming from {path!r}: {problem}; trying the checkpoint before it",
            CkptnameWarning,
            stacklevel=2,
        )
        skipped.append((path, problem))
    newest, why = skipped[0]
    raise CheckpointError(
        f"no checkpoint in {root!r} can be resumed from: the newest, {newest!r}, {why}"
        f"{f', and so do the {len(skipped) - 1} before it' if len(skipped) > 1 else ''}; "
        "build and compile the model as it was when saved, or start in another folder"
    )


def _newest_first(root: str, latest: Checkpoint) -> Iterator[Checkpoint]:
    """``latest``, then the checkpoints before it, newest first (listed only if needed)."""
    yield latest
    if latest.template is None:
        return
    for record in reversed(scan(root, latest.template)):
        if progress_key(record) < progress_key(latest):
            yield record


def _sidecar_or_none(path: str) -> dict[str, Any] | None:
    try:
        return read_metadata(path)
    except (FileNotFoundError, MetadataError):
        return None


def _not_finite(record: Checkpoint, meta: Mapping[str, Any] | None) -> str | None:
    """Why a checkpoint records a loss or metric that is NaN or infinite, else ``None``.

    The values are the sidecar's exact metrics, else those in the name. A run
    stopped by ``TerminateOnNaN`` leaves such a checkpoint: its weights are
    not a point to continue from.
    """
    metrics = meta.get("metrics") if meta else None
    values = metrics if isinstance(metrics, dict) else _named_metrics(record.values)
    for key, value in values.items():
        if is_number(value) and not math.isfinite(value):
            return f"its {key} is {value}"
    return None


# What a checkpoint that cannot be read, or whose arrays do not fit the model,
# raises from Keras's loading: the file's fault, so the one before it is tried.
# Anything else (a strategy scope, a collective, a missing backend, memory)
# is not the file's fault and is raised as it is.
_DAMAGED = (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile)


def _load_or_why_not(model: Any, path: str, meta: Mapping[str, Any] | None) -> str | None:
    """Load ``path`` into ``model``; why it is damaged, or ``None`` once loaded.

    Raises:
        Exception: a failure that is not the file's (see ``_DAMAGED``), as it is.
    """
    record = meta.get("optimizers") if meta is not None else None
    with distribution_scope(model):
        problems = build_optimizers(model, record if isinstance(record, dict) else None)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _load_weights(model, path)
        except _DAMAGED as exc:
            return f"it does not load ({type(exc).__name__}: {exc})"
    for warning in caught:
        if "optimizer" in str(warning.message) and problems:
            continue  # Keras's own word for the skipped optimizer: ours below names why
        warnings.warn_explicit(
            warning.message, warning.category, warning.filename, warning.lineno
        )
    problems.extend(lost_optimizer_state(model, meta))
    if problems:
        word = "optimizer" if len(problems) == 1 else "optimizers"
        warnings.warn(
            f"the state of {word} {', '.join(problems)} is not restored from {path!r}: "
            "training continues from a fresh optimizer state; build the optimizer on the "
            "variables it updates (optimizer.build(variables)) before calling resume",
            CkptnameWarning,
            stacklevel=3,
        )
    return None


def _latest(root: str, template: str | Template | None) -> Checkpoint | None:
    try:
        return find_latest(root, template=template)
    except FileNotFoundError:
        return None
    except TemplateError:
        # No template and no state file: a folder that nothing was saved into
        # yet is a fresh start; one with files needs the template to be named.
        if template is not None or _holds_files(root):
            raise
        return None


def _load_weights(model: Any, path: str) -> None:
    storage, inner = storage_for(path)
    if not storage.remote:
        model.load_weights(inner)
        return
    folder = tempfile.mkdtemp(prefix="ckptname-")
    try:
        local = os.path.join(folder, os.path.basename(inner))
        with open(local, "wb") as fh:
            fh.write(storage.read_bytes(inner))
        model.load_weights(local)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _point_of(
    model: Any,
    latest: Checkpoint,
    path: str,
    sidecar: dict[str, Any] | None,
    skipped: tuple[str, ...],
) -> ResumePoint:
    """The resume point a loaded checkpoint stands for: its sidecar, else its name."""
    meta = sidecar
    if meta is None:  # missing or unreadable: read again, to say why
        try:
            meta = read_metadata(path)
        except (FileNotFoundError, MetadataError) as exc:
            warnings.warn(
                f"{exc}; counters are read from the name of {path!r} instead",
                CkptnameWarning,
                stacklevel=3,
            )
            meta = {}
    batch = _first_counter(meta.get("batch"), latest.batch) or 0
    recorded_iterations = meta.get("iterations")
    metrics = meta.get("metrics") if meta else _named_metrics(latest.values)
    return ResumePoint(
        path=path,
        epoch=_first_counter(meta.get("epoch"), latest.epoch) or 0,
        batch=batch,
        batch_in_epoch=_first_counter(meta.get("batch_in_epoch"), latest.batch_in_epoch) or 0,
        # Without a sidecar, a checkpoint is taken to close its epoch: that is
        # what names without a batch field (Keras's epoch saves) mean.
        end_of_epoch=bool(meta.get("end_of_epoch", "end_of_epoch" not in meta)),
        iterations=recorded_iterations if isinstance(recorded_iterations, int) else None,
        steps_per_epoch=_first_counter(meta.get("steps_per_epoch")),
        metrics=dict(metrics or {}),
        extras=dict(meta.get("extras") or {}),
        metric_state=dict(meta.get("metric_state") or {}),
        skipped=skipped,
        saved_at=_saved_at(meta.get("time")),
    )


def _saved_at(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _agreeing_sidecar(
    record: Checkpoint, path: str, meta: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The sidecar, unless its counters contradict the name: the name wins, with a warning.

    A sidecar that says batch 40 beside ``b006.keras`` belongs to another
    checkpoint (copied or edited); none of its counters, metrics or state
    describe this file, so it is set aside as a whole: ``{}``, which the
    rest of the resume reads as a checkpoint without a sidecar.
    """
    if meta is None:
        return None
    named = {key: getattr(record, key) for key in COUNTERS if getattr(record, key) is not None}
    recorded = {key: as_counter(meta.get(key)) for key in COUNTERS}
    if all(recorded[key] in (None, value) for key, value in named.items()):
        return meta
    says = ", ".join(f"{key} {value}" for key, value in recorded.items() if value is not None)
    named_text = ", ".join(f"{key} {value}" for key, value in named.items())
    warnings.warn(
        f"the sidecar of {path!r} records {says}, but the name says {named_text}; the name "
        "wins and the sidecar is not used (it describes another checkpoint)",
        CkptnameWarning,
        stacklevel=4,
    )
    return {}


def _named_metrics(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in COUNTERS and is_number(v)}


def _first_counter(*candidates: object) -> int | None:
    """The first candidate that is an ``int`` (not a bool), else ``None``."""
    for c in candidates:
        if isinstance(c, int) and not isinstance(c, bool):
            return c
    return None


def _holds_files(root: str) -> bool:
    storage, inner = storage_for(root)
    try:
        return any(not is_reserved(entry.name) for entry in storage.listdir(inner or "."))
    except OSError:
        return False


def _has_fields(text: str) -> bool:
    try:
        return bool(Template(text).fields)
    except TemplateError:
        return False
