"""Two-process training clusters on 127.0.0.1: one writer, identical names, resume on every worker.

Each test starts real worker processes (``cluster_worker.py``): two TensorFlow
``MultiWorkerMirroredStrategy`` workers on a local folder, and two JAX processes
(``jax.distributed``, ``keras.distribution.DataParallel``) on the S3 server. A
cluster trains without interruption; a second cluster on another folder is
SIGKILLed as a whole in the middle of an epoch and restarted with
``save_on_preemption``; only its second worker is sent SIGTERM, and every worker
stops at the same step with one checkpoint; restarted again, it resumes on every
worker and finishes. Both must end with the same checkpoints, and each worker
must have computed the names the chief wrote. One more cluster saves by the
chief's clock (``save_freq="2s"``) while the other's clock runs three times as
fast: every worker names the same checkpoints. TensorFlow workers after the first
run get no ``TF_CONFIG``: their strategy is given a cluster resolver, as on Slurm;
the killed run and the last one call ``fit`` inside ``with strategy.scope():``.
One more cluster per backend is misconfigured in each way the processes must
catch together (two writers, none, other folders, other settings): every worker
gets the same ``ClusterError``, and nothing is written.

A cluster that does not finish in time (a collective some worker never joined)
is stopped: every worker's stacks are dumped (``faulthandler`` on ``SIGUSR1``) and
the test fails with them. Nothing here is left running.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ckptname._metadata import SIDECAR_SUFFIX, STATE_NAME

WORKER = Path(__file__).with_name("cluster_worker.py")
TEMPLATE = "e{epoch:02d}-b{batch:04d}-{loss:.4f}.keras"
KILL_AT = 14  # in the middle of epoch 2, after the save at batch 12
# The preemption checkpoint, resumed from 12: while fit_resumed finishes epoch 2.
SIGNAL_AT = 14
DEADLINE = 120  # seconds for one cluster run; the workers dump their stacks and exit after it
# Saves every 4 global batches over 3 epochs of 8, keeping the last 2:
# b0004 (mid-epoch), b0008 (an epoch's end), ... b0024.
SAVED_AT = [4, 8, 12, 16, 20, 24]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def stop_stuck(procs: list[subprocess.Popen[bytes]], logs: list[Path], why: str) -> None:
    """Dump every live worker's stacks, kill it, and fail with what each printed."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGUSR1)
    time.sleep(2)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    pytest.fail(f"{why}\n{outputs(logs)}", pytrace=False)


def outputs(logs: list[Path]) -> str:
    """The end of what each worker printed (its stacks, after a dump)."""
    return "\n".join(f"--- worker {i} ---\n{log.read_text()[-6000:]}" for i, log in enumerate(logs))


