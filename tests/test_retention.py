"""Retention: the pure plan, and the step that deletes."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

from ckptname import (
    Checkpoint,
    CheckpointError,
    MissingFieldError,
    MonitorError,
    RetentionPlan,
    apply_retention,
    plan_retention,
    scan,
)
from ckptname._metadata import encode

TEMPLATE = "ep{epoch:03d}-{val_loss:.2f}.keras"
# epoch -> val_loss; epoch 5 is NaN, epochs 2 and 6 tie.
LOSSES = {1: 0.9, 2: 0.3, 3: 0.5, 4: 0.7, 5: math.nan, 6: 0.3, 7: 0.8}


def name(epoch: int) -> str:
    return f"ep{epoch:03d}-{LOSSES[epoch]:.2f}.keras"


def records(**extra: Any) -> list[Checkpoint]:
    out = []
    for epoch, loss in LOSSES.items():
        n = name(epoch)
        out.append(
            Checkpoint(
                f"/runs/a/{n}",
                n,
                {"epoch": epoch, "val_loss": loss},
                epoch,
                template=TEMPLATE,
                **extra,
            )
        )
    return out


def kept_epochs(plan: RetentionPlan) -> list[int]:
    return [r.epoch for r in plan.keep]  # type: ignore[misc]


# ------------------------------------------------------------------ plan

PLAN_PASS = [
    # (arguments, epochs kept)
    ({}, [1, 2, 3, 4, 5, 6, 7]),
    ({"keep_last": 2}, [6, 7]),
    ({"keep_last": 0}, [7]),  # the newest always survives
    ({"keep_last": 100}, [1, 2, 3, 4, 5, 6, 7]),
    ({"keep_best": 1, "monitor": "val_loss"}, [2, 7]),  # tie: the earlier wins, as in Keras
    ({"keep_best": 2, "monitor": "val_loss"}, [2, 6, 7]),
    ({"keep_best": 3, "monitor": "val_loss", "mode": "min"}, [2, 3, 6, 7]),
    ({"keep_best": 1, "monitor": "val_loss", "mode": "max"}, [1, 7]),  # NaN never counts
    ({"keep_best": 0, "monitor": "val_loss"}, [7]),
    ({"keep_last": 1, "keep_best": 1, "monitor": "val_loss"}, [2, 7]),
    ({"keep_last": 2, "keep_best": 2, "monitor": "val_loss"}, [2, 6, 7]),  # union
    ({"keep_last": 1, "protect": ("/runs/a/" + name(1),)}, [1, 7]),
    ({"keep_last": 1, "protect": (name(3),)}, [3, 7]),  # a name relative to root
    ({"keep_last": 1, "protect": "/runs/a/" + name(3)}, [3, 7]),  # one path, bare
    ({"keep_last": 1, "protect": ("/runs/a/../a/" + name(4),)}, [4, 7]),  # spelled otherwise
    ({"keep_last": 1, "protect": ("/runs/b/" + name(4),)}, [7]),  # another run's file
]


@pytest.mark.parametrize(("kwargs", "kept"), PLAN_PASS)
def test_plan(kwargs: dict[str, Any], kept: list[int]) -> None:
    plan = plan_retention(records(), **kwargs)
    assert kept_epochs(plan) == kept
    assert sorted(kept_epochs(plan) + [r.epoch for r in plan.delete]) == list(LOSSES)  # type: ignore[misc]


def test_plan_is_independent_of_input_order() -> None:
    forward = plan_retention(records(), keep_last=2, keep_best=2, monitor="val_loss")
    backward = plan_retention(records()[::-1], keep_last=2, keep_best=2, monitor="val_loss")
    assert forward == backward


def test_plan_says_why_each_is_kept() -> None:
    rs = records()
    plan = plan_retention(rs, keep_last=2, keep_best=1, monitor="val_loss", protect=(rs[0],))
    assert dict(plan.reasons) == {
        rs[0].path: ("protected",),
        rs[1].path: ("best",),
        rs[5].path: ("latest",),
        rs[6].path: ("newest", "latest"),
    }


def test_tie_broken_by_exact_value_where_records_carry_it() -> None:
    rs = records()
    exact = {2: 0.2999, 6: 0.3001}
    rs = [
        Checkpoint(
            r.path,
            r.name,
            r.values,
            r.epoch,
            metadata={"metrics": {"val_loss": exact[r.epoch]}} if r.epoch in exact else None,  # type: ignore[index]
        )
        for r in rs
    ]
    plan = plan_retention(rs, keep_best=1, monitor="val_loss")
    assert kept_epochs(plan) == [2, 7]


def test_metric_only_in_metadata() -> None:
    rs = [
        Checkpoint(f"/r/ep{i}", f"ep{i}", {"epoch": i}, i, metadata={"metrics": {"auc": v}})
        for i, v in [(1, 0.9), (2, 0.5), (3, 0.7)]
    ]
    assert kept_epochs(plan_retention(rs, keep_best=1, monitor="auc")) == [1, 3]


def test_empty_records_make_an_empty_plan() -> None:
    assert plan_retention([], keep_last=1) == RetentionPlan((), ())


def test_duplicate_paths_count_once() -> None:
    rs = records()
    plan = plan_retention(rs + rs, keep_last=1)
    assert len(plan.keep) + len(plan.delete) == len(rs)


PLAN_FAIL = [
    ({"keep_last": -1}, ValueError, "keep_last must be None or a whole number >= 0, got -1"),
    ({"keep_last": True}, ValueError, "keep_last must be None or a whole number >= 0, got True"),
    ({"keep_best": 1.5}, ValueError, "keep_best must be None or a whole number >= 0, got 1.5"),
    (
        {"keep_best": 2},
        ValueError,
        "keep_best=2 needs a metric to rank by; pass monitor=, e.g. monitor='val_loss'",
    ),
    (
        {"keep_best": 1, "monitor": "val_loss", "mode": "lowest"},
        MonitorError,
        "mode must be 'min', 'max' or 'auto', got 'lowest'; use 'min' where lower is better "
        "(losses, errors) and 'max' where higher is better (accuracies, scores)",
    ),
    (
        {"keep_best": 1, "monitor": "val_auc"},
        MissingFieldError,
        "keep_best=1 ranks by 'val_auc', which no checkpoint has in its name or metadata "
        "(fields: epoch, val_loss); rank by one of those fields, or put the metric into "
        "the template",
    ),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), PLAN_FAIL)
def test_plan_fail(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        plan_retention(records(), **kwargs)
    assert str(info.value) == message


# ------------------------------------------------------------------ apply


def save(root: Path, epoch: int, data: bytes = b"model") -> None:
    (root / name(epoch)).write_bytes(data)
    (root / (name(epoch) + ".ckptname.json")).write_bytes(encode({"epoch": epoch}))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "run"
    root.mkdir()
    for epoch in LOSSES:
        save(root, epoch)
    # Not checkpoints of the template: never deleted.
    for decoy in [
        "ep001-0.90.keras.backup",
        "ep1-0.90.keras",
        ".ckptname-tmp-ab-ep008-0.10.keras",
        ".ckptname-state.json",
        "notes.txt",
    ]:
        (root / decoy).write_bytes(b"keep me")
    return root


def test_apply_deletes_checkpoints_and_sidecars_only(folder: Path) -> None:
    before = set(os.listdir(folder))
    plan = plan_retention(scan(folder, TEMPLATE), keep_last=2)
    deleted = apply_retention(plan, folder)
    assert deleted == [str(folder / name(e)) for e in (1, 2, 3, 4, 5)]
    gone = {name(e) for e in (1, 2, 3, 4, 5)} | {
        name(e) + ".ckptname.json" for e in (1, 2, 3, 4, 5)
    }
    assert set(os.listdir(folder)) == before - gone
    assert [r.epoch for r in scan(folder, TEMPLATE)] == [6, 7]


def test_apply_skips_files_already_gone(folder: Path) -> None:
    plan = plan_retention(scan(folder, TEMPLATE), keep_last=1)
    (folder / name(1)).unlink()
    (folder / (name(2) + ".ckptname.json")).unlink()
    deleted = apply_retention(plan, folder)
    assert deleted == [str(folder / name(e)) for e in (2, 3, 4, 5, 6)]


def test_apply_checks_against_a_given_template(folder: Path) -> None:
    plan = plan_retention(scan(folder, TEMPLATE), keep_last=1)
    with pytest.raises(CheckpointError) as info:
        apply_retention(plan, folder, template="other-{epoch}.keras")
    assert str(info.value) == (
        f"refusing to delete {str(folder / name(1))!r}: its name does not match the "
        "template 'other-{epoch}.keras'; nothing was deleted"
    )
    assert len(scan(folder, TEMPLATE)) == len(LOSSES)


def _plan_deleting(record: Checkpoint, keep: tuple[Checkpoint, ...] = ()) -> RetentionPlan:
    return RetentionPlan(keep, (record,))


APPLY_FAIL = [
    pytest.param(
        lambda root: Checkpoint(str(root.parent / "x" / name(1)), name(1), {}, template=TEMPLATE),
        "it does not lie under {root!r} as {name!r}",
        id="other folder",
    ),
    pytest.param(
        lambda root: Checkpoint(str(root / ".." / name(1)), "../" + name(1), {}, template=TEMPLATE),
        "its name '../{name}' is not a name relative to root",
        id="dot dot",
    ),
    pytest.param(
        lambda root: Checkpoint(str(root / "notes.txt"), "notes.txt", {}, template=TEMPLATE),
        "its name does not match the template {template!r}",
        id="not matching",
    ),
    pytest.param(
        lambda root: Checkpoint(
            str(root / ".ckptname-state.json"), ".ckptname-state.json", {}, template="{x:s}"
        ),
        "its name '.ckptname-state.json' belongs to ckptname's own files",
        id="reserved",
    ),
    pytest.param(
        lambda root: Checkpoint(str(root / name(1)), name(1), {}),
        "it carries no template to check its name against; pass template=",
        id="no template",
    ),
]


@pytest.mark.parametrize(("make", "problem"), APPLY_FAIL)
def test_apply_fail_deletes_nothing(folder: Path, make: Any, problem: str) -> None:
    before = sorted(os.listdir(folder))
    good = scan(folder, TEMPLATE)[0]
    bad = make(folder)
    plan = RetentionPlan((), (good, bad))
    with pytest.raises(CheckpointError) as info:
        apply_retention(plan, folder)
    detail = problem.format(root=str(folder), name=name(1), template=TEMPLATE)
    assert str(info.value) == f"refusing to delete {bad.path!r}: {detail}; nothing was deleted"
    assert sorted(os.listdir(folder)) == before


def test_apply_refuses_a_plan_that_keeps_and_deletes_the_same(folder: Path) -> None:
    record = scan(folder, TEMPLATE)[0]
    with pytest.raises(CheckpointError, match="the plan also keeps it"):
        apply_retention(RetentionPlan((record,), (record,)), folder)
    assert (folder / record.name).exists()


def test_apply_never_follows_a_symlinked_folder_out_of_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "ep001.keras").write_bytes(b"precious")
    root = tmp_path / "sweep"
    (root / "seed=1").mkdir(parents=True)
    (root / "seed=1" / "ep001.keras").write_bytes(b"x")
    (root / "seed=1" / "ep002.keras").write_bytes(b"x")
    (root / "seed=2").symlink_to(outside, target_is_directory=True)
    template = "seed={seed:d}/ep{epoch:03d}.keras"
    found = scan(root, template)
    assert [r.name for r in found] == ["seed=1/ep001.keras", "seed=1/ep002.keras"]
    # A plan made from records that name the linked folder (made by hand, or
    # before the link appeared) still deletes nothing through it.
    linked = Checkpoint(str(root / "seed=2" / "ep001.keras"), "seed=2/ep001.keras",
                        {"seed": 2, "epoch": 1}, 1, template=template)  # fmt: skip
    plan = plan_retention([*found, linked], keep_last=1)
    with pytest.warns(UserWarning) as caught:
        deleted = apply_retention(plan, root)
    assert deleted == [str(root / "seed=1" / "ep001.keras")]
    assert (outside / "ep001.keras").read_bytes() == b"precious"
    assert str(caught[0].message) == (
        f"not deleting {str(root / 'seed=2' / 'ep001.keras')!r}: its folder is a symbolic "
        f"link that leads out of {str(root)!r}"
    )


def test_apply_follows_a_symlinked_folder_that_stays_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    (root / "archive" / "seed=1").mkdir(parents=True)
    for epoch in (1, 2, 3):
        (root / "archive" / "seed=1" / f"ep{epoch:03d}.keras").write_bytes(b"x")
    (root / "seed=1").symlink_to(root / "archive" / "seed=1", target_is_directory=True)
    template = "seed={seed:d}/ep{epoch:03d}.keras"
    plan = plan_retention(scan(root, template), keep_last=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(apply_retention(plan, root)) == 2
    assert sorted(os.listdir(root / "archive" / "seed=1")) == ["ep003.keras"]


def test_apply_removes_a_symlinked_checkpoint_not_its_target(tmp_path: Path) -> None:
    root = tmp_path / "run"
    (root / "kept").mkdir(parents=True)
    target = root / "kept" / "first.keras"  # inside the root: scanning follows the link
    target.write_bytes(b"precious")
    (root / "ep001.keras").symlink_to(target)
    (root / "ep002.keras").write_bytes(b"x")
    plan = plan_retention(scan(root, "ep{epoch:03d}.keras"), keep_last=1)
    assert apply_retention(plan, root) == [str(root / "ep001.keras")]
    assert not os.path.lexists(root / "ep001.keras")
    assert target.read_bytes() == b"precious"


def test_resumed_from_checkpoint_survives_top_k(folder: Path) -> None:
    # Lightning #16426: top-k after a resume deleted the file the run resumed from.
    resumed_from = str(folder / name(1))
    plan = plan_retention(
        scan(folder, TEMPLATE), keep_best=1, monitor="val_loss", protect=(resumed_from,)
    )
    apply_retention(plan, folder)
    assert [r.epoch for r in scan(folder, TEMPLATE)] == [1, 2, 7]


# ------------------------------------------------------------------ names outside the sequence


def test_a_name_whose_counter_is_not_a_number_is_never_pruned(tmp_path: Path) -> None:
    # 'ckpt-{epoch}' has no format type, so a hand-saved 'ckpt-final' reads as
    # epoch='final': not a point of the run's sequence, neither old nor new.
    for n in ["ckpt-1.keras", "ckpt-2.keras", "ckpt-3.keras", "ckpt-final.keras", "ckpt-x.keras"]:
        (tmp_path / n).write_bytes(b"weights")
    found = scan(tmp_path, "ckpt-{epoch}.keras")
    for keep_last in (0, 2):
        plan = plan_retention(found, keep_last=keep_last)
        assert {r.name for r in plan.keep} >= {"ckpt-final.keras", "ckpt-x.keras", "ckpt-3.keras"}
        assert plan.reasons[str(tmp_path / "ckpt-final.keras")] == ("not numbered",)
        assert plan.reasons[str(tmp_path / "ckpt-3.keras")][0] == "newest"
    plan = plan_retention(found, keep_last=1)
    assert apply_retention(plan, tmp_path) == [
        str(tmp_path / "ckpt-1.keras"),
        str(tmp_path / "ckpt-2.keras"),
    ]
    assert sorted(os.listdir(tmp_path)) == ["ckpt-3.keras", "ckpt-final.keras", "ckpt-x.keras"]


def test_only_names_outside_the_sequence_are_all_kept() -> None:
    off = [Checkpoint(f"/r/ckpt-{t}.keras", f"ckpt-{t}.keras", {"epoch": t}) for t in "ab"]
    plan = plan_retention(off, keep_last=0)
    assert (plan.delete, [r.name for r in plan.keep]) == ((), ["ckpt-a.keras", "ckpt-b.keras"])


# ------------------------------------------------------------------ a folder swapped for a link

_SWAPPER = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
a, b, stop = (os.fsencode(p) for p in sys.argv[1:4])
swaps = 0
print("swapping", flush=True)
while not os.path.exists(stop):
    if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
        sys.exit(f"renameat2: {os.strerror(ctypes.get_errno())}")
    swaps += 1
print(swaps, flush=True)
"""


