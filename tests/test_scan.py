"""scan, find_latest, find_best, best_per_group on real local folders."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ckptname
from ckptname import (
    Checkpoint,
    MissingFieldError,
    MonitorError,
    TemplateError,
    best_per_group,
    find_best,
    find_latest,
    scan,
)
from ckptname._metadata import STATE_NAME, encode

# ------------------------------------------------------------------ helpers


def touch(root: Path, name: str, data: bytes = b"x", mtime: float | None = None) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def sidecar(root: Path, name: str, **fields: Any) -> None:
    data = {"format": "ckptname.checkpoint/1", "name": name, **fields}
    (root / (name + ".ckptname.json")).write_bytes(encode(data))


def state(root: Path, template: str, latest: str | None, **extra: Any) -> Path:
    data: dict[str, Any] = {
        "format": "ckptname.state/1",
        "template": template,
        "latest": None if latest is None else {"name": latest},
        "best": None,
        "time": 0.0,
        **extra,
    }
    path = root / STATE_NAME
    path.write_bytes(encode(data))
    return path


def names(records: list[Checkpoint]) -> list[str]:
    return [r.name for r in records]


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every folder listed (os.listdir or os.scandir) during the test."""
    seen: list[str] = []
    real_listdir, real_scandir = os.listdir, os.scandir

    def listdir(path: Any = ".") -> list[Any]:
        seen.append(os.fsdecode(path))
        return real_listdir(path)

    def scandir(path: Any = ".") -> Any:
        seen.append(os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "listdir", listdir)
    monkeypatch.setattr(os, "scandir", scandir)
    return seen


# ------------------------------------------------------------------ latest and scan

# (template, files, latest, everything scan returns); a file is a name, or
# (name, bytes) for other contents; names ending in '/' are folders.
LATEST_PASS = [
    pytest.param(
        "ep{epoch:02d}-{val_loss:.2f}.keras",
        ["ep98-0.50.keras", "ep99-0.40.keras", "ep100-0.45.keras"],
        "ep100-0.45.keras",
        ["ep98-0.50.keras", "ep99-0.40.keras", "ep100-0.45.keras"],
        id="epoch 100 after 99",
    ),
    pytest.param(
        "b{batch:05d}.weights.h5",
        ["b99998.weights.h5", "b100000.weights.h5", "b99999.weights.h5"],
        "b100000.weights.h5",
        ["b99998.weights.h5", "b99999.weights.h5", "b100000.weights.h5"],
        id="batch 100000 after 99999",
    ),
    pytest.param(
        "step-{batch}",
        ["step-100", "step-200", "step-300.backup"],
        "step-200",
        ["step-100", "step-200"],
        id="step-100.backup ignored",
    ),
    pytest.param(
        "ep{epoch:03d}.keras",
        ["ep001.keras", "ep002.keras", ".ckptname-tmp-1f2e-ep003.keras", ("ep004.keras", b"")],
        "ep002.keras",
        ["ep001.keras", "ep002.keras"],
        id="temp and zero-byte ignored",
    ),
    pytest.param(
        "run1-ep{epoch:02d}.keras",
        ["run1-ep05.keras", "run1-ep07.keras", "run2-ep50.keras", "xrun1-ep09.keras"],
        "run1-ep07.keras",
        ["run1-ep05.keras", "run1-ep07.keras"],
        id="other runs ignored",
    ),
    pytest.param(
        "ep{epoch:02d}",
        ["ep01", "ep02", "ep99/"],
        "ep02",
        ["ep01", "ep02"],
        id="folders are not checkpoints",
    ),
    pytest.param(
        "ep{epoch:02d}.keras",
        ["ep01.keras", "EP99.keras", "ep99.KERAS", "ep99.keras~"],
        "ep01.keras",
        ["ep01.keras"],
        id="case and suffix matter",
    ),
    pytest.param(
        "ck-{tag:s}-b{batch:d}",
        ["ck-a-b1", "ck-a-b2.ckptname.json", "ck-a-b3.ckptname-x", ".ckptname-tmp-9-ck-a-b4"],
        "ck-a-b1",
        ["ck-a-b1"],
        id="ckptname files never match, even a template that could",
    ),
    pytest.param(
        "e{epoch:02d}-i{batch_in_epoch:05d}.h5",
        ["e01-i00010.h5", "e02-i00002.h5", "e01-i00020.h5", "e02-i00001.h5"],
        "e02-i00002.h5",
        ["e01-i00010.h5", "e01-i00020.h5", "e02-i00001.h5", "e02-i00002.h5"],
        id="batch in epoch restarts each epoch",
    ),
    pytest.param(
        "rl_model_{batch}_steps.zip",
        ["rl_model_9000_steps.zip", "rl_model_10000_steps.zip", "rl_model_800_steps.zip"],
        "rl_model_10000_steps.zip",
        ["rl_model_800_steps.zip", "rl_model_9000_steps.zip", "rl_model_10000_steps.zip"],
        id="string order never used",
    ),
    pytest.param(
        "ep{epoch:02d}.keras",
        [],
        None,
        [],
        id="empty folder",
    ),
]


