"""Which process of a training cluster writes the checkpoint folder, with no Keras.

This module is reserved for the rule that picks the one writer (the chief)
from a cluster's configuration, and for the settings a cluster of several
processes refuses because its processes could not agree on them (a
preemption signal that reaches one process, a wall-clock ``save_freq``).
The callback asks the backend for the facts (``TF_CONFIG`` on TensorFlow,
the process index on JAX, the rank on PyTorch) and this module decides; a
configuration that does not say who writes is a
:class:`~ckptname.ClusterError`, never a guess, because a wrong guess makes
two processes write one folder, or none.

``TF_CONFIG`` is read as TensorFlow's ``MultiWorkerMirroredStrategy`` reads it
(``tensorflow/python/distribute/multi_worker_util.py``), with one difference:
an ``evaluator`` task, which TensorFlow calls a chief of its own, trains
nothing and so never writes training checkpoints.

==================================  ===========================================
``TF_CONFIG``                       this process writes
==================================  ===========================================
unset or empty                      yes (a single process)
task ``chief``                      yes
task ``worker``, index 0, cluster   yes
without a ``chief``
any other ``worker``                no
task ``evaluator`` or ``ps``        no
anything else                       :class:`~ckptname.ClusterError`
==================================  ===========================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._errors import ClusterError

__all__ = [
    "check_single_process_clock",
    "check_single_process_preemption",
    "chief_from_tf_config",
]

_TASK_TYPES = ("chief", "worker", "evaluator", "ps")
_WAY_OUT = "fix TF_CONFIG, or pass chief=True on exactly one process and chief=False on the others"


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
        raise _error(f"is not valid JSON ({exc})") from None
    if not isinstance(config, Mapping):
        raise _error(f"is a JSON {type(config).__name__}, not an object")
    cluster = _cluster_of(config.get("cluster"))
    task = config.get("task") or {}
    if not isinstance(task, Mapping):
        raise _error(f"has a 'task' that is a {type(task).__name__}, not an object")
    kind = task.get("type")
    tasks = sum(len(addresses) for addresses in cluster.values())
    if kind is None:
        if tasks > 1:
            raise _error(f"describes a cluster of {tasks} tasks but no 'task' for this process")
        return True
    index = _index_of(task.get("index", 0))
    if kind not in _TASK_TYPES:
        raise _error(f"has task type {kind!r}; expected one of {', '.join(_TASK_TYPES)}")
    if len(cluster.get("chief", ())) > 1:
        raise _error(f"has {len(cluster['chief'])} chiefs in its cluster; at most one may write")
    if kind != "evaluator":
        if kind not in cluster:
            have = ", ".join(sorted(cluster)) or "nothing"
            raise _error(f"has task type {kind!r}, which its cluster (of {have}) does not have")
        if index >= len(cluster[kind]):
            raise _error(
                f"has task {kind!r} index {index}, but its cluster has "
                f"{len(cluster[kind])} {kind!r} task(s)"
            )
    if kind == "chief":
        return True
    return kind == "worker" and index == 0 and "chief" not in cluster


def _cluster_of(value: Any) -> dict[str, list[Any]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _error(f"has a 'cluster' that is a {type(value).__name__}, not an object")
    cluster: dict[str, list[Any]] = {}
    for kind, addresses in value.items():
        if not isinstance(addresses, list):
            raise _error(f"has cluster job {kind!r} that is not a list of addresses")
        cluster[str(kind)] = addresses
    return cluster


def _index_of(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(f"has task index {value!r}; expected an integer from 0")
    return value


def _error(problem: str) -> ClusterError:
    return ClusterError(f"TF_CONFIG {problem}, so which process writes is not known; {_WAY_OUT}")


def check_single_process_preemption(processes: int) -> None:
    """Refuse ``save_on_preemption`` on a cluster of several processes.

    A signal reaches one process; every process must stop at the same step,
    which needs the flag agreed in a collective at every step. Until that
    exists, a silent stop of one worker (the others waiting in their next
    collective) is refused.

    Raises:
        ClusterError: more than one process trains.
    """
    if processes > 1:
        raise ClusterError(
            f"save_on_preemption=True on a cluster of {processes} processes: a signal "
            "reaches one process, and the others would wait for it at their next step; "
            "pass save_on_preemption=False and save with an integer save_freq, or train "
            "in one process"
        )


def check_single_process_clock(processes: int, save_freq: object) -> None:
    """Refuse a wall-clock ``save_freq`` on a cluster of several processes.

    Every process names every checkpoint; saves decided by each process's
    clock would fall at different steps. Until the chief's decision is
    agreed at the step, that is refused rather than left to drift.

    Raises:
        ClusterError: more than one process trains.
    """
    if processes > 1:
        raise ClusterError(
            f"save_freq={save_freq!r} on a cluster of {processes} processes: each process's "
            "clock would decide at another step, and the names would differ; pass a number "
            "of batches or epochs instead"
        )
