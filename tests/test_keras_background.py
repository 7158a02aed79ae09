"""Background saves (``save_on_background=True``): the state of their step, in the kill-safe order.

The writes of these tests are slowed down on the background thread, so that
training runs ahead while a checkpoint is being written: a snapshot that did
not hold the state of its step, a wait that did not wait, or retention that
ran before the newer checkpoint was complete would show.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import threading
import time
import zipfile

import h5py
import keras
import numpy as np
import pytest
from keras_util import BACKEND, fit, leftovers, model, names, ours, read_state
from test_keras_save_errors import fail_replace

import ckptname._snapshot as snapshot_module
from ckptname import CheckpointSaveError, CkptnameWarning, read_metadata
from ckptname.keras import BatchAwareCheckpoint

_real_save_model = snapshot_module.save_model


def slow_writes(monkeypatch, seconds, seen=None):
    """Make every model write on the background thread start ``seconds`` late.

    ``seen`` (a list) gets, at each such write, the checkpoint names in the folder.
    """

    def save_model(m, target, *, weights_only):
        if threading.current_thread().name == "ckptname-save":
            if seen is not None:
                name = re.sub(r"^\.ckptname-tmp-[0-9a-f]+-", "", os.path.basename(target))
                seen.append((name, names(os.path.dirname(target))))
            time.sleep(seconds)
        _real_save_model(m, target, weights_only=weights_only)

    monkeypatch.setattr(snapshot_module, "save_model", save_model)


class SaveEvery(keras.callbacks.Callback):
    """A plain synchronous ``model.save`` every ``n`` optimizer steps, as ``s<step>.keras``."""

    def __init__(self, folder, n):
        super().__init__()
        self.folder, self.n = folder, n

    def on_train_batch_end(self, batch, logs=None):
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.n == 0:
            self.model.save(os.path.join(self.folder, f"s{step:02d}.keras"))


def contents(path):
    """Everything a ``.keras`` file holds: its config (object ids left out) and every array."""
    with zipfile.ZipFile(path) as z:
        config = json.loads(z.read("config.json"), object_hook=_without_ids)
        arrays = {}
        with h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
            f.visititems(
                lambda n, o: arrays.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
            )
    return config, arrays


def _without_ids(d):
    d.pop("shared_object_id", None)
    return d


def state(m):
    return [keras.ops.convert_to_numpy(v) for v in [*m.variables, *m.optimizer.variables]]


def test_a_background_save_holds_the_state_of_its_step(tmp_path, monkeypatch):
    # Each write starts 0.15 s late: training has moved on by then.
    slow_writes(monkeypatch, 0.15)
    (tmp_path / "sync").mkdir()
    bg = BatchAwareCheckpoint(
        str(tmp_path / "bg" / "b{batch:02d}.keras"), save_freq=5, save_on_background=True
    )
    fit(model(), [bg, SaveEvery(str(tmp_path / "sync"), 5)], epochs=2)
    assert names(tmp_path / "bg") == ["b05.keras", "b10.keras", "b15.keras", "b20.keras"]
    for step in (5, 10, 15, 20):
        ours_ = tmp_path / "bg" / f"b{step:02d}.keras"
        sync = tmp_path / "sync" / f"s{step:02d}.keras"
        (config, arrays), (want_config, want_arrays) = contents(ours_), contents(sync)
        assert config == want_config
        assert sorted(arrays) == sorted(want_arrays)
        assert len([k for k in arrays if k.startswith("optimizer/")]) > 2  # Adam's state is there
        for key in arrays:
            np.testing.assert_array_equal(arrays[key], want_arrays[key], err_msg=key)
        assert read_metadata(ours_)["iterations"] == step
        got, want = keras.models.load_model(ours_), keras.models.load_model(sync)
        for a, b in zip(state(got), state(want), strict=True):
            np.testing.assert_array_equal(a, b)
    assert leftovers(tmp_path / "bg") == []


def test_on_train_end_waits_for_the_last_save(tmp_path, monkeypatch):
    slow_writes(monkeypatch, 0.3)
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch:02d}.keras"), save_freq=5, save_on_background=True
    )
    fit(model(), [ckpt], epochs=1)
    # Nothing is left writing: the last checkpoint is complete, found, and unlocked.
    assert not any(t.name == "ckptname-save" for t in threading.enumerate())
    assert names(tmp_path) == ["b05.keras", "b10.keras"]
    assert read_state(tmp_path)["latest"]["name"] == "b10.keras"
    assert ckpt.last_checkpoint == str(tmp_path / "b10.keras")
    assert leftovers(tmp_path) == [] and not (tmp_path / ".ckptname.lock").exists()


@pytest.mark.parametrize(
    ("failing", "raised_at", "kept"),
    [
        ("b10.keras", 15, ["b05.keras"]),  # at the next save
        ("b20.keras", 20, ["b05.keras", "b10.keras", "b15.keras"]),  # at on_train_end
    ],
)
def test_a_failed_background_save_raises_naming_the_path(
    tmp_path, monkeypatch, failing, raised_at, kept
):
    slow_writes(monkeypatch, 0.05)
    fail_replace(monkeypatch, failing, errno.ENOSPC)
    m = model()
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch:02d}.keras"), save_freq=5, save_on_background=True
    )
    with pytest.raises(CheckpointSaveError) as info:
        fit(m, [ckpt], epochs=2)
    assert str(info.value) == (
        f"could not rename the checkpoint into place {str(tmp_path / failing)!r}: "
        "No space left on device"
    )
    assert info.value.errno == errno.ENOSPC
    # Training stopped where the error was reported, and the folder is as a
    # synchronous save leaves it.
    assert int(keras.ops.convert_to_numpy(m.optimizer.iterations)) == raised_at
    assert names(tmp_path) == kept
    assert read_state(tmp_path)["latest"]["name"] == kept[-1]
    assert leftovers(tmp_path) == []


def test_a_failed_background_save_warns_and_training_goes_on(tmp_path, monkeypatch):
    slow_writes(monkeypatch, 0.05)
    fail_replace(monkeypatch, "b10.keras", errno.ENOSPC)
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch:02d}.keras"),
        save_freq=5,
        save_on_background=True,
        on_save_error="warn",
    )
    with pytest.warns(CkptnameWarning) as record:
        fit(model(), [ckpt], epochs=2)
    assert ours(record) == [
        f"could not rename the checkpoint into place {str(tmp_path / 'b10.keras')!r}: "
        "No space left on device; training continues (on_save_error='warn')"
    ]
    assert names(tmp_path) == ["b05.keras", "b15.keras", "b20.keras"]
    assert read_state(tmp_path)["latest"]["name"] == "b20.keras"
    assert leftovers(tmp_path) == []


def test_wait_reports_the_failure_of_the_save_in_flight(tmp_path, monkeypatch):
    slow_writes(monkeypatch, 0.2)
    fail_replace(monkeypatch, "b10.keras", errno.ENOSPC)
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch:02d}.keras"), save_freq=5, save_on_background=True
    )
    caught = []

    class WaitAt10(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if ckpt.batch == 10:
                with pytest.raises(CheckpointSaveError) as info:
                    ckpt.wait()
                caught.append(str(info.value))

    fit(model(), [ckpt, WaitAt10()], epochs=2)
    assert caught == [
        f"could not rename the checkpoint into place {str(tmp_path / 'b10.keras')!r}: "
        "No space left on device"
    ]
    # Reported once: the later saves went on.
    assert names(tmp_path) == ["b05.keras", "b15.keras", "b20.keras"]


def test_retention_deletes_only_after_the_newer_checkpoint_is_complete(tmp_path, monkeypatch):
    writes: list = []
    slow_writes(monkeypatch, 0.1, writes)
    deleted = []
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        name = os.path.basename(os.fspath(path))
        if name.endswith(".keras"):
            deleted.append((name, names(tmp_path)))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch:02d}.keras"), save_freq=5, keep_last=1, save_on_background=True
    )
    fit(model(), [ckpt], epochs=2)
    assert names(tmp_path) == ["b20.keras"]
    # Each older checkpoint was still there while the next one was written, and
    # was deleted only once that one was complete under its name.
    assert writes == [
        ("b05.keras", []),
        ("b10.keras", ["b05.keras"]),
        ("b15.keras", ["b10.keras"]),
        ("b20.keras", ["b15.keras"]),
    ]
    assert deleted == [
        ("b05.keras", ["b05.keras", "b10.keras"]),
        ("b10.keras", ["b10.keras", "b15.keras"]),
        ("b15.keras", ["b15.keras", "b20.keras"]),
    ]


class NoConfig(keras.Model):
    """A subclassed model that cannot be rebuilt from a config."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)

    def get_config(self):
        raise NotImplementedError("NoConfig has no config")


