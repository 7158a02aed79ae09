"""Object stores under faults, against a real S3-compatible server (moto on 127.0.0.1).

The server answers chosen requests with HTTP 500, goes away (its port then
refuses connections) and comes back on the same port; botocore is told to
try each request once, so that what the tests see is what ckptname does
(``s3_util.NO_LIBRARY_RETRIES``). Each test writes under a fresh prefix of
one bucket.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from s3_util import NO_LIBRARY_RETRIES, CountingMotoServer, s3_at  # noqa: E402

from ckptname import (  # noqa: E402  (after the importorskip above)
    CheckpointError,
    CheckpointSaveError,
    CkptnameError,
    find_best,
    find_latest,
    read_metadata,
    scan,
)
from ckptname._errors import StorageError  # noqa: E402
from ckptname._metadata import SIDECAR_SUFFIX, STATE_NAME, encode  # noqa: E402
from ckptname._transaction import CheckpointFolder  # noqa: E402
from ckptname.cli import main  # noqa: E402

BUCKET = "ckptname-faults"
INTERNAL_ERROR = "HTTP 500: We encountered an internal error. Please try again."


@pytest.fixture(scope="module")
def server() -> Iterator[CountingMotoServer]:
    """One moto S3 server for the module, fsspec pointed at it, botocore not retrying."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    moto = CountingMotoServer()
    moto.start()
    try:
        with s3_at(moto.endpoint, **NO_LIBRARY_RETRIES):
            fsspec.filesystem("s3").mkdir(BUCKET)
            yield moto
    finally:
        moto.stop()


@pytest.fixture
def root(server: CountingMotoServer) -> Iterator[str]:
    """A fresh ``s3://`` prefix; the server serves every request again afterwards."""
    yield f"s3://{BUCKET}/{uuid.uuid4().hex[:12]}"
    server.heal()
    if not server._server_ready_event.is_set():  # a test took it away
        server.start()


def s3() -> Any:
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return fs


def keys(root: str) -> list[str]:
    prefix = root.removeprefix("s3://")
    return sorted(p[len(prefix) + 1 :] for p in s3().find(prefix))


def meta(name: str, batch: int, template: str = "last.keras") -> dict[str, Any]:
    return {
        "format": "ckptname.checkpoint/1", "name": name, "template": template, "epoch": 1,
        "batch": batch, "batch_in_epoch": batch, "iterations": batch, "end_of_epoch": False,
        "steps_per_epoch": None, "metrics": {"loss": 1 / batch}, "extras": {}, "time": 0.0,
        "ckptname_version": "0", "save_weights_only": False,
    }  # fmt: skip


def save(folder: CheckpointFolder, name: str, batch: int) -> str:
    def write(target: str) -> None:
        with open(target, "wb") as fh:
            fh.write(f"model {batch}".encode())

    template = folder.template.text
    return folder.save(name, meta(name, batch, template), write, best=None, previous_best=None)


def child_env(server: CountingMotoServer) -> dict[str, str]:
    """The environment of a child process that reaches the server through fsspec's config."""
    options = {"endpoint_url": server.endpoint, "key": "testing", "secret": "testing"}
    return dict(os.environ, FSSPEC_S3=json.dumps(options))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ------------------------------------------------------------------ replacing never uncommits

# The PUTs of two saves of `last.keras` into a fresh root: the first writes the
# state file (marking the root), the model, its sidecar, the state file; the
# second the old sidecar naming both records (the 5th PUT), the model (6th),
# its sidecar (7th) and the state file (8th).
@pytest.mark.parametrize(
    ("nth", "step", "model", "batch"),
    [
        # Nothing changed yet: the old checkpoint stays as it was.
        (5, "write the sidecar 'last.keras.ckptname.json'", b"model 5", 5),
        # The upload fails: the old checkpoint stays as it was, committed, and
        # its sidecar still describes it.
        (6, "upload the checkpoint 'last.keras'", b"model 5", 5),
        # The commit marker fails: the new model stands under the name, and
        # readers take the new record the sidecar already held beside the old.
        (7, "write the sidecar 'last.keras.ckptname.json'", b"model 10", 10),
        # The state file fails: the new checkpoint is complete and committed.
        (8, "write the state file '.ckptname-state.json'", b"model 10", 10),
    ],
)
def test_a_replace_failing_on_the_nth_put_never_uncommits_the_checkpoint(
    server: CountingMotoServer, root: str, nth: int, step: str, model: bytes, batch: int
) -> None:
    folder = CheckpointFolder(f"{root}/last.keras")
    prefix = root.removeprefix(f"s3://{BUCKET}/") + "/"
    fault = server.fail("put", lambda key: key.startswith(prefix), skip=nth - 1, times=1)
    save(folder, "last.keras", 5)
    with pytest.raises(CheckpointSaveError) as info:
        save(folder, "last.keras", 10)
    puts = [r.key[len(prefix) :] for r in server.requests if r.op == "put" and prefix in r.key]
    assert fault.failed == 1 and len(puts) == nth and puts[-1] == step.split("'")[1]
    # Readers still find a complete, committed checkpoint.
    assert [r.name for r in scan(root, "last.keras")] == ["last.keras"]
    found = find_latest(root, "last.keras")
    assert found is not None and found.name == "last.keras"
    assert find_latest(root) == found
    assert read_metadata(f"{root}/last.keras")["batch"] == batch
    assert s3().cat_file(f"{root}/last.keras".removeprefix("s3://")) == model
    where = step.replace("'", f"'{root}/", 1)
    assert str(info.value) == f"could not {where}: {INTERNAL_ERROR}"


