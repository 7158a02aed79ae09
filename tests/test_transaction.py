"""The save transaction and the folder's upkeep, with a fake model writer and real files."""

from __future__ import annotations

import errno
import json
import os
import re
import time

import pytest

import ckptname
from ckptname import CheckpointError, CheckpointSaveError
from ckptname._transaction import CheckpointFolder, split_filepath


def meta(name, batch, *, epoch=1, metrics=None):
    return {
        "format": "ckptname.checkpoint/1", "name": name, "template": "b{batch:03d}.keras",
        "epoch": epoch, "batch": batch, "batch_in_epoch": batch, "iterations": batch,
        "end_of_epoch": False, "steps_per_epoch": None, "metrics": metrics or {},
        "extras": {}, "time": 0.0, "ckptname_version": "0", "save_weights_only": False,
    }  # fmt: skip


def writer(payload=b"model bytes", seen=None):
    def write(target):
        if seen is not None:
            seen.append(sorted(os.listdir(os.path.dirname(target) or ".")))
        with open(target, "wb") as fh:
            fh.write(payload)

    return write


def record_renames(monkeypatch):
    """Record the final names ``os.replace`` gives, in order."""
    renamed = []
    real = os.replace

    def replace(src, dst):
        renamed.append(os.path.basename(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return renamed


def files(folder):
    return sorted(os.listdir(folder))


def state(folder):
    with open(os.path.join(folder, ".ckptname-state.json")) as fh:
        return json.load(fh)


def save(folder, name, batch, **kw):
    return folder.save(name, meta(name, batch), writer(), best=None, previous_best=None, **kw)


@pytest.mark.parametrize(
    ("filepath", "root", "template"),
    [
        ("ckpts/b{batch}.keras", "ckpts", "b{batch}.keras"),
        ("/runs/a/lr{lr}/b{batch}.keras", "/runs/a", "lr{lr}/b{batch}.keras"),
        ("b{batch}.keras", ".", "b{batch}.keras"),
        ("s3://bk/run/b{batch}.keras", "s3://bk/run", "b{batch}.keras"),
        ("ckpts/best.keras", "ckpts", "best.keras"),
    ],
)
def test_split_filepath(filepath, root, template):
    got_root, got_template = split_filepath(filepath)
    assert (got_root, got_template.text) == (root, template)


def test_a_save_writes_checkpoint_sidecar_and_state_in_the_kill_safe_order(tmp_path, monkeypatch):
    folder = CheckpointFolder(str(tmp_path / "b{batch:03d}.keras"))
    renamed = record_renames(monkeypatch)
    seen: list[list[str]] = []
    path = folder.save("b005.keras", meta("b005.keras", 5), writer(seen=seen),
                       best=None, previous_best=None)  # fmt: skip
    assert path == str(tmp_path / "b005.keras")
    assert seen == [[]]  # the model is written before anything else exists
    assert renamed == ["b005.keras.ckptname.json", ".ckptname-state.json", "b005.keras"]
    assert files(tmp_path) == [".ckptname-state.json", "b005.keras", "b005.keras.ckptname.json"]
    assert state(tmp_path)["latest"] == {
        "name": "b005.keras", "epoch": 1, "batch": 5, "batch_in_epoch": 5, "iterations": 5,
    }  # fmt: skip
    assert ckptname.read_metadata(path)["batch"] == 5
    assert [r.name for r in folder.records()] == ["b005.keras"]


def test_a_save_over_an_existing_name_places_the_new_sidecar_after_the_model(tmp_path, monkeypatch):
    """Write new, then retire old: the old sidecar is set aside only once the new model,
    its sidecar and the state file are written, right before the model takes the name."""
    folder = CheckpointFolder(str(tmp_path / "best.keras"))
    save(folder, "best.keras", 5)
    renamed = record_renames(monkeypatch)
    save(folder, "best.keras", 10)
    assert renamed[0] == ".ckptname-state.json"
    assert re.fullmatch(r"\.ckptname-tmp-[0-9a-f]{12}-best\.keras\.ckptname\.json", renamed[1])
    assert renamed[2:] == ["best.keras", "best.keras.ckptname.json"]
    assert ckptname.read_metadata(tmp_path / "best.keras")["batch"] == 10
    assert files(tmp_path) == [".ckptname-state.json", "best.keras", "best.keras.ckptname.json"]


def test_a_failing_writer_leaves_the_folder_as_it_was(tmp_path):
    folder = CheckpointFolder(str(tmp_path / "b{batch:03d}.keras"))
    save(folder, "b005.keras", 5)
    before = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}

    def full_disk(target):
        with open(target, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CheckpointSaveError) as info:
        folder.save("b010.keras", meta("b010.keras", 10), full_disk, best=None, previous_best=None)
    assert str(info.value) == (
        f"could not write the checkpoint {str(tmp_path / 'b010.keras')!r}: No space left on device"
    )
    assert info.value.errno == errno.ENOSPC
    assert {name: (tmp_path / name).read_bytes() for name in files(tmp_path)} == before
    assert folder.latest is not None and folder.latest["name"] == "b005.keras"


def test_a_failed_rename_puts_the_state_file_back(tmp_path, monkeypatch):
    folder = CheckpointFolder(str(tmp_path / "b{batch:03d}.keras"))
    save(folder, "b005.keras", 5)
    real = os.replace

    def replace(src, dst):
        if dst.endswith("b010.keras"):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    best = {"name": "b010.keras", "monitor": "loss", "mode": "min", "value": 0.1}
    before = {"name": "b005.keras", "monitor": "loss", "mode": "min", "value": 0.2}
    with pytest.raises(CheckpointSaveError, match="could not rename the checkpoint into place"):
        folder.save("b010.keras", meta("b010.keras", 10), writer(), best=best, previous_best=before)
    assert files(tmp_path) == [".ckptname-state.json", "b005.keras", "b005.keras.ckptname.json"]
    assert state(tmp_path)["latest"]["name"] == "b005.keras"
    assert state(tmp_path)["best"] == before


def test_clean_leftovers_removes_only_what_killed_saves_of_this_template_left(tmp_path):
    folder = CheckpointFolder(str(tmp_path / "b{batch:03d}.keras"))
    save(folder, "b005.keras", 5)
    old = time.time() - 3600
    leftovers = [
        ".ckptname-tmp-0123456789ab-b010.keras",
        ".ckptname-tmp-0123456789ab-b010.keras.ckptname.json",
        ".ckptname-tmp-0123456789ab-.ckptname-state.json",
        ".ckptname-tmp-0123456789ab-.ckptname.lock",  # made old below
        "b015.keras.ckptname.json",  # a sidecar whose checkpoint never got its name
    ]
    kept = [
        ".ckptname-tmp-ba9876543210-.ckptname.lock",  # young: a run may be taking the lock
        ".ckptname-tmp-0123456789ab-other.keras",  # another template's
        "other.keras.ckptname.json",
        "notes.txt",
    ]
    for name in leftovers + kept:
        (tmp_path / name).write_bytes(b"x")
    os.utime(tmp_path / leftovers[3], (old, old))
    folder.clean_leftovers(folder.records())
    assert files(tmp_path) == sorted(
        [".ckptname-state.json", "b005.keras", "b005.keras.ckptname.json", *kept]
    )


def test_check_start_refuses_later_checkpoints_and_names_the_way_out(tmp_path):
    folder = CheckpointFolder(str(tmp_path / "b{batch:03d}.keras"))
    for batch in (5, 10):
        save(folder, f"b{batch:03d}.keras", batch)
    records = folder.records()
    start = folder.check_start(10, records)
    assert [r.name for r in start.at_seed] == ["b010.keras"] and start.epoch_without_batch is None
    with pytest.raises(CheckpointError) as info:
        folder.check_start(3, records)
    assert str(info.value) == (
        f"folder {str(tmp_path)!r} already holds checkpoint 'b010.keras' of template "
        f"'b{{batch:03d}}.keras' from batch 10, later than this run's batch count 3; resume "
        f"from it (ckptname.keras.resume(model, {str(tmp_path)!r})) or use another folder"
    )


def test_check_start_reads_the_batch_from_sidecars_of_epoch_only_names(tmp_path):
    folder = CheckpointFolder(str(tmp_path / "e{epoch:02d}.keras"))
    folder.save("e01.keras", meta("e01.keras", 10), writer(), best=None, previous_best=None)
    (tmp_path / "e02.keras").write_bytes(b"no sidecar")
    start = folder.check_start(10, folder.records())
    assert [r.name for r in start.at_seed] == ["e01.keras"]
    assert start.epoch_without_batch == 2
    with pytest.raises(CheckpointError, match="from epoch 2, later than the epoch this run starts"):
        folder.check_first_epoch(start, 1)
    folder.check_first_epoch(start, 2)  # the run continues where the names stop


def test_prune_keeps_the_newest_and_the_protected(tmp_path):
    folder = CheckpointFolder(str(tmp_path / "b{batch:03d}.keras"))
    paths = [save(folder, f"b{batch:03d}.keras", batch) for batch in (5, 10, 15, 20)]
    plan = folder.prune(paths[-1], keep_last=1, keep_best=None, monitor="loss", mode="min",
                        protect={paths[0]})  # fmt: skip
    assert [r.name for r in plan.delete] == ["b010.keras", "b015.keras"]
    assert [r.name for r in folder.records()] == ["b005.keras", "b020.keras"]
    assert "b010.keras.ckptname.json" not in files(tmp_path)


def test_a_remote_save_uploads_then_writes_the_sidecar_then_the_state():
    pytest.importorskip("fsspec")
    root = f"memory://transaction-{time.time_ns()}"
    folder = CheckpointFolder(root + "/b{batch:03d}.keras")
    path = save(folder, "b005.keras", 5)
    assert folder.url(path).endswith("transaction-" + root.rsplit("-", 1)[1] + "/b005.keras")
    assert [r.name for r in ckptname.scan(root, "b{batch:03d}.keras")] == ["b005.keras"]

    def broken(target):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    with pytest.raises(CheckpointSaveError, match="could not write the checkpoint"):
        folder.save("b010.keras", meta("b010.keras", 10), broken, best=None, previous_best=None)
    assert [r.name for r in ckptname.scan(root, "b{batch:03d}.keras")] == ["b005.keras"]
    assert ckptname.find_latest(root).name == "b005.keras"


# ------------------------------------------------------------------ runs sharing one tree


def test_a_run_never_prunes_below_another_runs_root(tmp_path):
    """Run A's lr comes from the logs, so nothing fixes its folders; run B is rooted at
    runs/lr=0.01 inside A's root and has written its state file there (or holds its
    lock): B's checkpoints are B's, though A's template matches them."""
    runs = tmp_path / "runs"
    b = CheckpointFolder(str(runs / "lr=0.01" / "b{batch:03d}.keras"))
    for batch in (1, 2, 3):
        save(b, f"b{batch:03d}.keras", batch)
    a = CheckpointFolder(str(runs / "lr={lr}" / "b{batch:03d}.keras"))
    for batch in (4, 5, 6):
        save(a, f"lr=0.1/b{batch:03d}.keras", batch)
    assert [r.name for r in a.records()] == [f"lr=0.1/b00{n}.keras" for n in (4, 5, 6)]
    a.prune(a.path("lr=0.1/b006.keras"), keep_last=1, keep_best=None, monitor="loss",
            mode="auto", protect=())  # fmt: skip
    assert files(runs / "lr=0.1") == ["b006.keras", "b006.keras.ckptname.json"]
    assert [n for n in files(runs / "lr=0.01") if n.endswith(".keras")] == [
        "b001.keras",
        "b002.keras",
        "b003.keras",
    ]
    # A lock alone (B training, before its first save) marks B's root as well.
    (runs / "lr=0.01" / ".ckptname-state.json").unlink()
    (runs / "lr=0.01" / ".ckptname.lock").write_text("{}")
    assert [r.name for r in a.records()] == ["lr=0.1/b006.keras"]


def test_values_fixed_for_a_run_scope_its_checkpoints_and_its_lock(tmp_path):
    folder = CheckpointFolder(str(tmp_path / "lr={lr}" / "s{seed}" / "b{batch:03d}.keras"))
    assert (folder.lock_folder, folder.resume_hint) == (str(tmp_path), str(tmp_path))
    folder.bind_run({"lr": 0.01, "seed": 2})
    assert folder.lock_folder == str(tmp_path / "lr=0.01" / "s2")
    assert folder.resume_hint == str(tmp_path / "lr=0.01" / "s2" / "b{batch:03d}.keras")
    folder.bind_run({"lr": "{x}"})  # braces in a value stay literal text
    assert folder.lock_folder == str(tmp_path / "lr={x}")
    assert folder.resume_hint == str(tmp_path / "lr={{x}}" / "s{seed}" / "b{batch:03d}.keras")
    save(folder, "lr={x}/s1/b001.keras", 1)
    save(folder, "lr=0.5/s1/b002.keras", 2)  # not this run's ...
    folder.bind_run({"lr": "{x}"})
    assert [r.name for r in folder.records()] == ["lr={x}/s1/b001.keras"]
    assert folder.records()[0].values == {"lr": "{x}", "seed": 1, "batch": 1}
    save(folder, "lr=0.7/s1/b003.keras", 3)  # ... unless it saves there (extras that change)
    assert [r.name for r in folder.records()] == ["lr={x}/s1/b001.keras", "lr=0.7/s1/b003.keras"]


# ------------------------------------------------------------------ replacing never uncommits


def test_a_replace_whose_writer_fails_leaves_the_old_checkpoint_whole(tmp_path):
    """best.keras is saved again and the disk fills up while the model is written: the old
    checkpoint keeps its sidecar (its counters), and the state file still names it."""
    folder = CheckpointFolder(str(tmp_path / "best.keras"))
    save(folder, "best.keras", 5)
    before = {name: (tmp_path / name).read_bytes() for name in files(tmp_path)}

    def full_disk(target):
        with open(target, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CheckpointSaveError, match="No space left on device"):
        folder.save("best.keras", meta("best.keras", 10), full_disk, best=None, previous_best=None)
    assert {name: (tmp_path / name).read_bytes() for name in files(tmp_path)} == before
    assert ckptname.read_metadata(tmp_path / "best.keras")["batch"] == 5
    assert ckptname.find_latest(str(tmp_path)).name == "best.keras"


@pytest.mark.parametrize("failing", ["best.keras", "best.keras.ckptname.json"])
def test_a_replace_whose_rename_fails_never_leaves_a_sidecar_of_the_other_model(
    tmp_path, monkeypatch, failing
):
    """The model's rename fails: the old sidecar goes back, the old checkpoint is whole.
    The new sidecar's rename fails after the model took the name: the new model stays,
    without a sidecar rather than with the old one's counters."""
    folder = CheckpointFolder(str(tmp_path / "best.keras"))
    save(folder, "best.keras", 5)
    real = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == failing and ".ckptname-tmp-" in src:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CheckpointSaveError):
        folder.save("best.keras", meta("best.keras", 10), writer(b"new"), best=None,
                    previous_best=None)  # fmt: skip
    if failing == "best.keras":
        assert files(tmp_path) == [".ckptname-state.json", "best.keras", "best.keras.ckptname.json"]
        assert (tmp_path / "best.keras").read_bytes() == b"model bytes"
        assert ckptname.read_metadata(tmp_path / "best.keras")["batch"] == 5
        assert state(tmp_path)["latest"]["batch"] == 5
    else:
        assert files(tmp_path) == [".ckptname-state.json", "best.keras"]
        assert (tmp_path / "best.keras").read_bytes() == b"new"


