"""The processes of a training cluster, per Keras backend: who they are, and how they agree.

This module is reserved for what only a backend can answer about a cluster:
which process this is and how many train, the facts the chief rule of
``ckptname._cluster`` decides from, and the channel the processes agree
through (:class:`Link`): at train begin on the settings every process must
share (:func:`agree_at_train_begin`), and at every batch boundary, where the
callback needs it, on whether a preemption signal reached any of them
(``save_on_preemption``) and whether the chief's clock says a save is due (a
wall-clock ``save_freq``).

=========================  ==================================  ==================================
backend and launch         the facts                           the channel
=========================  ==================================  ==================================
TensorFlow, a model under  the strategy's cluster resolver     all-reduces run through the
``MultiWorkerMirrored``    (task type and id), however the     strategy (``reduce_to``), as its
``Strategy`` of several    strategy was built (``TF_CONFIG``,  training steps run them
workers                    Slurm, a resolver passed to it)
TensorFlow otherwise       ``TF_CONFIG``, else one process     none
JAX, ``jax.distributed``   ``jax.process_index()``             the coordination service's
                                                               key-value store, with deadlines
PyTorch, ``torch.          the rank of ``torch.distributed``   the key-value store of the default
distributed``                                                  process group, with deadlines
=========================  ==================================  ==================================
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

import keras
import numpy as np

from ._cluster import (
    Settings,
    check_agreement,
    chief_from_task,
    chief_from_tf_config,
    late_error,
    place_in_cluster,
)
from ._errors import ClusterError

__all__ = [
    "AGREE_TIMEOUT_S",
    "STEP_TIMEOUT_S",
    "Link",
    "agree_at_train_begin",
    "cluster_link",
    "is_chief",
    "process_count",
    "unshared",
]

AGREE_TIMEOUT_S = 300.0
"""How long a process waits at train begin for the others' settings."""

STEP_TIMEOUT_S = 24 * 3600.0
"""How long a JAX or PyTorch process waits at a batch boundary for the others (saves are long)."""

_AGREEMENTS = itertools.count()


class Link(Protocol):
    """The channel the processes of one cluster agree through, during one ``fit``.

    Every process makes the same calls in the same order: each call is met
    by the same call on every other process.
    """

    index: int
    count: int

    def gather(self, text: str, seconds: float) -> list[str]:
        """Every process's ``text``, process *i*'s at position *i*, waiting at most ``seconds``."""

    def any_of(self, flags: Sequence[bool]) -> list[bool]:
        """For each position of ``flags``, whether it is true on any process."""

    def close(self) -> None:
        """At train end, after the last :meth:`any_of`: wait until every process is past it."""


def is_chief(model: Any) -> bool:
    """Whether this process is the one that writes, from the cluster configuration.

    ========================  ==============================================
    backend                   the chief
    ========================  ==============================================
    JAX                       process 0 (``jax.process_index()``)
    PyTorch                   rank 0 of ``torch.distributed`` where it is
                              initialized, else this process
    TensorFlow                the model's ``MultiWorkerMirroredStrategy``:
                              the ``chief`` task of its cluster resolver,
                              else worker 0 of a cluster without a chief;
                              without one, ``TF_CONFIG`` read by the same
                              rule; neither: this process
                              (``ckptname._cluster`` has the rule)
    ========================  ==============================================

    Raises:
        ClusterError: on TensorFlow, a cluster resolver or ``TF_CONFIG``
            that does not say which process writes.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # type: ignore[import-not-found,unused-ignore]  # only on the JAX backend

        return bool(jax.process_index() == 0)
    if backend == "torch":
        import torch.distributed as dist  # type: ignore[import-not-found,unused-ignore]

        initialized = dist.is_available() and dist.is_initialized()
        return not initialized or dist.get_rank() == 0
    strategy = _multi_worker_strategy(model)
    if strategy is not None:
        resolver = strategy.cluster_resolver
        return chief_from_task(_jobs(strategy), resolver.task_type, resolver.task_id)
    return chief_from_tf_config(os.environ.get("TF_CONFIG"))


def process_count(model: Any) -> int:
    """How many processes train together (1 for a single process).

    JAX: ``jax.process_count()``; PyTorch: the world size of
    ``torch.distributed`` where it is initialized; TensorFlow: the tasks that
    train (``chief`` and ``worker``) in the cluster of the model's
    ``MultiWorkerMirroredStrategy``, else of ``TF_CONFIG``.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # type: ignore[import-not-found,unused-ignore]  # only on the JAX backend

        return int(jax.process_count())
    if backend == "torch":
        import torch.distributed as dist  # type: ignore[import-not-found,unused-ignore]

        initialized = dist.is_available() and dist.is_initialized()
        return int(dist.get_world_size()) if initialized else 1
    strategy = _multi_worker_strategy(model)
    if strategy is not None:
        return place_in_cluster(_jobs(strategy), None, None)[1]
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster") or {}
    except (ValueError, AttributeError):
        return 1
    tasks = [cluster.get(kind) for kind in ("chief", "worker")]
    return max(1, sum(len(task) for task in tasks if isinstance(task, list)))


