"""The callback's side of a cluster, in one process: what it sends and when it asks the others.

The channel to the other processes is replaced by a fake that answers as
they would (``tests/test_many_workers.py`` runs real clusters): the settings
every process sent at train begin, and at each batch boundary whether a
preemption signal reached any of them.
"""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from typing import Any

import keras
import pytest
from keras_util import data, fit, model, names

import ckptname
import ckptname.keras as ckptname_keras
from ckptname import read_metadata
from ckptname._cluster import Settings
from ckptname.keras import BatchAwareCheckpoint

TEMPLATE = "e{epoch}-b{batch:03d}-{batch_in_epoch}.keras"


class FakeLink:
    """Another process of a two-process cluster, as the channel reports it.

    ``other`` changes what the other process sent at train begin (it writes
    where this one does not, unless told otherwise); ``stop_at`` is the batch
    boundary (1-based, training and validation counted alike) where a signal
    reached the other process. ``flags`` records what this process shared.
    """

    index, count = 0, 2

    def __init__(self, stop_at: int | None = None, **other: Any) -> None:
        self.stop_at = stop_at
        self.other = other
        self.sent: list[Settings] = []
        self.flags: list[bool] = []

    def gather(self, text: str, seconds: float) -> list[str]:
        mine = Settings.decode(text)
        self.sent.append(mine)
        other = replace(mine, **{"writes": not mine.writes, **self.other})
        return [text, other.encode()]

    def any_of(self, flags: list[bool]) -> list[bool]:
        # With save_on_preemption alone, one flag: the signal.
        (flag,) = flags
        self.flags.append(flag)
        return [flag or len(self.flags) == self.stop_at]

    def close(self) -> None:
        pass


@pytest.fixture
def link(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install a :class:`FakeLink` made by the test: ``link(stop_at=..., **other)``."""

    def install(stop_at: int | None = None, **other: Any) -> FakeLink:
        fake = FakeLink(stop_at, **other)
        monkeypatch.setattr(ckptname_keras, "cluster_link", lambda model: fake)
        return fake

    return install


def test_every_process_sends_what_it_was_given_and_whether_it_writes(tmp_path, link):
    fake = link()
    ckpt = BatchAwareCheckpoint(str(tmp_path / TEMPLATE), save_freq="5ba", chief=True)
    fit(model(), [ckpt], epochs=1)
    assert fake.sent == [
        Settings(writes=True, root=str(tmp_path), template=TEMPLATE, save_freq="'5ba'",
                 schedule="SaveFreq(batches=5, epochs=0, seconds=0.0)",
                 save_on_preemption=False)
    ]  # fmt: skip
    # Without save_on_preemption, the batch hook never asks the others.
    assert fake.flags == []
    assert names(tmp_path) == ["e1-b005-5.keras", "e1-b010-10.keras"]


def test_a_disagreement_stops_training_before_the_folder_is_touched(tmp_path, link):
    link(root="/elsewhere")
    ckpt = BatchAwareCheckpoint(str(tmp_path / TEMPLATE), save_freq=5)
    with pytest.raises(ckptname.ClusterError) as info:
        fit(model(), [ckpt], epochs=1)
    assert str(info.value) == (
        f"the 2 processes of this cluster were given different settings: the filepath's root "
        f"is {str(tmp_path)!r} on process 0, '/elsewhere' on process 1; every process must give "
        "BatchAwareCheckpoint the same filepath, save_freq and save_on_preemption, since each "
        "names every checkpoint and the chief alone writes"
    )
    assert os.listdir(tmp_path) == []  # not even the lock


@pytest.mark.parametrize("chief", [True, False])
def test_a_signal_that_reached_another_process_stops_this_one_at_the_same_step(
    tmp_path, link, chief
):
    fake = link(stop_at=13)
    ckpt = BatchAwareCheckpoint(str(tmp_path / TEMPLATE), save_freq=5, save_on_preemption=True,
                                chief=chief)  # fmt: skip
    m = model()
    fit(m, [ckpt], epochs=3)
    assert fake.flags == [False] * 13  # asked at every batch; no signal here
    assert ckpt.preempted and ckpt.batch == 13 and int(m.optimizer.iterations) == 13
    assert ckpt.last_checkpoint == str(tmp_path / "e2-b013-3.keras")
    if chief:
        assert names(tmp_path) == ["e1-b005-5.keras", "e1-b010-10.keras", "e2-b013-3.keras"]
        assert read_metadata(tmp_path / "e2-b013-3.keras")["preempted"] is True
    else:
        assert names(tmp_path) == []


class SignalAfter(keras.callbacks.Callback):
    """Sends ``SIGTERM`` to this process after training batch ``at`` (global, 1-based)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.seen = at, 0

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.seen += 1
        if self.seen == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_here_is_shared_at_the_next_boundary(tmp_path, link):
    fake = link()
    ckpt = BatchAwareCheckpoint(str(tmp_path / TEMPLATE), save_freq=5, save_on_preemption=True)
    # Sent after the callback's hook of batch 7: shared at batch 8's.
    fit(model(), [ckpt, SignalAfter(7)], epochs=3)
    assert fake.flags == [False] * 7 + [True]
    assert ckpt.preempted and ckpt.batch == 8
    assert names(tmp_path) == ["e1-b005-5.keras", "e1-b008-8.keras"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back


def test_a_signal_shared_during_validation_stops_there(tmp_path, link):
    # 10 training batches, then the 2 validation batches of epoch 1: the 12th boundary.
    fake = link(stop_at=12)
    ckpt = BatchAwareCheckpoint(str(tmp_path / TEMPLATE), save_freq=5, save_on_preemption=True)
    x, y = data()
    history = fit(model(), [ckpt], epochs=3, validation_data=(x[:20], y[:20]))
    assert fake.flags == [False] * 12
    assert ckpt.preempted and ckpt.batch == 10 and len(history.epoch) == 1
    # The count has its checkpoint already (the save at batch 10): it serves.
    assert names(tmp_path) == ["e1-b005-5.keras", "e1-b010-10.keras"]


def test_a_cluster_without_a_channel_refuses_save_on_preemption(tmp_path, monkeypatch):
    monkeypatch.setattr(ckptname_keras, "cluster_link", lambda model: None)
    monkeypatch.setattr(ckptname_keras, "process_count", lambda model: 2)
    monkeypatch.setattr(ckptname_keras, "unshared", lambda model: "torch.distributed")
    ckpt = BatchAwareCheckpoint(str(tmp_path / TEMPLATE), save_freq=5, save_on_preemption=True)
    with pytest.raises(ckptname.ClusterError, match=r"^save_on_preemption=True on a cluster of "
                       r"2 processes \(torch.distributed\): "):  # fmt: skip
        fit(model(), [ckpt], epochs=1)
    assert names(tmp_path) == []