def test_a_writer_raising_anything_is_a_checkpoint_save_error(tmp_path):
    """Not only OSError: a model writer's own error (Keras raises ValueError, TypeError...)
    is a failed save, which on_save_error governs."""
    folder = CheckpointFolder(str(tmp_path / "b{batch:03d}.keras"))

    def broken(target):
        raise ValueError("cannot serialize layer 'dense'")

    with pytest.raises(CheckpointSaveError) as info:
        folder.save("b001.keras", meta("b001.keras", 1), broken, best=None, previous_best=None)
    assert str(info.value) == (
        f"could not write the checkpoint {str(tmp_path / 'b001.keras')!r}: "
        "ValueError: cannot serialize layer 'dense'"
    )
    assert isinstance(info.value.__cause__, ValueError)
    assert files(tmp_path) == []


def test_pruning_that_fails_with_anything_is_an_os_error(tmp_path, monkeypatch):
    folder = CheckpointFolder(str(tmp_path / "b{batch:03d}.keras"))
    paths = [save(folder, f"b00{batch}.keras", batch) for batch in (1, 2)]

    def broken(*args, **kwargs):
        raise RuntimeError("the store said no")

    monkeypatch.setattr("ckptname._transaction.apply_retention", broken)
    with pytest.raises(CheckpointSaveError) as info:
        folder.prune(paths[-1], keep_last=1, keep_best=None, monitor="loss", mode="min",
                     protect=())  # fmt: skip
    assert str(info.value) == "RuntimeError: the store said no"


