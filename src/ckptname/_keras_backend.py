"""Keras-specific helpers of the callback: counters, metric state, saving.

This module is reserved for what needs Keras (or a backend) to answer: how
many batches ``fit``'s loop runs, the optimizers a model tracks, the running
sums behind the logged metric means, the direction Keras knows for a
compiled metric, and writing the model (the cluster's processes are
``ckptname._keras_cluster``'s). Everything above it asks through these functions; the
counting, best tracking and save transaction below it never import Keras.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import keras
import numpy as np

from ._errors import CkptnameWarning, CountError
from ._metadata import sidecar_record
from ._rank import is_number
from ._schedule import Schedule, epoch_length, execution_ran

__all__ = [
    "FitLoop",
    "build_optimizers",
    "direction_from_model",
    "distribution_scope",
    "jsonable",
    "lost_optimizer_state",
    "metric_state",
    "optimizer_record",
    "outside_distribution",
    "outside_strategy",
    "public_iterations",
    "pythonify",
    "read_fit_loop",
    "restore_metric_state",
    "save_model",
    "sidecar_for",
    "tracked_optimizers",
]


def sidecar_for(
    model: Any,
    schedule: Schedule,
    template: str,
    name: str,
    logs: Mapping[str, Any],
    extras: dict[str, Any],
    state: dict[str, list[Any]] | None,
    *,
    end_of_epoch: bool,
    weights_only: bool,
) -> dict[str, Any]:
    """The sidecar of a save at the position ``schedule`` stands at (see ``_metadata``).

    ``state`` is the :func:`metric_state` read at a save in the middle of an
    epoch (every worker reads it, see there), ``None`` at an epoch's end:
    only a resume into the middle of an epoch needs the running sums, and
    end-of-epoch sidecars stay small.
    """
    meta = sidecar_record(
        name=name,
        template=template,
        epoch=schedule.epoch + 1,
        batch=schedule.batch,
        batch_in_epoch=schedule.batch_in_epoch,
        iterations=public_iterations(model),
        end_of_epoch=end_of_epoch,
        steps_per_epoch=schedule.steps_per_epoch,
        metrics={k: v for k, v in logs.items() if is_number(v)},
        extras=extras,
        save_weights_only=weights_only,
    )
    optimizers = optimizer_record(model)
    if optimizers:
        meta["optimizers"] = optimizers
    if state:
        meta["metric_state"] = state
    return meta


def save_model(model: Any, target: str, *, weights_only: bool) -> None:
    """Write ``model`` (or its weights) to ``target`` as Keras would, a little faster.

    Called by the chief alone, so it runs outside any Keras distribution
    and outside a TensorFlow strategy's scope (see :func:`outside_distribution`
    and :func:`outside_strategy`).
    """

    def write() -> None:
        with saving_cache(), outside_distribution():
            if weights_only:
                model.save_weights(target, overwrite=True)
            else:
                model.save(target, overwrite=True)

    outside_strategy(write)


def to_numpy(value: Any) -> Any:
    """A tensor, variable or scalar of any backend as a NumPy array.

    PyTorch tensors are detached and moved to the CPU first; TensorFlow and
    JAX values are read with ``.numpy()`` where they have it (converting the
    value itself makes NumPy 2 warn about TensorFlow's ``__array__``).
    """
    if isinstance(value, (np.ndarray, np.generic)):
        return np.asarray(value)
    if keras.backend.backend() == "torch":
        tensor = getattr(value, "value", value)  # a Keras variable holds a torch tensor
        detach = getattr(tensor, "detach", None)
        if detach is not None:
            return detach().cpu().numpy()
    read = getattr(value, "numpy", None)
    if callable(read):
        return np.asarray(read())
    return np.asarray(keras.ops.convert_to_numpy(value))


def _is_tensor_like(value: Any) -> bool:
    return isinstance(value, np.ndarray) or hasattr(value, "numpy") or hasattr(value, "detach")


def jsonable(key: Any, value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    elif _is_tensor_like(value):
        array = to_numpy(value)
        value = array.item() if array.ndim == 0 else array.tolist()
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        raise TypeError(
            f"extras value for {key!r} is a {type(value).__name__}, which cannot be stored as "
            "JSON; pass numbers, strings, booleans, None, or lists and dicts of them"
        ) from None
    return value


def pythonify(logs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Logs as plain Python numbers (a hand-written loop may pass tensors)."""
    if not logs:
        return {}
    out: dict[str, Any] = {}
    for key, value in logs.items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            out[key] = value
            continue
        try:
            arr = to_numpy(value) if _is_tensor_like(value) else np.asarray(value)
        except Exception:  # keep a value that does not convert as it is
            out[key] = value
            continue
        out[key] = arr.item() if arr.ndim == 0 and arr.dtype.kind in "iuf" else value
    return out


class FitLoop:
    """How many batches the executions of one Keras ``fit`` run, read from its epoch iterator.

    With ``steps_per_execution`` N, Keras reports the last index of each
    execution to the batch hooks, which overstates an execution that runs
    short at the end of finite data. Its epoch iterator counts the steps of
    the current pass in whole executions (``_steps_seen``); with the length
    of the data, that tells what ran (:func:`ckptname._schedule.execution_ran`).
    """

    __slots__ = ("data_length", "iterator", "steps_per_execution")

    def __init__(self, iterator: Any, data_length: int | None, steps_per_execution: int) -> None:
        self.iterator = iterator
        self.data_length = data_length
        self.steps_per_execution = steps_per_execution

    def ran(self) -> int:
        """The batches the execution that just ended ran."""
        seen = int(self.iterator._steps_seen)
        return execution_ran(seen, self.data_length, self.steps_per_execution)


def read_fit_loop(model: Any, steps: object) -> tuple[int | None, FitLoop | None]:
    """How the ``fit`` that is beginning will run: the batches of an epoch, and its executions.

    Called from ``on_train_begin``: Keras's ``fit`` is a caller a few frames
    up, and its epoch iterator (a local of ``fit`` on every backend) says
    whether ``steps_per_epoch`` was given and how long the data is. Outside a
    Keras ``fit`` (a loop driven by hand) there is none: the epoch length is
    the ``steps`` the loop passed in ``params``, and batches are counted by
    the indices the loop reports.

    Returns:
        The batches each epoch runs where known ahead, and a :class:`FitLoop`
        where executions of several steps must be counted (else ``None``).

    Raises:
        CountError: ``steps_per_execution`` > 1 over data of unknown length
            without ``steps_per_epoch``: the last execution of an epoch can run
            short, and nothing reports by how much.
    """
    spe = int(getattr(model, "steps_per_execution", 1) or 1)
    iterator = _fit_epoch_iterator()
    if iterator is None:
        return (steps if isinstance(steps, int) else None), None
    given = getattr(iterator, "steps_per_epoch", None)
    length = getattr(iterator, "_num_batches", None)
    given = given if isinstance(given, int) and given > 0 else None
    length = length if isinstance(length, int) and length > 0 else None
    if spe > 1 and given is None and length is None:
        raise CountError(
            f"steps_per_execution={spe} with an input of unknown length: Keras does not "
            "report how many batches the last execution of an epoch runs, so the batch "
            "count could not be exact; give the input a known length (tf.data: "
            "dataset.apply(tf.data.experimental.assert_cardinality(n))), pass "
            "steps_per_epoch with a repeated input, or use steps_per_execution=1"
        )
    loop = FitLoop(iterator, length, spe) if spe > 1 else None
    return epoch_length(given, length, spe), loop


def _fit_epoch_iterator(depth: int = 8) -> Any:
    """The epoch iterator of the Keras ``fit`` that called the callback hook, or ``None``."""
    try:
        from keras.src.trainers.epoch_iterator import EpochIterator
    except ImportError:  # a Keras laid out otherwise: counted by the reported indices
        return None
    frame = sys._getframe(1)
    for _ in range(depth):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        found = frame.f_locals.get("epoch_iterator")
        if isinstance(found, EpochIterator):
            return found
    return None


def tracked_optimizers(model: Any) -> dict[str, Any]:
    """The optimizers a model tracks, by the attribute Keras saves each under.

    ``model.optimizer`` first, then every other public attribute that holds an
    optimizer (a GAN's ``d_optimizer`` and ``g_optimizer``): Keras saves and
    loads the state of each.
    """
    found: dict[str, Any] = {}
    seen: set[int] = set()
    main = getattr(model, "optimizer", None)
    if main is not None:
        found["optimizer"] = main
        seen.add(id(main))
    base = keras.optimizers.Optimizer
    for name, value in sorted(vars(model).items()):
        if not name.startswith("_") and isinstance(value, base) and id(value) not in seen:
            found[name] = value
            seen.add(id(value))
    return found


def _innermost(optimizer: Any) -> Any:
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def optimizer_record(model: Any) -> dict[str, dict[str, Any]]:
    """For the sidecar: each built optimizer's variables and iterations.

    The variables an optimizer updates are recorded by their positions in
    ``model.trainable_variables`` (names carry per-process counters such as
    ``dense_3``; positions do not), in the optimizer's order. A resume
    builds each optimizer on the same variables before loading, so that
    Keras restores its state (it skips optimizers that are not built). An
    optimizer that updates a variable the model does not list as trainable
    is recorded without ``variables``.
    """
    record: dict[str, dict[str, Any]] = {}
    position: dict[int, int] | None = None
    for name, optimizer in tracked_optimizers(model).items():
        inner = _innermost(optimizer)
        if not getattr(inner, "built", False):
            continue
        if position is None:
            position = {id(v): i for i, v in enumerate(model.trainable_variables)}
        updated = [position.get(id(v)) for v in getattr(inner, "_trainable_variables", [])]
        entry: dict[str, Any] = {"iterations": _int_of(inner.iterations)}
        if None not in updated:
            entry["variables"] = updated
        record[name] = entry
    return record


def build_optimizers(model: Any, record: Mapping[str, Any] | None) -> list[str]:
    """Build each unbuilt optimizer of ``model`` as it was when the checkpoint was saved.

    Keras restores only optimizers that are built. Each is built on the
    variables the sidecar's ``optimizers`` record names (see
    :func:`optimizer_record`); without a record (a checkpoint of another
    writer), ``model.optimizer`` is built on the model's trainable
    variables, as ``fit`` builds it. An optimizer the record leaves out was
    not built when the checkpoint was saved: it stays unbuilt, as it was.

    Returns:
        Why the state of some optimizers cannot be restored, one line each
        (an optimizer the record does not describe, or whose variables the
        model does not have).
    """
    problems: list[str] = []
    trainable: list[Any] | None = None
    for name, optimizer in tracked_optimizers(model).items():
        if getattr(optimizer, "built", True):
            continue
        if record is None:
            if name == "optimizer":
                optimizer.build(model.trainable_variables)
            else:
                problems.append(f"{name!r} (the checkpoint has no sidecar to say what it updates)")
            continue
        if name not in record:
            continue  # not built when saved either
        entry = record[name]
        positions = entry.get("variables") if isinstance(entry, dict) else None
        if not isinstance(positions, list):
            problems.append(f"{name!r} (the sidecar does not say which variables it updates)")
            continue
        if trainable is None:
            trainable = list(model.trainable_variables)
        count = len(trainable)
        if not all(type(i) is int and 0 <= i < count for i in positions):
            problems.append(
                f"{name!r} (it updated variables the model does not have: {count} are trainable)"
            )
            continue
        optimizer.build([trainable[i] for i in positions])
    return problems


def lost_optimizer_state(model: Any, meta: Mapping[str, Any] | None) -> list[str]:
    """The optimizers that had run steps when the checkpoint was saved but not after loading it.

    Their state was not in the file (Keras's legacy ``.h5`` holds none):
    their training continues from a fresh state. One line each, as
    :func:`build_optimizers` words its problems.
    """
    if not meta:
        return []
    record = meta.get("optimizers")
    if not isinstance(record, dict):
        record = {"optimizer": {"iterations": meta.get("iterations")}}
    lost = []
    for name, optimizer in tracked_optimizers(model).items():
        entry = record.get(name)
        saved = entry.get("iterations") if isinstance(entry, dict) else None
        if type(saved) is not int or saved <= 0:
            continue
        now = _int_of(_innermost(optimizer).iterations) if optimizer.built else 0
        if now == 0:
            lost.append(f"{name!r} (it had run {saved} steps; the file holds no optimizer state)")
    return lost


@contextlib.contextmanager
def distribution_scope(model: Any) -> Iterator[None]:
    """Enter the ``tf.distribute`` strategy the model was built under, if not in it already.

    Building an optimizer and loading into it must happen inside the scope
    of the model's strategy (Keras raises outside it); a resume may be
    called after the ``with strategy.scope():`` block.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    strategy = getattr(model, "_distribute_strategy", None)
    if strategy is None or tf.distribute.get_strategy() is strategy:
        yield
        return
    with strategy.scope():
        yield


def _int_of(variable: Any) -> int | None:
    """The value of a scalar counter variable (read directly: half the cost of a conversion)."""
    try:
        return int(to_numpy(variable))
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def outside_distribution() -> Iterator[None]:
    """Run what the chief does alone (a save, building a twin) outside the Keras distribution.

    Under ``keras.distribution`` (JAX, e.g. ``DataParallel`` across
    processes), creating a variable is a step every process must join: a
    variable is laid out over every device of the cluster. Keras's saving
    creates a throwaway optimizer (to learn which attributes to skip), so a
    save by the chief alone would wait forever for the others. Keras keeps
    the distribution per thread; it is cleared for the duration and put back
    after. The model's own variables are read as they are: replicated ones
    (``DataParallel``) read whole on any process.
    """
    current = keras.distribution.distribution()
    if current is None:
        yield
        return
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


_T = TypeVar("_T")


def outside_strategy(work: Callable[[], _T]) -> _T:
    """Run what the chief does alone outside the ``MultiWorkerMirroredStrategy`` scope it is in.

    With ``fit`` called inside ``with strategy.scope():``, every variable
    created is the strategy's, and creating one is a collective (its initial
    value is broadcast from the chief): the throwaway objects of Keras's
    saving, or a twin built for background saves, created by the chief
    alone would meet the other workers' next training collective instead
    and abort both. TensorFlow keeps the strategy scope per thread, so
    ``work`` runs on a thread of its own, outside any scope, as it runs when
    ``fit`` is called outside the block; the caller waits for it, and its
    error is raised here. Elsewhere ``work`` runs where it is called.
    """
    if not _in_multi_worker_scope():
        return work()
    done: list[_T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as exc:  # raised again on the calling thread
            failed.append(exc)

    thread = threading.Thread(target=run, name="ckptname-outside-strategy")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return done[0]


def _in_multi_worker_scope() -> bool:
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy() and isinstance(
        tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy
    )


@contextlib.contextmanager
def saving_cache() -> Iterator[None]:
    """Let Keras reuse the attribute skip-sets it computes on every save.

    Keras 3 (3.15) caches the sets of attributes its saver skips under
    ``saving_attr_skipset_<type>`` but looks them up under
    ``saving_attr_skiplist_<type>``, so each save builds reference layers and
    optimizers again: about a third of the time of a small model's
    ``model.save`` and half of ``save_weights``. For the duration of our own
    save, the sets Keras already computed are also put where it looks; they
    depend only on Keras's base classes, so reusing them changes nothing but
    the time. Afterwards Keras's state is as it was, so other code in the
    process sees stock Keras. Where the names match (a fixed Keras) or the
    internals differ, this does nothing.
    """
    added: list[str] = []
    try:
        from keras.src.backend.common import global_state

        tracker = vars(global_state.GLOBAL_STATE_TRACKER)
        for key in list(tracker):
            if key.startswith("saving_attr_skipset_") and tracker[key] is not None:
                alias = "saving_attr_skiplist_" + key[len("saving_attr_skipset_") :]
                if tracker.get(alias) is None:
                    tracker[alias] = tracker[key]
                    added.append(alias)
    except (ImportError, AttributeError, TypeError):
        added = []
    try:
        yield
    finally:
        if added:
            tracker = vars(global_state.GLOBAL_STATE_TRACKER)
            for alias in added:
                tracker.pop(alias, None)


def metric_state(model: Any) -> dict[str, list[Any]] | None:
    """The values of the variables of ``model.metrics``, by metric name, as JSON lists.

    These are the running sums behind the means Keras logs for the current
    epoch (``loss``: ``[total, count]``; compiled metrics: each metric's
    variables in order); a model without metrics gives ``None``. Under a
    multi-worker strategy reading a metric variable is a collective
    (``MultiWorkerMirroredStrategy`` sums it over the workers), so every
    worker calls this at the same step, and the values are the cluster's.
    A metric whose variables do not read back is left out, with a
    :class:`~ckptname.CkptnameWarning` naming it and why: a resume into the
    middle of that epoch then starts its mean afresh.
    """
    try:
        metrics = list(model.metrics)
    except Exception:  # no model, or one without compiled metrics
        return None
    state: dict[str, list[Any]] = {}
    unread: list[str] = []
    for metric in metrics:
        name = getattr(metric, "name", None)
        variables = getattr(metric, "variables", None)
        if not isinstance(name, str) or not variables or name in state:
            continue
        try:
            values = [np.asarray(to_numpy(v)) for v in variables]
        except Exception as exc:  # any backend's error: reported, and the save goes on
            unread.append(f"{name!r} ({type(exc).__name__}: {exc})")
            continue
        state[name] = [a.item() if a.ndim == 0 else a.tolist() for a in values]
    if unread:
        warnings.warn(
            f"the running values of {', '.join(unread)} could not be read for the sidecar; "
            "a resume into the middle of this epoch starts their means afresh",
            CkptnameWarning,
            stacklevel=4,
        )
    return state or None


def restore_metric_state(
    model: Any, state: Mapping[str, Any], epoch: int, *, final: bool
) -> list[str]:
    """Put recorded metric variables back (see :func:`metric_state`).

    Returns the names of the recorded metrics whose variables do not exist
    yet (Keras builds compiled metrics lazily); with ``final`` those are
    reported instead. A metric whose recorded values do not fit its
    variables (the model was compiled with other metrics) is left as Keras
    reset it, with a :class:`~ckptname.CkptnameWarning`: its mean then covers
    only the batches after the resume. Metrics the record does not name are
    left alone silently.
    """
    try:
        metrics = list(model.metrics)
    except Exception:  # no metrics to restore into
        metrics = []
    skipped: list[str] = []
    unbuilt: list[str] = []
    for metric in metrics:
        name = getattr(metric, "name", None)
        values = state.get(name) if isinstance(name, str) else None
        if values is None:
            continue
        variables = list(getattr(metric, "variables", None) or [])
        if not variables and not final:
            unbuilt.append(str(name))
            continue
        arrays = []
        if isinstance(values, list) and len(values) == len(variables):
            for var, value in zip(variables, values, strict=True):
                try:
                    arr = np.asarray(value, dtype=keras.backend.standardize_dtype(var.dtype))
                except (TypeError, ValueError):
                    break
                if tuple(arr.shape) != tuple(var.shape):
                    break
                arrays.append(arr)
        if not variables or len(arrays) != len(variables):
            skipped.append(str(name))
            continue
        for var, arr in zip(variables, arrays, strict=True):
            var.assign(arr)
    if skipped:
        warnings.warn(
            f"the running values of {', '.join(repr(s) for s in skipped)} recorded in the "
            f"checkpoint do not fit the model's metrics; their means in epoch {epoch + 1} "
            "cover only the batches after the resume",
            CkptnameWarning,
            stacklevel=3,
        )
    return unbuilt


def public_iterations(model: Any) -> int | None:
    opt = getattr(model, "optimizer", None)
    if opt is None or getattr(opt, "iterations", None) is None:
        return None
    return _int_of(opt.iterations)


def direction_from_model(model: Any, monitor: str) -> str | None:
    """The direction Keras itself knows for a compiled metric (``_direction``)."""
    name = monitor.removeprefix("val_")
    if name == "loss":
        return "min"
    if model is None:
        return None
    try:
        metrics = list(model.metrics)
    except Exception:  # a model without metrics: decide by name
        return None
    flat: list[Any] = []
    for m in metrics:
        flat.extend(getattr(m, "metrics", None) or [m])
    for m in flat:
        if getattr(m, "name", None) == name:
            direction = getattr(m, "_direction", None)
            if direction == "up":
                return "max"
            if direction == "down":
                return "min"
    return None


def restore_metrics(model: Any, state: Mapping[str, Any], epoch: int, still_first: Any) -> Any:
    """Put the running sums of an interrupted epoch back into the model's metrics.

    Keras resets the metrics right before ``on_epoch_begin`` (TensorFlow
    trainer: ``reset_metrics()`` then ``callbacks.on_epoch_begin``), so what
    is assigned here is what the epoch's first step adds to, and the logged
    means continue as if training had not stopped.

    On the TensorFlow backend without a distribution strategy, Keras creates
    the variables of the compiled metrics only when it traces the first step.
    Those are restored at that first step instead: the model's
    ``train_function`` is wrapped for one call, which builds the metrics from
    the input's ``element_spec`` (Keras's own symbolic build, as it does under
    a strategy), restores them and runs the step, provided ``still_first()``
    says no batch of the epoch has run yet.

    Returns:
        A function that removes the one-call wrapper if no step ran, or
        ``None`` where no wrapper was needed.
    """
    unbuilt = restore_metric_state(model, state, epoch, final=False)
    if not unbuilt:
        return None
    rest = {name: state[name] for name in unbuilt}
    original = getattr(model, "train_function", None)
    if original is None:
        # A hand-written loop: no step of Keras's to hook into.
        restore_metric_state(model, rest, epoch, final=True)
        return None

    def first_step(iterator: Any, *args: Any, **kwargs: Any) -> Any:
        model.train_function = original
        if still_first():
            spec = getattr(iterator, "element_spec", None)
            build = getattr(model, "_symbolic_build", None)
            if spec is not None and build is not None:
                with contextlib.suppress(Exception):  # then reported as not restored
                    build(data_batch=spec)
            restore_metric_state(model, rest, epoch, final=True)
        return original(iterator, *args, **kwargs)

    def unwrap() -> None:
        if getattr(model, "train_function", None) is first_step:
            model.train_function = original

    model.train_function = first_step
    return unwrap
