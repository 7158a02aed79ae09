"""A save that fails on disk: a clear error or a warning, and a folder left as it was."""

from __future__ import annotations

import builtins
import errno
import os

import keras
import pytest
from keras_util import fit, leftovers, model, names, ours, read_state

import ckptname
from ckptname import CheckpointSaveError, CkptnameWarning, read_metadata
from ckptname.keras import BatchAwareCheckpoint, resume

_real_replace = os.replace


def fail_replace(monkeypatch, suffix, code, times=1):
    """Make os.replace fail with ``code`` for destinations ending in ``suffix``."""
    left = [times]

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(suffix) and left[0] > 0:
            left[0] -= 1
            raise OSError(code, os.strerror(code), str(dst))
        return _real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def save_run(folder, on_save_error="raise", epochs=2):
    """A fresh model's fit, saving every 5 batches as ``b{batch:02d}.keras`` in ``folder``."""
    ckpt = BatchAwareCheckpoint(
        str(folder / "b{batch:02d}.keras"), save_freq=5, on_save_error=on_save_error
    )
    fit(model(), [ckpt], epochs)


@pytest.mark.parametrize(
    ("suffix", "code", "step", "path"),
    [
        ("b10.keras", errno.ENOSPC, "rename the checkpoint into place", "b10.keras"),
        ("b10.keras.ckptname.json", errno.EACCES, "write the sidecar", "b10.keras.ckptname.json"),
        (".ckptname-state.json", errno.ENOSPC, "write the state file", ".ckptname-state.json"),
    ],
)
def test_failed_step_raises_naming_the_path_and_leaves_the_folder_as_it_was(
    tmp_path, monkeypatch, suffix, code, step, path
):
    # The state file is written after every save; fail it at the second.
    fail_replace(monkeypatch, suffix, code)
    if suffix == ".ckptname-state.json":
        calls = [0]
        real = os.replace

        def second_state_write(src, dst, *a, **k):
            if str(dst).endswith(suffix):
                calls[0] += 1
                if calls[0] == 1:
                    return _real_replace(src, dst, *a, **k)
            return real(src, dst, *a, **k)

        monkeypatch.setattr(os, "replace", second_state_write)
    with pytest.raises(CheckpointSaveError) as info:
        save_run(tmp_path)
    assert str(info.value) == (f"could not {step} {str(tmp_path / path)!r}: {os.strerror(code)}")
    assert info.value.errno == code
    assert names(tmp_path) == ["b05.keras"]
    assert sorted(p.name for p in tmp_path.glob("*.ckptname.json")) == ["b05.keras.ckptname.json"]
    assert read_state(tmp_path)["latest"]["name"] == "b05.keras"
    assert leftovers(tmp_path) == []
    keras.models.load_model(tmp_path / "b05.keras")


def test_failed_model_write_removes_the_partial_file(tmp_path, monkeypatch):
    real_save = keras.Model.save

    def save(self, filepath, *args, **kwargs):
        if str(filepath).endswith("b10.keras"):
            with open(filepath, "wb") as fh:
                fh.write(b"PK\x03\x04 half a zip")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", save)
    with pytest.raises(CheckpointSaveError) as info:
        save_run(tmp_path)
    assert str(info.value) == (
        f"could not write the checkpoint {str(tmp_path / 'b10.keras')!r}: No space left on device"
    )
    assert names(tmp_path) == ["b05.keras"]
    assert leftovers(tmp_path) == []


def test_on_save_error_warn_keeps_training(tmp_path, monkeypatch):
    fail_replace(monkeypatch, "b10.keras", errno.ENOSPC)
    with pytest.warns(CkptnameWarning) as record:
        save_run(tmp_path, on_save_error="warn")
    assert ours(record) == [
        f"could not rename the checkpoint into place {str(tmp_path / 'b10.keras')!r}: "
        "No space left on device; training continues (on_save_error='warn')"
    ]
    assert names(tmp_path) == ["b05.keras", "b15.keras", "b20.keras"]
    assert read_state(tmp_path)["latest"]["name"] == "b20.keras"
    assert read_metadata(tmp_path / "b20.keras")["iterations"] == 20
    assert leftovers(tmp_path) == []


