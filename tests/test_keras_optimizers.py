"""resume() restores every optimizer a checkpoint holds, inside the model's distribution strategy.

A model can train with optimizers of its own beside ``model.optimizer``: the
GAN of the Keras guides ("Customizing what happens in fit()") keeps
``d_optimizer`` and ``g_optimizer`` as attributes, and Keras saves both with
the weights. A resume must put both back (their ``iterations`` and slots), or
the resumed run is not the one that was interrupted. A model built under
``tf.distribute.MirroredStrategy`` must get its optimizer state back as
distributed variables, whether ``resume`` is called inside ``strategy.scope()``
or after it. In neither case may a resume warn about anything that did not
happen (a skipped optimizer, a checkpoint that "does not load").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import keras
import keras_util as ku
import numpy as np
import pytest
from keras_util import Interrupt, names

from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume

LATENT, FEATURES = 4, 8
GAN_TEMPLATE = "b{batch:03d}-d{d_loss:.4f}.weights.h5"
# Every 4 batches over 3 epochs of 10: b004, b008, b012 (inside epoch 2) ... b028.
SAVED_AT = [f"b{batch:03d}" for batch in range(4, 30, 4)]


# ----------------------------------------------------------------- a GAN with two optimizers


class GAN(keras.Model):
    """The GAN of the Keras guide, its latent vectors given with each batch.

    Keras does not save the state of a ``keras.random.SeedGenerator``, so
    latents drawn inside ``train_step`` would differ after a resume; here they
    come with the data (``z_d`` for the discriminator's step, ``z_g`` for the
    generator's), and every run sees the same ones.
    """

    def __init__(self, discriminator: Any, generator: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.discriminator = discriminator
        self.generator = generator

    def compile(self, d_optimizer: Any, g_optimizer: Any, loss_fn: Any) -> None:
        super().compile()
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        self.loss_fn = loss_fn
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self) -> list[Any]:
        return [self.d_loss_tracker, self.g_loss_tracker]

    def call(self, z: Any) -> Any:
        return self.discriminator(self.generator(z))

    def train_step(self, data: Any) -> dict[str, Any]:
        batch = keras.utils.unpack_x_y_sample_weight(data)[0]
        real, z_d, z_g = batch["real"], batch["z_d"], batch["z_g"]
        n = keras.ops.shape(real)[0]
        fake = keras.ops.stop_gradient(self.generator(z_d))
        combined = keras.ops.concatenate([fake, real], axis=0)
        labels = keras.ops.concatenate([keras.ops.ones((n, 1)), keras.ops.zeros((n, 1))], axis=0)
        d_loss = self.descend(
            self.d_optimizer,
            self.discriminator.trainable_weights,
            lambda: self.loss_fn(labels, self.discriminator(combined)),
        )
        misleading = keras.ops.zeros((n, 1))
        g_loss = self.descend(
            self.g_optimizer,
            self.generator.trainable_weights,
            lambda: self.loss_fn(misleading, self.discriminator(self.generator(z_g))),
        )
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    def descend(self, optimizer: Any, variables: list[Any], loss_of: Any) -> Any:
        """One step of ``optimizer`` on ``variables`` down ``loss_of()``, as the guides write it."""
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                loss = loss_of()
            grads = tape.gradient(loss, variables)
            optimizer.apply_gradients(zip(grads, variables))
            return loss
        import torch

        self.zero_grad()
        loss = loss_of()
        loss.backward()
        grads = [v.value.grad for v in variables]
        with torch.no_grad():
            optimizer.apply(grads, variables)
        return loss


def gan(seed: int = 0) -> GAN:
    """A compiled GAN, built (called on latents), its two optimizers not built yet."""
    keras.utils.set_random_seed(seed)
    discriminator = keras.Sequential(
        [keras.Input((FEATURES,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)],
        name="discriminator",
    )
    generator = keras.Sequential(
        [keras.Input((LATENT,)), keras.layers.Dense(FEATURES)], name="generator"
    )
    m = GAN(discriminator, generator)
    m.compile(
        d_optimizer=keras.optimizers.Adam(0.01),
        g_optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
    )
    m(np.zeros((2, LATENT), "float32"))
    return m


def gan_data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "real": (rng.normal(size=(ku.SAMPLES, FEATURES)) + np.arange(FEATURES)).astype("float32"),
        "z_d": rng.normal(size=(ku.SAMPLES, LATENT)).astype("float32"),
        "z_g": rng.normal(size=(ku.SAMPLES, LATENT)).astype("float32"),
    }


class StopAfter(keras.callbacks.Callback):
    """Raises :class:`Interrupt` after ``count`` batches (its own count: the GAN's
    ``model.optimizer`` is one ``compile`` made and nothing steps)."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.count = count
        self.seen = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.seen += 1
        if self.seen >= self.count:
            raise Interrupt(f"interrupted after batch {self.count}")


def gan_checkpoint(folder: Path) -> BatchAwareCheckpoint:
    return BatchAwareCheckpoint(
        str(folder / GAN_TEMPLATE),
        save_weights_only=True,
        save_freq=4,
        monitor="d_loss",
        mode="min",
    )


def gan_fit(m: GAN, callbacks: list[Any]) -> None:
    m.fit(gan_data(), batch_size=ku.BATCH_SIZE, epochs=3, shuffle=False, verbose=0,
          callbacks=callbacks)  # fmt: skip


def values(variables: list[Any]) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in variables]