def _write_at(folder_fd: int, name: str, data: bytes) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=folder_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def test_a_folder_swapped_for_a_link_never_sends_a_delete_out_of_the_root(tmp_path: Path) -> None:
    """An attacker swaps a run folder with a link to an outside folder as fast as the
    kernel allows (renameat2 RENAME_EXCHANGE) for 10 s, while retention prunes it and
    the callback's start-of-training cleanup removes leftovers there: nothing outside
    the root changes, and the run's own files are still pruned whenever the real
    folder is in place."""
    import ctypes
    import subprocess
    import sys
    import time
    import warnings

    from ckptname._transaction import CheckpointFolder

    if not hasattr(ctypes.CDLL(None), "renameat2"):
        pytest.skip("the C library has no renameat2")
    template = "seed={seed:d}/ep{epoch:03d}.keras"
    root = tmp_path / "root"
    run = root / "seed=1"
    run.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    # What a delete by path through the link would hit: the same names, outside.
    bait = [f"ep{e:03d}.keras" for e in range(1, 5)]
    bait += [n + ".ckptname.json" for n in bait]
    bait += [".ckptname-tmp-0123456789ab-ep007.keras", "ep009.keras.ckptname.json"]
    for n in bait:
        (outside / n).write_bytes(b"precious " + n.encode())
    before = {n: (outside / n).read_bytes() for n in sorted(os.listdir(outside))}
    link = root / ".swap"
    link.symlink_to(outside, target_is_directory=True)
    run_fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)  # follows the real folder wherever it is
    records = [
        Checkpoint(str(run / n), f"seed=1/{n}", {"seed": 1, "epoch": e}, e, template=template)
        for e, n in enumerate(bait[:4], start=1)
    ]
    plan = plan_retention(records, keep_last=1)
    cleaner = CheckpointFolder(str(root / template))
    stop = tmp_path / "stop"
    swapper = subprocess.Popen(
        [sys.executable, "-c", _SWAPPER, str(run), str(link), str(stop)],
        stdout=subprocess.PIPE,
        text=True,
    )
    rounds = deleted = refused = 0
    try:
        assert swapper.stdout is not None and swapper.stdout.readline() == "swapping\n"
        end = time.monotonic() + 10
        while time.monotonic() < end:
            for n in bait:
                _write_at(run_fd, n, b"ours")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                deleted += len(apply_retention(plan, root))
                cleaner.clean_leftovers(records)
            refused += sum("leads out of" in str(w.message) for w in caught)
            rounds += 1
    finally:
        stop.write_bytes(b"")
        out, _ = swapper.communicate(timeout=30)
        os.close(run_fd)
    assert swapper.returncode == 0, out
    assert {n: (outside / n).read_bytes() for n in sorted(os.listdir(outside))} == before
    # The race was met both ways: some deletes refused, some done in the real folder.
    assert refused > 0 and deleted > 0, (rounds, refused, deleted, out)