def test_a_replace_stopped_between_the_upload_and_its_sidecar_reads_as_the_new_checkpoint(
    server: CountingMotoServer, root: str
) -> None:
    folder = CheckpointFolder(f"{root}/last.keras")
    save(folder, "last.keras", 5)
    uploads = []

    def sidecar_after_the_upload(key: str) -> bool:
        if key.endswith("/last.keras"):
            uploads.append(key)
        return key.endswith("/last.keras" + SIDECAR_SUFFIX) and len(uploads) == 1

    server.fail("put", sidecar_after_the_upload, times=1)
    with pytest.raises(CheckpointSaveError, match="could not write the sidecar"):
        save(folder, "last.keras", 10)
    # The name holds the new model: every reader describes it by its own record,
    # never by the one of the model it replaced.
    assert s3().cat_file(f"{root}/last.keras".removeprefix("s3://")) == b"model 10"
    assert read_metadata(f"{root}/last.keras")["batch"] == 10
    assert [r.metadata["batch"] for r in scan(root, "last.keras")] == [10]  # type: ignore[index]
    # The next save replaces it as any other.
    server.heal()
    save(folder, "last.keras", 15)
    assert read_metadata(f"{root}/last.keras")["batch"] == 15
    assert "replacing" not in json.loads(s3().cat_file(
        f"{root}/last.keras{SIDECAR_SUFFIX}".removeprefix("s3://")))  # fmt: skip


def test_a_failed_new_save_on_s3_leaves_nothing_of_it(
    server: CountingMotoServer, root: str
) -> None:
    folder = CheckpointFolder(f"{root}/b{{batch:03d}}.keras")
    save(folder, "b005.keras", 5)
    server.fail("put", "b010.keras" + SIDECAR_SUFFIX, times=1)
    with pytest.raises(CheckpointSaveError, match="could not write the sidecar"):
        save(folder, "b010.keras", 10)
    assert keys(root) == [STATE_NAME, "b005.keras", "b005.keras" + SIDECAR_SUFFIX]
    assert find_latest(root).name == "b005.keras"  # type: ignore[union-attr]


# ------------------------------------------------------------------ every failure a CkptnameError


def test_refused_connections_are_a_storage_error_naming_the_url() -> None:
    port = free_port()  # nothing listens there
    root = f"s3://{BUCKET}/gone"
    with s3_at(f"http://127.0.0.1:{port}", **NO_LIBRARY_RETRIES):
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            find_latest(root)
        elapsed = time.monotonic() - started
        for call in (
            lambda: scan(root, "b{batch}.keras"),
            lambda: find_best(root, "loss", template="b{batch}-{loss:.2f}.keras"),
            lambda: read_metadata(f"{root}/b1.keras"),
        ):
            with pytest.raises(StorageError):
                call()
    error = info.value
    state = f"{root}/{STATE_NAME}"
    cause = (
        "EndpointConnectionError: Could not connect to the endpoint URL: "
        f'"http://127.0.0.1:{port}/{state.removeprefix("s3://")}"'
    )
    assert str(error) == f"could not read {state!r}: {cause} (tried 3 times)"
    assert (error.url, error.cause, error.attempts) == (state, cause, 3)
    assert isinstance(error, CheckpointError) and isinstance(error, CkptnameError)
    assert isinstance(error, OSError) and error.errno == 111  # ECONNREFUSED, kept
    assert type(error.__cause__).__name__ == "EndpointConnectionError"
    assert 1.25 <= elapsed < 10  # two pauses (0.25 s, 1 s), then the error


