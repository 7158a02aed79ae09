"""Remote trees in one listing: the same answers as folder by folder, fewer requests.

Runs against moto's S3 server on 127.0.0.1 (reached through s3fs, as any
S3-compatible store is) and against fsspec's memory file system. The server
here counts the requests it receives, by operation, so the tests can say how
many listings and sidecar reads each call makes.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.moto_server.threaded_moto_server")

from s3_util import CountingMotoServer, s3_at  # noqa: E402

from ckptname import (  # noqa: E402  (after the importorskips above)
    Checkpoint,
    MissingFieldError,
    best_per_group,
    find_best,
    find_latest,
    plan_retention,
    scan,
)
from ckptname._metadata import STATE_NAME, encode, sidecar_record, state_record  # noqa: E402
from ckptname._storage import FsspecStorage, storage_for  # noqa: E402

BUCKET = "ckptname-listing"
SWEEP = "sweeps/lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}-{val_loss:.4f}.keras"


@pytest.fixture(scope="module")
def server() -> Iterator[CountingMotoServer]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = CountingMotoServer()
    moto.start()
    host, port = moto.get_host_and_port()
    try:
        with s3_at(f"http://{host}:{port}"):
            fs, _ = fsspec.core.url_to_fs(f"s3://{BUCKET}")
            if not fs.exists(BUCKET):
                fs.mkdir(BUCKET)
            yield moto
    finally:
        moto.stop()


@pytest.fixture(params=["s3", "memory"])
def root(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty root on S3 (the counting server) or in memory."""
    case = f"case-{uuid.uuid4().hex[:12]}"
    if request.param == "s3":
        request.getfixturevalue("server")
        yield f"s3://{BUCKET}/{case}"
        return
    url = f"memory://{case}"
    yield url
    fs, inner = fsspec.core.url_to_fs(url)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def write(root: str, files: dict[str, bytes]) -> None:
    """Write files under ``root`` through ckptname's storage layer, one PUT each.

    A folder's marker object (``a/``) exists only on object stores: fsspec's
    memory file system would make it a file ``a`` beside the folder ``a``.
    """
    storage, inner = storage_for(root)
    for name, data in files.items():
        if name.endswith("/") and root.startswith("memory://"):
            continue
        storage.write_bytes(storage.join(inner, name), data)


def sidecar(name: str, template: str, **values: Any) -> bytes:
    """A sidecar as the callback writes it (exact metrics, counters)."""
    return encode(
        sidecar_record(
            name=name.rsplit("/", 1)[-1],
            template=template,
            epoch=values.get("epoch", 0),
            batch=values.get("batch", 0),
            batch_in_epoch=0,
            iterations=None,
            end_of_epoch=True,
            steps_per_epoch=None,
            metrics=values.get("metrics", {}),
            extras={},
            save_weights_only=False,
        )
    )


def state(template: str) -> bytes:
    return encode(state_record(template, None, None))


