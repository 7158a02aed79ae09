"""Finish an interrupted epoch exactly: ``fit_resumed``, which cuts the input of ``fit``.

This module is reserved for the way training continues after
:func:`ckptname.keras.resume`: a run resumed inside an epoch runs only that
epoch's remaining batches, then the epochs after it, for each kind of input
Keras takes that can be started at any batch (arrays, ``keras.utils.PyDataset``,
``tf.data``). Public as ``ckptname.keras.fit_resumed``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from ._schedule import ResumePoint

__all__ = ["fit_resumed"]

def fit_resumed(
    model: Any,
    x: Any = None,
    y: Any = None,
    *,
    resume: ResumePoint | None,
    epochs: int = 1,
    batch_size: int | None = None,
    steps_per_epoch: int | None = None,
    shuffle: bool | str = True,
    sample_weight: Any = None,
    validation_split: float = 0.0,
    validation_data: Any = None,
    **fit_kwargs: Any,
) -> Any:
    """``model.fit`` that continues exactly where ``resume`` says training stopped.

    A checkpoint from the end of an epoch needs only ``initial_epoch``, and this
    is one ``fit``. A checkpoint from inside epoch *e* after *k* of its batches
    is finished first: one ``fit`` of epoch *e* over its remaining batches
    (validation and epoch-end callbacks included), then one ``fit`` from epoch
    *e + 1* to ``epochs``. The run then ends with the same
    ``optimizer.iterations``, the same global batch counts and the same
    checkpoint names as one that was never interrupted; where the input order
    is deterministic it also sees the same batches. Below, *dataset* is a
    ``keras.utils.PyDataset`` or a ``tf.data.Dataset``, and *steps* is
    ``steps_per_epoch``:

    ==========================  ===================================================
    input                       the rest of the interrupted epoch, and the epochs
                                after it
    ==========================  ===================================================
    arrays, ``shuffle=False``   the samples after the first *k* batches: the same
                                batches; each later epoch one pass
    arrays, shuffled            *k* batches' worth fewer samples, drawn from a
                                fresh shuffle (which samples the lost epoch had
                                seen is not recorded anywhere)
    arrays, *steps*             refused: give a dataset
    dataset, no *steps*         the pass after its first *k* batches (a
                                ``PyDataset`` with ``shuffle=True``: those batches
                                in a fresh order); each later epoch one pass
    endless dataset, *steps*    one stream, as Keras keeps one iterator across
                                epochs: the rest is the stream from batch *batch*
                                (the global count), the later epochs go on where
                                it ends. Endless: a ``PyDataset`` whose
                                ``num_batches`` is ``None``, a ``tf.data`` of
                                infinite or unknown length
    dataset of *n*, *steps*     the same, in the input repeated (Keras starts a
                                new pass when one runs out): from batch *batch*
                                mod *n*; a shuffled ``PyDataset`` takes each pass
                                in a fresh order. Refused where epochs do not
                                divide *n*: Keras then cuts the last epoch of
                                each pass short
    generator, other iterator   refused: it cannot start at a given batch; give a
                                dataset (endless, for *steps*)
    ==========================  ===================================================

    An epoch of *steps* takes ``spe * ceil(steps / spe)`` batches with
    ``steps_per_execution=spe`` (Keras runs whole executions): that is the
    length that must divide *n*. An endless dataset needs *steps*.

    Args:
        model: the compiled model, after :func:`resume`.
        x, y, batch_size, shuffle, sample_weight, validation_split,
            validation_data, steps_per_epoch: as for ``model.fit``.
        resume: what :func:`resume` returned (``None`` or a fresh start: a plain
            ``fit``).
        epochs: the total number of epochs of the run, as for ``model.fit``.
        **fit_kwargs: passed to every ``model.fit`` call (``callbacks``,
            ``verbose``, ``class_weight``, ``validation_freq`` ...). Callbacks
            see two ``fit`` calls when an epoch is finished first; a
            :class:`ckptname.keras.BatchAwareCheckpoint` among them keeps the folder's lock
            across both, and gives it back when ``fit_resumed`` returns or
            raises.

    Returns:
        A ``keras.callbacks.History`` holding the epochs of all the ``fit`` calls.

    Raises:
        TypeError: an input other than arrays, a ``keras.utils.PyDataset`` or a
            ``tf.data.Dataset`` with a mid-epoch resume point.
        ValueError: ``initial_epoch`` given (it comes from ``resume``), or a
            combination whose epochs cannot be cut again where they were.
    """
    if "initial_epoch" in fit_kwargs:
        raise ValueError(
            "fit_resumed takes the initial epoch from `resume`; do not pass initial_epoch"
        )
    given = fit_kwargs.get("callbacks") or []
    fit_args = {
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "shuffle": shuffle,
        "sample_weight": sample_weight,
        "validation_split": validation_split,
        "validation_data": validation_data,
    }
    point = resume if resume is not None else ResumePoint()
    with contextlib.ExitStack() as stack:
        # A BatchAwareCheckpoint keeps the folder's lock from the first fit's
        # train begin to the end of the last fit (no other run can slip in
        # between), and gives it back here also when a fit raises: Keras has
        # no `finally` around `fit`.
        for cb in getattr(given, "callbacks", given):
            hold = getattr(cb, "_hold_lock", None)
            if hold is not None:
                stack.enter_context(hold())
        common = dict(fit_kwargs, validation_data=validation_data)
        return _fit_in_parts(_Cut(model, point, epochs, fit_args, common), x, y)


@dataclass(frozen=True, slots=True)
class _Cut:
    """One ``fit_resumed`` call: the model, where it resumes, and the fit arguments."""

    model: Any
    point: ResumePoint
    epochs: int
    args: dict[str, Any]  # batch_size, steps_per_epoch, shuffle, sample_weight, validation_*
    common: dict[str, Any]  # passed to every fit

    def fit(self, x: Any, y: Any, first: int, last: int, **kw: Any) -> Any:
        return self.model.fit(x, y, initial_epoch=first, epochs=last, **self.common, **kw)

    def rest_and_after(
        self,
        rest: tuple[Any, Any] | None,
        after: tuple[Any, Any],
        rest_kw: dict[str, Any],
        after_kw: dict[str, Any],
    ) -> Any:
        """Fit the rest of the interrupted epoch (if any), then the epochs after it."""
        epoch_index = self.point.initial_epoch
        histories = []
        if rest is not None:
            histories.append(self.fit(*rest, epoch_index, epoch_index + 1, **rest_kw))
            if getattr(self.model, "stop_training", False):
                # A callback stopped training in the interrupted epoch (a preemption
                # checkpoint, EarlyStopping): the epochs after it are not fitted either.
                return _merge_histories(histories)
        if epoch_index + 1 < self.epochs:
            histories.append(self.fit(*after, epoch_index + 1, self.epochs, **after_kw))
        return _merge_histories(histories)


def _fit_in_parts(cut: _Cut, x: Any, y: Any) -> Any:
    """``model.fit`` from the cut's point: the rest of an interrupted epoch, then the others.

    See :func:`fit_resumed` for the rules. TensorFlow is imported only for a
    ``tf.data`` dataset, which cannot exist without it.
    """
    point, epochs = cut.point, cut.epochs
    if not point.mid_epoch or point.initial_epoch >= epochs:
        rest = {k: v for k, v in cut.args.items() if k != "validation_data"}
        return cut.fit(x, y, point.initial_epoch, epochs, **rest)
    tf = sys.modules.get("tensorflow")
    if tf is not None and isinstance(x, tf.data.Dataset):
        return _fit_dataset(cut, tf, x, y)
    if isinstance(x, keras.utils.PyDataset):
        return _fit_py_dataset(cut, x, y)
    return _fit_arrays(cut, x, y)


def _refuse_with_dataset(cut: _Cut, y: Any, kind: str) -> None:
    if y is not None or cut.args["sample_weight"] is not None or cut.args["validation_split"]:
        raise ValueError(
            f"with a {kind}, y, sample_weight and validation_split are not "
            "accepted (as in model.fit)"
        )


def _fit_dataset(cut: _Cut, tf: Any, ds: Any, y: Any) -> Any:
    _refuse_with_dataset(cut, y, "tf.data.Dataset")
    steps_per_epoch = cut.args["steps_per_epoch"]
    rest, after = _dataset_parts(tf, ds, cut.point, steps_per_epoch, _execution(cut.model))
    rest_kw: dict[str, Any] = {}
    if steps_per_epoch is not None:
        rest_kw["steps_per_epoch"] = steps_per_epoch - cut.point.batch_in_epoch
    return cut.rest_and_after(
        None if rest is None else (rest, None),
        (after, None),
        rest_kw,
        {"steps_per_epoch": steps_per_epoch},
    )


def _fit_py_dataset(cut: _Cut, ds: Any, y: Any) -> Any:
    _refuse_with_dataset(cut, y, "keras.utils.PyDataset")
    steps_per_epoch, shuffle = cut.args["steps_per_epoch"], cut.args["shuffle"]
    rest, after = _py_dataset_parts(
        ds, cut.point, steps_per_epoch, _execution(cut.model), shuffle=bool(shuffle)
    )
    if steps_per_epoch is None:
        rest_kw = after_kw = {"shuffle": shuffle}
    else:
        # The parts are endless views that keep their own order.
        rest_kw = {"steps_per_epoch": steps_per_epoch - cut.point.batch_in_epoch, "shuffle": False}
        after_kw = {"steps_per_epoch": steps_per_epoch, "shuffle": False}
    return cut.rest_and_after(
        None if rest is None else (rest, None), (after, None), rest_kw, after_kw
    )


def _execution(model: Any) -> int:
    """``steps_per_execution``: Keras runs batches in whole executions of this many."""
    return int(getattr(model, "steps_per_execution", 1) or 1)


def _fit_arrays(cut: _Cut, x: Any, y: Any) -> Any:
    args = cut.args
    n = _num_samples(x)
    if n is None:
        raise _cannot_cut(x, args["steps_per_epoch"])
    if args["steps_per_epoch"] is not None:
        raise ValueError(
            "fit_resumed cuts NumPy arrays into epochs of whole passes; with steps_per_epoch, "
            "give a keras.utils.PyDataset or a tf.data.Dataset "
            "(tf.data.Dataset.from_tensor_slices((x, y)).batch(n))"
        )
    sample_weight, shuffle = args["sample_weight"], args["shuffle"]
    if args["validation_split"] and args["validation_data"] is None:
        # Split before cutting the epoch, exactly where Keras would.
        split_at = math.floor(n * (1.0 - args["validation_split"]))
        train, held = slice(0, split_at), slice(split_at, n)
        cut.common["validation_data"] = tuple(
            part for part in (_take(x, held), _take(y, held), _take(sample_weight, held))
            if part is not None
        )
        x, y, sample_weight = _take(x, train), _take(y, train), _take(sample_weight, train)
        n = split_at
    size = args["batch_size"] or 32
    k = cut.point.batch_in_epoch
    rest = None
    rest_kw: dict[str, Any] = {"batch_size": size, "shuffle": shuffle}
    if k < math.ceil(n / size):
        order = np.random.permutation(n) if shuffle else np.arange(n)
        kept = order[k * size :]
        rest = (_take(x, kept), _take(y, kept))
        rest_kw["sample_weight"] = _take(sample_weight, kept)
    after_kw = {"batch_size": size, "shuffle": shuffle, "sample_weight": sample_weight}
    return cut.rest_and_after(rest, (x, y), rest_kw, after_kw)


def _cannot_cut(x: Any, steps_per_epoch: int | None) -> TypeError:
    got = type(x).__name__
    if steps_per_epoch is None:
        return TypeError(
            "fit_resumed finishes an interrupted epoch for NumPy arrays (or lists and dicts "
            f"of them), keras.utils.PyDataset and tf.data datasets; got {got}"
        )
    return TypeError(
        "with steps_per_epoch, fit_resumed starts the stream again at the batch where the "
        f"run stopped, which a {got} cannot do; give the batches as a keras.utils.PyDataset "
        "whose __getitem__(i) returns batch i and whose num_batches is None, or as a "
        "tf.data.Dataset"
    )


@dataclass(frozen=True, slots=True)
class _Starts:
    """Where the parts of a resumed run start in their input, in batches.

    ``rest``: the first batch of the rest of the interrupted epoch (``None``:
    nothing is left of it). ``after``: the first batch of the epochs after it
    (``None``: the input as given, each epoch a fresh pass). With ``repeat``
    both count in the input repeated without end.
    """

    rest: int | None
    after: int | None
    repeat: bool = False


def _starts(
    point: ResumePoint,
    steps_per_epoch: int | None,
    spe: int,
    card: int | None,
    *,
    endless: bool,
    kind: str,
    advice: str,
) -> _Starts:
    """Where the rest of the interrupted epoch and the epochs after it start in the input.

    One rule for the inputs Keras reads batch after batch (``tf.data``,
    ``keras.utils.PyDataset``), of ``card`` batches a pass (``None``: endless
    or not known):

    - Without ``steps_per_epoch`` an epoch is one pass: the rest is the pass
      after its first ``batch_in_epoch`` batches, each later epoch a new pass.
      An endless input is refused: its first epoch would never end.
    - With it, Keras keeps one iterator across epochs: the epochs are
      consecutive cuts of one stream, and the global batch count is the
      position in it. Keras runs whole executions of ``spe``
      (``steps_per_execution``) batches, so an epoch takes
      ``spe * ceil(steps_per_epoch / spe)`` of them. The rest starts at
      ``point.batch``; the later epochs where the rest ends.
    - A finite input with ``steps_per_epoch`` is started again when it runs
      out: the stream is the input repeated, from ``point.batch % card``.
      Where epochs do not divide ``card``, Keras cuts the last epoch of each
      pass short, which this rule does not follow: refused, saying ``kind``
      and ``advice`` (a way out for that kind of input).

    Raises:
        ValueError: an endless input without ``steps_per_epoch``, or epochs
            that do not divide a finite input.
    """
    k = point.batch_in_epoch
    if steps_per_epoch is None:
        if endless:
            raise ValueError(f"an infinite {kind} needs steps_per_epoch (as in model.fit)")
        return _Starts(None if card is not None and k >= card else k, None)
    rest = spe * math.ceil(max(steps_per_epoch - k, 0) / spe)  # what the rest of the epoch takes
    if card is None:
        pos = point.batch
        return _Starts(pos if rest else None, pos + rest)
    epoch = spe * math.ceil(steps_per_epoch / spe)
    if card % epoch:
        spe_text = f" and steps_per_execution={spe} (epochs of {epoch} batches)" if spe > 1 else ""
        raise ValueError(
            f"a {kind} of {card} batches with steps_per_epoch={steps_per_epoch}{spe_text}: "
            "Keras cuts the last epoch of each pass short, which a resume cannot reproduce; "
            f"choose steps_per_epoch so that epochs divide the {card} batches, or {advice}"
        )
    pos = point.batch % card
    return _Starts(pos if rest else None, pos + rest, repeat=True)


def _dataset_parts(
    tf: Any, ds: Any, point: ResumePoint, steps_per_epoch: int | None, spe: int = 1
) -> tuple[Any, Any]:
    """The rest of the interrupted epoch and the input for the epochs after it (see
    :func:`_starts`)."""
    card = int(ds.cardinality())
    starts = _starts(
        point,
        steps_per_epoch,
        spe,
        card if card >= 0 else None,  # the two negatives: infinite, unknown
        endless=card == int(tf.data.INFINITE_CARDINALITY),
        kind="dataset",
        advice=".repeat() the dataset",
    )
    stream = ds.repeat() if starts.repeat else ds
    rest = None if starts.rest is None else stream.skip(starts.rest)
    if starts.after is None:
        return rest, ds
    # A repeated stream is skipped within a pass: skipping whole ones would read them.
    return rest, stream.skip(starts.after % card if starts.repeat else starts.after)


def _py_dataset_parts(
    ds: Any, point: ResumePoint, steps_per_epoch: int | None, spe: int, *, shuffle: bool
) -> tuple[Any, Any]:
    """The rest of the interrupted epoch and the input for the epochs after it (see
    :func:`_starts`), as views of the ``PyDataset``: one indexes it directly."""
    card = ds.num_batches
    starts = _starts(
        point,
        steps_per_epoch,
        spe,
        card,
        endless=card is None,
        kind="keras.utils.PyDataset",
        advice=(
            "make the dataset endless (num_batches None, __getitem__(i) returning "
            f"batch i % {card})"
        ),
    )
    if starts.after is None:
        return (None if starts.rest is None else _Batches(ds, starts.rest)), ds
    # One seed for both views, so that the rest of a pass and the epochs after
    # it draw from one order.
    seed = int(np.random.randint(2**31)) if shuffle and starts.repeat else None
    rest = None if starts.rest is None else _Batches(ds, starts.rest, starts.repeat, seed)
    return rest, _Batches(ds, starts.after, starts.repeat, seed)


class _Batches(keras.utils.PyDataset):  # type: ignore[misc]  # Keras is untyped
    """Batches ``start``, ``start + 1`` ... of a ``PyDataset``, from index 0.

    Of its one pass (a finite dataset without its first ``start`` batches) or
    of its endless stream; with ``repeat``, of the dataset repeated without
    end (``num_batches`` is ``None``), pass *p* in the dataset's order or,
    given a ``seed``, in an order drawn from ``(seed, p)``: views with one
    seed agree on every pass.
    """

    def __init__(self, dataset: Any, start: int, repeat: bool = False, seed: int | None = None):
        super().__init__(
            workers=getattr(dataset, "workers", 1),
            use_multiprocessing=getattr(dataset, "use_multiprocessing", False),
            max_queue_size=getattr(dataset, "max_queue_size", 10),
        )
        self.dataset = dataset
        self.start = start
        self.card: int | None = dataset.num_batches
        self.repeat = repeat
        self.seed = seed

    @property
    def num_batches(self) -> int | None:
        if self.card is None or self.repeat:
            return None
        return max(self.card - self.start, 0)

    def __getitem__(self, index: int) -> Any:
        at = self.start + index
        if self.repeat and self.card is not None:
            p, at = divmod(at, self.card)
            if self.seed is not None:
                at = int(_pass_order(self.seed, p, self.card)[at])
        return self.dataset[at]

    def on_epoch_begin(self) -> None:
        begin = getattr(self.dataset, "on_epoch_begin", None)
        if begin is not None:
            begin()

    def on_epoch_end(self) -> None:
        self.dataset.on_epoch_end()


@functools.lru_cache(maxsize=4)
def _pass_order(seed: int, p: int, card: int) -> Any:
    return np.random.default_rng((seed, p)).permutation(card)


def _merge_histories(histories: Sequence[Any]) -> Any:
    if not histories:
        return keras.callbacks.History()
    last = histories[-1]
    if len(histories) > 1:
        merged: dict[str, list[Any]] = {}
        epochs: list[int] = []
        for h in histories:
            for key, values in h.history.items():
                merged.setdefault(key, []).extend(values)
            epochs.extend(h.epoch)
        last.history = merged
        last.epoch = epochs
    return last


def _num_samples(x: Any) -> int | None:
    leaves = keras.tree.flatten(x) if x is not None else []
    for leaf in leaves:
        if isinstance(leaf, np.ndarray) or hasattr(leaf, "shape"):
            shape = getattr(leaf, "shape", None)
            if shape is not None and len(shape) > 0 and shape[0] is not None:
                return int(shape[0])
    return None


def _take(data: Any, index: Any) -> Any:
    if data is None:
        return None
    return keras.tree.map_structure(lambda a: a[index], data)

