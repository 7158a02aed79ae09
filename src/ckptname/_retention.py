"""Which checkpoints to keep: a pure plan, and a separate step that deletes.

The policy is a function of records only (:func:`plan_retention`), so the
callback, the command line and a test can compute the same plan and show it
before anything is deleted. Deleting is :func:`apply_retention`, which
re-checks every path it is asked to delete, and deletes local files relative
to folder descriptors walked down from the root, never by a path resolved
twice.

===========================================  ====================================
arguments                                    kept
===========================================  ====================================
neither ``keep_last`` nor ``keep_best``      everything
``keep_last=2``                              the 2 newest
``keep_best=1, monitor="val_loss"``          the lowest ``val_loss``, and the newest
``keep_last=2, keep_best=1``                 the union: 2 newest and the best
any, with ``protect=(path,)``                also ``path`` (e.g. the one resumed from)
===========================================  ====================================

The newest checkpoint is always kept: deleting it would lose the only point a
crashed run can resume from. A checkpoint whose counter does not read as a
number (``ckpt-final.keras`` for ``ckpt-{epoch}.keras``, see
``ckptname._rank.in_sequence``) is outside the sequence retention counts in:
it is always kept, and never counted among the newest or the best.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ._errors import (
    Advice,
    CheckpointError,
    CkptnameWarning,
    MissingFieldError,
    MonitorError,
    TemplateError,
    advised,
)
from ._metadata import is_reserved, sidecar_path
from ._rank import Mode, best_key, can_win, in_sequence, progress_key, resolve_mode
from ._roots import Layout, Root, layout_for, open_root
from ._scan import Checkpoint
from ._storage import LinkLeavesRootError, LocalTree
from ._template import Template

__all__ = ["RetentionPlan", "apply_retention", "check_keep", "plan_retention"]


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """What to keep and what to delete, each oldest first.

    Attributes:
        keep: the checkpoints to keep.
        delete: the checkpoints to delete.
        reasons: for each kept checkpoint's path, why it is kept: any of
            ``"newest"``, ``"latest"`` (one of the ``keep_last``), ``"best"``
            (one of the ``keep_best``), ``"protected"``, ``"no policy"``,
            ``"not numbered"`` (its counter does not read as a number).
    """

    keep: tuple[Checkpoint, ...]
    delete: tuple[Checkpoint, ...]
    reasons: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)


def check_keep(name: str, value: object) -> int | None:
    """A ``keep_last``/``keep_best`` count: ``None`` or a whole number >= 0.

    0 keeps only what is always kept (the newest and the protected).

    Raises:
        ValueError: anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be None or a whole number >= 0, got {value!r}")
    return value


def _comparable_path(path: str | os.PathLike[str]) -> str:
    """A path or URL spelled one way, so that protect entries match records."""
    text = os.fspath(path)
    if "://" in text:
        protocol, _, rest = text.partition("://")
        if protocol != "file":
            return f"{protocol}://{rest.strip('/')}"
        text = rest
    return os.path.normcase(os.path.abspath(text))


