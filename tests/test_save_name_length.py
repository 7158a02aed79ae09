"""Checkpoint names too long to save are refused before training, by the callback.

A local save adds 41 bytes to a name (``.ckptname-tmp-<id>-`` before it and
``.ckptname.json`` after it, for the sidecar's temporary file): names of 215
to 255 bytes render and read back, yet no file system can hold their
temporary files. The transaction, the command line and the template checks
have their own tests; this file checks the callback, which runs Keras.
"""

from __future__ import annotations

import pytest

from ckptname import RenderError, TemplateError


def test_the_callback_refuses_a_template_of_names_too_long_when_it_is_made(tmp_path):
    pytest.importorskip("keras")
    from ckptname.keras import BatchAwareCheckpoint

    with pytest.raises(TemplateError, match="take at least 215 bytes"):
        BatchAwareCheckpoint(str(tmp_path / ("x" * 205 + "-{epoch:03d}.keras")))


def test_extras_that_make_names_too_long_stop_fit_before_its_first_batch(tmp_path):
    pytest.importorskip("keras")
    import keras
    import keras_util as ku

    from ckptname.keras import BatchAwareCheckpoint

    class Batches(keras.callbacks.Callback):
        ran = 0

        def on_train_batch_end(self, batch, logs=None):
            Batches.ran += 1

    ckpt = BatchAwareCheckpoint(str(tmp_path / "{run}-b{batch:05d}.keras"), save_freq=1,
                                extras={"run": "r" * 202})  # fmt: skip
    with pytest.raises(RenderError, match=r"take at least 215 bytes with run='r+\.\.\.'"):
        ku.fit(ku.model(), [Batches(), ckpt], epochs=1)
    assert Batches.ran == 0
    assert list(tmp_path.iterdir()) == []
