"""save_on_preemption: a real signal during fit leaves one complete checkpoint, and fit returns.

The signal is real (``os.kill`` of this process, or of a child process); the
callback that sends it runs at a chosen point of ``fit`` (a training batch,
a validation batch, right after a background save was submitted). The
checkpoint then resumes with ``resume`` and ``fit_resumed`` to the end of an
uninterrupted run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras_util import data, fit, model, names, read_state

import ckptname
from ckptname import read_metadata
from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume

TEMPLATE = "e{epoch}-b{batch:03d}-{batch_in_epoch}.keras"
EVERY_5 = [f"e{(b - 1) // 10 + 1}-b{b:03d}-{(b - 1) % 10 + 1}.keras" for b in range(5, 31, 5)]
TESTS = Path(__file__).resolve().parent


class SignalAt(keras.callbacks.Callback):
    """Sends ``SIGTERM`` to this process after training batch ``train`` (global, 1-based)
    or during validation batch ``test`` (0-based) of epoch ``epoch`` (0-based)."""

    def __init__(self, *, train: int | None = None, epoch: int | None = None, test: int = 0):
        super().__init__()
        self.train, self.epoch, self.test = train, epoch, test
        self.seen = 0
        self.current = -1

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.current = epoch

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.seen += 1
        if self.seen == self.train:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_test_batch_begin(self, batch: int, logs: Any = None) -> None:
        if self.current == self.epoch and batch == self.test:
            os.kill(os.getpid(), signal.SIGTERM)


def weights(m: Any) -> list[np.ndarray]:
    return [np.array(w) for w in m.get_weights()]


def assert_same_end(m: Any, done: Any) -> None:
    assert int(m.optimizer.iterations) == int(done.optimizer.iterations)
    for a, b in zip(weights(m), weights(done), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def reference(folder: Path, **fit_kwargs: Any) -> Any:
    m = model()
    fit(m, [BatchAwareCheckpoint(str(folder / TEMPLATE), save_freq=5)], **fit_kwargs)
    assert names(folder) == EVERY_5
    return m


def resume_to_the_end(folder: Path, **fit_kwargs: Any) -> Any:
    m = model(seed=1)
    point = resume(m, str(folder / TEMPLATE))
    x, y = data()
    ckpt = BatchAwareCheckpoint(str(folder / TEMPLATE), save_freq=5, save_on_preemption=True)
    fit_resumed(m, x, y, resume=point, epochs=3, batch_size=10, shuffle=False, verbose=0,
                callbacks=[ckpt], **fit_kwargs)  # fmt: skip
    assert not ckpt.preempted
    return m


def test_a_signal_during_a_training_batch_saves_there_stops_and_resumes_exactly(tmp_path):
    done = reference(tmp_path / "ref")
    before = signal.getsignal(signal.SIGTERM)
    ckpt = BatchAwareCheckpoint(str(tmp_path / "run" / TEMPLATE), save_freq=5,
                                save_on_preemption=True)  # fmt: skip
    history = fit(model(), [SignalAt(train=13), ckpt])
    assert ckpt.preempted
    assert history.epoch == [0, 1]  # fit returned inside epoch 2
    assert signal.getsignal(signal.SIGTERM) is before
    assert names(tmp_path / "run") == [*EVERY_5[:2], "e2-b013-3.keras"]
    meta = read_metadata(tmp_path / "run" / "e2-b013-3.keras")
    assert (meta["preempted"], meta["end_of_epoch"], meta["batch"]) == (True, False, 13)
    assert read_state(tmp_path / "run")["latest"]["name"] == "e2-b013-3.keras"
    m = resume_to_the_end(tmp_path / "run")
    assert names(tmp_path / "run") == sorted([*EVERY_5, "e2-b013-3.keras"])
    assert_same_end(m, done)


def test_a_signal_while_fit_resumed_finishes_an_interrupted_epoch_stops_fit_resumed(tmp_path):
    done = reference(tmp_path / "ref")
    first = BatchAwareCheckpoint(str(tmp_path / "run" / TEMPLATE), save_freq=5,
                                 save_on_preemption=True)  # fmt: skip
    fit(model(), [SignalAt(train=13), first])
    # Resumed at batch 13, in the middle of epoch 2: a second signal at batch 14
    # (sent before the checkpoint callback's hook), while fit_resumed finishes that
    # epoch, stops it there, not only its first fit.
    m = model(seed=1)
    point = resume(m, str(tmp_path / "run" / TEMPLATE))
    x, y = data()
    ckpt = BatchAwareCheckpoint(str(tmp_path / "run" / TEMPLATE), save_freq=5,
                                save_on_preemption=True)  # fmt: skip
    history = fit_resumed(m, x, y, resume=point, epochs=3, batch_size=10, shuffle=False,
                          verbose=0, callbacks=[SignalAt(train=1), ckpt])  # fmt: skip
    assert ckpt.preempted and ckpt.batch == 14 and history.epoch == [1]
    assert int(m.optimizer.iterations) == 14
    assert names(tmp_path / "run") == [*EVERY_5[:2], "e2-b013-3.keras", "e2-b014-4.keras"]
    m = resume_to_the_end(tmp_path / "run")
    assert names(tmp_path / "run") == sorted([*EVERY_5, "e2-b013-3.keras", "e2-b014-4.keras"])
    assert_same_end(m, done)


def test_a_signal_during_validation_saves_the_end_of_the_epoch_and_resumes_exactly(tmp_path):
    x, y = data()
    val = {"validation_data": (x[:20], y[:20]), "validation_batch_size": 5}
    done = reference(tmp_path / "ref", **val)
    # During validation of epoch 2: the scheduled checkpoint of batch 20
    # closes the epoch already, and serves as the preemption checkpoint.
    ckpt = BatchAwareCheckpoint(str(tmp_path / "run" / TEMPLATE), save_freq=5,
                                save_on_preemption=True)  # fmt: skip
    history = fit(model(), [SignalAt(epoch=1, test=1), ckpt], **val)
    assert ckpt.preempted and history.epoch == [0, 1]
    assert names(tmp_path / "run") == EVERY_5[:4]
    point = resume(model(seed=1), str(tmp_path / "run" / TEMPLATE))
    assert (point.batch, point.end_of_epoch, point.initial_epoch) == (20, True, 2)
    m = resume_to_the_end(tmp_path / "run", **val)
    assert names(tmp_path / "run") == EVERY_5
    assert_same_end(m, done)


def test_a_signal_during_validation_between_scheduled_saves_gets_its_own_checkpoint(tmp_path):
    x, y = data()
    val = {"validation_data": (x[:20], y[:20]), "validation_batch_size": 5}
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:03d}.keras"), save_freq=7,
                                save_on_preemption=True)  # fmt: skip
    fit(model(), [SignalAt(epoch=0, test=2), ckpt], **val)
    assert ckpt.preempted
    assert names(tmp_path) == ["b007.keras", "b010.keras"]
    meta = read_metadata(tmp_path / "b010.keras")
    assert (meta["preempted"], meta["end_of_epoch"], meta["epoch"]) == (True, True, 1)


class SignalAfterSave(keras.callbacks.Callback):
    """Sends SIGTERM right after the checkpoint callback submitted its save at ``at``."""

    def __init__(self, ckpt: BatchAwareCheckpoint, at: int) -> None:
        super().__init__()
        self.ckpt, self.at = ckpt, at

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        if self.ckpt.batch == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_while_a_background_save_is_in_flight_completes_it_then_saves(tmp_path):
    done = reference(tmp_path / "ref")
    ckpt = BatchAwareCheckpoint(str(tmp_path / "run" / TEMPLATE), save_freq=5,
                                save_on_background=True, save_on_preemption=True)  # fmt: skip
    fit(model(), [ckpt, SignalAfterSave(ckpt, 10)])
    assert ckpt.preempted
    # The signal came after the save of batch 10 was submitted, so batch 11 is
    # the next boundary: both checkpoints are complete when fit returns.
    assert names(tmp_path / "run") == [*EVERY_5[:2], "e2-b011-1.keras"]
    for name in names(tmp_path / "run"):
        assert read_metadata(tmp_path / "run" / name)["name"] == name
    m = resume_to_the_end(tmp_path / "run")
    assert_same_end(m, done)


def test_preemption_checkpoints_count_for_retention_like_any_other(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:03d}.keras"), save_freq=5, keep_last=2,
                                save_on_preemption=True)  # fmt: skip
    fit(model(), [SignalAt(train=13), ckpt])
    assert names(tmp_path) == ["b010.keras", "b013.keras"]


def test_save_best_only_still_saves_the_preemption_checkpoint_without_making_it_the_best(
    tmp_path,
):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch:03d}-{loss:.3f}.keras"), monitor="loss",
                                save_best_only=True, save_on_preemption=True)  # fmt: skip
    fit(model(), [SignalAt(train=15), ckpt])
    saved = names(tmp_path)
    assert [n[:4] for n in saved] == ["b010", "b015"]
    assert read_state(tmp_path)["best"]["name"] == saved[0]
    assert ckptname.find_latest(tmp_path).name == saved[1]


def test_without_the_option_the_handler_is_never_touched(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    ckpt = BatchAwareCheckpoint(str(tmp_path / TEMPLATE), save_freq=5)
    fit(model(), [ckpt], epochs=1)
    assert signal.getsignal(signal.SIGTERM) is before and not ckpt.preempted


# ----------------------------------------------------------------- refused set-ups


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filepath": "ckpts/e{epoch:02d}.keras"},
         "save_on_preemption=True needs '{batch}' in the template, got 'e{epoch:02d}.keras': a "
         "preemption checkpoint comes at any batch and must have a name of its own, never "
         "replace another checkpoint"),
        ({"preemption_signals": (signal.SIGKILL,)},
         "preemption_signals holds SIGKILL, which no process can catch; preemption systems "
         "send SIGTERM (or a signal you choose) before it"),
        ({"preemption_signals": ("TERM",)},
         "preemption_signals holds 'TERM', which is not a signal of this platform; pass "
         "signals such as (signal.SIGTERM, signal.SIGUSR1)"),
    ],
)  # fmt: skip
def test_a_preemption_set_up_that_cannot_work_is_refused_at_construction(kwargs, message):
    args = {"filepath": "ckpts/b{batch}.keras", "save_on_preemption": True, **kwargs}
    with pytest.raises(ValueError) as info:
        BatchAwareCheckpoint(**args)
    assert str(info.value) == message


def test_save_on_preemption_outside_the_main_thread_is_refused_at_construction():
    caught: list[BaseException] = []

    def build() -> None:
        try:
            BatchAwareCheckpoint("ckpts/b{batch}.keras", save_on_preemption=True)
        except ValueError as exc:
            caught.append(exc)

    worker = threading.Thread(target=build)
    worker.start()
    worker.join()
    assert [str(e) for e in caught] == [
        "save_on_preemption=True installs signal handlers, which Python allows only in the "
        "main thread; create the callback and call fit in the main thread, or pass "
        "save_on_preemption=False"
    ]


def test_a_validation_field_is_refused_before_training(tmp_path):
    ckpt = BatchAwareCheckpoint(str(tmp_path / "b{batch}-{val_loss:.2f}.keras"),
                                save_on_preemption=True)  # fmt: skip
    x, y = data()
    with pytest.raises(ckptname.MissingFieldError) as info:
        fit(model(), [ckpt], validation_data=(x, y))
    assert str(info.value) == (
        "field 'val_loss' of template 'b{batch}-{val_loss:.2f}.keras' has no value at a "
        "preemption checkpoint, which can come at any batch: validation metrics exist only at "
        "epoch end; name checkpoints by a training metric such as 'loss', or pass "
        "save_on_preemption=False"
    )
    assert names(tmp_path) == []


# ----------------------------------------------------------------- real processes

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import keras
    import keras_util as ku
    from ckptname.keras import BatchAwareCheckpoint

    folder, mode = sys.argv[1], sys.argv[2]

    class Fail(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise RuntimeError("a failure inside fit")

    ckpt = BatchAwareCheckpoint(os.path.join(folder, "b{batch:03d}.keras"), save_freq=5,
                                save_on_preemption=(mode != "plain"))
    if mode == "raised":
        try:
            ku.fit(ku.model(), [ckpt, Fail()], epochs=1)
        except RuntimeError:
            pass
    else:
        ku.fit(ku.model(), [ckpt], epochs=1)
    print("trained", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    print("still alive", flush=True)
    """
)