def plan_retention(
    records: Iterable[Checkpoint],
    *,
    keep_last: int | None = None,
    keep_best: int | None = None,
    monitor: str | None = None,
    mode: str = "auto",
    protect: Iterable[str | os.PathLike[str] | Checkpoint] = (),
) -> RetentionPlan:
    """Decide which checkpoints to keep; delete nothing.

    The plan keeps the union of: the ``keep_last`` newest (progress order, see
    ``ckptname._rank.progress_key``), the ``keep_best`` best by ``monitor``
    (``ckptname._rank.best_key``: NaN never counts, ties go to the exact value
    in ``Checkpoint.metadata`` where the records carry it, then to the earlier
    checkpoint, as in Keras), the newest checkpoint, every checkpoint in
    ``protect``, and every checkpoint whose counter does not read as a number
    (which is not counted among the newest or the best). Everything else is to
    be deleted. With neither ``keep_last`` nor ``keep_best`` every checkpoint is
    kept.

    Args:
        records: the checkpoints of one template, e.g. from ``ckptname.scan``.
            A path that appears twice counts once.
        keep_last: how many of the newest to keep, or ``None``.
        keep_best: how many of the best to keep, or ``None``; needs
            ``monitor``.
        monitor: the metric to rank by, e.g. ``"val_loss"``.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (see ``ckptname.resolve_mode``).
        protect: checkpoints never to delete: records, paths, URLs, or names
            relative to the root.

    Returns:
        A :class:`RetentionPlan`.

    Raises:
        ValueError: ``keep_last`` or ``keep_best`` is not a whole number >= 0,
            or ``keep_best`` is given without ``monitor``.
        MonitorError: ``mode`` is invalid, or ``"auto"`` cannot tell.
        MissingFieldError: ``keep_best`` is given and no record has a value
            for ``monitor`` (in its name or its metadata).
    """
    keep_last = check_keep("keep_last", keep_last)
    keep_best = check_keep("keep_best", keep_best)
    resolved = None
    if keep_best is not None:
        if monitor is None:
            advice = Advice(
                "pass monitor=, e.g. monitor='val_loss'", "pass --monitor, e.g. --monitor val_loss"
            )
            raise advised(
                MonitorError(f"keep_best={keep_best} needs a metric to rank by; {advice.api}"),
                advice,
            )
        resolved = resolve_mode(monitor, mode)
    unique: dict[str, Checkpoint] = {}
    for record in records:
        unique.setdefault(record.path, record)
    ordered = sorted(unique.values(), key=progress_key)
    if not ordered:
        return RetentionPlan((), (), {})

    reasons: dict[str, list[str]] = {r.path: [] for r in ordered}
    if keep_last is None and keep_best is None:
        for r in ordered:
            reasons[r.path].append("no policy")
    numbered = [r for r in ordered if in_sequence(r)]
    for r in ordered:
        if not in_sequence(r):
            reasons[r.path].append("not numbered")
    if keep_last and numbered:
        for r in numbered[-keep_last:]:
            reasons[r.path].append("latest")
    if keep_best is not None and monitor is not None and resolved is not None and numbered:
        for r in _best(numbered, keep_best, monitor, resolved):
            reasons[r.path].append("best")
    if numbered:
        reasons[numbered[-1].path].insert(0, "newest")
    for r in _protected(ordered, protect):
        reasons[r.path].append("protected")

    keep = tuple(r for r in ordered if reasons[r.path])
    delete = tuple(r for r in ordered if not reasons[r.path])
    return RetentionPlan(keep, delete, {path: tuple(why) for path, why in reasons.items() if why})


def _best(ordered: list[Checkpoint], keep_best: int, monitor: str, mode: Mode) -> list[Checkpoint]:
    """The ``keep_best`` best records by ``monitor``, best first."""
    candidates = [r for r in ordered if can_win(r, monitor)]
    if not candidates and not any(monitor in r.values for r in ordered):
        names = sorted({k for r in ordered for k in r.values})
        raise MissingFieldError(
            f"keep_best={keep_best} ranks by {monitor!r}, which no checkpoint has in "
            f"its name or metadata (fields: {', '.join(names) or 'none'}); rank by one of "
            "those fields, or put the metric into the template",
            (monitor,),
            tuple(names),
        )
    candidates.sort(key=lambda r: best_key(r, monitor, mode), reverse=True)
    return candidates[:keep_best]


def _protected(
    ordered: list[Checkpoint], protect: Iterable[str | os.PathLike[str] | Checkpoint]
) -> list[Checkpoint]:
    """The records that ``protect`` names, by record, path, URL or name relative to the root."""
    if isinstance(protect, (str, os.PathLike, Checkpoint)):
        protect = (protect,)  # one path given bare, not a sequence of characters
    given: set[str] = set()
    for item in protect:
        given.add(item.path if isinstance(item, Checkpoint) else os.fspath(item))
    if not given:
        return []
    wanted = {_comparable_path(text) for text in given}
    return [
        r
        for r in ordered
        if r.name in given or r.path in given or _comparable_path(r.path) in wanted
    ]