def cluster_link(model: Any) -> Link | None:
    """The channel to the other processes, or ``None`` for one process or where there is none."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax  # type: ignore[import-not-found,unused-ignore]  # only on the JAX backend
        from jax._src import distributed  # type: ignore[import-not-found,unused-ignore]

        client = distributed.global_state.client
        count = int(jax.process_count())
        if count < 2 or client is None:
            return None
        return _JaxLink(client, int(jax.process_index()), count)
    if backend == "torch":
        import torch.distributed as dist  # type: ignore[import-not-found,unused-ignore]

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        from torch.distributed import distributed_c10d

        store = distributed_c10d._get_default_store()
        return _TorchLink(store, int(dist.get_rank()), int(dist.get_world_size()))
    if backend != "tensorflow":
        return None
    strategy = _multi_worker_strategy(model)
    if strategy is None:
        return None
    resolver = strategy.cluster_resolver
    index, count = place_in_cluster(_jobs(strategy), resolver.task_type, resolver.task_id)
    return None if index < 0 else _TensorFlowLink(strategy, index, count)


def unshared(model: Any) -> str:
    """How this cluster was launched, for an error where it has no :class:`Link`."""
    backend = keras.backend.backend()
    if backend == "torch":
        return "PyTorch processes without torch.distributed"
    if backend == "jax":
        return "JAX processes without jax.distributed"
    return "TF_CONFIG, with a model that does not train under a MultiWorkerMirroredStrategy"


def agree_at_train_begin(link: Link, settings: Settings) -> None:
    """Check, with every other process, that the cluster shares ``settings`` and has one writer.

    Every process sends its settings and receives every other's, waiting at
    most :data:`AGREE_TIMEOUT_S`; all then run the same check on the same
    records, so a disagreement is the same error on every process, before
    any of them touches the folder.

    Raises:
        ClusterError: the settings differ, not exactly one process would
            write, or a process did not reach this point in time.
    """
    gathered = link.gather(settings.encode(), AGREE_TIMEOUT_S)
    check_agreement([Settings.decode(text) for text in gathered])


def _multi_worker_strategy(model: Any) -> Any:
    """The model's ``MultiWorkerMirroredStrategy`` where it spans several processes, else ``None``.

    The strategy the model was built under, else the one ``fit`` is called
    in (``model.distribute_strategy`` answers both).
    """
    if keras.backend.backend() != "tensorflow" or model is None:
        return None
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    if strategy.cluster_resolver is None:
        return None
    return strategy if place_in_cluster(_jobs(strategy), None, None)[1] > 1 else None


def _jobs(strategy: Any) -> dict[str, Any]:
    spec = strategy.cluster_resolver.cluster_spec()
    return dict(spec.as_dict()) if spec else {}


class _TensorFlowLink:
    """Agreement through the all-reduces of a ``MultiWorkerMirroredStrategy``.

    Each call is one eager all-reduce (a sum) over the workers, launched by
    every worker at the same point of the same callback hook, so the
    strategy's collective keys stay in step as they do for its training
    steps.
    """

    def __init__(self, strategy: Any, index: int, count: int) -> None:
        self.strategy = strategy
        self.index = index
        self.count = count

    def gather(self, text: str, seconds: float) -> list[str]:
        data = np.frombuffer(text.encode(), np.uint8)
        lengths = np.zeros(self.count, np.int64)
        lengths[self.index] = data.size
        lengths = self._sum(lengths, seconds)
        rows = np.zeros((self.count, int(lengths.max())), np.int64)
        rows[self.index, : data.size] = data
        rows = self._sum(rows, seconds)
        texts = [rows[i, : lengths[i]].astype(np.uint8).tobytes() for i in range(self.count)]
        return [text.decode() for text in texts]

    def any_of(self, flags: Sequence[bool]) -> list[bool]:
        totals = self._sum(np.array([int(flag) for flag in flags], np.int64), None)
        return [bool(total > 0) for total in totals]

    def close(self) -> None:
        pass  # the strategy's own collectives keep the workers together

    def _sum(self, array: Any, seconds: float | None) -> Any:
        import tensorflow as tf

        value = tf.constant(array)
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=seconds)
        try:
            total = self.strategy.extended.reduce_to(
                tf.distribute.ReduceOp.SUM, value, value, options=options
            )
        except tf.errors.OpError as exc:
            if seconds is None:
                raise
            # Past the deadline, or met by another collective instead: a worker
            # that began training without the callback runs its first step's.
            # An all-reduce cannot say which worker that is.
            raise late_error(self.count, seconds, None) from exc
        return total.numpy()


class _Late(Exception):
    """A store's wait ran past its deadline."""


