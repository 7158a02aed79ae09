"""The best value of a monitored metric, tracked across saves and restored across runs.

This module is reserved for the best tracker of the callback. It imports
neither Keras nor TensorFlow; the comparison rules are :mod:`ckptname._rank`'s.

The rules:

* improvement is strict (:func:`ckptname._rank.improves`): an equal value
  keeps the earlier best, as Keras's ``ModelCheckpoint`` and Lightning do;
* a NaN value never improves (Keras makes it the best, after which nothing
  compares better and best-only saves stop);
* ``initial_value_threshold`` and a best value restored from the folder
  combine: the better of the two is the bar to beat;
* the best survives a resume: it is read from the folder's state file when
  that names an existing checkpoint of the same template, monitor and mode,
  else (where a policy needs it) from the exact values in the sidecars.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from ._rank import Mode, improves, is_number

__all__ = ["BestTracker"]


class BestTracker:
    """The best value of ``monitor`` so far, and the checkpoint that holds it.

    Attributes:
        monitor: the metric's name.
        mode: ``"min"``, ``"max"``, or ``None`` while the direction is not known.
        value: the best value, or the threshold to beat, or ``None``.
        name: the checkpoint (relative to the root) that holds ``value``, or
            ``None`` where ``value`` is only a threshold.
    """

    __slots__ = ("mode", "monitor", "name", "threshold", "value")

    def __init__(self, monitor: str, mode: Mode | None, threshold: float | None) -> None:
        self.monitor = monitor
        self.mode: Mode | None = mode
        self.threshold = threshold
        self.value: float | None = threshold
        self.name: str | None = None

    def improves(self, value: float | None) -> bool:
        """Whether ``value`` beats the best so far (``False`` while the mode is unknown)."""
        if value is None or self.mode is None:
            return False
        return improves(self.mode, value, self.value)

    def record(self, value: float, name: str) -> None:
        """Make ``value``, saved as ``name``, the best."""
        self.value, self.name = value, name

    def snapshot(self) -> tuple[float | None, str | None]:
        """The best as it stands, to put back with :meth:`reset` if a save fails."""
        return self.value, self.name

    def reset(self, snapshot: tuple[float | None, str | None]) -> None:
        self.value, self.name = snapshot

    def entry(self) -> dict[str, Any] | None:
        """The ``best`` entry of the folder's state file, or ``None``."""
        if self.name is None or self.mode is None:
            return None
        return {"name": self.name, "monitor": self.monitor, "mode": self.mode, "value": self.value}

    def restore(
        self,
        state: Mapping[str, Any] | None,
        template: str,
        names: Iterable[str],
        exact_values: Callable[[], Iterable[tuple[str, object]]] | None,
    ) -> None:
        """Pick the best up from the folder at train begin.

        Args:
            state: the folder's state file, or ``None``.
            template: the template text the state must name.
            names: the checkpoints in the folder (relative names).
            exact_values: where the state file cannot say, a function giving
                ``(name, value)`` of each checkpoint (from its sidecar); ``None``
                where no policy needs the best from the folder.
        """
        mode = self.mode
        present = set(names)
        if mode is None or not present:
            return
        restored = _from_state(state, template, self.monitor, mode, present)
        if restored is None and exact_values is not None:
            for name, value in exact_values():
                number = _usable(value)
                if number is not None and (restored is None or improves(mode, number, restored[0])):
                    restored = (number, name)
        if restored is None:
            return
        # The threshold is a bar to beat, not a checkpoint: keep it only where
        # it is better than what the folder already holds.
        if self.threshold is None or not improves(mode, float(self.threshold), restored[0]):
            self.value, self.name = restored

    def best_of(self, values: Iterable[tuple[str, object]]) -> None:
        """Make the best of ``(name, value)`` pairs the tracked best (``None`` if none)."""
        self.value, self.name = None, None
        mode = self.mode
        if mode is None:
            return
        for name, value in values:
            number = _usable(value)
            if number is not None and self.improves(number):
                self.value, self.name = number, name


def _usable(value: object) -> float | None:
    """``value`` as a float where it is a number other than NaN, else ``None``."""
    if not is_number(value):
        return None
    number = float(cast(float, value))
    return None if math.isnan(number) else number


def _from_state(
    state: Mapping[str, Any] | None, template: str, monitor: str, mode: str, present: set[str]
) -> tuple[float, str] | None:
    best = state.get("best") if state else None
    if (
        state is not None
        and state.get("template") == template
        and isinstance(best, dict)
        and best.get("monitor") == monitor
        and best.get("mode") == mode
        and best.get("name") in present
        and isinstance(best.get("value"), (int, float))
    ):
        return float(best["value"]), str(best["name"])
    return None