def run_child(folder: Path, mode: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent / "src")]))
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(folder), mode],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["plain", "raised", "finished"])
def test_outside_fit_a_signal_does_what_it_did_without_ckptname(tmp_path, mode):
    # Without the option; after a fit that raised (its handlers still
    # installed); after a fit that ended: SIGTERM ends the process as before.
    done = run_child(tmp_path, mode)
    assert done.returncode == -signal.SIGTERM, done.stderr[-3000:]
    assert "trained" in done.stdout and "still alive" not in done.stdout


_PREEMPTED = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    import keras
    import keras_util as ku
    from ckptname.keras import BatchAwareCheckpoint

    folder = sys.argv[1]

    class Slow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if int(self.model.optimizer.iterations) == 12:
                print("at 12", flush=True)
            time.sleep(0.2)

    ckpt = BatchAwareCheckpoint(os.path.join(folder, "b{batch:03d}.keras"), save_freq=5,
                                save_on_preemption=True)
    started = time.monotonic()
    ku.fit(ku.model(), [Slow(), ckpt], epochs=3)
    print(json.dumps({"preempted": ckpt.preempted, "last": ckpt.last_checkpoint}), flush=True)
    """
)


def test_a_signal_from_another_process_stops_the_child_with_a_checkpoint(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(TESTS.parent / "src")]))
    child = subprocess.Popen(
        [sys.executable, "-c", _PREEMPTED, str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith("at 12"):
                child.send_signal(signal.SIGTERM)
                break
        out, err = child.communicate(timeout=240)
    finally:
        child.kill()
    assert child.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["preempted"] is True
    saved = names(tmp_path)
    assert saved[:2] == ["b005.keras", "b010.keras"] and len(saved) == 3
    batch = read_metadata(tmp_path / saved[2])["batch"]
    assert 12 <= batch <= 14 and report["last"] == str(tmp_path / saved[2])