# ------------------------------------------------------------------ sweep members


def test_a_starting_member_never_removes_a_live_members_state_file_in_flight(tmp_path, monkeypatch):
    """Member lr=0.1 renames its new state file into the shared root slowly (NFS-like);
    member lr=0.2 starts meanwhile and cleans its leftovers. The live member's save
    completes."""
    import threading

    template = str(tmp_path / "runs" / "lr={lr}" / "b{batch:03d}.keras")
    live = CheckpointFolder(template)
    live.bind_run({"lr": 0.1})
    save(live, "lr=0.1/b001.keras", 1)
    renaming, cleaned = threading.Event(), threading.Event()
    real = os.replace
    saver = {}

    def slow_replace(src, dst):
        mine = threading.current_thread() is saver.get("thread")
        if mine and dst.endswith(".ckptname-state.json"):
            renaming.set()
            cleaned.wait(10)  # the rename takes as long as the other member's start-up
        return real(src, dst)

    monkeypatch.setattr(os, "replace", slow_replace)
    errors = []

    def run():
        try:
            save(live, "lr=0.1/b002.keras", 2)
        except BaseException as exc:
            errors.append(exc)

    saver["thread"] = thread = threading.Thread(target=run)
    thread.start()
    try:
        assert renaming.wait(10)
        in_flight = [n for n in files(tmp_path / "runs") if n.startswith(".ckptname-tmp-")]
        assert len(in_flight) == 1
        starting = CheckpointFolder(template)
        starting.bind_run({"lr": 0.2})
        starting.clean_leftovers(starting.records())
        assert in_flight[0] in files(tmp_path / "runs")
    finally:
        cleaned.set()
        thread.join(10)
    assert errors == []
    assert state(tmp_path / "runs")["latest"]["name"] == "lr=0.1/b002.keras"
    assert files(tmp_path / "runs") == [".ckptname-state.json", "lr=0.1"]