def test_a_model_without_config_is_saved_synchronously_with_one_warning(tmp_path):
    keras.utils.set_random_seed(0)
    m = NoConfig()
    m.compile(optimizer="adam", loss="mse")
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch:02d}.weights.h5"),
        save_freq=5,
        save_weights_only=True,
        save_on_background=True,
    )
    with pytest.warns(CkptnameWarning) as record:
        fit(m, [ckpt], epochs=1)
    assert ours(record) == [
        "save_on_background=True needs a copy of the model to save from, and this model "
        "cannot be rebuilt from its config (NotImplementedError: NoConfig has no config); "
        "saving synchronously instead (give the model a get_config, or pass "
        "save_on_background=False)"
    ]
    assert names(tmp_path) == ["b05.weights.h5", "b10.weights.h5"]


def test_only_the_chief_writes_in_the_background(tmp_path):
    ckpt = BatchAwareCheckpoint(
        str(tmp_path / "b{batch:02d}.keras"), save_freq=5, save_on_background=True, chief=False
    )
    fit(model(), [ckpt], epochs=1)
    assert list(tmp_path.iterdir()) == []
    assert ckpt.last_checkpoint == str(tmp_path / "b10.keras")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="one backend is enough for the argument")
def test_save_on_background_is_recorded(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch}.keras"), save_on_background=True)
    assert ckpt.save_on_background is True