def test_a_save_to_a_refused_endpoint_is_a_checkpoint_save_error() -> None:
    port = free_port()
    root = f"s3://{BUCKET}/gone"
    with s3_at(f"http://127.0.0.1:{port}", **NO_LIBRARY_RETRIES):
        folder = CheckpointFolder(f"{root}/b{{batch:03d}}.keras")
        with pytest.raises(CheckpointSaveError) as info:
            save(folder, "b001.keras", 1)
    state = f"{root}/{STATE_NAME}"
    assert str(info.value) == (
        f"could not look up the state file {state!r}: EndpointConnectionError: Could not "
        f'connect to the endpoint URL: "http://127.0.0.1:{port}/{state.removeprefix("s3://")}"'
    )
    assert info.value.errno == 111


def test_a_killed_server_is_one_line_from_the_command_line(
    server: CountingMotoServer, root: str, capsys: pytest.CaptureFixture[str]
) -> None:
    save(CheckpointFolder(f"{root}/b{{batch:03d}}.keras"), "b001.keras", 1)
    server.stop()
    state = f"{root}/{STATE_NAME}"
    line = (
        f"could not read {state!r}: EndpointConnectionError: Could not connect to the "
        f'endpoint URL: "{server.endpoint}/{state.removeprefix("s3://")}" (tried 3 times)'
    )
    for command in (["ls", root], ["latest", root], ["best", root, "--monitor", "loss"]):
        capsys.readouterr()
        assert main(command) == 1
        out, err = capsys.readouterr()
        assert (out, err) == ("", f"ckptname {command[0]}: {line}\n")
    server.start()  # restarted on the same port; its objects are still there
    assert main(["latest", root]) == 0
    assert capsys.readouterr().out.startswith(f"{root}/b001.keras")


def test_a_read_while_the_server_restarts_is_retried_and_succeeds(
    server: CountingMotoServer, root: str
) -> None:
    save(CheckpointFolder(f"{root}/b{{batch:03d}}.keras"), "b001.keras", 1)
    server.stop()
    back = threading.Timer(0.6, server.start)  # between the 2nd attempt (0.25 s) and the 3rd
    back.start()
    try:
        started = time.monotonic()
        found = find_latest(root)
        elapsed = time.monotonic() - started
    finally:
        back.join()
    assert found is not None and found.name == "b001.keras"
    assert 0.6 <= elapsed < 5


def test_pruning_against_a_dead_server_is_an_os_error(
    server: CountingMotoServer, root: str
) -> None:
    """The callback turns an OSError of pruning into a CheckpointSaveError that
    on_save_error governs; a raw client error would stop training."""
    folder = CheckpointFolder(f"{root}/b{{batch:03d}}.keras")
    paths = [save(folder, f"b00{batch}.keras", batch) for batch in (1, 2, 3)]
    server.stop()
    with pytest.raises(OSError) as info:
        folder.prune(paths[-1], keep_last=1, keep_best=None, monitor="loss", mode="min",
                     protect=())  # fmt: skip
    assert isinstance(info.value, StorageError)
    server.start()
    server.fail("delete", "b001.keras")
    with pytest.raises(StorageError) as deleting:
        folder.prune(paths[-1], keep_last=1, keep_best=None, monitor="loss", mode="min",
                     protect=())  # fmt: skip
    assert str(deleting.value) == f"could not remove '{root}/b001.keras': {INTERNAL_ERROR}"


_BACKGROUND_FIT = """
import json, sys, warnings
import keras
import keras_util as ku
from ckptname.keras import BatchAwareCheckpoint
from s3_util import CountingMotoServer, NO_LIBRARY_RETRIES, s3_at

server = CountingMotoServer()
server.start()

class Outage(keras.callbacks.Callback):
    # The endpoint refuses connections from the end of batch 3 to the end of batch 8.
    def on_train_batch_end(self, batch, logs=None):
        if batch == 2:
            server.stop()
        elif batch == 7:
            server.start()

with s3_at(server.endpoint, **NO_LIBRARY_RETRIES):
    import fsspec
    fsspec.filesystem("s3").mkdir("ckptname-bg")
    ckpt = BatchAwareCheckpoint("s3://ckptname-bg/run/b{batch:03d}.keras", save_freq=2,
                                save_on_background=sys.argv[1] == "background",
                                on_save_error="warn")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ku.fit(ku.model(), [Outage(), ckpt], epochs=1)
    import ckptname
    print(json.dumps({
        "warnings": ku.ours(seen),
        "names": [r.name for r in ckptname.scan("s3://ckptname-bg/run", "b{batch:03d}.keras")],
    }))
server.stop()
"""