def test_a_member_cleans_only_its_own_leftovers_in_a_shared_root(tmp_path):
    runs = tmp_path / "runs"
    template = str(runs / "lr={lr}" / "b{batch:03d}.keras")
    for lr in (0.1, 0.2):
        member = CheckpointFolder(template)
        member.bind_run({"lr": lr})
        save(member, f"lr={lr}/b001.keras", 1)
    own = ".ckptname-tmp-000000000001-.ckptname-state.json"
    others = ".ckptname-tmp-000000000002-.ckptname-state.json"
    torn = ".ckptname-tmp-000000000003-.ckptname-state.json"
    for name, latest in ((own, "lr=0.1/b002.keras"), (others, "lr=0.2/b002.keras")):
        (runs / name).write_text(json.dumps({"format": "ckptname.state/1", "template": "x",
                                             "latest": {"name": latest}}))  # fmt: skip
    (runs / torn).write_text('{"format": "ckptname.st')  # a write killed half-way
    leftovers = {
        "lr=0.1": [".ckptname-tmp-00000000000a-b002.keras", "b003.keras.ckptname.json"],
        "lr=0.2": [".ckptname-tmp-00000000000b-b002.keras", "b003.keras.ckptname.json"],
    }
    for folder, names in leftovers.items():
        for name in names:
            (runs / folder / name).write_bytes(b"x")
    (runs / ".ckptname-tmp-00000000000c-b002.keras").write_bytes(b"x")  # not a member's
    member = CheckpointFolder(template)
    member.bind_run({"lr": 0.1})
    member.clean_leftovers(member.records())
    assert files(runs) == sorted([".ckptname-state.json", ".ckptname-tmp-00000000000c-b002.keras",
                                  others, torn, "lr=0.1", "lr=0.2"])  # fmt: skip
    assert files(runs / "lr=0.1") == ["b001.keras", "b001.keras.ckptname.json"]
    assert files(runs / "lr=0.2") == sorted(["b001.keras", "b001.keras.ckptname.json",
                                             *leftovers["lr=0.2"]])  # fmt: skip


