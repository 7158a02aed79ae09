"""Session set-up for ``tests/``; the helpers the tests share live in ``keras_util.py``.

Why the helpers are not here:

- A test module cannot import this file by name. ``tests/`` and
  ``property_tests/`` both have a ``conftest.py`` and neither is a package, so
  both load as the module ``conftest``; pytest drops that name from
  ``sys.modules`` before loading each, and with the default test paths
  (``tests property_tests``) ``from conftest import names`` in a test finds
  ``property_tests/conftest.py``.
- pytest loads this file for every run, ``pytest tests/test_template.py``
  too; importing TensorFlow here (seconds) would make every run pay for it,
  and the callbacks the Keras tests share subclass ``keras.callbacks.Callback``.
- The child processes the Keras tests start import the same helpers, with
  ``tests/`` on ``PYTHONPATH`` and without pytest's set-up.

So ``keras_util.py`` holds every shared helper (all are used by the Keras
tests only) and is imported by those tests alone; this file only prepares
the environment.
"""

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

# TensorFlow reads these once, when it loads, and test modules import keras
# at the top: set them before any test module is imported. Quiet logs, CPU
# only. The child processes the tests start inherit them.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def memory_folder() -> Iterator[tuple[Any, str]]:
    """A fresh folder in fsspec's in-memory file system: ``(FsspecStorage, inner path)``."""
    pytest.importorskip("fsspec")
    from ckptname._storage import FsspecStorage, storage_for

    storage, folder = storage_for(f"memory://ckptname-test-{uuid.uuid4().hex}")
    assert isinstance(storage, FsspecStorage)
    storage.fs.mkdir(folder)
    yield storage, folder
    storage.fs.rm(folder, recursive=True)