def run_cluster(
    workdir: Path, backend: str, filepath: str, phase: str, *, kill_at: int | None = None,
    s3: str | None = None, background: bool = False, chief: bool | None = None,
    error: str | None = None, want: list[int | None] | None = None, **extra: Any,
) -> list[dict[str, Any]]:  # fmt: skip
    """Run one two-process cluster to its end; each worker's report.

    With ``error``, the workers must stop with the exit codes ``want`` (1 on
    each by default; ``None`` is any failure), and each whose code must be 1
    must have printed ``error``;
    workers still running once one stopped are killed (the cluster is stopped
    as a whole). ``extra`` goes to the workers' specs as it is.

    With ``kill_at``, every worker stops after that global batch and says so in
    its report; the test then SIGKILLs the process group of the cluster, every
    worker at once (a worker that outlived a dead peer by a moment could be
    ended by its backend instead).
    """
    ports = free_ports(2)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    reports: list[Path] = []
    for index in range(2):
        spec = {
            "index": index, "ports": ports, "filepath": filepath, "kill_at": kill_at,
            "background": background, "chief": chief, **extra,
            "deadline": DEADLINE, "report": str(workdir / f"{phase}-{index}.report.json"),
            "s3": None if s3 is None else {"endpoint": s3, "key": f"worker-{index}"},
        }  # fmt: skip
        spec_path = workdir / f"{phase}-{index}.spec.json"
        spec_path.write_text(json.dumps(spec))
        env = {
            **os.environ,
            "KERAS_BACKEND": backend,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "CUDA_VISIBLE_DEVICES": "",
            "JAX_PLATFORMS": "cpu",
            # The S3 server tells the workers apart by the key they sign with.
            "AWS_ACCESS_KEY_ID": f"worker-{index}",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        env.pop("TF_CONFIG", None)
        env.pop("AWS_SESSION_TOKEN", None)
        log = workdir / f"{phase}-{index}.log"
        # Both workers in one process group, the first worker's: killed at once.
        group = procs[0].pid if procs else 0
        with open(log, "wb") as out:
            command = [sys.executable, str(WORKER), str(spec_path)]
            join = partial(os.setpgid, 0, group)
            procs.append(subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                          env=env, preexec_fn=join))  # fmt: skip
        logs.append(log)
        reports.append(Path(spec["report"]))
    deadline = time.monotonic() + DEADLINE - 10
    first_end: float | None = None
    try:
        while any(p.poll() is None for p in procs):
            now = time.monotonic()
            if now > deadline:
                why = f"{backend} cluster ({phase}) still running after {DEADLINE - 10} s"
                stop_stuck(procs, logs, why + ": a collective some worker never joined?")
            if kill_at is not None and all(paused(report, kill_at) for report in reports):
                os.killpg(procs[0].pid, signal.SIGKILL)
            ended = [p.returncode for p in procs if p.returncode is not None]
            if first_end is None and any(code != 0 for code in ended):
                first_end = now
            if first_end is not None and now - first_end > (5 if error is not None else 10):
                if error is not None:
                    # Waiting for a peer that stopped: the cluster is stopped as a whole.
                    for p in procs:
                        if p.poll() is None:
                            p.kill()
                else:
                    stop_stuck(procs, logs, f"{backend} cluster ({phase}): a worker ended with "
                               f"{ended} and the others did not stop")  # fmt: skip
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    if want is None:
        want = [-signal.SIGKILL] * 2 if kill_at is not None else [1, 1] if error else [0, 0]
    if not all(code != 0 if wanted is None else code == wanted
               for code, wanted in zip(codes, want, strict=True)):  # fmt: skip
        pytest.fail(f"{backend} cluster ({phase}) exited with {codes}, expected {want}\n"
                    f"{outputs(logs)}", pytrace=False)  # fmt: skip
    printed = outputs(logs)
    if error is not None:
        failed = [log for log, code in zip(logs, want, strict=True) if code == 1]
        assert all(error in log.read_text() for log in failed), printed
        return []
    # No warning (a background save done synchronously, say), except that a chief
    # restarted after a kill takes over the lock the killed one left.
    warned = [line for line in printed.splitlines() if "CkptnameWarning" in line]
    assert [w for w in warned if "that process is no longer running" not in w] == [], printed
    return [json.loads(path.read_text()) for path in reports]


def paused(report: Path, at: int) -> bool:
    """Whether the worker writing ``report`` has stopped after global batch ``at``."""
    try:
        return bool(json.loads(report.read_text()).get("paused_at") == at)
    except (FileNotFoundError, ValueError):  # not written yet
        return False


def check_workers(*runs: list[dict[str, Any]]) -> None:
    """In each run: one cluster of two, one writer, every name computed by every worker."""
    for run in runs:
        chief, other = run
        assert chief["replicas"] == other["replicas"] == 2  # one cluster of two processes
        assert (chief["chief"], other["chief"]) == (True, False)
        assert chief["names"] == other["names"]  # every worker names every checkpoint alike
        assert other["writes"] == []  # the non-chief wrote nothing in the folder


def check_run(whole: list[dict[str, Any]], killed: list[dict[str, Any]],
              preempted: list[dict[str, Any]], resumed: list[dict[str, Any]]) -> None:  # fmt: skip
    """What every worker computed, in the four runs."""
    check_workers(whole, killed, preempted, resumed)
    names = whole[0]["names"]
    assert [int(name.split("-b")[1][:4]) for name in names] == SAVED_AT
    # Killed after batch 14: every worker resumes from the save at batch 12,
    # in the middle of epoch 2, and names the next save as the whole run did.
    assert killed[0]["names"] == names[:3]
    assert [r["resumed_from"] for r in preempted] == [12, 12]
    # SIGTERM reached the second worker alone, after batch 13: both stopped
    # after batch 14, fit_resumed returning normally, with the checkpoint of batch 14.
    assert [(r["batch"], r["preempted"]) for r in preempted] == [(SIGNAL_AT, True)] * 2
    assert len(preempted[0]["names"]) == 1
    assert preempted[0]["names"][0].startswith(f"e02-b{SIGNAL_AT:04d}-")
    assert [r["iterations"] for r in preempted] == [SIGNAL_AT, SIGNAL_AT]
    # Resumed from it on every worker, the rest is named as the whole run named it.
    assert [r["resumed_from"] for r in resumed] == [SIGNAL_AT, SIGNAL_AT]
    assert resumed[0]["names"] == names[3:]
    assert [r["batch"] for r in resumed] == [r["batch"] for r in whole] == [24, 24]
    assert [r["iterations"] for r in resumed] == [r["iterations"] for r in whole] == [24, 24]
    assert [r["preempted"] for r in (*whole, *resumed)] == [False] * 4


