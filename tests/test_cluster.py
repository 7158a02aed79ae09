"""Which process writes: the chief, from TF_CONFIG (the rule runs without Keras)."""

from __future__ import annotations

import json

import pytest

from ckptname import ClusterError
from ckptname._cluster import chief_from_tf_config

WAY_OUT = "fix TF_CONFIG, or pass chief=True on exactly one process and chief=False on the others"
TWO_WORKERS = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
WITH_CHIEF = {"chief": ["127.0.0.1:0"], "worker": ["127.0.0.1:1"]}


def config(cluster, task=None):
    return json.dumps({"cluster": cluster, **({"task": task} if task is not None else {})})


@pytest.mark.parametrize(
    ("raw", "writes"),
    [
        (None, True),
        ("", True),
        (config(TWO_WORKERS, {"type": "worker", "index": 0}), True),
        (config(TWO_WORKERS, {"type": "worker", "index": 1}), False),
        (config(WITH_CHIEF, {"type": "chief", "index": 0}), True),
        (config(WITH_CHIEF, {"type": "worker", "index": 0}), False),
        (config({**WITH_CHIEF, "ps": ["127.0.0.1:3"]}, {"type": "ps", "index": 0}), False),
        # An evaluator trains nothing: it never writes training checkpoints.
        (config(TWO_WORKERS, {"type": "evaluator", "index": 0}), False),
        (config({"worker": ["127.0.0.1:1"]}), True),
    ],
    ids=["unset", "empty", "worker-0", "worker-1", "chief", "worker-0-beside-a-chief", "ps",
         "evaluator", "one-task-no-task-entry"],
)  # fmt: skip
def test_the_chief_is_the_chief_task_else_worker_0(raw, writes):
    assert chief_from_tf_config(raw) is writes


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("{not json", "is not valid JSON (Expecting property name enclosed in double quotes: "
                      "line 1 column 2 (char 1))"),
        ("[1, 2]", "is a JSON list, not an object"),
        (config(TWO_WORKERS), "describes a cluster of 2 tasks but no 'task' for this process"),
        (config(TWO_WORKERS, {"type": "chief", "index": 0}),
         "has task type 'chief', which its cluster (of worker) does not have"),
        (config(TWO_WORKERS, {"type": "worker", "index": 2}),
         "has task 'worker' index 2, but its cluster has 2 'worker' task(s)"),
        (config(TWO_WORKERS, {"type": "worker", "index": "0"}),
         "has task index '0'; expected an integer from 0"),
        (config(TWO_WORKERS, {"type": "trainer", "index": 0}),
         "has task type 'trainer'; expected one of chief, worker, evaluator, ps"),
        (config({"chief": ["a:1", "b:2"]}, {"type": "chief", "index": 0}),
         "has 2 chiefs in its cluster; at most one may write"),
        (config({"worker": "127.0.0.1:1"}, {"type": "worker", "index": 0}),
         "has cluster job 'worker' that is not a list of addresses"),
    ],
    ids=["bad-json", "not-an-object", "no-task", "task-not-in-cluster", "index-out-of-range",
         "index-not-int", "unknown-type", "two-chiefs", "addresses-not-a-list"],
)  # fmt: skip
def test_a_tf_config_that_does_not_say_who_writes_is_an_error_not_a_guess(raw, problem):
    with pytest.raises(ClusterError) as info:
        chief_from_tf_config(raw)
    assert str(info.value) == (
        f"TF_CONFIG {problem}, so which process writes is not known; {WAY_OUT}"
    )