# ----------------------------------------------------------------- SIGKILL while a save is written

_CHILD = """
import os, sys, threading, time
import keras_util as ku
import ckptname._snapshot as snapshot
from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume

folder, template = sys.argv[1], sys.argv[2]
real = snapshot.save_model

def say(*parts):
    sys.stdout.write(" ".join(str(p) for p in parts) + "\\n")
    sys.stdout.flush()

def save_model(m, target, *, weights_only):
    say("WRITE", os.path.basename(target))
    real(m, target, weights_only=weights_only)
    time.sleep(0.03)  # a slow disk: the file written, not yet renamed into place

snapshot.save_model = save_model  # the background thread's writer
m = ku.model()
say("READY")  # imported; the folder is read only once the parent says the last run is dead
sys.stdin.buffer.read(1)
filepath = os.path.join(folder, template)
point = resume(m, filepath)
ckpt = BatchAwareCheckpoint(filepath, monitor="loss", save_freq=3, keep_last=2, keep_best=1,
                            save_on_background=True, lock="takeover")
fit_resumed(m, *ku.data(), resume=point, epochs=6, batch_size=10, shuffle=False, verbose=0,
            callbacks=[ckpt])
say("DONE", int(m.optimizer.iterations))
"""


def test_a_kill_during_a_background_save_leaves_only_complete_checkpoints(tmp_path):
    import random
    import signal
    import subprocess
    import sys

    import test_reliability_kill as kill_test

    import ckptname

    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    folder = tmp_path / "run"
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), *sys.path]),
        TF_CPP_MIN_LOG_LEVEL="3",
        CUDA_VISIBLE_DEVICES="",
    )

    def start():
        return subprocess.Popen(
            [sys.executable, str(script), str(folder), kill_test.TEMPLATE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def go(child):
        assert child.stdout.readline() == b"READY\n"
        child.stdin.write(b"g")
        child.stdin.close()

    rng = random.Random(13)
    inside = 0
    following = start()  # imports while the one before trains
    for _ in range(3):
        child, following = following, start()
        go(child)
        target = rng.randint(2, 5)  # the target-th write of this run
        writes = 0
        for raw in child.stdout:
            kind, _, name = raw.decode().strip().partition(" ")
            if kind == "WRITE":
                writes += 1
                if writes == target:
                    time.sleep(rng.uniform(0, 0.05))
                    child.send_signal(signal.SIGKILL)
                    break
        child.wait(timeout=120)
        assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()
        child.stdout.close()
        child.stderr.close()
        name = re.sub(r"^\.ckptname-tmp-[0-9a-f]+-", "", name)
        records = ckptname.scan(str(folder), kill_test.TEMPLATE)
        inside += name not in {rec.name for rec in records}  # killed before its rename
        # Only complete checkpoints under checkpoint names: each loads and has
        # its sidecar; the listing and the state file agree on latest and best.
        kill_test.check_folder(folder)
    child = following
    go(child)
    out, err = child.stdout.read(), child.stderr.read()
    child.wait(timeout=120)
    assert child.returncode == 0, err.decode()
    assert out.decode().splitlines()[-1] == "DONE 60"
    kill_test.check_folder(folder)
    batches = [rec.batch for rec in ckptname.scan(str(folder), kill_test.TEMPLATE)]
    assert batches[-2:] == [57, 60]
    assert leftovers(folder) == []
    assert inside >= 2  # most kills landed inside a save, before its rename