# ------------------------------------------------------------------ names too long to save


def test_a_template_whose_names_cannot_be_saved_is_refused_when_the_folder_is_opened(tmp_path):
    long = "x" * 205
    filepath = str(tmp_path / f"{long}-{{epoch:03d}}.keras")
    with pytest.raises(ckptname.TemplateError) as info:
        CheckpointFolder(filepath)
    caret = " " * (len(str(tmp_path)) + 1) + "^"
    assert str(info.value) == (
        "checkpoint names of this template take at least 215 bytes, and a save adds 41 bytes "
        "to a name (the temporary name of its sidecar, '.ckptname-tmp-<id>-' + name + "
        "'.ckptname.json'): 256 bytes, more than the 255 that file systems allow in a name; "
        f"make its last part give names of at most 214 bytes\n  {filepath}\n  {caret}"
    )
    CheckpointFolder(str(tmp_path / f"{long[:-1]}-{{epoch:03d}}.keras"))  # 214 bytes: fits


def test_values_fixed_for_a_run_that_make_names_too_long_are_refused_before_training(tmp_path):
    folder = CheckpointFolder(str(tmp_path / "lr={lr}" / "{run}-b{batch:05d}.keras"))
    folder.bind_run({"lr": 0.1, "run": "r" * 197})  # 197 + 13 = 210 bytes: fits
    with pytest.raises(ckptname.RenderError) as info:
        folder.bind_run({"lr": 0.1, "run": "r" * 202})
    assert str(info.value) == (
        "checkpoint names of template 'lr={lr}/{run}-b{batch:05d}.keras' take at least 215 "
        "bytes with run='rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr...', and a save adds 41 bytes to a "
        "name (the temporary name of its sidecar, '.ckptname-tmp-<id>-' + name + "
        "'.ckptname.json'): 256 bytes, more than the 255 that file systems allow in a name; "
        "shorten the values or the template's last part to give names of at most 214 bytes"
    )