# A wall-clock run: 24 batches of 0.25 s and more, a save every 2 s; the non-chief's clock is fast.
CLOCK = {"save_freq": "2s", "keep_last": None, "batch_sleep": 0.25, "clock_rate": 3.0}


def check_clock_run(reports: list[dict[str, Any]], sidecars: list[str]) -> None:
    """Saves about every 2 s by the chief's clock, named alike on both workers."""
    check_workers(reports)
    names = reports[0]["names"]
    assert len(names) >= 2, names  # 6 s and more of training
    metas = [json.loads(text) for text in sidecars]
    assert [m["batch"] for m in metas] == [int(name.split("-b")[1][:4]) for name in names]
    gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(metas)]
    assert all(gap >= 1.9 for gap in gaps), gaps  # never before the interval


def check_preemption_checkpoint(listing: list[str], sidecar: str) -> None:
    """After the preempted run: the save at 12 and the preemption checkpoint at 14, so marked."""
    names = sorted(n for n in listing if n.endswith(".keras"))
    assert [int(n.split("-b")[1][:4]) for n in names] == [12, SIGNAL_AT]
    assert json.loads(sidecar)["preempted"] is True


def misconfigurations(root: str) -> list[dict[str, list[Any]]]:
    """Each way the processes of a cluster can be told different things (see cluster_worker)."""
    same = [f"{root}/same/{TEMPLATE}"] * 2
    return [
        {"chief": [True, True], "filepath": same, "save_freq": [4, 4],
         "save_on_preemption": [False, False]},
        {"chief": [False, False], "filepath": same, "save_freq": [4, 4],
         "save_on_preemption": [False, False]},
        {"chief": [None, None], "filepath": [f"{root}/{i}/{TEMPLATE}" for i in range(2)],
         "save_freq": [4, 4], "save_on_preemption": [False, False]},
        {"chief": [None, None], "filepath": same, "save_freq": [4, "epoch"],
         "save_on_preemption": [True, False]},
    ]  # fmt: skip


ONE_WRITER = ("exactly one may: pass chief=True on one process only, or leave chief=None on "
              "every process so that the cluster's configuration picks one")  # fmt: skip
SAME_SETTINGS = ("every process must give BatchAwareCheckpoint the same filepath, save_freq "
                 "and save_on_preemption, since each names every checkpoint and the chief "
                 "alone writes")  # fmt: skip


def check_misconfigured(reports: list[dict[str, Any]], root: str) -> None:
    """Every worker got the same ClusterError for each misconfiguration, word for word."""
    error = "ckptname._errors.ClusterError"
    expected = [
        [error, f"2 of the 2 processes would write the checkpoint folder (processes 0, 1); "
                f"{ONE_WRITER}"],
        [error, f"none of the 2 processes would write the checkpoint folder, so no checkpoint "
                f"would be saved; {ONE_WRITER}"],
        [error, f"the 2 processes of this cluster were given different settings: the "
                f"filepath's root is '{root}/0' on process 0, '{root}/1' on process 1; "
                f"{SAME_SETTINGS}"],
        [error, "the 2 processes of this cluster were given different settings: save_freq is "
                "4 on process 0, 'epoch' on process 1; save_on_preemption is True on process "
                f"0, False on process 1; {SAME_SETTINGS}"],
    ]  # fmt: skip
    assert [r["errors"] for r in reports] == [expected, expected]
    assert reports[1]["writes"] == []


def only_checkpoints(listing: list[str], names: list[str]) -> None:
    """The last two checkpoints, their sidecars and the state file: no temp file, no lock."""
    kept = names[-2:]
    assert sorted(listing) == sorted([*kept, *(n + SIDECAR_SUFFIX for n in kept), STATE_NAME])


def loads(paths: list[str]) -> None:
    import keras

    for path in paths:
        model = keras.saving.load_model(path)
        assert model.optimizer is not None and int(model.optimizer.iterations) > 0


