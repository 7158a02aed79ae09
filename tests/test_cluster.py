"""The cluster's rules, without Keras: the chief, and what every process must share."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ckptname import ClusterError
from ckptname._cluster import (
    Settings,
    check_agreement,
    check_cluster_preemption,
    chief_from_task,
    chief_from_tf_config,
    late_error,
    place_in_cluster,
)

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


RESOLVER_WAY_OUT = (
    "fix the cluster resolver given to the strategy, or pass chief=True on exactly one process "
    "and chief=False on the others"
)


@pytest.mark.parametrize(
    ("cluster", "kind", "index", "writes", "place"),
    [
        (TWO_WORKERS, "worker", 0, True, (0, 2)),
        (TWO_WORKERS, "worker", 1, False, (1, 2)),
        (WITH_CHIEF, "chief", 0, True, (0, 2)),
        (WITH_CHIEF, "worker", 0, False, (1, 2)),
        # ClusterSpec.as_dict() gives a job whose task indices have gaps as a dict.
        ({"worker": {0: "127.0.0.1:1", 1: "127.0.0.1:2"}}, "worker", 1, False, (1, 2)),
        ({"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]}, "ps", 0, False, (-1, 1)),
        ({}, None, None, True, (-1, 1)),
    ],
    ids=["worker-0", "worker-1", "chief", "worker-0-beside-a-chief", "sparse", "ps", "empty"],
)  # fmt: skip
def test_a_strategy_s_resolver_names_the_chief_by_the_tf_config_rule(
    cluster, kind, index, writes, place
):
    assert chief_from_task(cluster, kind, index) is writes
    assert place_in_cluster(cluster, kind, index) == place


@pytest.mark.parametrize(
    ("cluster", "kind", "index", "problem"),
    [
        (TWO_WORKERS, None, None, "describes a cluster of 2 tasks but no 'task' for this process"),
        (TWO_WORKERS, "worker", 2, "has task 'worker' index 2, but its cluster has 2 'worker' "
                                   "task(s)"),
        ({"chief": ["a:1", "b:2"]}, "chief", 0, "has 2 chiefs in its cluster; at most one may "
                                                "write"),
    ],
    ids=["no-task", "index-out-of-range", "two-chiefs"],
)  # fmt: skip
def test_a_resolver_that_does_not_say_who_writes_is_an_error_not_a_guess(
    cluster, kind, index, problem
):
    with pytest.raises(ClusterError) as info:
        chief_from_task(cluster, kind, index)
    assert str(info.value) == (
        f"the cluster resolver of the model's strategy {problem}, so which process writes is not "
        f"known; {RESOLVER_WAY_OUT}"
    )


def settings(**changes: object) -> Settings:
    base = Settings(writes=False, root="/runs/a", template="b{batch}.keras", save_freq="4",
                    schedule="SaveFreq(batches=4)", save_on_preemption=False)  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


ONE_WRITER = ("exactly one may: pass chief=True on one process only, or leave chief=None on "
              "every process so that the cluster's configuration picks one")  # fmt: skip
SAME = ("every process must give BatchAwareCheckpoint the same filepath, save_freq and "
        "save_on_preemption, since each names every checkpoint and the chief alone "
        "writes")  # fmt: skip


@pytest.mark.parametrize(
    "gathered",
    [
        [settings(writes=True), settings()],
        [settings(), settings(), settings(writes=True)],
        # The same schedule written two ways agrees.
        [settings(writes=True), settings(save_freq="'4ba'")],
    ],
    ids=["chief-first", "chief-last", "4-and-4ba"],
)
def test_processes_that_share_their_settings_and_have_one_writer_agree(gathered):
    check_agreement(gathered)


@pytest.mark.parametrize(
    ("gathered", "message"),
    [
        ([settings(writes=True), settings(writes=True)],
         f"2 of the 2 processes would write the checkpoint folder (processes 0, 1); {ONE_WRITER}"),
        ([settings(), settings(), settings()],
         "none of the 3 processes would write the checkpoint folder, so no checkpoint would be "
         f"saved; {ONE_WRITER}"),
        ([settings(writes=True), settings(root="/tmp/x")],
         "the 2 processes of this cluster were given different settings: the filepath's root "
         f"is '/runs/a' on process 0, '/tmp/x' on process 1; {SAME}"),
        ([settings(writes=True), settings(template="b{batch:04d}.keras"), settings()],
         "the 3 processes of this cluster were given different settings: the filepath's "
         "template is 'b{batch}.keras' on processes 0, 2, 'b{batch:04d}.keras' on process 1; "
         f"{SAME}"),
        ([settings(writes=True), settings(save_freq="'epoch'", schedule="SaveFreq(epochs=1)")],
         "the 2 processes of this cluster were given different settings: save_freq is 4 on "
         f"process 0, 'epoch' on process 1; {SAME}"),
        # Settings are checked before writers; every difference is named.
        ([settings(writes=True, save_on_preemption=True), settings(writes=True, root="/b")],
         "the 2 processes of this cluster were given different settings: the filepath's root "
         "is '/runs/a' on process 0, '/b' on process 1; save_on_preemption is True on process "
         f"0, False on process 1; {SAME}"),
        ([settings(writes=True)] * 9,
         "9 of the 9 processes would write the checkpoint folder (processes 0, 1, 2, 3, 4, 5 "
         f"and 3 more); {ONE_WRITER}"),
    ],
    ids=["two-writers", "none", "roots", "templates", "save-freq", "several", "many"],
)  # fmt: skip
def test_processes_that_disagree_get_an_error_naming_what_differs_and_where(gathered, message):
    with pytest.raises(ClusterError) as info:
        check_agreement(gathered)
    assert str(info.value) == message


def test_settings_reach_the_other_processes_unchanged():
    sent = settings(writes=True, root="s3://bucket/run", template="é{batch}.keras")
    assert Settings.decode(sent.encode()) == sent


@pytest.mark.parametrize(
    ("process", "message"),
    [
        (1, "process 1 of the 2 did not begin training with a BatchAwareCheckpoint within 3 s; "
            "every process of the cluster must run the callback (only the chief writes): pass "
            "it to fit on every process"),
        (None, "a process of the 2 did not begin training with a BatchAwareCheckpoint within "
               "2.5 s; every process of the cluster must run the callback (only the chief "
               "writes): pass it to fit on every process"),
    ],
    ids=["known", "unknown"],
)  # fmt: skip
def test_a_process_that_never_arrives_is_named_where_the_channel_knows_it(process, message):
    assert str(late_error(2, 3 if process else 2.5, process)) == message


def test_preemption_is_refused_only_on_a_cluster_without_a_channel():
    check_cluster_preemption(1, "TF_CONFIG")
    check_cluster_preemption(4, None)  # the processes share the signal
    with pytest.raises(ClusterError) as info:
        check_cluster_preemption(2, "TF_CONFIG")
    assert str(info.value) == (
        "save_on_preemption=True on a cluster of 2 processes (TF_CONFIG): a signal reaches one "
        "process, and ckptname shares it with the others only under TensorFlow's "
        "MultiWorkerMirroredStrategy, JAX's jax.distributed and PyTorch's torch.distributed; "
        "here the others would wait for it at their next step; pass save_on_preemption=False "
        "and save with an integer save_freq, or train in one process"
    )