class _KeyValueLink:
    """Agreement through a key-value store every process reaches.

    Keys live under a prefix of their own for each train begin (the *n*-th
    train begin of each process meets the *n*-th of every other); a
    process's key of one batch boundary is deleted once it has read every
    key of the next, when every process is past reading it. Subclasses
    give the store's four verbs.
    """

    def __init__(self, index: int, count: int) -> None:
        self.index = index
        self.count = count
        self.prefix = f"ckptname/{next(_AGREEMENTS)}"
        self._steps = itertools.count()
        self._posted: str | None = None

    def _set(self, key: str, value: str) -> None:
        raise NotImplementedError

    def _get(self, key: str, seconds: float) -> str:
        """The value of ``key``, waiting for it at most ``seconds``; :class:`_Late` past that."""
        raise NotImplementedError

    def _barrier(self, name: str, seconds: float) -> None:
        """Wait until every process reached barrier ``name``; :class:`_Late` past ``seconds``."""
        raise NotImplementedError

    def _delete(self, key: str) -> None:
        raise NotImplementedError

    def gather(self, text: str, seconds: float) -> list[str]:
        prefix = f"{self.prefix}/settings"
        self._set(f"{prefix}/{self.index}", text)
        got = []
        for other in range(self.count):
            try:
                got.append(self._get(f"{prefix}/{other}", seconds))
            except _Late as exc:
                raise late_error(self.count, seconds, other) from exc
        # No process goes on (or stops) before every one has read every record:
        # process 0 serves the store, and its end would cut the others' reads.
        try:
            self._barrier(f"{prefix}/read", seconds)
        except _Late as exc:
            raise late_error(self.count, seconds, None) from exc
        return got

    def any_of(self, flags: Sequence[bool]) -> list[bool]:
        key = f"{self.prefix}/step/{next(self._steps)}"
        mine = f"{key}/{self.index}"
        self._set(mine, "".join("1" if flag else "0" for flag in flags))
        found = list(flags)
        for other in range(self.count):
            if other != self.index:
                try:
                    said = self._get(f"{key}/{other}", STEP_TIMEOUT_S)
                except _Late as exc:
                    raise ClusterError(
                        f"process {other} of the {self.count} did not reach the batch boundary "
                        f"where every process shares whether a preemption signal came or a "
                        f"save is due, within {STEP_TIMEOUT_S:g} s"
                    ) from exc
                found = [a or b == "1" for a, b in zip(found, said, strict=True)]
        # Every process has posted this boundary, so each has read the last one.
        if self._posted is not None:
            self._delete(self._posted)
        self._posted = mine
        return found

    def close(self) -> None:
        if self._posted is None:
            return
        # The last boundary's keys are read by every process before any goes
        # on: process 0 serves the store, and its end would cut the others' reads.
        try:
            self._barrier(f"{self.prefix}/end", AGREE_TIMEOUT_S)
        except _Late as exc:
            raise ClusterError(
                f"a process of the {self.count} did not reach the end of training within "
                f"{AGREE_TIMEOUT_S:g} s of the others"
            ) from exc


class _JaxLink(_KeyValueLink):
    """The key-value store of ``jax.distributed``'s coordination service."""

    def __init__(self, client: Any, index: int, count: int) -> None:
        super().__init__(index, count)
        self.client = client

    def _set(self, key: str, value: str) -> None:
        self.client.key_value_set(key, value)

    def _get(self, key: str, seconds: float) -> str:
        try:
            return str(self.client.blocking_key_value_get(key, int(seconds * 1000)))
        except Exception as exc:  # jaxlib's runtime error: only a deadline is ours to explain
            if "DEADLINE_EXCEEDED" not in str(exc):
                raise
            raise _Late from exc

    def _barrier(self, name: str, seconds: float) -> None:
        try:
            self.client.wait_at_barrier(name, int(seconds * 1000))
        except Exception as exc:  # jaxlib's runtime error
            if "DEADLINE_EXCEEDED" not in str(exc):
                raise
            raise _Late from exc

    def _delete(self, key: str) -> None:
        self.client.key_value_delete(key)


class _TorchLink(_KeyValueLink):
    """The store of ``torch.distributed``'s default process group (a ``TCPStore`` served by rank 0).

    It serves every backend alike (gloo and NCCL), needs no tensor on any
    device, and its waits have deadlines, where a collective has only the
    process group's.
    """

    def __init__(self, store: Any, index: int, count: int) -> None:
        super().__init__(index, count)
        self.store = store

    def _set(self, key: str, value: str) -> None:
        self.store.set(key, value)

    def _wait(self, key: str, seconds: float) -> None:
        import torch.distributed as dist  # type: ignore[import-not-found,unused-ignore]

        try:
            self.store.wait([key], datetime.timedelta(seconds=seconds))
        except dist.DistStoreError as exc:
            if "timeout" not in str(exc):
                raise
            raise _Late from exc

    def _get(self, key: str, seconds: float) -> str:
        self._wait(key, seconds)
        return bytes(self.store.get(key)).decode()

    def _barrier(self, name: str, seconds: float) -> None:
        if int(self.store.add(f"{name}/arrived", 1)) == self.count:
            self.store.set(f"{name}/all", "1")
        self._wait(f"{name}/all", seconds)

    def _delete(self, key: str) -> None:
        self.store.delete_key(key)