def test_two_tensorflow_workers_write_once_name_alike_and_resume_after_a_kill_and_a_preemption(
    tmp_path,
):
    pytest.importorskip("tensorflow")
    whole_root, killed_root = tmp_path / "whole", tmp_path / "killed"
    whole = run_cluster(tmp_path, "tensorflow", str(whole_root / TEMPLATE), "whole")
    # From here on, no TF_CONFIG: the strategy is given a cluster resolver. The killed
    # run calls resume and fit inside `with strategy.scope():`, saving synchronously.
    run = {"launch": "resolver"}
    killed = run_cluster(tmp_path, "tensorflow", str(killed_root / TEMPLATE), "killed",
                         kill_at=KILL_AT, in_scope=True, **run)  # fmt: skip
    preempted = run_cluster(tmp_path, "tensorflow", str(killed_root / TEMPLATE), "preempted",
                            save_on_preemption=True, signal_at=SIGNAL_AT, signal_to=1,
                            **run)  # fmt: skip
    listing = os.listdir(killed_root)
    sidecar = next(n for n in listing if f"-b{SIGNAL_AT:04d}-" in n and n.endswith(SIDECAR_SUFFIX))
    check_preemption_checkpoint(listing, (killed_root / sidecar).read_text())
    # The restarted chief saves in the background, inside the strategy's scope: the
    # same files, training not waiting; every worker shares its (absent) preemption
    # flag at every batch.
    resumed = run_cluster(tmp_path, "tensorflow", str(killed_root / TEMPLATE), "resumed",
                          background=True, save_on_preemption=True, in_scope=True,
                          **run)  # fmt: skip
    check_run(whole, killed, preempted, resumed)
    clock_root = tmp_path / "clock"
    clock = run_cluster(tmp_path, "tensorflow", str(clock_root / TEMPLATE), "clock", **CLOCK,
                        **run)  # fmt: skip
    check_clock_run(clock, [(clock_root / (name + SIDECAR_SUFFIX)).read_text()
                            for name in clock[0]["names"]])  # fmt: skip
    names = whole[0]["names"]
    only_checkpoints(os.listdir(whole_root), names)
    only_checkpoints(os.listdir(killed_root), names)  # no temporary file left
    loads([str(root / name) for root in (whole_root, killed_root) for name in names[-2:]])


def test_misconfigured_tensorflow_workers_all_stop_with_the_same_cluster_error(tmp_path):
    pytest.importorskip("tensorflow")
    root = str(tmp_path / "misconfigured")
    # Launched with a cluster resolver and no TF_CONFIG, where nothing else says
    # who the others are or what they were given.
    reports = run_cluster(tmp_path, "tensorflow", f"{root}/same/{TEMPLATE}", "misconfigured",
                          launch="resolver", misconfigured=misconfigurations(root))  # fmt: skip
    check_misconfigured(reports, root)
    assert not os.path.exists(root)  # nothing was written, not even a lock
    # The callback given to the chief alone: the chief stops with an error after its
    # wait (3 s here) instead of hanging; the other fails in its next collective.
    run_cluster(tmp_path, "tensorflow", f"{root}/chief-only/{TEMPLATE}", "chief-only",
                launch="resolver", without_callback=True, agree_timeout=3, want=[1, None],
                error="ckptname._errors.ClusterError: a process of the 2 did not begin "
                "training with a BatchAwareCheckpoint within 3 s; every process of the cluster "
                "must run the callback (only the chief writes): pass it to fit on every "
                "process")  # fmt: skip


@pytest.fixture
def recording_s3() -> Iterator[Any]:
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.moto_server.threaded_moto_server")
    from s3_util import CountingMotoServer, s3_at

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = CountingMotoServer()
    server.start()
    try:
        with s3_at(server.endpoint):
            yield server
    finally:
        server.stop()


