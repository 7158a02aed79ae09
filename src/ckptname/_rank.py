"""How checkpoints are ordered: by progress, and by a monitored metric.

Every ordering ckptname applies lives here, so that ``scan``, ``find_latest``,
``find_best``, retention, the callback and the command line cannot disagree:

* :data:`COUNTERS` names the fields that say how far training had got, and
  :func:`as_counter` reads one (``3``, ``3.0`` and ``'003'`` are all 3);
* :func:`progress_key` orders checkpoints from oldest to newest, and
  :func:`in_sequence` says which belong to that order at all;
* :func:`resolve_mode` decides whether a metric is better low or high;
* :func:`is_number` says which logged values are metric values;
* :func:`best_key` orders checkpoints from worst to best by a metric, and
  :func:`improves` says whether a new value beats the best so far.

One tie rule everywhere: of checkpoints with the same value (the exact value
from the sidecars where the records carry it), the earlier is the best, as in
Keras's ``ModelCheckpoint`` and Lightning. :func:`best_key` (``find_best``,
``best_per_group``, ``keep_best``, the CLI) ranks equal values by
:func:`tie_break`, earlier first; :func:`improves` (the callback's
``save_best_only`` and best so far) is strict, so an equal value does not
replace the best.

Records are duck-typed (any object with the attributes of
:class:`ckptname.Checkpoint`, described by :class:`Record`), so this module
imports nothing else of ckptname's but its errors.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from operator import attrgetter
from typing import Any, Literal, Protocol, TypeGuard

from ._errors import Advice, MonitorError, advised

__all__ = [
    "COUNTERS",
    "Mode",
    "Record",
    "as_counter",
    "best_key",
    "can_win",
    "check_mode",
    "improves",
    "in_sequence",
    "is_number",
    "metric_value",
    "progress_key",
    "resolve_mode",
    "sort_by_progress",
    "tie_break",
]

Mode = Literal["min", "max"]

# The fields that say how far training had got, in progress order: the global
# batch count first, as it alone never restarts.
COUNTERS: tuple[str, ...] = ("batch", "epoch", "batch_in_epoch")

# Stands in for a missing counter or time: sorts before every real value, and
# keeps every key the same shape so that any two keys compare.
_ABSENT = -math.inf
_DIGIT_RUNS = re.compile(r"([0-9]+)")


class Record(Protocol):
    """What ordering reads of a checkpoint record (:class:`ckptname.Checkpoint`)."""

    @property
    def name(self) -> str: ...
    @property
    def values(self) -> Mapping[str, Any]: ...
    @property
    def epoch(self) -> int | None: ...
    @property
    def batch(self) -> int | None: ...
    @property
    def batch_in_epoch(self) -> int | None: ...
    @property
    def mtime(self) -> float | None: ...
    @property
    def metadata(self) -> Mapping[str, Any] | None: ...


def as_counter(value: object) -> int | None:
    """A counter's value as an ``int``, or ``None`` where it is not a counter.

    ==========================================  ========
    value                                       result
    ==========================================  ========
    ``3`` (an ``int``, not a ``bool``)          ``3``
    ``3.0`` (a finite, whole float)             ``3``
    ``'003'`` (ASCII digits: a counter          ``3``
    written with the ``s`` type)
    ``True``, ``3.5``, ``nan``, ``inf``         ``None``
    ``'-3'``, ``' 3'``, ``'3.0'``, other        ``None``
    scripts' digits, ``None``
    ==========================================  ========
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is a metric value: an ``int`` or ``float``, not a ``bool``.

    NaN and the infinities are numbers here; callers decide what they mean.
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _counter(value: object) -> int | float:
    """A counter for a sort key: its value, or ``_ABSENT`` where it is not one."""
    counter = as_counter(value)
    return _ABSENT if counter is None else counter


def _natural(name: str) -> tuple[str | int, ...]:
    """``name`` split into text and numbers, so that ``ep9`` sorts before ``ep10``.

    ``re.split`` with one group puts text at even and digit runs at odd
    positions, so two keys always compare str with str and int with int.
    """
    parts: list[str | int] = _DIGIT_RUNS.split(name)
    for i in range(1, len(parts), 2):
        parts[i] = int(parts[i])
    return tuple(parts)