def user_warnings(record: list[Any]) -> list[str]:
    """What the warnings recorded say to a user: ckptname's (``CkptnameWarning`` is a
    ``UserWarning``) and Keras's, as ``Category: message``."""
    return [
        f"{w.category.__name__}: {w.message}" for w in record if issubclass(w.category, UserWarning)
    ]


@pytest.mark.skipif(
    ku.BACKEND == "jax",
    reason="JAX's stateless train_step is handed the state of model.optimizer alone; a GAN "
    "with two optimizers of its own needs a train_step outside it",
)
def test_a_gan_resumes_both_its_optimizers_without_a_warning(tmp_path):
    reference = gan()
    gan_fit(reference, [gan_checkpoint(tmp_path / "ref")])
    assert [n[:4] for n in names(tmp_path / "ref", ".weights.h5")] == SAVED_AT
    assert int(reference.d_optimizer.iterations) == int(reference.g_optimizer.iterations) == 30

    folder = tmp_path / "run"
    with pytest.raises(Interrupt):
        gan_fit(gan(), [gan_checkpoint(folder), StopAfter(13)])  # inside epoch 2
    assert [n[:4] for n in names(folder, ".weights.h5")] == ["b004", "b008", "b012"]

    m = gan(seed=7)  # other initial weights: everything must come from the checkpoint
    assert not m.d_optimizer.built and not m.g_optimizer.built
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        point = resume(m, str(folder / GAN_TEMPLATE))
    assert user_warnings(record) == []
    assert (point.batch, point.batch_in_epoch, point.end_of_epoch) == (12, 2, False)
    assert Path(point.path).name.startswith("b012")
    assert (int(m.d_optimizer.iterations), int(m.g_optimizer.iterations)) == (12, 12)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit_resumed(m, gan_data(), resume=point, epochs=3, batch_size=ku.BATCH_SIZE,
                    shuffle=False, verbose=0, callbacks=[gan_checkpoint(folder)])  # fmt: skip
    assert user_warnings(record) == []
    assert names(folder, ".weights.h5") == names(tmp_path / "ref", ".weights.h5")
    assert (int(m.d_optimizer.iterations), int(m.g_optimizer.iterations)) == (30, 30)
    for a, b in zip(values(m.weights), values(reference.weights), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for optimizer in ("d_optimizer", "g_optimizer"):
        got = values(getattr(m, optimizer).variables)
        want = values(getattr(reference, optimizer).variables)
        assert len(got) == len(want), optimizer
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=optimizer)


# ----------------------------------------------------------------- MirroredStrategy

