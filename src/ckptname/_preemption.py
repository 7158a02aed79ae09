"""Preemption: a signal that asks training to stop, turned into a flag the callback checks.

This module is reserved for the signal side of ``save_on_preemption``: which
signals are watched, installing and restoring their handlers, and the flag
a handler sets. It imports neither Keras nor TensorFlow. The callback checks
the flag at every batch boundary Keras offers (training and validation
batches), saves one checkpoint there and stops training; on a cluster it
shares the flag with the other processes at each of those boundaries first
(``ckptname._keras_cluster``), so all stop at the same one.

The rules:

* Handlers are installed when training begins and the previous ones put
  back when it ends. Python runs signal handlers only in the main thread, so
  a callback that would watch signals must be created there.
* A handler only sets the flag: the checkpoint is written at the next batch
  boundary, where the model's state is whole, never from inside the handler.
* A Keras ``fit`` that raised never reaches its end, and its handlers would
  stay. A signal that arrives when no ``fit`` holding the callback is on the
  interrupted stack is therefore not swallowed: the previous handlers are
  put back and the signal is delivered to them again (by default, the
  process ends as it would have without ckptname). A loop driven by hand
  keeps the handlers from ``on_train_begin`` to ``on_train_end``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

__all__ = [
    "PreemptionWatch",
    "check_preemption_signals",
    "held_by_keras",
]

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def check_preemption_signals(save_on_preemption: object, signals: object) -> tuple[int, ...]:
    """The signals to watch, checked at construction.

    Raises:
        ValueError: not signals of this platform, or ``save_on_preemption``
            asked for outside the main thread.
    """
    if not isinstance(signals, Iterable) or isinstance(signals, (str, bytes)):
        raise ValueError(
            f"preemption_signals must be a tuple of signals such as (signal.SIGTERM,), "
            f"got {signals!r}"
        )
    found: list[int] = []
    for item in signals:
        try:
            number = signal.Signals(item)
        except (ValueError, TypeError):
            raise ValueError(
                f"preemption_signals holds {item!r}, which is not a signal of this platform; "
                "pass signals such as (signal.SIGTERM, signal.SIGUSR1)"
            ) from None
        if number in (signal.SIGKILL, signal.SIGSTOP):
            raise ValueError(
                f"preemption_signals holds {number.name}, which no process can catch; "
                "preemption systems send SIGTERM (or a signal you choose) before it"
            )
        found.append(int(number))
    if save_on_preemption and threading.current_thread() is not threading.main_thread():
        raise ValueError(
            "save_on_preemption=True installs signal handlers, which Python allows only in "
            "the main thread; create the callback and call fit in the main thread, or pass "
            "save_on_preemption=False"
        )
    return tuple(found)


class PreemptionWatch:
    """The flag a watched signal sets, and the handlers that set it.

    Args:
        signals: the signal numbers to watch.
        owner: the object whose presence on the interrupted stack says that
            its training is still running (the callback).
    """

    __slots__ = ("_armed", "_in_fit", "_owner", "_previous", "requested", "signal", "signals")

    def __init__(self, signals: Iterable[int], owner: object) -> None:
        self.signals = tuple(signals)
        self.requested = False
        self.signal: int | None = None
        self._owner = owner
        self._previous: dict[int, _Handler] = {}
        self._armed = False
        self._in_fit = False

    def arm(self, *, in_fit: bool) -> None:
        """Install the handlers (at train begin) and clear the flag.

        Args:
            in_fit: training is a Keras ``fit`` (see :func:`held_by_keras`),
                not a loop driven by hand.
        """
        self.requested = False
        self.signal = None
        self._in_fit = in_fit
        if self._armed:
            return
        for number in self.signals:
            self._previous[number] = signal.signal(number, self._handle)
        self._armed = True

    @property
    def armed(self) -> bool:
        """Whether the handlers are installed (from train begin to train end)."""
        return self._armed

    def disarm(self) -> None:
        """Put the previous handlers back (at train end); the flag stays as it is."""
        previous, self._previous = self._previous, {}
        self._armed = False
        for number, handler in previous.items():
            signal.signal(number, signal.SIG_DFL if handler is None else handler)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if not self._in_fit or held_by_keras(frame, self._owner):
            self.requested = True
            self.signal = number
            return
        # Training is over (a fit that raised never reached its end): behave as
        # if the handler had never been installed.
        previous = self._previous.get(number)
        self.disarm()
        if callable(previous):
            previous(number, frame)
        elif previous != signal.SIG_IGN:
            signal.raise_signal(number)


def held_by_keras(frame: FrameType | None, owner: object, depth: int = 200) -> bool:
    """Whether a frame on the stack holds a Keras ``CallbackList`` that holds ``owner``.

    Keras's ``fit`` keeps its callbacks in a local ``CallbackList`` from its
    start to its end: that frame on the stack means the fit is running.
    """
    while frame is not None and depth > 0:
        for value in frame.f_locals.values():
            if type(value).__name__ != "CallbackList":
                continue
            held = getattr(value, "callbacks", None)
            if isinstance(held, list) and any(cb is owner for cb in held):
                return True
        frame = frame.f_back
        depth -= 1
    return False