class _NaturalName:
    """A name that compares by :func:`_natural`, splitting it only when compared.

    Progress keys compare names only where counters tie, which is rare;
    splitting every name up front would cost more than the rest of the key.
    """

    __slots__ = ("_key", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._key: tuple[str | int, ...] | None = None

    def key(self) -> tuple[str | int, ...]:
        if self._key is None:
            self._key = _natural(self.name)
        return self._key

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _NaturalName):
            return NotImplemented
        return self.name == other.name or self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __lt__(self, other: _NaturalName) -> bool:
        return self.key() < other.key()

    def __le__(self, other: _NaturalName) -> bool:
        return self.key() <= other.key()

    def __gt__(self, other: _NaturalName) -> bool:
        return self.key() > other.key()

    def __ge__(self, other: _NaturalName) -> bool:
        return self.key() >= other.key()

    def __repr__(self) -> str:
        return f"_NaturalName({self.name!r})"


def progress_key(checkpoint: Record) -> tuple[Any, ...]:
    """The sort key that orders checkpoints from oldest to newest.

    The rules, in order:

    1. the global ``batch``, then ``epoch``, then ``batch_in_epoch``, as read
       from the name: numbers compared as numbers, whatever their padding
       (``ep100`` after ``ep99``, ``b100000`` after ``b99999``);
    2. only where the name holds none of these three counters: the same
       counters recorded in the checkpoint's metadata sidecar (where it was
       read), then the file's modification time (local files only; object
       stores' times are not used);
    3. then the name (relative to the root), with runs of digits compared as
       numbers, and last the name as text, so the order is total and the same
       on every machine.

    Counters are read by :func:`as_counter`. A counter a template lacks, or a
    sidecar counter that is not a whole number, sorts before any value, so
    that records of one template always compare field by field. Modification times are never
    consulted when the name holds a counter.

    ===========================================  =============================
    names, oldest first                          decided by
    ===========================================  =============================
    ``ep99.keras``, ``ep100.keras``              epoch, as numbers
    ``b99999.h5``, ``b100000.h5``                batch, as numbers
    ``e02-b00001.h5``, ``e01-b00003.h5``         batch before epoch
    ``best.keras`` (batch 40), ``last.keras``    sidecar counters (no counter
    (batch 80)                                   in the template)
    ===========================================  =============================

    Args:
        checkpoint: a :class:`ckptname.Checkpoint`.

    Returns:
        A tuple; larger is newer.
    """
    batch = _counter(checkpoint.batch)
    epoch = _counter(checkpoint.epoch)
    in_epoch = _counter(checkpoint.batch_in_epoch)
    side_batch = side_epoch = side_in_epoch = mtime = _ABSENT
    if batch == epoch == in_epoch == _ABSENT:
        meta = checkpoint.metadata
        if meta:
            side_batch = _counter(meta.get("batch"))
            side_epoch = _counter(meta.get("epoch"))
            side_in_epoch = _counter(meta.get("batch_in_epoch"))
        if checkpoint.mtime is not None:
            mtime = checkpoint.mtime
    name = checkpoint.name
    return (
        batch,
        epoch,
        in_epoch,
        side_batch,
        side_epoch,
        side_in_epoch,
        mtime,
        _NaturalName(name),
        name,
    )


def sort_by_progress(records: list[Any]) -> None:
    """Sort records in place into :func:`progress_key` order, faster than by that key.

    The order is exactly that of ``records.sort(key=progress_key)``. Building
    the whole key for every record costs several times the sort itself, so
    where every record holds its first counter (``batch``, else ``epoch``,
    else ``batch_in_epoch``; a counter no record holds is skipped, as it
    orders nothing) as an ``int``, records are sorted by that number, and
    only runs that share it are sorted by the whole key. Elsewhere the whole
    key sorts everything.
    """
    if len(records) < 2:
        return
    for counter in COUNTERS:
        get = attrgetter(counter)
        values = list(map(get, records))
        if values.count(None) == len(values):
            continue  # absent from every record: equal everywhere
        if set(map(type, values)) != {int}:
            break  # mixed, or not plain ints: let the whole key decide
        records.sort(key=get)
        if len(set(values)) == len(values):
            return
        values = list(map(get, records))
        start = 0
        for i in range(1, len(records) + 1):
            if i == len(records) or values[i] != values[start]:
                if i - start > 1:
                    records[start:i] = sorted(records[start:i], key=progress_key)
                start = i
        return
    records.sort(key=progress_key)


def in_sequence(checkpoint: Record) -> bool:
    """Whether a checkpoint's name places it in the sequence of a run's saves.

    ``False`` where the name holds a counter field (:data:`COUNTERS`) whose
    text does not read as a whole number: with ``ckpt-{epoch}.keras`` (a
    counter without a format type), a hand-saved ``ckpt-final.keras`` reads
    as ``epoch='final'``. Such a checkpoint has no place in the progress
    order, so it is never the latest and retention never deletes it.
    Checkpoints of templates without counter fields are in sequence (their
    order comes from their sidecars, or their times).

    =========================================  =========
    template, name                             result
    =========================================  =========
    ``ckpt-{epoch}.keras``, ``ckpt-12.keras``  ``True``
    ``ckpt-{epoch}.keras``, ``ckpt-final.keras``  ``False``
    ``{run:s}.keras``, ``best.keras``          ``True``
    =========================================  =========
    """
    values = checkpoint.values
    for counter in COUNTERS:
        if counter in values and as_counter(values[counter]) is None:
            return False
    return True


