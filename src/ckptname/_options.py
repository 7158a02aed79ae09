"""The arguments of ``BatchAwareCheckpoint``: one named validator per rule.

This module is reserved for checking the callback's arguments before any
training, each rule with its own message that names the argument, what was
expected and one way out. It imports neither Keras nor TensorFlow (a
``ModelCheckpoint`` passed in by mistake is recognised by its shape).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ._errors import TemplateError
from ._rank import check_mode
from ._template import Template

__all__ = [
    "SaveFreq",
    "check_choices",
    "check_filepath",
    "check_initial_batch",
    "check_reversible",
    "check_suffix",
    "parse_save_freq",
]


def check_choices(lock: object, save_freq: object, mode: object, on_save_error: object) -> None:
    if lock not in (True, False, "takeover"):
        raise ValueError(f"lock must be True, False or 'takeover', got {lock!r}")
    parse_save_freq(save_freq)
    check_mode(mode)
    if on_save_error not in ("raise", "warn"):
        raise ValueError(f"on_save_error must be 'raise' or 'warn', got {on_save_error!r}")


def check_filepath(filepath: object) -> None:
    """A path template; a ``ModelCheckpoint`` given instead gets the call to write."""
    if isinstance(filepath, (str, os.PathLike)):
        return
    if type(filepath).__name__ == "ModelCheckpoint" and hasattr(filepath, "filepath"):
        given = vars(filepath)
        args = [repr(given.get("filepath"))]
        for key, default in (("monitor", "val_loss"), ("save_best_only", False),
                             ("save_weights_only", False), ("mode", "auto"),
                             ("save_freq", "epoch")):  # fmt: skip
            if given.get(key, default) != default:
                args.append(f"{key}={given[key]!r}")
        raise TypeError(
            "BatchAwareCheckpoint replaces keras.callbacks.ModelCheckpoint rather than "
            "wrapping it; pass the same arguments instead: "
            f"BatchAwareCheckpoint({', '.join(args)})"
        )
    raise TypeError(
        "filepath must be a path template such as 'ckpts/b{batch:05d}.keras', "
        f"got {type(filepath).__name__}"
    )


def check_suffix(filepath: str, weights_only: bool) -> None:
    """Keras's file-suffix rules, checked before training rather than at the first save."""
    if weights_only:
        if not filepath.endswith(".weights.h5"):
            raise ValueError(
                "with save_weights_only=True the filepath must end in '.weights.h5' "
                f"(Keras weights format), got {filepath!r}"
            )
    elif not filepath.endswith((".keras", ".h5")) or filepath.endswith(".weights.h5"):
        raise ValueError(
            "the filepath must end in '.keras' (or '.h5') to save the whole model, "
            f"got {filepath!r}; to save weights only, end it in '.weights.h5' "
            "and pass save_weights_only=True"
        )


def check_reversible(template: Template) -> None:
    reason = template.why_not_reversible
    if reason is not None:
        raise TemplateError(
            f"template '{template.text}' cannot be read back: {reason}; ckptname must read "
            "names back to find and resume checkpoints"
        )


def check_initial_batch(initial_batch: object) -> None:
    if initial_batch is None or (type(initial_batch) is int and initial_batch >= 0):
        return
    raise ValueError(
        "initial_batch must be a whole number of batches, 0 or more (the batches the model "
        f"was trained on before this run, where no checkpoint records them), got {initial_batch!r}"
    )


@dataclass(frozen=True, slots=True)
class SaveFreq:
    """When to save: every ``batches`` global batches, ``epochs`` epochs, or ``seconds``.

    Exactly one of the three is set; ``"epoch"`` is ``SaveFreq(epochs=1)``.
    """

    batches: int = 0
    epochs: int = 0
    seconds: float = 0.0


_SAVE_FREQ = re.compile(r"([0-9]+)(ba|ep|s|min|h)")
_UNIT_SECONDS = {"s": 1.0, "min": 60.0, "h": 3600.0}
SAVE_FREQ_FORMS = (
    "'epoch', a whole number of batches above 0 (500), or a string: '500ba' (batches), "
    "'2ep' (epochs), '30s', '10min' or '2h' (wall-clock time)"
)


def parse_save_freq(save_freq: object) -> SaveFreq:
    """What ``save_freq`` asks for.

    ==========================  ======================================
    ``save_freq``               when a save is due
    ==========================  ======================================
    ``"epoch"``, ``"1ep"``      at the end of every epoch
    ``500``, ``"500ba"``        when the global count crosses a
                                multiple of 500
    ``"2ep"``                   at the end of epochs 2, 4, 6... (1-based)
    ``"30s"``, ``"10min"``,     at the first batch end once that much
    ``"2h"``                    time has passed since the last save
    ==========================  ======================================

    Raises:
        ValueError: any other value; the message lists the accepted forms.
    """
    if save_freq == "epoch":
        return SaveFreq(epochs=1)
    if type(save_freq) is int and save_freq > 0:
        return SaveFreq(batches=save_freq)
    found = _SAVE_FREQ.fullmatch(save_freq) if isinstance(save_freq, str) else None
    if found is not None and int(found.group(1)) > 0:
        number, unit = int(found.group(1)), found.group(2)
        if unit == "ba":
            return SaveFreq(batches=number)
        if unit == "ep":
            return SaveFreq(epochs=number)
        return SaveFreq(seconds=number * _UNIT_SECONDS[unit])
    # Keras's own words first: code written against ModelCheckpoint matches them.
    raise ValueError(
        f"Unrecognized save_freq: {save_freq}. Expected save_freq are 'epoch' or integer "
        f"values; ckptname accepts {SAVE_FREQ_FORMS}, got {save_freq!r}"
    )