def test_two_jax_processes_write_once_to_s3_name_alike_and_resume_after_a_kill_and_a_preemption(
    tmp_path, recording_s3
):
    pytest.importorskip("jax")
    import fsspec

    fs = fsspec.filesystem("s3")
    fs.mkdir("cluster")
    url = "s3://cluster/{run}/" + TEMPLATE
    run = {"s3": recording_s3.endpoint}
    # Processes told different things: each raises the same ClusterError at train
    # begin, before any training, and nothing is written.
    misconfigured = run_cluster(tmp_path, "jax", url.replace("{run}", "misconfigured/same"),
                                "misconfigured", misconfigured=misconfigurations(
                                    "s3://cluster/misconfigured"), **run)  # fmt: skip
    check_misconfigured(misconfigured, "s3://cluster/misconfigured")
    # The callback given to the chief alone: the chief stops with an error after its
    # wait (3 s here), instead of hanging; the other fails in its first step, whose
    # peer is gone (or is killed).
    run_cluster(tmp_path, "jax", url.replace("{run}", "chief-only"), "chief-only",
                without_callback=True, agree_timeout=3, want=[1, None],
                error="ckptname._errors.ClusterError: process 1 of the 2 did not begin training "
                "with a BatchAwareCheckpoint within 3 s; every process of the cluster must run "
                "the callback (only the chief writes): pass it to fit on every process",
                **run)  # fmt: skip
    whole = run_cluster(tmp_path, "jax", url.replace("{run}", "whole"), "whole", **run)
    killed = run_cluster(tmp_path, "jax", url.replace("{run}", "killed"), "killed",
                         kill_at=KILL_AT, **run)  # fmt: skip
    preempted = run_cluster(tmp_path, "jax", url.replace("{run}", "killed"), "preempted",
                            save_on_preemption=True, signal_at=SIGNAL_AT, signal_to=1,
                            **run)  # fmt: skip
    listing = [p.rsplit("/", 1)[1] for p in fs.ls("cluster/killed", refresh=True)]
    sidecar = next(n for n in listing if f"-b{SIGNAL_AT:04d}-" in n and n.endswith(SIDECAR_SUFFIX))
    check_preemption_checkpoint(listing, fs.cat(f"cluster/killed/{sidecar}").decode())
    resumed = run_cluster(tmp_path, "jax", url.replace("{run}", "killed"), "resumed",
                          background=True, save_on_preemption=True, **run)  # fmt: skip
    check_run(whole, killed, preempted, resumed)
    clock = run_cluster(tmp_path, "jax", url.replace("{run}", "clock"), "clock", **CLOCK, **run)
    check_clock_run(clock, [fs.cat(f"cluster/clock/{name}{SIDECAR_SUFFIX}").decode()
                            for name in clock[0]["names"]])  # fmt: skip
    assert [p for p in fs.find("cluster") if "misconfigured" in p] == []  # nothing written
    names = whole[0]["names"]
    for folder in ("whole", "killed"):
        only_checkpoints([p.rsplit("/", 1)[1] for p in fs.ls(f"cluster/{folder}", refresh=True)],
                         names)  # fmt: skip
    # The process that is not the chief read the folder and wrote nothing to it.
    assert recording_s3.by("worker-0")
    assert {r.op for r in recording_s3.by("worker-1")} <= {"get", "head", "list flat",
                                                           "list one folder"}  # fmt: skip
    local = []
    for folder in ("whole", "killed"):
        for name in names[-2:]:
            local.append(str(tmp_path / folder / name))
            fs.get(f"cluster/{folder}/{name}", local[-1])
    loads(local)


def test_two_torch_processes_in_a_ddp_loop_write_once_name_alike_and_resume_after_a_kill(tmp_path):
    """Keras's multi-GPU PyTorch guide on CPU (gloo), with the callback driven by hand."""
    pytest.importorskip("torch")
    root = tmp_path / "torch"
    wrong = misconfigurations(f"{root}/misconfigured")
    misconfigured = run_cluster(tmp_path, "torch", f"{root}/misconfigured/same/{TEMPLATE}",
                                "misconfigured", misconfigured=wrong)  # fmt: skip
    check_misconfigured(misconfigured, f"{root}/misconfigured")
    assert not os.path.exists(f"{root}/misconfigured")  # nothing was written, not even a lock
    whole = run_cluster(tmp_path, "torch", str(root / "whole" / TEMPLATE), "whole")
    killed = run_cluster(tmp_path, "torch", str(root / "killed" / TEMPLATE), "killed",
                         kill_at=KILL_AT)  # fmt: skip
    preempted = run_cluster(tmp_path, "torch", str(root / "killed" / TEMPLATE), "preempted",
                            save_on_preemption=True, signal_at=SIGNAL_AT, signal_to=1)  # fmt: skip
    listing = os.listdir(root / "killed")
    sidecar = next(n for n in listing if f"-b{SIGNAL_AT:04d}-" in n and n.endswith(SIDECAR_SUFFIX))
    check_preemption_checkpoint(listing, (root / "killed" / sidecar).read_text())
    resumed = run_cluster(tmp_path, "torch", str(root / "killed" / TEMPLATE), "resumed",
                          background=True, save_on_preemption=True)  # fmt: skip
    check_run(whole, killed, preempted, resumed)
    # Killed, preempted and resumed twice, every process ends with the weights of
    # the uninterrupted run.
    assert resumed[0]["weights"] == resumed[1]["weights"] == whole[0]["weights"]
    clock = run_cluster(tmp_path, "torch", str(root / "clock" / TEMPLATE), "clock", **CLOCK)
    check_clock_run(clock, [(root / "clock" / (name + SIDECAR_SUFFIX)).read_text()
                            for name in clock[0]["names"]])  # fmt: skip
    names = whole[0]["names"]
    only_checkpoints(os.listdir(root / "whole"), names)
    only_checkpoints(os.listdir(root / "killed"), names)  # no temporary file left