# ---------------------------------------------------------------- mode


# Words that mean "higher is better" and "lower is better" in metric names.
# Names are split into words at anything but letters and digits, and at
# camelCase humps; a word counts if it is in a set or matches a pattern.
_MAX_WORDS = frozenset(
    {
        "accuracy", "acc", "auc", "auroc", "auprc", "precision", "recall", "f1", "fbeta",
        "fscore", "iou", "miou", "dice", "map", "ap", "ndcg", "mrr", "hits", "r2", "psnr",
        "ssim", "bleu", "rouge", "meteor", "specificity", "sensitivity", "kappa", "mcc",
        "matthews", "similarity", "correlation", "pearson", "spearman", "reward", "top1",
        "top5",
    }
)  # fmt: skip
_MAX_PATTERN = re.compile(r"(?:m?ap|iou|rouge[a-z0-9]*|f[0-9]+|top[0-9]+|acc[0-9]+)[0-9]*")
_MIN_WORDS = frozenset(
    {
        "loss", "error", "err", "mse", "mae", "mape", "msle", "rmse", "rmsle", "nll",
        "crossentropy", "hinge", "divergence", "kld", "kl", "cosh", "poisson", "perplexity",
        "ppl", "wer", "cer", "ter", "fid", "eer", "distance", "huber", "smape", "mase",
        "brier", "deviance", "regret",
    }
)  # fmt: skip
_CAMEL_HUMP = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def _words(monitor: str) -> list[str]:
    text = _CAMEL_HUMP.sub("_", monitor).lower()
    # Keras names its MeanIoU metric 'mean_io_u'.
    text = text.replace("io_u", "iou")
    return [w for w in _NOT_WORD.split(text) if w]


_PASS_MODE = Advice(api="pass mode='min' or mode='max'", cli="pass --mode min or --mode max")


def check_mode(mode: object) -> Literal["auto", "min", "max"]:
    """``mode`` itself where it is ``"min"``, ``"max"`` or ``"auto"``.

    Raises:
        MonitorError: any other value; the message says which to use where.
    """
    if mode == "min" or mode == "max" or mode == "auto":
        return mode
    raise MonitorError(
        f"mode must be 'min', 'max' or 'auto', got {mode!r}; use 'min' where lower "
        "is better (losses, errors) and 'max' where higher is better (accuracies, scores)"
    )


def resolve_mode(monitor: str, mode: str = "auto") -> Mode:
    """Whether a lower or a higher value of ``monitor`` is better.

    ``"auto"`` reads the metric's name, with or without a ``val_`` (or
    ``val/``, ``train_``...) prefix:

    ============================================================  ==========
    names                                                          mode
    ============================================================  ==========
    accuracy, acc, auc, precision, recall, f1, iou, dice, map,     ``"max"``
    psnr, ssim, bleu, r2, ... (``val_accuracy``, ``mean_io_u``)
    loss, error, mse, mae, crossentropy, perplexity, wer, ...      ``"min"``
    (``val_loss``, ``mean_absolute_error``)
    anything else, or words that point both ways                   an error
    ============================================================  ==========

    Args:
        monitor: the metric's name, e.g. ``"val_loss"``.
        mode: ``"min"``, ``"max"`` or ``"auto"``.

    Returns:
        ``"min"`` or ``"max"``.

    Raises:
        MonitorError: ``mode`` is not one of the three, or it is ``"auto"`` and
            the name does not say which way is better. Unlike Keras, which
            warns and guesses, ckptname refuses to guess: a wrong guess keeps
            the worst checkpoints and deletes the best.
    """
    if not isinstance(monitor, str) or not monitor:
        raise MonitorError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
    checked = check_mode(mode)
    if checked != "auto":
        return checked
    up: list[str] = []
    down: list[str] = []
    for word in _words(monitor):
        if word in _MIN_WORDS:
            down.append(word)
        elif word in _MAX_WORDS or _MAX_PATTERN.fullmatch(word):
            up.append(word)
    if up and not down:
        return "max"
    if down and not up:
        return "min"
    detail = f" ('{down[0]}' says lower, '{up[0]}' says higher)" if up and down else ""
    raise advised(
        MonitorError(
            f"cannot tell whether a higher or a lower {monitor!r} is better{detail}; "
            f"{_PASS_MODE.api}"
        ),
        _PASS_MODE,
    )