def build(root: Path, files: list[Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i, item in enumerate(files):
        name, data = (item, b"x") if isinstance(item, str) else item
        if name.endswith("/"):
            (root / name).mkdir(parents=True)
        else:
            # Newest mtime on the first file: order must never come from it.
            touch(root, name, data, mtime=1_000_000 - i)


@pytest.mark.parametrize(("template", "files", "latest", "everything"), LATEST_PASS)
def test_find_latest_and_scan(
    tmp_path: Path, template: str, files: list[Any], latest: str | None, everything: list[str]
) -> None:
    build(tmp_path, files)
    found = find_latest(tmp_path, template)
    assert (found.name if found else None) == latest
    records = scan(tmp_path, template)
    assert names(records) == everything
    assert found == (records[-1] if records else None)


def test_records_carry_full_paths_and_values(tmp_path: Path) -> None:
    touch(tmp_path, "ep07-0.52.keras")
    (record,) = scan(str(tmp_path), "ep{epoch:02d}-{val_loss:.2f}.keras")
    assert record.path == str(tmp_path / "ep07-0.52.keras")
    assert record.name == "ep07-0.52.keras"
    assert record.values == {"epoch": 7, "val_loss": 0.52}
    assert (record.epoch, record.batch, record.batch_in_epoch) == (7, None, None)
    assert record.size == 1
    assert record.template == "ep{epoch:02d}-{val_loss:.2f}.keras"


def test_mtime_never_used_when_counters_exist(tmp_path: Path) -> None:
    for epoch in range(1, 6):
        touch(tmp_path, f"ep{epoch}.keras", mtime=1_000_000 - epoch * 1000)
    assert find_latest(tmp_path, "ep{epoch}.keras").name == "ep5.keras"  # type: ignore[union-attr]


def test_many_empty_newest_files_still_find_the_latest_complete_one(tmp_path: Path) -> None:
    # A run that crashed repeatedly during non-atomic saves: the fast path
    # gives up on the newest after a few, and the general path finishes.
    for batch in range(1, 41):
        touch(tmp_path, f"b{batch:05d}.h5", b"x" if batch <= 20 else b"")
    found = find_latest(tmp_path, "b{batch:05d}.h5")
    assert found is not None and found.name == "b00020.h5"


@pytest.mark.parametrize(
    "decoys",
    [["step-abc", "step-1.5"], ["step-+900", "step-0900", "step-٩٩"], []],
)
def test_field_without_type_reads_counters_by_shape(tmp_path: Path, decoys: list[str]) -> None:
    for name in ["step-8", "step-10", "step-9", *decoys]:
        touch(tmp_path, name)
    found = find_latest(tmp_path, "step-{batch}")
    assert found == scan(tmp_path, "step-{batch}")[-1]
    assert found is not None and found.name == ("step-0900" if "step-0900" in decoys else "step-10")


@pytest.mark.parametrize(
    ("template", "files", "latest"),
    [
        # A name that is not ASCII: the folder is searched as text.
        ("ep{epoch:02d}.keras", ["ep03.keras", "ép99.keras", "ep02.keras"], "ep03.keras"),
        ("ép{epoch:02d}.keras", ["ép03.keras", "ep99.keras", "ép100.keras"], "ép100.keras"),
        ("ep{epoch:02d}-{tag}.keras", ["ep03-é.keras", "ep04-a.keras"], "ep04-a.keras"),
    ],
)
def test_names_that_are_not_ascii(
    tmp_path: Path, template: str, files: list[str], latest: str
) -> None:
    build(tmp_path, files)
    assert find_latest(tmp_path, template) == scan(tmp_path, template)[-1]
    assert find_latest(tmp_path, template).name == latest  # type: ignore[union-attr]


def test_names_that_do_not_decode_are_skipped(tmp_path: Path) -> None:
    touch(tmp_path, "ep01.keras")
    with open(os.path.join(os.fsencode(tmp_path), b"ep09\xff.keras"), "wb") as fh:
        fh.write(b"x")
    assert find_latest(tmp_path, "ep{epoch:02d}.keras").name == "ep01.keras"  # type: ignore[union-attr]
    assert names(scan(tmp_path, "ep{epoch:02d}.keras")) == ["ep01.keras"]


def test_duplicate_counters_in_one_folder_are_ordered_by_name(tmp_path: Path) -> None:
    for tag in ("a", "b", "c"):
        touch(tmp_path, f"b00100-{tag}.h5")
    touch(tmp_path, "b00099-z.h5")
    found = find_latest(tmp_path, "b{batch:05d}-{tag}.h5")
    assert found is not None and found.name == "b00100-c.h5"


def test_latest_reads_sidecar_counters_where_template_has_none(tmp_path: Path) -> None:
    touch(tmp_path, "best-0.310.keras", mtime=2000)
    touch(tmp_path, "best-0.520.keras", mtime=1000)
    sidecar(tmp_path, "best-0.310.keras", batch=40, epoch=2)
    sidecar(tmp_path, "best-0.520.keras", batch=80, epoch=4)
    template = "best-{val_loss:.3f}.keras"
    assert find_latest(tmp_path, template).name == "best-0.520.keras"  # type: ignore[union-attr]
    assert names(scan(tmp_path, template)) == ["best-0.310.keras", "best-0.520.keras"]


def test_latest_falls_back_to_mtime_where_nothing_has_counters(tmp_path: Path) -> None:
    touch(tmp_path, "model-b.keras", mtime=1000)
    touch(tmp_path, "model-a.keras", mtime=2000)
    assert find_latest(tmp_path, "model-{tag}.keras").name == "model-a.keras"  # type: ignore[union-attr]


def test_corrupt_sidecar_warns_and_orders_without_it(tmp_path: Path) -> None:
    touch(tmp_path, "best-0.310.keras", mtime=2000)
    touch(tmp_path, "best-0.520.keras", mtime=1000)
    sidecar(tmp_path, "best-0.310.keras", batch=40)
    (tmp_path / "best-0.520.keras.ckptname.json").write_bytes(b'{"batch": 8')
    with pytest.warns(UserWarning) as caught:
        records = scan(tmp_path, "best-{val_loss:.3f}.keras")
    # Without its sidecar the second sorts first (no counter beats a counter).
    assert names(records) == ["best-0.520.keras", "best-0.310.keras"]
    (warning,) = caught
    side = str(tmp_path / "best-0.520.keras.ckptname.json")
    assert str(warning.message) == (
        f"sidecar {side!r} is not valid JSON (Expecting ',' delimiter: line 1 column 12 "
        "(char 11)); it may be truncated; ordering and ranking those checkpoints without "
        "their metadata"
    )


def test_missing_root_has_no_checkpoints(tmp_path: Path) -> None:
    gone = tmp_path / "never-made"
    assert find_latest(gone, "ep{epoch}.keras") is None
    assert scan(gone, "ep{epoch}.keras") == []
    assert find_best(gone, "val_loss", template="ep{epoch}-{val_loss:.2f}.keras") is None
    assert find_latest(gone) is None


def test_accepts_template_objects_and_path_objects(tmp_path: Path) -> None:
    touch(tmp_path, "ep3.keras")
    template = ckptname.Template("ep{epoch}.keras")
    assert find_latest(tmp_path, template) == find_latest(str(tmp_path), "ep{epoch}.keras")


# ------------------------------------------------------------------ what a full scan reads


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The base names of every file stat'ed (os.stat, os.lstat) during the test."""
    seen: list[str] = []
    real_stat, real_lstat = os.stat, os.lstat

    def stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(os.path.basename(os.fsdecode(path)))
        return real_stat(path, *args, **kwargs)

    def lstat(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(os.path.basename(os.fsdecode(path)))
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "lstat", lstat)
    return seen


def committed_folder(root: Path) -> None:
    """Checkpoints the callback committed (with sidecars), and others without."""
    for batch in (10, 20, 30):
        touch(root, f"b{batch:05d}.h5")
        sidecar(root, f"b{batch:05d}.h5", batch=batch)
    touch(root, "b00040.h5")  # uploaded by hand: no sidecar
    touch(root, "b00050.h5", b"")  # a crash during a non-atomic save
    (root / "b00060.h5").mkdir()  # a folder is never a checkpoint
    touch(root, "b00070.h5.backup")
    touch(root, ".ckptname-tmp-1a2b3c4d5e6f-b00080.h5", b"")


def test_full_scan_stats_only_what_no_sidecar_vouches_for(tmp_path: Path, stats: list[str]) -> None:
    committed_folder(tmp_path)
    stats.clear()
    records = scan(tmp_path, "b{batch:05d}.h5")
    assert names(records) == ["b00010.h5", "b00020.h5", "b00030.h5", "b00040.h5"]
    assert stats == ["b00040.h5", "b00050.h5"]  # not the folder, not the decoys
    assert [r.size for r in records] == [None, None, None, 1]  # read only where stat'ed


def test_full_scan_with_sizes_stats_every_match(tmp_path: Path, stats: list[str]) -> None:
    committed_folder(tmp_path)
    stats.clear()
    records = scan(tmp_path, "b{batch:05d}.h5", sizes=True)
    assert names(records) == ["b00010.h5", "b00020.h5", "b00030.h5", "b00040.h5"]
    assert sorted(stats) == ["b00010.h5", "b00020.h5", "b00030.h5", "b00040.h5", "b00050.h5"]
    assert all(r.size == 1 and r.mtime is not None for r in records)
    # Records name checkpoints: what was read along the way does not make them differ.
    assert records == scan(tmp_path, "b{batch:05d}.h5")
    assert find_latest(tmp_path, "b{batch:05d}.h5") == records[-1]


def test_an_empty_file_counts_only_where_its_sidecar_vouches_for_it(tmp_path: Path) -> None:
    template = "ep{epoch:02d}-{val_loss:.2f}.keras"
    touch(tmp_path, "ep01-0.50.keras")
    touch(tmp_path, "ep02-0.10.keras", b"")  # empty, and no sidecar: never a checkpoint
    touch(tmp_path, "ep03-0.20.keras", b"")
    sidecar(tmp_path, "ep03-0.20.keras", epoch=3)  # committed by the callback
    for sizes in (False, True):
        found = scan(tmp_path, template, sizes=sizes)
        assert names(found) == ["ep01-0.50.keras", "ep03-0.20.keras"]
    assert find_latest(tmp_path, template).name == "ep03-0.20.keras"  # type: ignore[union-attr]
    assert find_best(tmp_path, "val_loss", template=template).name == "ep03-0.20.keras"  # type: ignore[union-attr]
    (tmp_path / "ep03-0.20.keras.ckptname.json").unlink()
    assert names(scan(tmp_path, template)) == ["ep01-0.50.keras"]
    assert find_latest(tmp_path, template).name == "ep01-0.50.keras"  # type: ignore[union-attr]
    assert find_best(tmp_path, "val_loss", template=template).name == "ep01-0.50.keras"  # type: ignore[union-attr]


def test_linked_checkpoints_inside_the_root_are_followed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    store = run / "store"  # inside the root: links there are followed
    touch(store, "model.keras")
    touch(store, "empty.keras", b"")
    (run / "ep01.keras").symlink_to(store / "model.keras")
    (run / "ep02.keras").symlink_to(store / "empty.keras")
    (run / "ep03.keras").symlink_to(store / "gone.keras")
    (run / "ep04.keras").symlink_to(store)  # a folder
    records = scan(run, "ep{epoch:02d}.keras")
    assert names(records) == ["ep01.keras"]
    assert records[0].size == 1
    assert find_latest(run, "ep{epoch:02d}.keras") == records[0]


# ------------------------------------------------------------------ folders


SWEEP = "lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}-{val_loss:.4f}.keras"


def make_sweep(root: Path) -> None:
    losses = {
        (0.001, 1): [0.9, 0.5, 0.7],
        (0.001, 2): [0.8, 0.6, 0.4],
        (0.01, 1): [0.3, 0.2, math.nan],
        (0.01, 2): [0.35, 0.25, 0.3],
    }
    for (lr, seed), values in losses.items():
        for epoch, loss in enumerate(values, start=1):
            touch(root, f"lr={lr:.0e}/seed={seed}/ep{epoch:03d}-{loss:.4f}.keras")
    # Decoys: none of these is a checkpoint of the sweep.
    (root / "lr=oops" / "seed=1").mkdir(parents=True)
    touch(root, "lr=oops/seed=1/ep009-0.0100.keras")
    touch(root, "lr=1e-04")  # a file, not a folder
    touch(root, "lr=1e-03/notes.txt")
    touch(root, "lr=1e-03/seed=1/deeper/ep009-0.0100.keras")
    touch(root, "lr=1e-03/seed=x/ep009-0.0100.keras")


def test_sweep_records_carry_folder_values(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    records = scan(tmp_path, SWEEP)
    assert len(records) == 12
    (first,) = [r for r in records if r.name == "lr=1e-03/seed=1/ep001-0.9000.keras"]
    assert first.values == {"lr": 0.001, "seed": 1, "epoch": 1, "val_loss": 0.9}
    assert first.path == os.path.join(str(tmp_path), "lr=1e-03/seed=1/ep001-0.9000.keras")
    assert {(r.values["lr"], r.values["seed"]) for r in records} == {
        (0.001, 1),
        (0.001, 2),
        (0.01, 1),
        (0.01, 2),
    }
    latest = find_latest(tmp_path, SWEEP)
    assert latest == records[-1]
    assert latest is not None and latest.epoch == 3


def test_sweep_lists_one_folder_per_level_and_no_deeper(
    tmp_path: Path, listings: list[str]
) -> None:
    make_sweep(tmp_path)
    listings.clear()
    find_latest(tmp_path, SWEEP)
    listed = sorted(os.path.relpath(p, tmp_path) for p in listings)
    assert listed == [
        ".",
        "lr=1e-02",
        "lr=1e-02/seed=1",
        "lr=1e-02/seed=2",
        "lr=1e-03",
        "lr=1e-03/seed=1",
        "lr=1e-03/seed=2",
    ]


def test_literal_folder_in_template_needs_no_listing_of_root(
    tmp_path: Path, listings: list[str]
) -> None:
    touch(tmp_path, "checkpoints/ep2.keras")
    touch(tmp_path, "checkpoints/ep10.keras")
    listings.clear()
    found = find_latest(tmp_path, "checkpoints/ep{epoch}.keras")
    assert found is not None and found.name == "checkpoints/ep10.keras"
    assert listings == [os.path.join(str(tmp_path), "checkpoints")]


def test_field_in_two_parts_must_read_the_same(tmp_path: Path) -> None:
    touch(tmp_path, "run1/s1-ep1.keras")
    touch(tmp_path, "run1/s2-ep2.keras")  # seed 1 in the folder, 2 in the name
    records = scan(tmp_path, "run{seed:d}/s{seed:d}-ep{epoch:d}.keras")
    assert names(records) == ["run1/s1-ep1.keras"]


def test_best_per_group_by_folder_field(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    records = scan(tmp_path, SWEEP)
    best = best_per_group(records, "val_loss", by=("lr",))
    assert {k: v.name for k, v in best.items()} == {
        (0.001,): "lr=1e-03/seed=2/ep003-0.4000.keras",
        (0.01,): "lr=1e-02/seed=1/ep002-0.2000.keras",
    }
    assert list(best) == [(0.001,), (0.01,)]


def test_best_per_group_defaults_to_every_folder_field(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    best = best_per_group(scan(tmp_path, SWEEP), "val_loss", "min")
    assert {k: v.name for k, v in best.items()} == {
        (0.001, 1): "lr=1e-03/seed=1/ep002-0.5000.keras",
        (0.001, 2): "lr=1e-03/seed=2/ep003-0.4000.keras",
        (0.01, 1): "lr=1e-02/seed=1/ep002-0.2000.keras",  # the NaN epoch never wins
        (0.01, 2): "lr=1e-02/seed=2/ep002-0.2500.keras",
    }
    (overall,) = best_per_group(scan(tmp_path, SWEEP), "val_loss", by=()).values()
    assert overall.name == "lr=1e-02/seed=1/ep002-0.2000.keras"


def test_best_per_group_fail(tmp_path: Path) -> None:
    make_sweep(tmp_path)
    records = scan(tmp_path, SWEEP)
    with pytest.raises(MissingFieldError) as info:
        best_per_group(records, "val_loss", by="batch_size")
    assert str(info.value) == (
        "checkpoint 'lr=1e-02/seed=1/ep001-0.3000.keras' has no value for 'batch_size' to "
        "group by (its values: lr, seed, epoch, val_loss); group by fields of its template"
    )
    with pytest.raises(MonitorError):
        best_per_group(records, "lr")


# ------------------------------------------------------------------ state file


TEMPLATE = "ep{epoch:03d}-{val_loss:.2f}.keras"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    for epoch, loss in [(1, 0.9), (2, 0.5), (3, 0.7)]:
        touch(tmp_path, f"ep{epoch:03d}-{loss:.2f}.keras")
    state(tmp_path, TEMPLATE, "ep003-0.70.keras")
    return tmp_path


@pytest.fixture
def no_listing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*args: Any) -> Any:
        raise AssertionError("the folder was listed")

    monkeypatch.setattr(os, "listdir", refuse)
    monkeypatch.setattr(os, "scandir", refuse)
    yield


def test_state_file_answers_without_listing(run: Path, no_listing: None) -> None:
    found = find_latest(run)
    assert found is not None
    assert found.name == "ep003-0.70.keras"
    assert found.values == {"epoch": 3, "val_loss": 0.7}
    assert found.path == str(run / "ep003-0.70.keras")


def test_state_file_answer_equals_listing_answer(run: Path) -> None:
    assert find_latest(run) == find_latest(run, TEMPLATE) == scan(run)[-1]


def test_stale_state_falls_back_to_listing_with_its_template(run: Path) -> None:
    (run / "ep003-0.70.keras").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stale state is normal: no warning
        found = find_latest(run)
    assert found is not None and found.name == "ep002-0.50.keras"


def test_state_naming_an_empty_file_is_stale(run: Path) -> None:
    (run / "ep003-0.70.keras").write_bytes(b"")
    assert find_latest(run).name == "ep002-0.50.keras"  # type: ignore[union-attr]


def test_state_without_latest_lists_the_folder(run: Path) -> None:
    state(run, TEMPLATE, None)
    assert find_latest(run).name == "ep003-0.70.keras"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "latest",
    ["ep999.keras", "../ep003-0.70.keras", "/etc/passwd", ".ckptname-tmp-ep003-0.70.keras"],
)
def test_state_naming_something_else_warns_and_lists(run: Path, latest: str) -> None:
    state(run, TEMPLATE, latest)
    with pytest.warns(UserWarning) as caught:
        found = find_latest(run)
    assert found is not None and found.name == "ep003-0.70.keras"
    assert str(caught[0].message) == (
        f"state file {str(run / STATE_NAME)!r} names {latest!r} as the latest checkpoint, "
        f"which does not match its template {TEMPLATE!r}; finding the latest checkpoint by "
        "listing the folder instead"
    )


def test_template_given_means_the_state_file_is_not_trusted(run: Path) -> None:
    touch(run, "ep004-0.60.keras")  # saved, but the state was not updated (a crash)
    assert find_latest(run).name == "ep003-0.70.keras"  # type: ignore[union-attr]
    assert find_latest(run, TEMPLATE).name == "ep004-0.60.keras"  # type: ignore[union-attr]


def test_scan_and_find_best_read_the_template_from_the_state(run: Path) -> None:
    assert names(scan(run)) == ["ep001-0.90.keras", "ep002-0.50.keras", "ep003-0.70.keras"]
    assert find_best(run, "val_loss").name == "ep002-0.50.keras"  # type: ignore[union-attr]


def test_no_state_and_no_template_fail(tmp_path: Path) -> None:
    touch(tmp_path, "ep001-0.90.keras")
    root = str(tmp_path)
    for call, fn in [("find_latest", find_latest), ("scan", scan)]:
        with pytest.raises(TemplateError) as info:
            fn(root)
        assert str(info.value) == (
            f"no template given, and {root!r} has no state file (.ckptname-state.json) to "
            "read one from; pass the template the checkpoints were saved with, e.g. "
            f"{call}({root!r}, template='ep{{epoch:02d}}-{{val_loss:.2f}}.keras')"
        )


STATE_FAIL = [
    pytest.param(
        b'{"format": "ckpt',
        "is not valid JSON (Unterminated string starting at: line 1 column 12 (char 11)); "
        "it may be truncated",
        id="truncated",
    ),
    pytest.param(
        b"[1, 2]",
        "holds list, expected a JSON object",
        id="not an object",
    ),
    pytest.param(
        json.dumps({"format": "other/9", "template": TEMPLATE}).encode(),
        "has format 'other/9', expected 'ckptname.state/1'",
        id="other format",
    ),
    pytest.param(
        json.dumps({"format": "ckptname.state/1", "template": 5}).encode(),
        "has no template",
        id="no template",
    ),
]


@pytest.mark.parametrize(("content", "problem"), STATE_FAIL)
def test_corrupt_state_without_template_fails_saying_pass_template(
    run: Path, content: bytes, problem: str
) -> None:
    (run / STATE_NAME).write_bytes(content)
    path = str(run / STATE_NAME)
    with pytest.raises(TemplateError) as info:
        find_latest(run)
    assert str(info.value) == (
        f"state file {path!r} {problem}, and no template was given; pass the template the "
        f"checkpoints were saved with, e.g. find_latest({str(run)!r}, "
        "template='ep{epoch:02d}-{val_loss:.2f}.keras')"
    )


@pytest.mark.parametrize(("content", "problem"), STATE_FAIL)
def test_corrupt_state_with_template_is_not_read(run: Path, content: bytes, problem: str) -> None:
    (run / STATE_NAME).write_bytes(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert find_latest(run, TEMPLATE).name == "ep003-0.70.keras"  # type: ignore[union-attr]


@pytest.mark.parametrize(("content", "problem"), STATE_FAIL)
def test_corrupt_state_falls_back_to_the_template_in_the_sidecars(
    run: Path, content: bytes, problem: str
) -> None:
    for name in ["ep001-0.90.keras", "ep002-0.50.keras", "ep003-0.70.keras"]:
        sidecar(run, name, template=TEMPLATE)
    (run / STATE_NAME).write_bytes(content)
    for call in (find_latest, scan):
        with pytest.warns(UserWarning) as caught:
            call(run)
        assert str(caught[0].message) == (
            f"state file {str(run / STATE_NAME)!r} {problem}; finding checkpoints by listing "
            f"the folder, with the template {TEMPLATE!r} that their sidecars record"
        )
    assert find_latest(run, TEMPLATE) == scan(run, TEMPLATE)[-1]
    with pytest.warns(UserWarning):
        assert find_latest(run).name == "ep003-0.70.keras"  # type: ignore[union-attr]
    with pytest.warns(UserWarning):
        assert find_best(run, "val_loss").name == "ep002-0.50.keras"  # type: ignore[union-attr]


def test_corrupt_state_and_sidecars_that_disagree_fail(run: Path) -> None:
    sidecar(run, "ep002-0.50.keras", template=TEMPLATE)
    sidecar(run, "ep003-0.70.keras", template="ep{epoch:03d}-{loss:.2f}.keras")
    (run / STATE_NAME).write_bytes(b"{")
    with pytest.raises(TemplateError, match="no template was given; pass the template"):
        find_latest(run)


def test_state_with_a_template_that_does_not_compile(run: Path) -> None:
    state(run, "ep{epoch:q}.keras", "ep1.keras")
    with pytest.raises(TemplateError) as info:
        find_latest(run)
    assert str(info.value) == (
        f"state file {str(run / STATE_NAME)!r} holds a template that cannot be used "
        "(unknown format type 'q' in field 'epoch'), and no template was given; pass the "
        f"template the checkpoints were saved with, e.g. find_latest({str(run)!r}, "
        "template='ep{epoch:02d}-{val_loss:.2f}.keras')"
    )


# ------------------------------------------------------------------ templates

TEMPLATE_FAIL = [
    (
        "/abs/ep{epoch}.keras",
        "template is an absolute path; a template is relative to root, so pass the folder "
        "as root and the rest as template\n  /abs/ep{epoch}.keras\n  ^",
    ),
    (
        "C:ep{epoch}.keras",
        "template is an absolute path; a template is relative to root, so pass the folder "
        "as root and the rest as template\n  C:ep{epoch}.keras\n  ^",
    ),
    (
        "../ep{epoch}.keras",
        "template has the path part '..', which leads out of root; pass the parent folder "
        "as root instead\n  ../ep{epoch}.keras\n  ^",
    ),
    (
        "lr={lr}/../ep{epoch}.keras",
        "template has the path part '..', which leads out of root; pass the parent folder "
        "as root instead\n  lr={lr}/../ep{epoch}.keras\n          ^",
    ),
    (
        "lr={lr}//ep{epoch}.keras",
        "template has an empty path part, which names no folder of its own; remove it\n"
        "  lr={lr}//ep{epoch}.keras\n          ^",
    ),
    (
        "./ep{epoch}.keras",
        "template has the path part '.', which names no folder of its own; remove it\n"
        "  ./ep{epoch}.keras\n  ^",
    ),
    (
        "ep{epoch}.ckptname.json",
        "template contains '.ckptname', which marks ckptname's own files (sidecars, state, "
        "temporary files); no checkpoint can match it, so rename the checkpoints\n"
        "  ep{epoch}.ckptname.json\n           ^",
    ),
    (
        "ep{epoch}{batch}.keras",
        "template 'ep{epoch}{batch}.keras' cannot be read back: fields 'epoch' and 'batch' "
        "touch, so one can run into the other; put a separator between 'epoch' and "
        "'batch', e.g. {epoch}-{batch}",
    ),
]


@pytest.mark.parametrize(("template", "message"), TEMPLATE_FAIL)
def test_template_fail(tmp_path: Path, template: str, message: str) -> None:
    for call in (
        lambda: scan(tmp_path, template),
        lambda: find_latest(tmp_path, template),
        lambda: find_best(tmp_path, "val_loss", template=template),
    ):
        with pytest.raises(TemplateError) as info:
            call()
        assert str(info.value) == message


def test_template_of_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(TypeError) as info:
        scan(tmp_path, 5)  # type: ignore[arg-type]
    assert str(info.value) == "template must be a str or a ckptname.Template, got int"


# ------------------------------------------------------------------ best

BEST = "ep{epoch:02d}-{val_loss:.2f}-{val_accuracy:.3f}.keras"


def make_best(root: Path) -> None:
    for epoch, loss, acc in [(1, 0.9, 0.5), (2, 0.4, 0.7), (3, 0.6, 0.9), (4, math.nan, 0.1)]:
        touch(root, f"ep{epoch:02d}-{loss:.2f}-{acc:.3f}.keras")


@pytest.mark.parametrize(
    ("monitor", "mode", "expected"),
    [
        ("val_loss", "auto", "ep02-0.40-0.700.keras"),
        ("val_loss", "min", "ep02-0.40-0.700.keras"),
        ("val_loss", "max", "ep01-0.90-0.500.keras"),  # NaN never wins, even for max
        ("val_accuracy", "auto", "ep03-0.60-0.900.keras"),
        ("val_accuracy", "min", "ep04-nan-0.100.keras"),
    ],
)
def test_find_best(tmp_path: Path, monitor: str, mode: str, expected: str) -> None:
    make_best(tmp_path)
    found = find_best(tmp_path, monitor, mode, template=BEST)
    assert found is not None and found.name == expected
    assert found.size == 1


def test_find_best_all_nan_is_none(tmp_path: Path) -> None:
    touch(tmp_path, "ep01-nan.keras")
    assert find_best(tmp_path, "val_loss", template="ep{epoch:02d}-{val_loss:.2f}.keras") is None


def test_find_best_skips_an_empty_best(tmp_path: Path) -> None:
    touch(tmp_path, "ep01-0.50.keras")
    touch(tmp_path, "ep02-0.10.keras", b"")
    found = find_best(tmp_path, "val_loss", template="ep{epoch:02d}-{val_loss:.2f}.keras")
    assert found is not None and found.name == "ep01-0.50.keras"


def test_tie_broken_by_exact_value_reading_only_tied_sidecars(tmp_path: Path) -> None:
    template = "ep{epoch:02d}-{val_loss:.2f}.keras"
    for epoch, loss in [(1, 0.52), (2, 0.52), (3, 0.52), (4, 0.60)]:
        touch(tmp_path, f"ep{epoch:02d}-{loss:.2f}.keras")
    sidecar(tmp_path, "ep01-0.52.keras", metrics={"val_loss": 0.5187})
    sidecar(tmp_path, "ep02-0.52.keras", metrics={"val_loss": 0.5150})
    sidecar(tmp_path, "ep03-0.52.keras", metrics={"val_loss": 0.5212})
    # Unreadable, and not tied: reading it would warn.
    (tmp_path / "ep04-0.60.keras.ckptname.json").write_bytes(b"{")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = find_best(tmp_path, "val_loss", template=template)
    assert found is not None and found.name == "ep02-0.52.keras"
    assert found.metadata is not None and found.metadata["metrics"]["val_loss"] == 0.5150


def test_tie_without_sidecars_goes_to_the_earlier_as_in_keras(tmp_path: Path) -> None:
    for epoch in (1, 2, 3):
        touch(tmp_path, f"ep{epoch:02d}-0.52.keras", mtime=1_000_000 + epoch)
    found = find_best(tmp_path, "val_loss", template="ep{epoch:02d}-{val_loss:.2f}.keras")
    assert found is not None and found.name == "ep01-0.52.keras"


def test_tie_with_corrupt_sidecar_warns(tmp_path: Path) -> None:
    for epoch in (1, 2):
        touch(tmp_path, f"ep{epoch:02d}-0.52.keras")
    sidecar(tmp_path, "ep01-0.52.keras", metrics={"val_loss": 0.51})
    (tmp_path / "ep02-0.52.keras.ckptname.json").write_bytes(b"")
    with pytest.warns(UserWarning, match="is not valid JSON"):
        found = find_best(tmp_path, "val_loss", template="ep{epoch:02d}-{val_loss:.2f}.keras")
    assert found is not None and found.name == "ep01-0.52.keras"


def test_monitor_only_in_sidecars(tmp_path: Path) -> None:
    for epoch, auc in [(1, 0.7), (2, 0.9), (3, 0.8)]:
        touch(tmp_path, f"ep{epoch:02d}.keras")
        sidecar(tmp_path, f"ep{epoch:02d}.keras", metrics={"val_auc": auc})
    found = find_best(tmp_path, "val_auc", template="ep{epoch:02d}.keras")
    assert found is not None and found.name == "ep02.keras"


def test_monitor_nowhere_fails(tmp_path: Path) -> None:
    touch(tmp_path, "ep01.keras")
    with pytest.raises(MissingFieldError) as info:
        find_best(tmp_path, "val_auc", template="ep{epoch:02d}.keras")
    assert str(info.value) == (
        "monitor 'val_auc' is not a field of template 'ep{epoch:02d}.keras' and no "
        "checkpoint's sidecar records it; rank by one of the template's fields (epoch) or "
        "by a metric the sidecars hold"
    )


def test_find_best_checks_mode_before_any_listing(tmp_path: Path, no_listing: None) -> None:
    with pytest.raises(MonitorError):
        find_best(tmp_path, "lr", template="ep{epoch}-{lr}.keras")


# ------------------------------------------------------------------ records


def test_checkpoint_is_a_value(tmp_path: Path) -> None:
    touch(tmp_path, "ep07-0.52.keras")
    (record,) = scan(tmp_path, "ep{epoch:02d}-{val_loss:.2f}.keras")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.name = "x"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(record)) == record
    assert len({record, dataclasses.replace(record)}) == 1
    assert not hasattr(record, "__dict__")  # slotted


def test_as_dict_is_flat() -> None:
    record = Checkpoint(
        "/r/ep7-3.keras", "ep7-3.keras", {"epoch": 7, "size": 3}, 7, size=100, template="t"
    )
    assert record.as_dict() == {
        "path": "/r/ep7-3.keras",
        "name": "ep7-3.keras",
        "epoch": 7,
        "batch": None,
        "batch_in_epoch": None,
        "size": 100,
        "mtime": None,
        "template": "t",
        "values.size": 3,
    }


# ------------------------------------------------------------------ fast path


def test_every_template_pattern_here_takes_the_fast_path() -> None:
    from ckptname._roots import layout_for

    for template in [TEMPLATE, "b{batch:05d}.weights.h5", "step-{batch}", "ep{epoch}", SWEEP]:
        assert layout_for(template).fast is not None, template
        leaf = layout_for(template).leaf
        counter = next(c for c in ("batch", "epoch") if c in leaf.fields)
        assert leaf.names_at_least(["x"], counter, 5) == [], template


@pytest.fixture
def read_back(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name read back in full (Template.parse, parse_many, read_listing) during the test."""
    seen: list[str] = []
    real_parse, real_listing = ckptname.Template.parse, ckptname.Template.read_listing

    def parse(self: ckptname.Template, name: str) -> Any:
        seen.append(name)
        return real_parse(self, name)

    def read_listing(self: ckptname.Template, names: Any, companion: str) -> Any:
        seen.extend(names)
        return real_listing(self, names, companion)

    monkeypatch.setattr(ckptname.Template, "parse", parse)
    monkeypatch.setattr(ckptname.Template, "read_listing", read_listing)
    return seen


MANY = "ep{epoch:03d}-b{batch:06d}.h5"


def many_checkpoints(root: Path, count: int, template: str = MANY) -> None:
    """``count`` checkpoints of a run, then a crash's empty file under the next name."""
    root.mkdir(parents=True, exist_ok=True)
    t = ckptname.Template(template)
    for i in range(1, count + 1):
        (root / t.render(epoch=i // 100 + 1, batch=i * 3, loss=(i % 97) / 100)).write_bytes(b"x")
    (root / t.render(epoch=count // 100 + 1, batch=count * 3 + 3, loss=0.0)).write_bytes(b"")


def test_find_latest_in_a_large_folder_reads_back_only_its_newest_names(
    tmp_path: Path, read_back: list[str], stats: list[str]
) -> None:
    many_checkpoints(tmp_path, 5000)
    read_back.clear()
    stats.clear()
    found = find_latest(tmp_path, "ep{epoch:03d}-b{batch:06d}.h5")
    assert found is not None and found.name == "ep051-b015000.h5"
    # A sample of about 500 names, and those at or above the sample's newest: a few dozen.
    assert len(read_back) < 600
    # The empty one (and whether a sidecar vouches for it), then the latest.
    assert stats == ["ep051-b015003.h5", "ep051-b015003.h5.ckptname.json", "ep051-b015000.h5"]
    assert found == scan(tmp_path, "ep{epoch:03d}-b{batch:06d}.h5")[-1]


def test_the_sample_is_not_fooled_by_a_listing_that_alternates(
    tmp_path: Path, read_back: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # On tmpfs each checkpoint is listed next to its sidecar: a sample taking
    # every second name would see sidecars only, and find no bound.
    many_checkpoints(tmp_path, 3100)  # 6,202 names: a step of 6202 // 256 = 24 would do
    for path in list(tmp_path.iterdir()):
        sidecar(tmp_path, path.name, batch=1)
    real = ckptname._scan.listdir_bytes
    monkeypatch.setattr(
        ckptname._scan, "listdir_bytes", lambda path: sorted(real(path), reverse=True)
    )

    def every_counter(*args: Any) -> Any:
        raise AssertionError("the search of every counter ran: the sample found no bound")

    monkeypatch.setattr(ckptname._scan, "_descending_fast", every_counter)
    read_back.clear()
    found = find_latest(tmp_path, MANY)
    assert found is not None and found.name == "ep032-b009303.h5"  # vouched for, though empty
    assert len(read_back) < 500


def test_find_latest_goes_on_past_every_name_of_the_newest_search(tmp_path: Path) -> None:
    # Every name at or above the sample's bound is an empty file: the rest of
    # the folder is searched, newest first, as in a small folder.
    many_checkpoints(tmp_path, 3000)
    for path in sorted(tmp_path.iterdir())[-600:]:
        path.write_bytes(b"")
    found = find_latest(tmp_path, "ep{epoch:03d}-b{batch:06d}.h5")
    expected = [r for r in scan(tmp_path, "ep{epoch:03d}-b{batch:06d}.h5")][-1]
    assert found == expected and found.size == 1


def test_find_best_reads_back_only_the_names_that_share_the_best_value(
    tmp_path: Path, read_back: list[str]
) -> None:
    template = "ep{epoch:03d}-b{batch:06d}-{loss:.2f}.h5"
    many_checkpoints(tmp_path, 2000, template)
    read_back.clear()
    found = find_best(tmp_path, "loss", "min", template)
    # 0.00 is the empty file's: the earliest complete one of the 0.00 group wins.
    assert found is not None and found.name == "ep001-b000291-0.00.h5"
    assert sorted(read_back) == sorted(p.name for p in tmp_path.glob("*-0.00.h5"))


def test_records_made_in_bulk_equal_those_the_constructor_makes(tmp_path: Path) -> None:
    committed_folder(tmp_path)
    records = scan(tmp_path, "b{batch:05d}.h5") + scan(tmp_path, "b{batch:05d}.h5", sizes=True)
    for record in records:
        made = Checkpoint(
            record.path,
            record.name,
            dict(record.values),
            record.epoch,
            record.batch,
            record.batch_in_epoch,
            size=record.size,
            mtime=record.mtime,
            template=record.template,
        )
        assert record == made and hash(record) == hash(made) and repr(record) == repr(made)
        assert pickle.loads(pickle.dumps(record)) == record
        assert all(hasattr(record, f.name) for f in dataclasses.fields(Checkpoint))


def test_a_name_whose_counter_is_not_a_number_is_never_the_latest(tmp_path: Path) -> None:
    template = "ckpt-{epoch}.keras"
    touch(tmp_path, "ckpt-final.keras")
    assert find_latest(tmp_path, template) is None
    state(tmp_path, template, "ckpt-final.keras")
    assert find_latest(tmp_path) is None
    for epoch in (9, 10):
        touch(tmp_path, f"ckpt-{epoch}.keras")
    assert names(scan(tmp_path, template)) == ["ckpt-final.keras", "ckpt-9.keras", "ckpt-10.keras"]
    assert find_latest(tmp_path, template).name == "ckpt-10.keras"  # type: ignore[union-attr]
    assert find_latest(tmp_path).name == "ckpt-10.keras"  # type: ignore[union-attr]


def test_best_per_group_reads_a_metric_kept_only_in_the_sidecars(tmp_path: Path) -> None:
    # The same sources as find_best: the sidecars where the names lack the metric.
    template = "run={run:s}/ep{epoch:03d}.keras"
    losses = {("a", 1): 0.5, ("a", 2): 0.3, ("a", 3): 0.4, ("b", 1): 0.2, ("b", 2): math.nan}
    for (run_name, epoch), loss in losses.items():
        name = f"run={run_name}/ep{epoch:03d}.keras"
        touch(tmp_path, name)
        sidecar(tmp_path, name, metrics={"val_loss": loss})
    records = scan(tmp_path, template)
    best = best_per_group(records, "val_loss", by="run")
    assert {k: v.name for k, v in best.items()} == {
        ("a",): "run=a/ep002.keras",
        ("b",): "run=b/ep001.keras",
    }
    alone = find_best(tmp_path / "run=a", "val_loss", template="ep{epoch:03d}.keras")
    assert alone is not None and alone.path == best[("a",)].path
    with pytest.raises(MissingFieldError) as info:
        best_per_group(records, "val_acc", by="run")
    assert str(info.value) == (
        "monitor 'val_acc' is not a field of template 'run={run:s}/ep{epoch:03d}.keras' and no "
        "checkpoint's sidecar records it; rank by one of the template's fields (run, epoch) or "
        "by a metric the sidecars hold"
    )
    assert best_per_group([], "val_acc") == {}


# ------------------------------------------------------------------ links


def test_links_are_followed_only_where_they_stay_inside_the_root(tmp_path: Path) -> None:
    """The rule pruning follows holds for reading too: scan, find_latest and find_best
    follow a link to a checkpoint or a folder only where it leads inside the root."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    template = "ep{epoch:03d}-{loss:.2f}.keras"
    touch(outside, "secret.keras")
    touch(outside, "seed=2/ep001-0.01.keras")
    touch(root, "ep001-0.50.keras")
    touch(root, "archive/kept.keras")
    (root / "ep002-0.40.keras").symlink_to(root / "archive" / "kept.keras")  # inside
    (root / "ep003-0.30.keras").symlink_to("archive/kept.keras")  # inside, relative
    (root / "ep009-0.01.keras").symlink_to(outside / "secret.keras")  # out of the root
    assert names(scan(root, template)) == [
        "ep001-0.50.keras",
        "ep002-0.40.keras",
        "ep003-0.30.keras",
    ]
    assert find_latest(root, template).name == "ep003-0.30.keras"  # type: ignore[union-attr]
    assert find_best(root, "loss", template=template).name == "ep003-0.30.keras"  # type: ignore[union-attr]
    state(root, template, "ep009-0.01.keras")
    assert find_latest(root).name == "ep003-0.30.keras"  # type: ignore[union-attr]

    sweep = "seed={seed:d}/ep{epoch:03d}-{loss:.2f}.keras"
    touch(root, "seed=1/ep001-0.50.keras")
    touch(root, "archive/s3/ep001-0.20.keras")
    (root / "seed=2").symlink_to(outside / "seed=2", target_is_directory=True)  # out
    (root / "seed=3").symlink_to(root / "archive" / "s3", target_is_directory=True)  # inside
    assert names(scan(root, sweep)) == ["seed=1/ep001-0.50.keras", "seed=3/ep001-0.20.keras"]
    assert find_best(root, "loss", template=sweep).name == "seed=3/ep001-0.20.keras"  # type: ignore[union-attr]
    state(root, sweep, "seed=2/ep001-0.01.keras")
    assert find_latest(root).name == "seed=3/ep001-0.20.keras"  # type: ignore[union-attr]

    (root / "ckpts").symlink_to(outside / "seed=2", target_is_directory=True)  # out
    assert scan(root, "ckpts/ep{epoch:03d}-{loss:.2f}.keras") == []


UNREADABLE_PROBE = """
import json, sys
from ckptname import StorageError, find_best, find_latest, scan
from ckptname.cli import main
root, template = sys.argv[1], sys.argv[2]
got = []
for call in (lambda: scan(root, template), lambda: find_latest(root, template),
             lambda: find_best(root, "loss", template=template)):
    try:
        call()
    except StorageError as exc:
        got.append([str(exc), exc.errno, isinstance(exc, OSError)])
    else:
        got.append(None)
sys.stdout.write(json.dumps(got) + "\\n")
sys.stdout.flush()
sys.exit(main(["ls", root, "-t", template]))
"""


def test_a_local_folder_that_cannot_be_listed_is_a_storage_error_naming_it():
    """Permission denied on a folder of the tree: every query and the CLI say which, in one line."""
    # A tree another user can reach, with one member's folder only its owner may
    # list; the queries run as that other user (root reads everything).
    base = tempfile.mkdtemp(prefix="ckptname-perm-", dir="/tmp")  # (tmp_path is 0o700)
    try:
        os.chmod(base, 0o755)
        for run in ("a", "b"):
            folder = os.path.join(base, f"run={run}")
            os.makedirs(folder)
            for batch in (1, 2):
                with open(os.path.join(folder, f"b{batch}-0.5.keras"), "wb") as fh:
                    fh.write(b"model")
            os.chmod(folder, 0o755)
        locked = os.path.join(base, "run=b")
        os.chmod(locked, stat.S_IRWXU)  # 0o700, owned by this user
        command = [sys.executable, "-c", UNREADABLE_PROBE, base, "run={run}/b{batch}-{loss}.keras"]
        if os.geteuid() == 0:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    finally:
        os.chmod(os.path.join(base, "run=b"), 0o755)
        shutil.rmtree(base)
    message = f"could not list {locked!r}: Permission denied"
    assert done.stdout, done.stderr
    assert json.loads(done.stdout.splitlines()[0]) == [[message, 13, True]] * 3
    assert done.stderr == f"ckptname ls: {message}\n"
    assert done.returncode == 1
