"""Remote roots through fsspec: the memory file system, a real S3 server, file:// URLs.

The S3 server is moto's server mode, started on 127.0.0.1 for the session and
reached through s3fs like any S3-compatible endpoint.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

fsspec = pytest.importorskip("fsspec")

from s3_util import s3_at  # noqa: E402

from ckptname import (  # noqa: E402  (after the importorskip above)
    apply_retention,
    best_per_group,
    find_best,
    find_latest,
    plan_retention,
    scan,
)
from ckptname._metadata import STATE_NAME, encode  # noqa: E402

TEMPLATE = "ep{epoch:03d}-{val_loss:.3f}.keras"


def sidecar_bytes(name: str, **fields: Any) -> bytes:
    return encode({"format": "ckptname.checkpoint/1", "name": name, **fields})


def state_bytes(template: str, latest: str | None) -> bytes:
    return encode(
        {
            "format": "ckptname.state/1",
            "template": template,
            "latest": None if latest is None else {"name": latest},
            "best": None,
            "time": 0.0,
        }
    )


def names(records: list[Any]) -> list[str]:
    return [r.name for r in records]


# ------------------------------------------------------------------ memory://


@pytest.fixture
def mem() -> Iterator[tuple[Any, str]]:
    """A fresh folder in fsspec's in-memory file system: (fs, 'memory://...')."""
    fs = fsspec.filesystem("memory")
    folder = f"/ckptname-test-{uuid.uuid4().hex}"
    yield fs, f"memory://{folder.lstrip('/')}"
    if fs.exists(folder):
        fs.rm(folder, recursive=True)


def put(fs: Any, root: str, files: dict[str, bytes]) -> None:
    base = fs._strip_protocol(root)
    fs.pipe({f"{base}/{name}": data for name, data in files.items()})


def test_memory_uploads_from_other_tools_count_when_non_empty(mem: tuple[Any, str]) -> None:
    fs, root = mem
    files = {f"ep{e:03d}-{1 / e:.3f}.keras": b"model" for e in range(95, 102)}
    files["ep102-0.001.keras"] = b""  # an empty object is never a checkpoint
    files["ep103-0.001.keras.backup"] = b"x"
    files[".ckptname-tmp-9-ep104-0.001.keras"] = b"x"
    put(fs, root, files)
    records = scan(root, TEMPLATE)
    assert names(records) == [f"ep{e:03d}-{1 / e:.3f}.keras" for e in range(95, 102)]
    assert records[-1].path == f"{root}/ep101-0.010.keras"
    assert records[-1].size == 5
    assert records[-1].mtime is None  # remote times are never read
    assert find_latest(root, TEMPLATE) == records[-1]
    # ep096 to ep101 all name 0.010: of equal values the earlier wins, as in Keras.
    assert find_best(root, "val_loss", template=TEMPLATE) == records[1]


@pytest.mark.parametrize("marker", ["state", "sidecars"])
def test_memory_uncommitted_upload_is_never_returned(mem: tuple[Any, str], marker: str) -> None:
    fs, root = mem
    files: dict[str, bytes] = {}
    for epoch, loss in [(1, 0.9), (2, 0.5), (3, 0.1)]:
        name = f"ep{epoch:03d}-{loss:.3f}.keras"
        files[name] = b"model"
        if epoch < 3:  # the upload of epoch 3 finished, its commit marker did not
            files[name + ".ckptname.json"] = sidecar_bytes(name, epoch=epoch)
    if marker == "state":
        files[STATE_NAME] = state_bytes(TEMPLATE, "ep002-0.500.keras")
    put(fs, root, files)
    assert names(scan(root, TEMPLATE)) == ["ep001-0.900.keras", "ep002-0.500.keras"]
    assert find_latest(root, TEMPLATE).name == "ep002-0.500.keras"  # type: ignore[union-attr]
    assert find_best(root, "val_loss", template=TEMPLATE).name == "ep002-0.500.keras"  # type: ignore[union-attr]