def apply_retention(
    plan: RetentionPlan,
    root: str | os.PathLike[str],
    *,
    template: Template | str | None = None,
) -> list[str]:
    """Delete the checkpoints a plan marks for deletion, each with its sidecar.

    Every record is checked before anything is deleted: its name must be a
    relative name without ``.ckptname``, read back with its template (and with
    ``template`` where given), and its path must be ``root`` joined with that
    name; a record that fails any check stops the whole call.

    Local files are deleted relative to folder descriptors opened by walking
    down from ``root`` (``ckptname._storage.LocalTree``), so no path is
    resolved twice: a folder swapped for a symbolic link between the checks
    and the delete cannot send the delete out of ``root``. A folder that is a
    symbolic link is followed only where it leads to a folder inside
    ``root``; a record under one that leads out is skipped with a warning. A
    checkpoint that is itself a symbolic link is removed as a link; its
    target is left alone.

    The checkpoint is deleted before its sidecar, so that an interruption
    leaves at worst a sidecar without a checkpoint, which scanning ignores.
    Files already gone are skipped.

    Args:
        plan: from :func:`plan_retention`.
        root: the folder or URL the records were found under.
        template: if given, the template every deleted record must match.

    Returns:
        The paths of the checkpoints deleted (as in ``Checkpoint.path``).

    Raises:
        CheckpointError: the plan would delete a record that does not lie
            under ``root``, does not match its template, or is also in
            ``plan.keep``. Nothing is deleted then.
        OSError: deleting failed (for instance, permission denied).
    """
    where = open_root(root)
    required = layout_for(template) if template is not None else None
    checked = _checked_deletions(plan, where, required)
    deleted: list[str] = []
    if not checked:
        return deleted
    if not where.local:
        for record, inner in checked:
            try:
                where.storage.remove(inner)
            except FileNotFoundError:
                pass
            else:
                deleted.append(record.path)
            with contextlib.suppress(FileNotFoundError):
                where.storage.remove(sidecar_path(inner))
        return deleted
    try:
        tree = LocalTree(where.inner or ".")
    except (FileNotFoundError, NotADirectoryError):
        return deleted  # no root, so none of its files to delete
    with tree:
        for record, _ in checked:
            try:
                if tree.remove(record.name):
                    deleted.append(record.path)
                tree.remove(sidecar_path(record.name))
            except LinkLeavesRootError:
                warnings.warn(
                    f"not deleting {record.path!r}: its folder is a symbolic link that leads "
                    f"out of {where.text!r}",
                    CkptnameWarning,
                    stacklevel=2,
                )
    return deleted


def _checked_deletions(
    plan: RetentionPlan, where: Root, required: Layout | None
) -> list[tuple[Checkpoint, str]]:
    """Every record the plan deletes, with its storage path, once all are checked.

    Raises:
        CheckpointError: a record must not be deleted (see :func:`_why_not_deletable`).
    """
    kept = {r.path for r in plan.keep}
    checked: list[tuple[Checkpoint, str]] = []
    for record in plan.delete:
        problem = _why_not_deletable(record, where, required, kept)
        if problem is not None:
            raise CheckpointError(
                f"refusing to delete {record.path!r}: {problem}; nothing was deleted"
            )
        checked.append((record, where.inner_path(record.name)))
    return checked


def _why_not_deletable(
    record: Checkpoint, where: Root, required: Layout | None, kept: set[str]
) -> str | None:
    """Why ``record`` must not be deleted from ``where``, or ``None`` where it may be."""
    name = record.name
    if record.path in kept:
        return "the plan also keeps it"
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts) or "\\" in name:
        return f"its name {name!r} is not a name relative to root"
    if is_reserved(name):
        return f"its name {name!r} belongs to ckptname's own files"
    if _comparable_path(record.path) != _comparable_path(where.path(name)):
        return f"it does not lie under {where.text!r} as {name!r}"
    layouts = [required] if required is not None else []
    if record.template is None and required is None:
        return "it carries no template to check its name against; pass template="
    if record.template is not None:
        try:
            layouts.append(layout_for(record.template))
        except TemplateError as exc:
            return f"its template cannot be used ({exc.reason})"
    for layout in layouts:
        if layout.template.parse(name) is None:
            return f"its name does not match the template {layout.text!r}"
    return None