def test_a_name_too_long_to_save_is_refused_before_anything_is_written(tmp_path):
    """A metric or a counter made the name long: no file system error naming a temporary
    path, and nothing written."""
    folder = CheckpointFolder(str(tmp_path / "{tag:s}.keras"))
    name = "t" * 209 + ".keras"  # 215 bytes
    with pytest.raises(CheckpointSaveError) as info:
        save(folder, name, 1)
    assert str(info.value) == (
        f"could not write the checkpoint {str(tmp_path / name)!r}: its name is 215 bytes, and "
        "a save adds 41 bytes to a name (the temporary name of its sidecar, "
        "'.ckptname-tmp-<id>-' + name + '.ckptname.json'): 256 bytes, more than the 255 that "
        "file systems allow in a name; keep names to at most 214 bytes"
    )
    assert info.value.errno == errno.ENAMETOOLONG
    assert files(tmp_path) == []
    save(folder, name[1:], 1)  # 214 bytes: saved, temporary names and all
    assert files(tmp_path) == sorted([".ckptname-state.json", name[1:],
                                      name[1:] + ".ckptname.json"])  # fmt: skip


def test_object_stores_add_nothing_to_a_name():
    pytest.importorskip("fsspec")
    root = f"memory://transaction-{time.time_ns()}"
    folder = CheckpointFolder(root + "/" + "x" * 240 + "-{batch:03d}.keras")
    save(folder, "x" * 240 + "-001.keras", 1)
    assert [r.batch for r in ckptname.scan(root, "x" * 240 + "-{batch:03d}.keras")] == [1]