@pytest.fixture
def per_level(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it to make every remote listing go folder by folder from then on."""

    def switch() -> None:
        monkeypatch.setattr(FsspecStorage, "find", lambda self, path: None)

    return switch


# ------------------------------------------------------------------ trees


def sweep_tree() -> dict[str, bytes]:
    """A sweep tree with every kind of decoy, committed and uncommitted saves, and ties.

    * ``lr=1e-03``: each run folder has the callback's state file and sidecars;
      one upload of ``seed=0`` never got its sidecar (uncommitted).
    * ``lr=1e-02``: uploads by another tool, no markers: every non-empty
      match counts; one empty object does not.
    * ``lr=1e-01``: a state file one level up, where the seed level is listed
      from; its runs count only with sidecars.
    * Ties on the rounded value, broken by the sidecars' exact values; a NaN.
    """
    t = SWEEP
    files: dict[str, bytes] = {}

    def ckpt(lr: float, seed: int, epoch: int, loss: float, *, exact: float | None = None,
             side: bool = True, data: bytes = b"weights") -> None:  # fmt: skip
        name = f"sweeps/lr={lr:.0e}/seed={seed}/ep{epoch:03d}-{loss:.4f}.keras"
        files[name] = data
        if side:
            metrics = {"val_loss": loss if exact is None else exact, "loss": 1.0 / epoch}
            files[name + ".ckptname.json"] = sidecar(name, t, epoch=epoch, metrics=metrics)

    for seed in (0, 1, 2):
        files[f"sweeps/lr=1e-03/seed={seed}/{STATE_NAME}"] = state(
            "ep{epoch:03d}-{val_loss:.4f}.keras"
        )
        ckpt(1e-3, seed, 1, 0.9)
        ckpt(1e-3, seed, 2, 0.5 + seed / 100, exact=0.50004 + seed / 100)
        ckpt(1e-3, seed, 3, 0.5 + seed / 100, exact=0.49996 + seed / 100)  # ties epoch 2
        ckpt(1e-3, seed, 4, 0.7)
    ckpt(1e-3, 0, 5, 0.0001, side=False)  # uploaded, never committed
    for seed in (0, 1):
        for epoch, loss in [(1, 0.8), (2, 0.3), (3, 0.3), (4, math.nan)]:
            ckpt(1e-2, seed, epoch, loss, side=False)
    ckpt(1e-2, 0, 9, 0.0001, side=False, data=b"")  # empty: never a checkpoint
    files[f"sweeps/lr=1e-01/{STATE_NAME}"] = state(SWEEP)
    ckpt(1e-1, 0, 1, 0.6)
    ckpt(1e-1, 0, 2, 0.4)
    ckpt(1e-1, 0, 3, 0.0002, side=False)  # uncommitted
    ckpt(1e-1, 1, 1, 0.45)
    # Decoys: none of these is a checkpoint of the sweep.
    files.update(
        {
            STATE_NAME: state("other/{epoch}.keras"),  # above the walk: seen by neither way
            "sweeps/lr=oops/seed=0/ep001-0.0100.keras": b"w",
            "sweeps/lr=1e-03/seed=x/ep001-0.0100.keras": b"w",
            "sweeps/lr=1e-03/seed=0/deeper/ep009-0.0100.keras": b"w",
            "sweeps/lr=1e-02/seed=1/run2/ep001-0.0100.keras": b"w",  # a nested run
            "sweeps/lr=1e-03/seed=0/.ckptname-tmp-1a2b3c4d5e6f-ep006-0.0100.keras": b"w",
            "sweeps/lr=1e-03/seed=0/ep002-0.5000.keras.backup": b"w",
            "sweeps/lr=1e-02/seed=0/ep010-0.0100.keras.ckptname.json.tmp": b"w",
            "sweeps/lr=1e-04": b"a file where a folder level is",
            "sweeps/lr=1e-02/": b"",  # a folder's marker object
            "sweeps/.ckptname-tmp-9f9f9f9f9f9f-lr=1e-03/seed=0/ep001-0.0100.keras": b"w",
            "sweeps/notes.txt": b"w",
        }
    )
    return files


NESTED = "runs/{run:s}/checkpoints/ep{epoch:03d}-{val_loss:.3f}.keras"


def nested_tree() -> dict[str, bytes]:
    """Runs under a literal folder level, state files above and in the checkpoint folders.

    The walk folder by folder never lists ``runs/a`` (``checkpoints`` is a
    literal), so a state file there makes nothing uncommitted; the one in
    ``runs/b/checkpoints`` does.
    """
    files: dict[str, bytes] = {
        f"runs/a/{STATE_NAME}": state(NESTED),
        f"runs/b/checkpoints/{STATE_NAME}": state("ep{epoch:03d}-{val_loss:.3f}.keras"),
        "runs/c.d/checkpoints/ep001-0.500.keras": b"w",
        "runs/a/checkpoints/sub/ep001-0.100.keras": b"w",
        "runs/a/checkpoint/ep001-0.100.keras": b"w",
    }
    for run in ("a", "b"):
        for epoch, loss in [(1, 0.6), (2, 0.4), (3, 0.5)]:
            name = f"runs/{run}/checkpoints/ep{epoch:03d}-{loss:.3f}.keras"
            files[name] = b"w"
            if run == "b" and epoch != 3:
                files[name + ".ckptname.json"] = sidecar(name, NESTED, epoch=epoch)
    return files


NO_COUNTER = "lr={lr:.0e}/best-{val_loss:.3f}.keras"


def no_counter_tree() -> dict[str, bytes]:
    """A template without a progress counter: the sidecars' counters order the checkpoints."""
    files: dict[str, bytes] = {}
    for lr, rows in {1e-3: [(40, 0.31), (80, 0.29)], 1e-2: [(60, 0.35), (20, 0.33)]}.items():
        for batch, loss in rows:
            name = f"lr={lr:.0e}/best-{loss:.3f}.keras"
            files[name] = b"w"
            files[name + ".ckptname.json"] = sidecar(name, NO_COUNTER, batch=batch)
    files["lr=1e-02/best-0.100.keras.ckptname.json"] = b"{"  # a sidecar without its checkpoint
    return files


CASES = [
    pytest.param(SWEEP, sweep_tree, ("lr",), id="sweep"),
    pytest.param(NESTED, nested_tree, ("run",), id="nested runs"),
    pytest.param(NO_COUNTER, no_counter_tree, ("lr",), id="no counter"),
]


def answers(root: str, template: str, by: tuple[str, ...]) -> dict[str, Any]:
    """Everything a sweep tool asks of a tree, as plain values."""

    def full(record: Checkpoint | None) -> Any:
        if record is None:
            return None
        return (record.as_dict(), record.metadata)

    records = scan(root, template)
    plan = plan_retention(records, keep_last=2, keep_best=2, monitor="val_loss")
    return {
        "scan": [full(r) for r in records],
        "latest": full(find_latest(root, template)),
        "best min": full(find_best(root, "val_loss", "min", template)),
        "best max": full(find_best(root, "val_loss", "max", template)),
        "per group": {k: full(v) for k, v in best_per_group(records, "val_loss", by=by).items()},
        "keep": [r.name for r in plan.keep],
        "delete": [r.name for r in plan.delete],
    }


# ------------------------------------------------------------------ flat = per level


@pytest.mark.filterwarnings("ignore:sidecar")  # the no-counter tree's broken sidecar
@pytest.mark.parametrize(("template", "tree", "by"), CASES)
def test_flat_listing_answers_exactly_as_the_walk_folder_by_folder(
    root: str,
    template: str,
    tree: Callable[[], dict[str, bytes]],
    by: tuple[str, ...],
    per_level: Callable[[], None],
) -> None:
    write(root, tree())
    flat = answers(root, template, by)
    per_level()
    # repr: NaN values compare unequal to themselves, but print alike.
    assert repr(answers(root, template, by)) == repr(flat)
    assert flat["scan"]  # a tree with checkpoints, so that the comparison says something


def test_sweep_tree_records(root: str) -> None:
    write(root, sweep_tree())
    records = scan(root, SWEEP)
    by_run: dict[tuple[Any, ...], list[str]] = {}
    for r in records:
        by_run.setdefault((r.values["lr"], r.values["seed"]), []).append(r.name.rsplit("/", 1)[1])
    assert by_run == {
        (0.001, 0): ["ep001-0.9000.keras", "ep002-0.5000.keras", "ep003-0.5000.keras",
                     "ep004-0.7000.keras"],
        (0.001, 1): ["ep001-0.9000.keras", "ep002-0.5100.keras", "ep003-0.5100.keras",
                     "ep004-0.7000.keras"],
        (0.001, 2): ["ep001-0.9000.keras", "ep002-0.5200.keras", "ep003-0.5200.keras",
                     "ep004-0.7000.keras"],
        (0.01, 0): ["ep001-0.8000.keras", "ep002-0.3000.keras", "ep003-0.3000.keras",
                    "ep004-nan.keras"],
        (0.01, 1): ["ep001-0.8000.keras", "ep002-0.3000.keras", "ep003-0.3000.keras",
                    "ep004-nan.keras"],
        (0.1, 0): ["ep001-0.6000.keras", "ep002-0.4000.keras"],
        (0.1, 1): ["ep001-0.4500.keras"],
    }  # fmt: skip
    assert all(r.size == len(b"weights") and r.metadata is None for r in records)
    best = best_per_group(records, "val_loss", by=("lr",))
    assert {k: v.name for k, v in best.items()} == {
        # Epochs 2 and 3 tie at 0.5000; the sidecars say epoch 3 was lower.
        (0.001,): "sweeps/lr=1e-03/seed=0/ep003-0.5000.keras",
        # No sidecars to tell 0.3000 from 0.3000: the earlier checkpoint wins, as in Keras.
        (0.01,): "sweeps/lr=1e-02/seed=0/ep002-0.3000.keras",
        (0.1,): "sweeps/lr=1e-01/seed=0/ep002-0.4000.keras",
    }


def test_nested_runs_commit_rule(root: str) -> None:
    write(root, nested_tree())
    assert [r.name for r in scan(root, NESTED)] == [
        "runs/a/checkpoints/ep001-0.600.keras",
        "runs/b/checkpoints/ep001-0.600.keras",
        "runs/c.d/checkpoints/ep001-0.500.keras",
        "runs/a/checkpoints/ep002-0.400.keras",
        "runs/b/checkpoints/ep002-0.400.keras",
        "runs/a/checkpoints/ep003-0.500.keras",  # runs/b's epoch 3 has no sidecar
    ]


# ------------------------------------------------------------------ requests


def sweep_of(lrs: int, seeds: int, epochs: int) -> dict[str, bytes]:
    files = {}
    for i in range(lrs):
        for seed in range(seeds):
            folder = f"sweeps/lr={10.0 ** -(i + 1):.0e}/seed={seed}"
            files[f"{folder}/{STATE_NAME}"] = state("ep{epoch:03d}-{val_loss:.4f}.keras")
            for epoch in range(1, epochs + 1):
                name = f"{folder}/ep{epoch:03d}-{(i + seed + 1) / (epoch + 10):.4f}.keras"
                files[name] = b"w"
                files[name + ".ckptname.json"] = sidecar(name, SWEEP, epoch=epoch)
    return files


def test_a_sweep_is_listed_in_one_request_per_thousand_keys(server: CountingMotoServer) -> None:
    root = f"s3://{BUCKET}/pages-{uuid.uuid4().hex[:8]}"
    fs, inner = fsspec.core.url_to_fs(root)
    # 3 x 4 runs of 50 checkpoints: 1,212 keys in 12 folders, through one PUT
    # each would take a while; the listing does not care who wrote them.
    fs.pipe({f"{inner}/{k}": v for k, v in sweep_of(3, 4, 50).items()})
    server.reset()
    records = scan(root, SWEEP)
    assert len(records) == 600
    assert server.counted() == Counter({"list flat": 2})
    server.reset()
    assert find_latest(root, SWEEP) == records[-1]
    assert best_per_group(records, "val_loss", by="lr")
    assert server.counted() == Counter({"list flat": 2})


def test_walk_folder_by_folder_where_the_store_cannot_list_flatly(
    server: CountingMotoServer, per_level: Callable[[], None]
) -> None:
    root = f"s3://{BUCKET}/levels-{uuid.uuid4().hex[:8]}"
    write(root, sweep_of(2, 3, 2))
    per_level()
    server.reset()
    assert len(scan(root, SWEEP)) == 12
    # sweeps/ (the lr level), each lr folder (the seed level), each run folder.
    assert server.counted() == Counter({"list one folder": 1 + 2 + 6})


def test_sidecars_are_read_only_where_a_rule_needs_them(server: CountingMotoServer) -> None:
    root = f"s3://{BUCKET}/reads-{uuid.uuid4().hex[:8]}"
    write(root, sweep_tree())
    prefix = root.split("/", 3)[3] + "/"
    server.reset()
    records = scan(root, SWEEP)
    assert find_latest(root, SWEEP) is not None
    plan_retention(records, keep_last=2)
    best = find_best(root, "val_loss", template=SWEEP)
    # The best value, 0.3000, is shared by four checkpoints of lr=1e-02,
    # none of which has a sidecar: four reads, nothing else.
    assert best is not None and best.name == "sweeps/lr=1e-02/seed=0/ep002-0.3000.keras"
    assert server.keys("get") == sorted(
        f"{prefix}sweeps/lr=1e-02/seed={seed}/ep00{epoch}-0.3000.keras.ckptname.json"
        for seed in (0, 1)
        for epoch in (2, 3)
    )
    assert "head" not in server.counted()
    server.reset()
    best_per_group(records, "val_loss", by=("lr", "seed"))
    # Ties in every lr=1e-03 run (epochs 2 and 3) and lr=1e-02 run (2 and 3);
    # the lr=1e-01 runs have none.
    assert server.keys("get") == sorted(
        f"{prefix}sweeps/lr={lr}/seed={seed}/ep00{epoch}-{loss}.keras.ckptname.json"
        for lr, seeds in (("1e-03", (0, 1, 2)), ("1e-02", (0, 1)))
        for seed in seeds
        for epoch in (2, 3)
        for loss in ([f"{0.5 + seed / 100:.4f}"] if lr == "1e-03" else ["0.3000"])
    )
    assert "head" not in server.counted()
    server.reset()
    best = find_best(root, "loss", template=SWEEP)  # only in the sidecars: read every one
    assert best is not None and best.epoch == 4
    assert len(server.keys("get")) == len(records)
    assert server.counted()["list flat"] == 1


def test_best_per_group_of_a_metric_only_in_sidecars(root: str) -> None:
    write(root, sweep_tree())
    records = [r for r in scan(root, SWEEP) if r.values["lr"] == 0.001]
    best = best_per_group(records, "loss", by="seed")
    assert {k: v.epoch for k, v in best.items()} == {(0,): 4, (1,): 4, (2,): 4}


def test_best_per_group_of_a_metric_nothing_holds(root: str) -> None:
    write(root, sweep_tree())
    records = [r for r in scan(root, SWEEP) if r.values["lr"] == 0.01]
    with pytest.raises(MissingFieldError) as info:
        best_per_group(records, "val_accuracy", by="seed")
    assert str(info.value) == (
        f"monitor 'val_accuracy' is not a field of template {SWEEP!r} and no checkpoint's "
        "sidecar records it; rank by one of the template's fields (lr, seed, epoch, val_loss) "
        "or by a metric the sidecars hold"
    )


def test_missing_root_and_empty_tree(root: str) -> None:
    assert scan(root, SWEEP) == []
    assert find_latest(root, SWEEP) is None
    assert find_best(root, "val_loss", template=SWEEP) is None
    write(root, {"sweeps/notes.txt": b"w"})
    assert scan(root, SWEEP) == []


def test_a_flat_listing_leaves_no_listing_cached(server: CountingMotoServer) -> None:
    # fsspec shares one S3 file system per process; a listing cached by the
    # scan would answer other callers after the tree changed.
    root = f"s3://{BUCKET}/cache-{uuid.uuid4().hex[:8]}"
    write(root, sweep_of(2, 2, 2))
    storage, inner = storage_for(root)
    fs = storage.fs  # type: ignore[attr-defined]
    assert len(scan(root, SWEEP)) == 8
    assert [key for key in fs.dircache if key.startswith(inner)] == []