@pytest.mark.parametrize("how", ["background", "synchronous"])
def test_refused_connections_during_saves_follow_on_save_error_warn(how: str) -> None:
    """A real fit saving to S3 every 2 batches while the endpoint refuses connections
    for 5 batches: the failed saves are warnings, training goes on, the save after
    the outage lands."""
    pytest.importorskip("keras")
    tests = os.path.dirname(__file__)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tests, *sys.path]))
    done = subprocess.run(
        [sys.executable, "-c", _BACKGROUND_FIT, how],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["warnings"], done.stderr[-3000:]
    for message in report["warnings"]:
        assert re.fullmatch(
            r"could not [a-z ]+ 's3://ckptname-bg/run/[^']+': EndpointConnectionError: Could not "
            r"connect to the endpoint URL: \"http://127\.0\.0\.1:\d+/ckptname-bg/run/[^\"]+\"; "
            r"training continues \(on_save_error='warn'\)",
            message,
        ), message
    assert "b004.keras" not in report["names"]  # saved while the endpoint was away
    assert "b010.keras" in report["names"]  # saved after it came back


# ------------------------------------------------------------------ uploads left uncommitted

_KILLED_BEFORE_THE_SIDECAR = """
import os, signal, sys
from ckptname._storage import FsspecStorage
from ckptname._transaction import CheckpointFolder

real = FsspecStorage.write_bytes

def write_bytes(self, path, data, *, fsync=False):
    if path.endswith("b002.keras.ckptname.json"):
        os.kill(os.getpid(), signal.SIGKILL)  # the model is up, its commit marker is not
    return real(self, path, data, fsync=fsync)

FsspecStorage.write_bytes = write_bytes
folder = CheckpointFolder(sys.argv[1] + "/lr={lr}/b{batch:03d}.keras")
folder.bind_run({"lr": 0.1})

def write_model(path):
    with open(path, "wb") as fh:
        fh.write(b"weights")

for batch in (1, 2):
    name = f"lr=0.1/b{batch:03d}.keras"
    meta = {"format": "ckptname.checkpoint/1", "name": name, "epoch": 1, "batch": batch,
            "batch_in_epoch": batch, "iterations": batch}
    folder.save(name, meta, write_model, best=None, previous_best=None)
"""


def test_an_upload_left_without_its_commit_marker_is_removed_at_the_next_start(
    server: CountingMotoServer, root: str
) -> None:
    prefix = root.removeprefix("s3://")
    # Uploaded by another tool before ckptname first wrote into the root.
    s3().pipe_file(f"{prefix}/lr=0.1/b000.keras", b"weights")
    time.sleep(1.1)  # object stores keep times to the second
    done = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_THE_SIDECAR, root],
                          env=child_env(server), capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    # Another member's upload that lost its commit marker, and an upload in a root
    # that ckptname does not write to: not this run's.
    s3().pipe({f"{prefix}/lr=0.2/b003.keras": b"weights",
               f"{prefix}-other/lr=0.1/b003.keras": b"weights"})  # fmt: skip
    left = ["lr=0.1/b000.keras", "lr=0.1/b001.keras", "lr=0.1/b001.keras" + SIDECAR_SUFFIX,
            "lr=0.2/b003.keras"]  # fmt: skip
    assert keys(root) == sorted([STATE_NAME, "lr=0.1/b002.keras", *left])

    folder = CheckpointFolder(f"{root}/lr={{lr}}/b{{batch:03d}}.keras")
    folder.bind_run({"lr": 0.1})
    folder.clean_leftovers(folder.records())
    assert keys(root) == sorted([STATE_NAME, *left])
    assert [r.name for r in scan(root, "lr={lr}/b{batch:03d}.keras")] == ["lr=0.1/b001.keras"]
    # An upload younger than the run's start may be another writer's save in progress.
    s3().pipe_file(f"{prefix}/lr=0.1/b004.keras", b"weights")
    folder.clean_leftovers(folder.records(), started=time.time() - 3600)
    assert "lr=0.1/b004.keras" in keys(root)
    other = CheckpointFolder(f"{root}-other/lr={{lr}}/b{{batch:03d}}.keras")
    other.bind_run({"lr": 0.1})
    other.clean_leftovers(other.records())
    assert keys(root + "-other") == ["lr=0.1/b003.keras"]  # no state file: another tool's
    # The state file says since when the root is ckptname's, on every rewrite.
    state = json.loads(s3().cat_file(f"{prefix}/{STATE_NAME}"))
    assert state["since"] <= state["time"]


# ------------------------------------------------------------------ bounded memory