def test_memory_state_file_answers_without_listing(
    mem: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fs, root = mem
    put(
        fs,
        root,
        {
            "ep001-0.900.keras": b"m",
            "ep002-0.500.keras": b"m",
            STATE_NAME: state_bytes(TEMPLATE, "ep002-0.500.keras"),
        },
    )

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the folder was listed")

    monkeypatch.setattr(type(fs), "ls", refuse)
    found = find_latest(root)
    assert found is not None and found.name == "ep002-0.500.keras"
    assert found.path == f"{root}/ep002-0.500.keras"
    assert found.values == {"epoch": 2, "val_loss": 0.5}


def test_memory_stale_state_lists_with_its_template(mem: tuple[Any, str]) -> None:
    fs, root = mem
    put(
        fs,
        root,
        {
            "ep001-0.900.keras": b"m",
            "ep001-0.900.keras.ckptname.json": sidecar_bytes("ep001-0.900.keras"),
            "ep002-0.500.keras": b"m",
            "ep002-0.500.keras.ckptname.json": sidecar_bytes("ep002-0.500.keras"),
            STATE_NAME: state_bytes(TEMPLATE, "ep003-0.100.keras"),
        },
    )
    assert find_latest(root).name == "ep002-0.500.keras"  # type: ignore[union-attr]


def test_memory_retention_deletes_objects_and_sidecars(mem: tuple[Any, str]) -> None:
    fs, root = mem
    files = {}
    for epoch in range(1, 6):
        name = f"ep{epoch:03d}-{1 / epoch:.3f}.keras"
        files[name] = b"m"
        files[name + ".ckptname.json"] = sidecar_bytes(name, epoch=epoch)
    files["notes.txt"] = b"keep"
    put(fs, root, files)
    plan = plan_retention(scan(root, TEMPLATE), keep_last=2)
    deleted = apply_retention(plan, root)
    assert deleted == [f"{root}/ep{e:03d}-{1 / e:.3f}.keras" for e in (1, 2, 3)]
    left = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(fs._strip_protocol(root), detail=False))
    assert left == [
        "ep004-0.250.keras",
        "ep004-0.250.keras.ckptname.json",
        "ep005-0.200.keras",
        "ep005-0.200.keras.ckptname.json",
        "notes.txt",
    ]


def test_memory_sweep_walks_folder_levels(mem: tuple[Any, str]) -> None:
    fs, root = mem
    template = "lr={lr:.0e}/ep{epoch:03d}-{val_loss:.3f}.keras"
    put(
        fs,
        root,
        {
            "lr=1e-03/ep001-0.500.keras": b"m",
            "lr=1e-03/ep002-0.400.keras": b"m",
            "lr=1e-02/ep001-0.300.keras": b"m",
            "lr=1e-02/ep002-0.350.keras": b"m",
            "lr=oops/ep003-0.100.keras": b"m",
            "lr=1e-03/deeper/ep009-0.001.keras": b"m",
        },
    )
    records = scan(root, template)
    assert len(records) == 4
    best = best_per_group(records, "val_loss")
    assert {k: v.name for k, v in best.items()} == {
        (0.001,): "lr=1e-03/ep002-0.400.keras",
        (0.01,): "lr=1e-02/ep001-0.300.keras",
    }


def test_memory_missing_root(mem: tuple[Any, str]) -> None:
    _, root = mem
    assert scan(root, TEMPLATE) == []
    assert find_latest(root, TEMPLATE) is None
    assert find_latest(root) is None


# ------------------------------------------------------------------ S3 (moto server)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free port of 127.0.0.1, with fsspec pointed at it."""
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with s3_at(endpoint):
            yield endpoint
    finally:
        server.stop()


S3_TEMPLATE = "b{batch:06d}-{loss:.4f}.h5"
S3_SAVES = 320  # 320 checkpoints + 320 sidecars + decoys: several hundred objects


@pytest.fixture(scope="session")
def s3_run(s3_endpoint: str) -> dict[str, Any]:
    """A bucket with a run of several hundred objects, as the callback writes them."""
    fs, _ = fsspec.core.url_to_fs("s3://ckptname-test")
    fs.mkdir("ckptname-test")
    files: dict[str, bytes] = {}
    for i in range(1, S3_SAVES + 1):
        batch = i * 1000  # past 99,999
        # Saves 199 and 200 hold the best value as the name rounds it; the
        # exact values in their sidecars say that the earlier one is better.
        loss = {199: 0.00016, 200: 0.00024}.get(i, 1.0 / i)
        name = f"b{batch:06d}-{loss:.4f}.h5"
        files[name] = b"weights"
        files[name + ".ckptname.json"] = sidecar_bytes(name, batch=batch, metrics={"loss": loss})
    # Decoys: an upload whose sidecar never came, a temporary file, a copy,
    # another run's checkpoint, an empty object.
    files["b999000-0.0001.h5"] = b"weights"
    files[".ckptname-tmp-77-b999000-0.0001.h5"] = b"weights"
    files["b320000-0.0031.h5.backup"] = b"weights"
    files["other-b999999-0.0000.h5"] = b"weights"
    files["b998000-0.0001.h5"] = b""
    files["b998000-0.0001.h5.ckptname.json"] = sidecar_bytes("b998000-0.0001.h5")
    last = f"b{S3_SAVES * 1000:06d}-{1 / S3_SAVES:.4f}.h5"
    files[STATE_NAME] = state_bytes(S3_TEMPLATE, last)
    fs.pipe({f"ckptname-test/run/{name}": data for name, data in files.items()})
    return {"root": "s3://ckptname-test/run", "objects": len(files), "last": last}


def test_s3_scan_hundreds_of_objects(s3_run: dict[str, Any]) -> None:
    assert s3_run["objects"] > 600
    records = scan(s3_run["root"], S3_TEMPLATE)
    assert len(records) == S3_SAVES
    assert [r.batch for r in records] == [i * 1000 for i in range(1, S3_SAVES + 1)]
    assert records[-1].path == f"{s3_run['root']}/{s3_run['last']}"
    assert records[-1].size == len(b"weights")


