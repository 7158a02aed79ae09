"""Saves on a background thread: one in flight at a time, and no failure lost.

This module is reserved for the thread that writes a checkpoint while
training goes on. It knows nothing of Keras or of checkpoint files: it runs a
job (a function the callback builds around the save transaction) on a thread
of its own and keeps what went wrong until the callback asks.

Decisions:

* **One save in flight.** :meth:`BackgroundSaver.submit` first waits for the
  previous job, so at most one job runs and memory holds at most one extra
  copy of the model's state.
* **A thread per save, not a daemon.** Each job gets a fresh non-daemon
  thread (``ckptname-save``); the interpreter joins non-daemon threads before
  it runs ``atexit`` handlers, so a script that ends (or dies of an
  exception) while a save is in flight finishes that save first, and
  releases the folder's lock only after it (``ckptname._lock`` releases at
  ``atexit``). Starting a thread costs about 0.1 ms, nothing beside a save.
* **Errors are kept, not printed.** A job's exception is stored and handed
  to the caller by :meth:`BackgroundSaver.take_error` at its next save, at
  train end or at ``wait()``, which raise or warn as ``on_save_error`` says.
  One still unclaimed at interpreter exit is printed as a warning then.
"""

from __future__ import annotations

import atexit
import threading
import warnings
import weakref
from collections.abc import Callable

from ._errors import CkptnameWarning

__all__ = ["BackgroundSaver", "in_worker"]

_LOCAL = threading.local()
_SAVERS: weakref.WeakSet[BackgroundSaver] = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def in_worker() -> bool:
    """Whether the calling thread is running a background save."""
    return bool(getattr(_LOCAL, "active", False))


class BackgroundSaver:
    """Runs save jobs on a background thread, one at a time, and keeps their errors."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._guard = threading.Lock()

    @property
    def busy(self) -> bool:
        """Whether a job is running now."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def submit(self, job: Callable[[], None]) -> None:
        """Wait for the previous job, then start ``job`` on a new thread."""
        self.join()
        _watch(self)
        thread = threading.Thread(target=self._run, args=(job,), name="ckptname-save")
        self._thread = thread
        thread.start()

    def join(self) -> None:
        """Wait for the job in flight, if any (its error is kept for :meth:`take_error`)."""
        thread = self._thread
        if thread is not None:
            thread.join()
            self._thread = None

    def take_error(self) -> BaseException | None:
        """Wait for the job in flight; the error of a finished job not yet taken, once."""
        self.join()
        with self._guard:
            error, self._error = self._error, None
        return error

    def _run(self, job: Callable[[], None]) -> None:
        _LOCAL.active = True
        try:
            job()
        except BaseException as exc:  # handed to the training thread, never lost
            with self._guard:
                self._error = exc
        finally:
            _LOCAL.active = False


def _watch(saver: BackgroundSaver) -> None:
    global _ATEXIT_REGISTERED
    _SAVERS.add(saver)
    if not _ATEXIT_REGISTERED:
        atexit.register(_at_exit)
        _ATEXIT_REGISTERED = True


def _at_exit() -> None:
    """Wait for every save in flight; report errors nobody took."""
    for saver in list(_SAVERS):
        error = saver.take_error()
        if error is not None:
            warnings.warn(
                f"a checkpoint saved in the background failed and training had ended: {error}",
                CkptnameWarning,
                stacklevel=1,
            )