_MEASURE = """
import json, sys, warnings
import ckptname

def peak_kib():
    # The peak resident set of this process image (ru_maxrss would carry the parent's
    # peak over exec).
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

root, template = sys.argv[1], sys.argv[2]
ckptname.scan(root + "-warm-up", template)  # the client and its session, loaded first
before = peak_kib()
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    best = ckptname.find_best(root, "loss", template=template)
    groups = ckptname.best_per_group(ckptname.scan(root, template), "loss")
    latest = ckptname.find_latest(root, template)
    try:
        by_state = ckptname.find_latest(root)
    except ckptname.TemplateError as exc:  # the state file names the template
        by_state = str(exc)
after = peak_kib()
print(json.dumps({
    "grew_mib": (after - before) / 1024,
    "best": best.name, "groups": sorted(r.name for r in groups.values()),
    "latest": latest.name, "by_state": by_state,
    "warnings": [str(w.message) for w in seen if issubclass(w.category, ckptname.CkptnameWarning)],
}))
"""

HOSTILE_BYTES = 200 << 20


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_a_200_mb_sidecar_and_state_file_cost_bounded_memory(
    server: CountingMotoServer, root: str
) -> None:
    """Sidecars that break ties, and the state file, are 200 MB objects: each is read
    with one ranged GET of 16 MiB and a byte, refused with a warning, and the answer
    comes from the names and the other sidecars."""
    template = "lr={lr}/b{batch:03d}-{loss:.1f}.keras"
    prefix = root.removeprefix("s3://")
    fs = s3()
    objects: dict[str, bytes] = {}
    for lr in (1, 2):
        for batch in (1, 2):  # a tie on the rounded loss: the sidecars decide
            name = f"lr={lr}/b{batch:03d}-0.5.keras"
            objects[name] = b"weights"
            objects[name + SIDECAR_SUFFIX] = encode(
                {"format": "ckptname.checkpoint/1", "name": name, "batch": batch,
                 "metrics": {"loss": 0.5 - batch / 100}}
            )  # fmt: skip
    fs.pipe({f"{prefix}/{name}": data for name, data in objects.items()})
    hostile = b"{" + b" " * (HOSTILE_BYTES - 1)
    fs.pipe_file(f"{prefix}/lr=1/b002-0.5.keras{SIDECAR_SUFFIX}", hostile)
    fs.pipe_file(f"{prefix}/{STATE_NAME}", hostile)
    del hostile
    env = child_env(server)
    done = subprocess.run([sys.executable, "-c", _MEASURE, root, template], env=env,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    print(f"the reads grew the peak RSS by {report['grew_mib']:.0f} MiB")
    assert report["grew_mib"] < 100, report  # 16 MiB a hostile object, not 200 MB
    assert report["best"] == "lr=2/b002-0.5.keras"
    assert report["groups"] == ["lr=1/b001-0.5.keras", "lr=2/b002-0.5.keras"]
    assert report["latest"] == "lr=2/b002-0.5.keras"
    side = f"{root}/lr=1/b002-0.5.keras{SIDECAR_SUFFIX}"
    rule = "ckptname reads its files only as regular files of at most 16 MiB"
    # Without a template, the state file was the one place to read it from.
    assert report["by_state"].startswith(
        f"state file '{root}/{STATE_NAME}' is larger than 16 MiB; {rule}, and no template "
        "was given; pass the template"
    )
    assert f"sidecar {side!r} is larger than 16 MiB; {rule}" in "\n".join(report["warnings"])


def test_remote_reads_ask_for_one_byte_over_the_limit(
    server: CountingMotoServer, root: str
) -> None:
    """One ranged GET for the limit and a byte, whatever the object's size: 64 KiB
    (a lock's limit) here, 16 MiB for sidecars and state files."""
    from ckptname._storage import FsspecStorage, UnsafeFileError, storage_for

    storage, inner = storage_for(root)
    assert isinstance(storage, FsspecStorage)
    s3().pipe_file(f"{inner}/big", b"x" * (64 << 10) + b"x")
    s3().pipe_file(f"{inner}/small", b"x" * (64 << 10))
    s3().pipe_file(f"{inner}/empty", b"")
    with pytest.raises(UnsafeFileError, match="is larger than 64 KiB"):
        storage.read_small(f"{inner}/big", 64 << 10)
    assert len(storage.read_small(f"{inner}/small", 64 << 10)) == 64 << 10
    assert storage.read_small(f"{inner}/empty", 64 << 10) == b""
    assert storage.read_many([f"{inner}/big", f"{inner}/empty"], 100) == [b"x" * 101, b""]
    with pytest.raises(FileNotFoundError):
        storage.read_small(f"{inner}/missing", 10)
