"""The arguments of ``BatchAwareCheckpoint``: one named validator per rule.

This module is reserved for checking the callback's arguments before any
training, each rule with its own message that names the argument, what was
expected and one way out. It imports neither Keras nor TensorFlow (a
``ModelCheckpoint`` passed in by mistake is recognised by its shape).
"""

from __future__ import annotations

import os

from ._errors import TemplateError
from ._rank import check_mode
from ._template import Template

__all__ = [
    "check_choices",
    "check_filepath",
    "check_initial_batch",
    "check_reversible",
    "check_suffix",
]


def check_choices(lock: object, save_freq: object, mode: object, on_save_error: object) -> None:
    if lock not in (True, False, "takeover"):
        raise ValueError(f"lock must be True, False or 'takeover', got {lock!r}")
    if not (save_freq == "epoch" or (type(save_freq) is int and save_freq > 0)):
        # Keras's own words first: code written against ModelCheckpoint matches them.
        raise ValueError(
            f"Unrecognized save_freq: {save_freq}. Expected save_freq are 'epoch' or integer "
            f"values; ckptname needs 'epoch' or a whole number of batches above 0, "
            f"got {save_freq!r}"
        )
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