def test_s3_find_latest_by_listing_and_by_state(s3_run: dict[str, Any]) -> None:
    by_listing = find_latest(s3_run["root"], S3_TEMPLATE)
    by_state = find_latest(s3_run["root"])
    assert by_listing is not None and by_listing.name == s3_run["last"]
    assert by_state == by_listing


def test_s3_find_best_tie_broken_by_exact_sidecar_value(s3_run: dict[str, Any]) -> None:
    best = find_best(s3_run["root"], "loss", template=S3_TEMPLATE)
    # Not the uncommitted or empty decoys (0.0001), not the later of the tie.
    assert best is not None and best.name == "b199000-0.0002.h5"
    assert best.metadata is not None and best.metadata["metrics"]["loss"] == 0.00016


def test_s3_find_best_max(s3_run: dict[str, Any]) -> None:
    best = find_best(s3_run["root"], "loss", "max", template=S3_TEMPLATE)
    assert best is not None and best.name == "b001000-1.0000.h5"


def test_s3_sweep_and_retention(s3_endpoint: str) -> None:
    root = "s3://ckptname-test/sweep"
    template = "seed={seed:d}/ep{epoch:03d}.keras"
    fs, _ = fsspec.core.url_to_fs(root)
    fs.pipe(
        {
            f"ckptname-test/sweep/seed={seed}/ep{epoch:03d}.keras": b"m"
            for seed in (1, 2)
            for epoch in range(1, 6)
        }
    )
    records = scan(root, template)
    assert len(records) == 10
    assert find_latest(root, template).name == "seed=2/ep005.keras"  # type: ignore[union-attr]
    plan = plan_retention(records, keep_last=3)
    deleted = apply_retention(plan, root)
    assert len(deleted) == 7
    assert names(scan(root, template)) == [
        "seed=2/ep004.keras",
        "seed=1/ep005.keras",
        "seed=2/ep005.keras",
    ]


# ------------------------------------------------------------------ file://


def test_file_url(tmp_path: Path) -> None:
    for epoch in (9, 10):
        (tmp_path / f"ep{epoch:03d}-0.500.keras").write_bytes(b"m")
    (tmp_path / STATE_NAME).write_bytes(state_bytes(TEMPLATE, "ep010-0.500.keras"))
    root = "file://" + str(tmp_path)
    records = scan(root, TEMPLATE)
    assert [r.path for r in records] == [
        f"{root}/ep009-0.500.keras",
        f"{root}/ep010-0.500.keras",
    ]
    assert find_latest(root) == find_latest(root, TEMPLATE) == records[-1]
    plan = plan_retention(records, keep_last=1)
    assert apply_retention(plan, root) == [f"{root}/ep009-0.500.keras"]
    assert sorted(os.listdir(tmp_path)) == [STATE_NAME, "ep010-0.500.keras"]


_KILLED_AT_FIRST_SIDECAR = """
import os, signal, sys
from ckptname._storage import FsspecStorage
from ckptname._transaction import CheckpointFolder

real = FsspecStorage.write_bytes

def write_bytes(self, path, data, *, fsync=False):
    if path.endswith(".ckptname.json"):
        os.kill(os.getpid(), signal.SIGKILL)  # the model is up, its commit marker is not
    return real(self, path, data, fsync=fsync)

FsspecStorage.write_bytes = write_bytes
folder = CheckpointFolder(sys.argv[1] + "/b{batch:03d}.keras")

def write_model(path):
    with open(path, "wb") as fh:
        fh.write(b"weights")

meta = {"format": "ckptname.checkpoint/1", "name": "b001.keras", "epoch": 1, "batch": 1,
        "batch_in_epoch": 1, "iterations": 1}
folder.save("b001.keras", meta, write_model, best=None, previous_best=None)
"""


def test_s3_killed_while_committing_the_very_first_save(
    s3_endpoint: str, s3_run: dict[str, Any]
) -> None:
    """A run killed after uploading its first model but before its sidecar (the commit
    marker) leaves nothing that readers take for a checkpoint."""
    import json
    import signal
    import subprocess
    import sys

    root = "s3://ckptname-test/first-save"
    env = dict(
        os.environ,
        FSSPEC_S3=json.dumps({"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}),
    )
    done = subprocess.run(
        [sys.executable, "-c", _KILLED_AT_FIRST_SIDECAR, root], env=env, capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert scan(root, "b{batch:03d}.keras") == []
    assert find_latest(root, "b{batch:03d}.keras") is None
    assert find_best(root, "batch", "max", template="b{batch:03d}.keras") is None
    # The state file went up before the model, naming no checkpoint yet.
    fs, _ = fsspec.core.url_to_fs(root)
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("ckptname-test/first-save")) == [
        STATE_NAME,
        "b001.keras",
    ]
    assert find_latest(root) is None