def test_a_killed_saves_temporary_file_is_removed_at_train_begin(tmp_path):
    ours = tmp_path / ".ckptname-tmp-0123abcd4567-b05.keras"
    theirs = tmp_path / ".ckptname-tmp-0123abcd4567-other-05.keras"
    ours.write_bytes(b"half")
    theirs.write_bytes(b"half")
    save_run(tmp_path, epochs=1)
    assert not ours.exists()
    assert theirs.exists()  # another template's save: not ours to remove
    assert names(tmp_path) == ["b05.keras", "b10.keras"]


def test_what_a_killed_save_leaves_is_removed_at_train_begin(tmp_path):
    # Every file a save killed at some step can leave: the model, sidecar and
    # state under temporary names, a sidecar whose checkpoint was never
    # renamed into place (or whose checkpoint a killed prune removed), and a
    # temporary lock file.
    left = [
        ".ckptname-tmp-0123abcd4567-b05.keras.ckptname.json",
        ".ckptname-tmp-0123abcd4567-.ckptname-state.json",
        "b03.keras.ckptname.json",
        ".ckptname-tmp-0123abcd4567-.ckptname.lock",
    ]
    kept = [
        "other-03.keras.ckptname.json",  # another template's
        ".ckptname-tmp-89ab01234567-.ckptname.lock",  # a lock being taken right now
    ]
    for name in left + kept:
        (tmp_path / name).write_bytes(b"{}")
    old = os.stat(tmp_path / left[-1]).st_mtime - 120
    os.utime(tmp_path / left[-1], (old, old))
    save_run(tmp_path, epochs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            *kept,
            ".ckptname-state.json",
            "b05.keras",
            "b05.keras.ckptname.json",
            "b10.keras",
            "b10.keras.ckptname.json",
        ]
    )


# ----------------------------------------------------------------- every step, both errnos

_real_open = builtins.open


class _FailingFile:
    """A file whose writes fail with ``code`` after ``budget`` bytes: a disk that fills up.

    What was written before the failure stays in the file (a partial file).
    """

    def __init__(self, fh, code, budget=64):
        self._fh, self._code, self._left = fh, code, budget

    def write(self, data):
        if self._left <= 0:
            raise OSError(self._code, os.strerror(self._code))
        n = self._fh.write(data[: self._left])
        self._left -= n
        if n < len(data):
            raise OSError(self._code, os.strerror(self._code))
        return n

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()


def fail_open(monkeypatch, ends_with, code, *, skip=0):
    """Fail the writing of a temporary file whose name ends in ``ends_with``.

    ENOSPC fails a write half-way (the file was created and is partial);
    EACCES fails the ``open`` itself, as a read-only folder does. ``skip``
    lets that many matching files be written first.
    """
    seen = [0]

    def patched(file, mode="r", *args, **kwargs):
        name = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        if "w" in mode and name.startswith(".ckptname-tmp-") and name.endswith(ends_with):
            seen[0] += 1
            if seen[0] == skip + 1:
                if code == errno.EACCES:
                    raise OSError(code, os.strerror(code), os.fspath(file))
                return _FailingFile(_real_open(file, mode, *args, **kwargs), code)
        return _real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", patched)


def inject(monkeypatch, step, code):
    """Fail one step of the save at batch 10; return the message and path the user sees."""
    if step == "write":
        fail_open(monkeypatch, "-b10.keras", code)
        return "write the checkpoint", "b10.keras"
    if step == "rename":
        fail_replace(monkeypatch, "b10.keras", code)
        return "rename the checkpoint into place", "b10.keras"
    if step == "sidecar":
        fail_open(monkeypatch, "-b10.keras.ckptname.json", code)
        return "write the sidecar", "b10.keras.ckptname.json"
    # The state file: written at every save; fail the second (batch 10).
    fail_open(monkeypatch, "-.ckptname-state.json", code, skip=1)
    return "write the state file", ".ckptname-state.json"


