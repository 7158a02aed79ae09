"""A save that fails on disk: a clear error or a warning, and a folder left as it was."""

from __future__ import annotations

import errno
import json
import os

import keras
import pytest
from keras_util import data, leftovers, model, names

from ckptname import CheckpointSaveError, CkptnameWarning, read_metadata
from ckptname.keras import BatchAwareCheckpoint

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


def fit(folder, on_save_error="raise", epochs=2):
    x, y = data()
    ckpt = BatchAwareCheckpoint(
        str(folder / "b{batch:02d}.keras"), save_freq=5, on_save_error=on_save_error
    )
    model().fit(x, y, epochs=epochs, batch_size=10, verbose=0, shuffle=False, callbacks=[ckpt])


def state(folder):
    return json.loads((folder / ".ckptname-state.json").read_text())


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
        fit(tmp_path)
    assert str(info.value) == (f"could not {step} {str(tmp_path / path)!r}: {os.strerror(code)}")
    assert info.value.errno == code
    assert names(tmp_path) == ["b05.keras"]
    assert sorted(p.name for p in tmp_path.glob("*.ckptname.json")) == ["b05.keras.ckptname.json"]
    assert state(tmp_path)["latest"]["name"] == "b05.keras"
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
        fit(tmp_path)
    assert str(info.value) == (
        f"could not write the checkpoint {str(tmp_path / 'b10.keras')!r}: No space left on device"
    )
    assert names(tmp_path) == ["b05.keras"]
    assert leftovers(tmp_path) == []


def test_on_save_error_warn_keeps_training(tmp_path, monkeypatch):
    fail_replace(monkeypatch, "b10.keras", errno.ENOSPC)
    with pytest.warns(CkptnameWarning) as record:
        fit(tmp_path, on_save_error="warn")
    messages = [str(w.message) for w in record if issubclass(w.category, CkptnameWarning)]
    assert messages == [
        f"could not rename the checkpoint into place {str(tmp_path / 'b10.keras')!r}: "
        "No space left on device; training continues (on_save_error='warn')"
    ]
    assert names(tmp_path) == ["b05.keras", "b15.keras", "b20.keras"]
    assert state(tmp_path)["latest"]["name"] == "b20.keras"
    assert read_metadata(tmp_path / "b20.keras")["iterations"] == 20
    assert leftovers(tmp_path) == []


def test_a_killed_saves_temporary_file_is_removed_at_train_begin(tmp_path):
    ours = tmp_path / ".ckptname-tmp-0123abcd4567-b05.keras"
    theirs = tmp_path / ".ckptname-tmp-0123abcd4567-other-05.keras"
    ours.write_bytes(b"half")
    theirs.write_bytes(b"half")
    fit(tmp_path, epochs=1)
    assert not ours.exists()
    assert theirs.exists()  # another template's save: not ours to remove
    assert names(tmp_path) == ["b05.keras", "b10.keras"]
