"""Finish an interrupted epoch exactly: ``fit_resumed``, which cuts the input of ``fit``.

This module is reserved for the way training continues after
:func:`ckptname.keras.resume`: a run resumed inside an epoch runs only that
epoch's remaining batches, then the epochs after it, for each kind of input
Keras takes (arrays, ``keras.utils.PyDataset``, ``tf.data``). Public as
``ckptname.keras.fit_resumed``.
"""

from __future__ import annotations

import contextlib
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
    is deterministic it also sees the same batches:

    ==============================  ===============================================
    input                           the rest of the interrupted epoch
    ==============================  ===============================================
    NumPy arrays, ``shuffle=False``  the samples after the first *k* batches: the
                                    same batches
    NumPy arrays, shuffled          *k* batches' worth fewer samples, drawn from a
                                    fresh shuffle (which samples the lost epoch had
                                    seen is not recorded anywhere)
    finite ``tf.data.Dataset``      ``dataset.skip(k)``, an epoch being one pass
    ``tf.data`` with                the stream after the *batch*-th element
    ``steps_per_epoch``             (``.repeat()``-ed if finite), so epochs keep
                                    cutting the stream where they did
    ==============================  ===============================================

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
        TypeError: an input other than arrays or a ``tf.data.Dataset`` with a
            mid-epoch resume point.
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
    spe = int(getattr(cut.model, "steps_per_execution", 1) or 1)
    rest, after = _dataset_parts(tf, ds, cut.point, steps_per_epoch, spe)
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
    """Skip the batches of the interrupted epoch that ran: a ``PyDataset`` is indexable."""
    _refuse_with_dataset(cut, y, "keras.utils.PyDataset")
    if cut.args["steps_per_epoch"] is not None:
        raise ValueError(
            "fit_resumed cuts a keras.utils.PyDataset into epochs of whole passes; without "
            "steps_per_epoch each epoch is one pass (len(dataset) batches), so leave it out"
        )
    k = cut.point.batch_in_epoch
    rest = (_SkipBatches(ds, k), None) if k < len(ds) else None
    shuffle = {"shuffle": cut.args["shuffle"]}
    return cut.rest_and_after(rest, (ds, None), shuffle, shuffle)


class _SkipBatches(keras.utils.PyDataset):  # type: ignore[misc]  # Keras is untyped
    """A ``PyDataset`` without its first ``skip`` batches (the part of an epoch that ran)."""

    def __init__(self, dataset: Any, skip: int) -> None:
        super().__init__(
            workers=getattr(dataset, "workers", 1),
            use_multiprocessing=getattr(dataset, "use_multiprocessing", False),
            max_queue_size=getattr(dataset, "max_queue_size", 10),
        )
        self.dataset = dataset
        self.skip = skip

    def __len__(self) -> int:
        return max(len(self.dataset) - self.skip, 0)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index + self.skip]

    def on_epoch_end(self) -> None:
        self.dataset.on_epoch_end()


def _fit_arrays(cut: _Cut, x: Any, y: Any) -> Any:
    args = cut.args
    if args["steps_per_epoch"] is not None:
        raise ValueError(
            "fit_resumed cuts NumPy arrays into epochs of whole passes; with steps_per_epoch, "
            "give a keras.utils.PyDataset or a tf.data.Dataset "
            "(tf.data.Dataset.from_tensor_slices((x, y)).batch(n))"
        )
    n = _num_samples(x)
    if n is None:
        raise TypeError(
            "fit_resumed finishes an interrupted epoch for NumPy arrays (or lists and dicts "
            f"of them), keras.utils.PyDataset and tf.data datasets; got {type(x).__name__}"
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


def _dataset_parts(
    tf: Any, ds: Any, point: ResumePoint, steps_per_epoch: int | None, spe: int = 1
) -> tuple[Any, Any]:
    """The rest of the interrupted epoch and the input for the epochs after it.

    Keras runs whole executions of ``spe`` (``steps_per_execution``) batches,
    so an epoch of ``steps_per_epoch`` steps takes
    ``spe * ceil(steps_per_epoch / spe)`` elements from a stream.
    """
    k = point.batch_in_epoch
    card = int(ds.cardinality())
    infinite = card == int(tf.data.INFINITE_CARDINALITY)
    unknown = card == int(tf.data.UNKNOWN_CARDINALITY)
    if steps_per_epoch is None:
        if infinite:
            raise ValueError("an infinite dataset needs steps_per_epoch (as in model.fit)")
        # An epoch is one pass; the next epoch starts a fresh pass.
        if not unknown and k >= card:
            return None, ds
        return ds.skip(k), ds
    if k >= steps_per_epoch:
        return None, ds
    # Keras keeps one iterator across epochs when steps_per_epoch is given:
    # epochs are consecutive cuts of the stream, and the global batch count is
    # the position in it.
    rest = spe * math.ceil((steps_per_epoch - k) / spe)  # what the rest of the epoch takes
    if infinite or unknown:
        stream, pos = ds, point.batch
        return stream.skip(pos), stream.skip(pos + rest)
    if card % steps_per_epoch:
        raise ValueError(
            f"a dataset of {card} batches with steps_per_epoch={steps_per_epoch}: Keras cuts "
            "the last epoch of each pass short, which a resume cannot reproduce; use a "
            "steps_per_epoch that divides the number of batches, or .repeat() the dataset"
        )
    stream = ds.repeat()
    pos = point.batch % card
    return stream.skip(pos), stream.skip((pos + rest) % card)


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