WORKER = Path(__file__).with_name("strategy_worker.py")
DEADLINE = 60  # seconds for one worker; it dumps its stacks and exits after them


def run_worker(workdir: Path, phase: str, **spec: Any) -> dict[str, Any]:
    """Run ``strategy_worker.py`` for ``phase`` to its end; what it reports.

    The test fails with the worker's output, and what it reported so far, if it
    fails or is still running after ``DEADLINE`` (its stacks, dumped by
    ``faulthandler``, are in that output).
    """
    import ckptname

    spec_path = workdir / f"{phase}.spec.json"
    report = workdir / f"{phase}.report.json"
    spec_path.write_text(json.dumps({**spec, "phase": phase, "deadline": DEADLINE,
                                     "report": str(report)}))  # fmt: skip
    src = Path(ckptname.__file__).resolve().parent.parent  # the ckptname this test imports
    env = dict(
        os.environ,
        KERAS_BACKEND="tensorflow",
        PYTHONPATH=os.pathsep.join([str(WORKER.parent), str(src)]),
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="",
    )
    env.pop("TF_CONFIG", None)
    log = workdir / f"{phase}.log"

    def fail(why: str) -> None:
        so_far = report.read_text() if report.exists() else "nothing"
        pytest.fail(f"strategy worker ({phase}) {why}; it reported {so_far}\n"
                    f"{log.read_text()[-8000:]}", pytrace=False)  # fmt: skip

    with open(log, "wb") as out:
        try:
            command = [sys.executable, str(WORKER), str(spec_path)]
            done = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=DEADLINE + 20
            )
        except subprocess.TimeoutExpired:
            fail(f"still running after {DEADLINE + 20} s")
    if done.returncode != 0:
        fail(f"exited with {done.returncode}")
    return json.loads(report.read_text())


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory):
    """Under MirroredStrategy: an uninterrupted run, and a run interrupted after batch 13.

    Returns the folder with the reference run's checkpoints and what the worker
    reported; each test resumes from its own copy of the interrupted run's folder.
    """
    workdir = tmp_path_factory.mktemp("mirrored")
    report = run_worker(workdir, "reference", reference=str(workdir / "reference"),
                        run=str(workdir / "interrupted"))  # fmt: skip
    return workdir, report


def assert_same_state(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["iterations"] == want["iterations"]
    for key in ("weights", "optimizer"):
        assert len(got[key]) == len(want[key]), key
        for a, b in zip(got[key], want[key], strict=True):
            np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6,
                                       err_msg=key)  # fmt: skip


@pytest.mark.tensorflow_backend
@pytest.mark.skipif(
    ku.BACKEND != "tensorflow",
    reason="MirroredStrategy is TensorFlow's: the workers run on TensorFlow whatever the "
    "backend, so the TensorFlow run of this file covers it",
)
@pytest.mark.parametrize("in_scope", [False, True], ids=["after the scope", "inside the scope"])
def test_resume_under_mirrored_strategy_restores_the_optimizer_as_distributed_variables(
    tmp_path, mirrored_run, in_scope
):
    workdir, ran = mirrored_run
    assert ran["replicas"] == 2
    reference = names(workdir / "reference", ".keras")
    assert [n.split("-")[1] for n in reference] == SAVED_AT
    assert ran["interrupted"] == reference[:3]
    assert ran["reference"]["iterations"] == 30
    assert all(ran["reference"]["distributed"])

    folder = tmp_path / "run"
    shutil.copytree(workdir / "interrupted", folder)
    got = run_worker(tmp_path, "resume", run=str(folder), resume_in_scope=in_scope)

    assert got["resume_warnings"] == []
    assert got["point"] == {"name": reference[2], "batch": 12}
    after = got["after_resume"]
    assert after["iterations"] == 12
    assert len(after["optimizer"]) == len(ran["reference"]["optimizer"])
    assert all(after["distributed"])
    assert got["fit_warnings"] == []
    assert got["names"] == reference
    assert all(got["finished"]["distributed"])
    assert_same_state(got["finished"], ran["reference"])