def assert_loads_and_is_found(folder, expected_names):
    """Every checkpoint loads; find_latest and resume pick the newest, which loads."""
    assert names(folder) == expected_names
    for name in expected_names:
        keras.models.load_model(folder / name)
        assert read_metadata(folder / name)["name"] == name
    latest = ckptname.find_latest(str(folder))
    assert latest is not None and latest.name == expected_names[-1]
    assert read_state(folder)["latest"]["name"] == expected_names[-1]
    point = resume(model(seed=5), str(folder / "b{batch:02d}.keras"))
    assert point.path == str(folder / expected_names[-1])


STEPS_AND_CODES = [
    (step, code)
    for step in ("write", "rename", "sidecar", "state")
    for code in (errno.ENOSPC, errno.EACCES)
]


@pytest.mark.parametrize(
    ("step", "code"),
    STEPS_AND_CODES,
    ids=[f"{step}-{errno.errorcode[code]}" for step, code in STEPS_AND_CODES],
)
@pytest.mark.parametrize("policy", ["raise", "warn"])
def test_every_step_and_errno_under_both_policies(tmp_path, monkeypatch, step, code, policy):
    what, name = inject(monkeypatch, step, code)
    expected = f"could not {what} {str(tmp_path / name)!r}: {os.strerror(code)}"
    if policy == "raise":
        with pytest.raises(CheckpointSaveError) as info:
            save_run(tmp_path)
        assert str(info.value) == expected
        assert info.value.errno == code
        survivors = ["b05.keras"]
    else:
        with pytest.warns(CkptnameWarning) as record:
            save_run(tmp_path, on_save_error="warn")
        assert ours(record) == [f"{expected}; training continues (on_save_error='warn')"]
        survivors = ["b05.keras", "b15.keras", "b20.keras"]
    monkeypatch.undo()
    # No partial file under a checkpoint name, no temporary file, every
    # sidecar belongs to a checkpoint, and what is there loads.
    assert leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.glob("*.ckptname.json")) == [
        f"{n}.ckptname.json" for n in survivors
    ]
    assert_loads_and_is_found(tmp_path, survivors)


POISONED = {"from_batch": None}


@keras.saving.register_keras_serializable(package="ckptname_tests")
class Poisonable(keras.layers.Dense):
    """A Dense layer whose config cannot be written as JSON once poisoned (a real TypeError)."""

    def get_config(self):
        config = super().get_config()
        if POISONED["from_batch"] == "now":
            config["cannot_be_json"] = object()
        return config


class Poison(keras.callbacks.Callback):
    """From global batch ``at`` on, the model's config fails to serialize."""

    def __init__(self, at):
        super().__init__()
        self.at, self.done = at, 0

    def on_train_batch_end(self, batch, logs=None):
        self.done += 1
        if self.done == self.at:
            POISONED["from_batch"] = "now"


@pytest.mark.parametrize("background", [False, True])
def test_a_writer_raising_a_non_os_error_is_governed_by_on_save_error_in_a_real_fit(
    tmp_path, background
):
    """Keras's own save fails with a TypeError (a config that is not JSON) from batch 10 on."""
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), Poisonable(3), keras.layers.Dense(1)])
    m.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:02d}.keras"), save_freq=5,
                                on_save_error="warn", save_on_background=background)  # fmt: skip
    POISONED["from_batch"] = None
    try:
        with pytest.warns(CkptnameWarning) as record:
            fit(m, [Poison(at=10), ckpt], epochs=2)  # 20 batches: saves at 5, 10, 15, 20
    finally:
        POISONED["from_batch"] = None
    failed = [m for m in ours(record) if "training continues (on_save_error='warn')" in m]
    assert failed and all("TypeError" in m or "not JSON serializable" in m for m in failed), ours(
        record
    )
    assert names(tmp_path) == ["b05.keras"]  # the failed saves left nothing behind
    assert read_state(tmp_path)["latest"]["name"] == "b05.keras"
    assert leftovers(tmp_path) == []
    with pytest.raises(CheckpointSaveError):  # the same save, on_save_error="raise": it stops fit
        POISONED["from_batch"] = None
        raising = BatchAwareCheckpoint(str(tmp_path / "raise" / "b{batch:02d}.keras"),
                                       save_freq=5, save_on_background=background)  # fmt: skip
        try:
            fit(m, [Poison(at=10), raising], epochs=2)
        finally:
            POISONED["from_batch"] = None