# ---------------------------------------------------------------- best


def _number(value: object) -> float | None:
    return float(value) if is_number(value) else None


def metric_value(checkpoint: Record, monitor: str) -> tuple[float | None, float | None]:
    """The value of ``monitor`` for a checkpoint: as in its name, and exact.

    Args:
        checkpoint: a :class:`ckptname.Checkpoint`.
        monitor: the metric's name.

    Returns:
        ``(named, exact)``: the value read from the name (rounded as the
        template writes it) and the unrounded value from the metadata sidecar,
        each ``None`` where it is not known. Where the name lacks the metric,
        the exact value stands in for it.
    """
    named = _number(checkpoint.values.get(monitor))
    exact = None
    meta = checkpoint.metadata
    if meta:
        metrics = meta.get("metrics")
        if isinstance(metrics, dict):
            exact = _number(metrics.get(monitor))
            if exact is not None and math.isnan(exact):
                exact = None
    if named is None:
        named = exact
    return named, exact


def best_key(checkpoint: Record, monitor: str, mode: Mode) -> tuple[Any, ...]:
    """The sort key that orders checkpoints from worst to best by ``monitor``.

    The rules, in order:

    1. a checkpoint without a value, or whose value is NaN, is worse than any
       with a value: NaN never wins;
    2. the value in the name (``mode="min"``: lower is better);
    3. on a tie there, the exact value from the metadata sidecar where the
       record carries it (``Checkpoint.metadata``); a record without one
       ranks by its rounded value;
    4. then progress (:func:`tie_break`): of equal values the earlier
       checkpoint wins, as in Keras's ``ModelCheckpoint`` and Lightning (a
       later checkpoint must be strictly better to replace the best), so the
       result never depends on listing order.

    Args:
        checkpoint: a :class:`ckptname.Checkpoint`.
        monitor: the metric's name.
        mode: ``"min"`` or ``"max"`` (see :func:`resolve_mode`).

    Returns:
        A tuple; larger is better.
    """
    named, exact = metric_value(checkpoint, monitor)
    if named is None or math.isnan(named):
        return (0, 0.0, 0.0, tie_break(checkpoint))
    if exact is None:
        exact = named
    if mode == "min":
        return (1, -named, -exact, tie_break(checkpoint))
    return (1, named, exact, tie_break(checkpoint))


class _Earlier:
    """A progress key that compares the other way round: the earlier checkpoint is greater."""

    __slots__ = ("key",)

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Earlier) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __lt__(self, other: _Earlier) -> bool:
        return self.key > other.key

    def __le__(self, other: _Earlier) -> bool:
        return self.key >= other.key

    def __gt__(self, other: _Earlier) -> bool:
        return self.key < other.key

    def __ge__(self, other: _Earlier) -> bool:
        return self.key <= other.key


def tie_break(checkpoint: Record) -> _Earlier:
    """The last part of a best key: of checkpoints with equal values, the earlier is better.

    The one tie rule of ``find_best``, ``best_per_group``, ``keep_best``, the
    CLI and the callback's ``save_best_only`` (whose improvement is strict,
    see :func:`improves`).
    """
    return _Earlier(progress_key(checkpoint))


def can_win(checkpoint: Record, monitor: str) -> bool:
    """Whether the checkpoint has a value of ``monitor`` that is not NaN."""
    named, _ = metric_value(checkpoint, monitor)
    return named is not None and not math.isnan(named)


def improves(mode: Mode, value: float, best: float | None) -> bool:
    """Whether ``value`` is strictly better than ``best`` by ``mode``.

    ===========================================  ==========
    ``mode``, ``value``, ``best``                result
    ===========================================  ==========
    ``"min"``, ``0.4``, ``0.5``                  ``True``
    ``"max"``, ``0.4``, ``0.5``                  ``False``
    ``"min"``, ``0.5``, ``0.5`` (equal)          ``False``
    ``"min"``, ``0.5``, ``None`` (no best yet)   ``True``
    ``"min"``, ``nan``, anything                 ``False``
    ===========================================  ==========

    Args:
        mode: ``"min"`` or ``"max"`` (see :func:`resolve_mode`).
        value: the new value.
        best: the best value so far, or ``None`` where there is none.

    Returns:
        ``True`` where ``value`` improves on ``best``: never for NaN, never
        for a value equal to ``best`` (the earlier checkpoint stays the best,
        as :func:`best_key` ranks it).
    """
    if math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best
