"""Which process of a cluster writes the checkpoint folder, and what all must share; no Keras.

This module is reserved for the cluster's rules: the one writer (the chief)
from a cluster's configuration, the settings every process must share
(:class:`Settings`, checked by :func:`check_agreement` once each process's
have been gathered), and the settings a cluster refuses where its processes
have no way to agree (a preemption signal without a channel to share it, a
wall-clock ``save_freq``). The backend side (``ckptname._keras_cluster``)
finds the facts and carries the messages; this module decides. A
configuration that does not say who writes is a
:class:`~ckptname.ClusterError`, never a guess, because a wrong guess makes
two processes write one folder, or none.

A cluster is read as TensorFlow's ``MultiWorkerMirroredStrategy`` reads it
(``tensorflow/python/distribute/multi_worker_util.py``), whether it comes from
``TF_CONFIG`` or from the cluster resolver of the strategy, with one
difference: an ``evaluator`` task, which TensorFlow calls a chief of its own,
trains nothing and so never writes training checkpoints.

==================================  ===========================================
the task of this process            this process writes
==================================  ===========================================
none (``TF_CONFIG`` unset or        yes (a single process)
empty)
``chief``                           yes
``worker``, index 0, cluster        yes
without a ``chief``
any other ``worker``                no
``evaluator`` or ``ps``             no
anything else                       :class:`~ckptname.ClusterError`
==================================  ===========================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ._errors import ClusterError

__all__ = [
    "Settings",
    "check_agreement",
    "check_clock_shared",
    "check_cluster_preemption",
    "chief_from_task",
    "chief_from_tf_config",
    "late_error",
    "place_in_cluster",
]

_TASK_TYPES = ("chief", "worker", "evaluator", "ps")
_TF_CONFIG = "TF_CONFIG"
_RESOLVER = "the cluster resolver of the model's strategy"
_WAY_OUT = {
    _TF_CONFIG: "fix TF_CONFIG",
    _RESOLVER: "fix the cluster resolver given to the strategy",
}
_CHANNELS = (
    "TensorFlow's MultiWorkerMirroredStrategy, JAX's jax.distributed and PyTorch's "
    "torch.distributed"
)
"""The launches whose processes ckptname can agree through (``_keras_cluster.Link``)."""
_ONE_WRITER = (
    "exactly one may: pass chief=True on one process only, or leave chief=None on every "
    "process so that the cluster's configuration picks one"
)


def chief_from_tf_config(raw: str | None) -> bool:
    """Whether the process with environment variable ``TF_CONFIG`` = ``raw`` writes.

    Raises:
        ClusterError: ``raw`` is not a JSON object, its task has an unknown
            type or an index its cluster does not have, it names no task in a
            cluster of several, or its cluster has more than one chief.
    """
    if raw is None or not raw.strip():
        return True
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise _error(_TF_CONFIG, f"is not valid JSON ({exc})") from None
    if not isinstance(config, Mapping):
        raise _error(_TF_CONFIG, f"is a JSON {type(config).__name__}, not an object")
    cluster = _cluster_of(config.get("cluster"), _TF_CONFIG)
    task = config.get("task") or {}
    if not isinstance(task, Mapping):
        raise _error(_TF_CONFIG, f"has a 'task' that is a {type(task).__name__}, not an object")
    return _chief(cluster, task.get("type"), task.get("index", 0), _TF_CONFIG)


def chief_from_task(cluster: Mapping[str, Any], kind: object, index: object) -> bool:
    """Whether the task ``kind``/``index`` of ``cluster`` writes (a strategy's cluster resolver).

    ``cluster`` maps each job to its addresses, as
    ``ClusterSpec.as_dict()`` gives them (a list, or a dict by task index).

    Raises:
        ClusterError: as :func:`chief_from_tf_config`, for the resolver's task.
    """
    jobs = _cluster_of(_dense(cluster), _RESOLVER)
    return _chief(jobs, kind, 0 if index is None else index, _RESOLVER)


def place_in_cluster(cluster: Mapping[str, Any], kind: object, index: object) -> tuple[int, int]:
    """This training process's index among the training processes, and how many train.

    The processes that train are the ``chief`` and the ``worker`` tasks,
    numbered as ``MultiWorkerMirroredStrategy`` numbers them: the chief 0,
    worker *i* after the chief. A task that trains nothing (``evaluator``,
    ``ps``) has no index: -1.
    """
    jobs = _dense(cluster)
    chiefs, workers = len(jobs.get("chief", ())), len(jobs.get("worker", ()))
    count = max(1, chiefs + workers)
    if kind == "chief":
        return 0, count
    if kind == "worker" and isinstance(index, int):
        return chiefs + index, count
    return -1, count


def _dense(cluster: Mapping[str, Any]) -> dict[str, list[Any]]:
    """A cluster spec's jobs as lists (``ClusterSpec.as_dict()`` gives sparse jobs as dicts)."""
    return {
        str(job): [v for _, v in sorted(tasks.items())] if isinstance(tasks, Mapping) else tasks
        for job, tasks in cluster.items()
    }


def _chief(cluster: dict[str, list[Any]], kind: object, raw_index: object, source: str) -> bool:
    tasks = sum(len(addresses) for addresses in cluster.values())
    if kind is None:
        if tasks > 1:
            raise _error(
                source, f"describes a cluster of {tasks} tasks but no 'task' for this process"
            )
        return True
    index = _index_of(raw_index, source)
    if kind not in _TASK_TYPES:
        raise _error(source, f"has task type {kind!r}; expected one of {', '.join(_TASK_TYPES)}")
    if len(cluster.get("chief", ())) > 1:
        raise _error(
            source, f"has {len(cluster['chief'])} chiefs in its cluster; at most one may write"
        )
    if kind != "evaluator":
        if kind not in cluster:
            have = ", ".join(sorted(cluster)) or "nothing"
            raise _error(
                source, f"has task type {kind!r}, which its cluster (of {have}) does not have"
            )
        if index >= len(cluster[str(kind)]):
            raise _error(
                source,
                f"has task {kind!r} index {index}, but its cluster has "
                f"{len(cluster[str(kind)])} {kind!r} task(s)",
            )
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in cluster


def _cluster_of(value: Any, source: str) -> dict[str, list[Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _error(source, f"has a 'cluster' that is a {type(value).__name__}, not an object")
    cluster: dict[str, list[Any]] = {}
    for kind, addresses in value.items():
        if not isinstance(addresses, list):
            raise _error(source, f"has cluster job {kind!r} that is not a list of addresses")
        cluster[str(kind)] = addresses
    return cluster


def _index_of(value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(source, f"has task index {value!r}; expected an integer from 0")
    return value


def _error(source: str, problem: str) -> ClusterError:
    return ClusterError(
        f"{source} {problem}, so which process writes is not known; {_WAY_OUT[source]}, or "
        "pass chief=True on exactly one process and chief=False on the others"
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """What one process's callback was given that every process of a cluster must share.

    Every process names every checkpoint and only the chief writes, so the
    processes must agree on the template, its root and when saves fall;
    ``save_on_preemption`` decides whether they meet at every batch boundary
    to share a signal, which all must do or none.

    Attributes:
        writes: whether this process would write (its ``chief`` decision).
        root: the folder (or URL) the template's checkpoints live in.
        template: the template below the root.
        save_freq: ``save_freq`` as given, for messages.
        schedule: what ``save_freq`` means (``4`` and ``"4ba"`` are the same).
        save_on_preemption: whether signals are watched.
    """

    writes: bool
    root: str
    template: str
    save_freq: str
    schedule: str
    save_on_preemption: bool

    def encode(self) -> str:
        """This record as the text the other processes receive."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, text: str) -> Settings:
        """The record another process sent (same program, same version of ckptname)."""
        return cls(**json.loads(text))


# What differs, worded for a message: (attribute, how it reads, how a value shows).
_SHARED = (
    ("root", "the filepath's root is", repr),
    ("template", "the filepath's template is", repr),
    ("schedule", "save_freq is", None),
    ("save_on_preemption", "save_on_preemption is", repr),
)


def check_agreement(gathered: Sequence[Settings]) -> None:
    """Check what every process of a cluster was given, process *i*'s at position *i*.

    Every process runs this on the same records and so raises the same
    error: settings that differ first (a per-process temporary folder, a
    typo), then a count of writers other than one.

    Raises:
        ClusterError: the settings differ, or not exactly one process would write.
    """
    count = len(gathered)
    differences = []
    for attribute, words, show in _SHARED:
        groups: dict[object, list[int]] = {}
        for index, settings in enumerate(gathered):
            groups.setdefault(getattr(settings, attribute), []).append(index)
        if len(groups) < 2:
            continue
        values = []
        for value, processes in groups.items():
            first = gathered[processes[0]]
            shown = first.save_freq if show is None else show(value)
            values.append(f"{shown} on {_processes(processes)}")
        differences.append(f"{words} {', '.join(values)}")
    if differences:
        raise ClusterError(
            f"the {count} processes of this cluster were given different settings: "
            f"{'; '.join(differences)}; every process must give BatchAwareCheckpoint the same "
            "filepath, save_freq and save_on_preemption, since each names every checkpoint "
            "and the chief alone writes"
        )
    writers = [index for index, settings in enumerate(gathered) if settings.writes]
    if not writers:
        raise ClusterError(
            f"none of the {count} processes would write the checkpoint folder, so no "
            f"checkpoint would be saved; {_ONE_WRITER}"
        )
    if len(writers) > 1:
        raise ClusterError(
            f"{len(writers)} of the {count} processes would write the checkpoint folder "
            f"({_processes(writers)}); {_ONE_WRITER}"
        )


def _processes(indices: Sequence[int], shown: int = 6) -> str:
    if len(indices) == 1:
        return f"process {indices[0]}"
    listed = ", ".join(str(i) for i in indices[:shown])
    more = len(indices) - shown
    return f"processes {listed}" + (f" and {more} more" if more > 0 else "")


def late_error(count: int, seconds: float, process: int | None) -> ClusterError:
    """A process that did not reach the agreement at train begin within ``seconds``."""
    who = f"a process of the {count}" if process is None else f"process {process} of the {count}"
    return ClusterError(
        f"{who} did not begin training with a BatchAwareCheckpoint within {seconds:g} s; "
        "every process of the cluster must run the callback (only the chief writes): pass "
        "it to fit on every process"
    )


def check_cluster_preemption(processes: int, unshared: str | None) -> None:
    """Refuse ``save_on_preemption`` on a cluster whose processes cannot share a signal.

    A signal reaches one process, and every process must stop at the same
    step: the flag is agreed at every batch boundary, through the strategy's
    collectives on TensorFlow, the coordination service on JAX and the
    process group's store on PyTorch. Where
    there is no such channel (``unshared`` says which launch it is), one
    worker stopping alone would leave the others waiting at their next
    step, so that is refused.

    Raises:
        ClusterError: more than one process trains and ``unshared`` is not ``None``.
    """
    if processes > 1 and unshared is not None:
        raise ClusterError(
            f"save_on_preemption=True on a cluster of {processes} processes ({unshared}): a "
            f"signal reaches one process, and ckptname shares it with the others only under "
            f"{_CHANNELS}; here the others would wait for it at their next step; pass "
            "save_on_preemption=False and save with an integer save_freq, or train in one process"
        )


def check_clock_shared(processes: int, save_freq: object, unshared: str) -> None:
    """Refuse a wall-clock ``save_freq`` where the processes cannot share the chief's clock.

    Every process names every checkpoint, so a save decided by a clock must
    fall at the same step everywhere: the chief's decision is shared at
    every batch boundary, through the channel that shares the preemption
    flag (see :func:`check_cluster_preemption`). Where there is no such channel
    (``unshared`` says which launch it is), each process's clock would
    decide at another step, so that is refused.

    Raises:
        ClusterError: more than one process trains.
    """
    if processes > 1:
        raise ClusterError(
            f"save_freq={save_freq!r} on a cluster of {processes} processes ({unshared}): each "
            f"process names every checkpoint, and ckptname shares the chief's clock with the "
            f"others only under {_CHANNELS}; pass a number of batches or epochs instead"
        )
