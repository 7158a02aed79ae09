"""What a save needs from the logs: the fields of the name, the monitored value, the extras.

This module is reserved for the rules that tie a template and a monitor to
the values Keras logs. It imports neither Keras nor TensorFlow.

* Validation metrics exist only at epoch end: with an integer ``save_freq`` a
  ``val_*`` field or monitor can never have a value, and is refused before
  training starts. Other unknown fields fail at the save (another callback
  may add keys to the logs).
* A missing field or monitor at a save is a :class:`~ckptname.MissingFieldError`
  naming what the logs hold: never a silent save, never a ``0``.
* ``validation_freq=N`` leaves most epochs without ``val_*`` keys. A save at
  the end of such an epoch that needs a validation value (a ``{val_*}`` field,
  or the monitor of ``save_best_only``) is skipped with a warning, as Keras's
  ``ModelCheckpoint`` skips it; ``keep_best`` and best tracking ignore the
  epoch (its checkpoint is saved without a value). An epoch counts as not
  validated when its logs hold no ``val_*`` key at all; a missing ``val_*``
  key beside others is still an error (a misspelt name).
* Extras may not reuse a counter name (the callback fills those) or a key of
  the logs (the field would be ambiguous).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._errors import MissingFieldError, RenderError
from ._rank import COUNTERS, is_number
from ._template import Template

__all__ = [
    "announce",
    "check_extras",
    "check_extras_clash",
    "check_fields_for_batches",
    "check_fields_for_preemption",
    "monitor_value",
    "not_validated",
    "render_name",
    "skipped_for_validation",
]


def check_fields_for_preemption(template: Template, extras: Mapping[str, Any]) -> None:
    """Refuse validation fields where a preemption checkpoint, at any batch, needs a name.

    Raises:
        MissingFieldError: a ``val_*`` field that is not an extra.
    """
    for name in template.fields:
        if name not in COUNTERS and name not in extras and name.startswith("val_"):
            raise MissingFieldError(
                f"field '{name}' of template '{template.text}' has no value at a preemption "
                "checkpoint, which can come at any batch: validation metrics exist only at "
                f"epoch end; name checkpoints by a training metric such as '{name[4:]}', or "
                "pass save_on_preemption=False",
                (name,),
                (),
            )


def check_fields_for_batches(
    template: Template, every: int | str, extras: Mapping[str, Any], monitor: str,
    monitor_use: str | None,
) -> None:  # fmt: skip
    """Refuse validation fields and a validation monitor when saving at batch ends.

    Args:
        template: the checkpoints' template.
        every: the number of batches of ``save_freq``, or a wall-clock
            ``save_freq`` (``"30s"``); 0 (epoch saves) checks nothing.
        extras: the extras, whose keys are always available.
        monitor: the monitored metric.
        monitor_use: what needs the monitor (``"save_best_only"``,
            ``"keep_best"``), or ``None`` where nothing does.

    Raises:
        MissingFieldError: such a field or monitor can never have a value.
    """
    if not every:
        return
    saving = f"every {every} batches" if isinstance(every, int) else f"every {every}"
    for name in template.fields:
        if name not in COUNTERS and name not in extras and name.startswith("val_"):
            raise MissingFieldError(
                f"field '{name}' of template '{template.text}' will not be in the "
                f"logs when saving {saving}: validation metrics exist "
                "only at epoch end; use save_freq='epoch', or a training metric such as "
                f"'{name[4:]}'",
                (name,),
                (),
            )
    if monitor_use is not None and monitor.startswith("val_") and monitor not in extras:
        raise MissingFieldError(
            f"monitor '{monitor}' ({monitor_use}) will not be in the logs when saving "
            f"{saving}: validation metrics exist only at epoch end; use "
            f"save_freq='epoch', or monitor a training metric such as '{monitor[4:]}'",
            (monitor,),
            (),
        )


def render_name(template: Template, values: Mapping[str, Any], where: str) -> str:
    """The checkpoint's name; a missing field is an error naming what the logs hold."""
    try:
        return template.render(values)
    except MissingFieldError as exc:
        hint = ""
        if any(f.startswith("val_") for f in exc.fields):
            hint = (
                "; validation metrics exist only at epoch end, and only when fit has "
                "validation data"
            )
        raise MissingFieldError(
            f"no value for {_fields_text(exc.fields)} of template '{template.text}' "
            f"at {where} (available: {', '.join(sorted(values))}){hint}",
            exc.fields,
            tuple(sorted(values)),
        ) from None


def monitor_value(
    logs: Mapping[str, Any], monitor: str, monitor_use: str | None, where: str
) -> float | None:
    """The monitored value in the logs, or ``None`` where it is absent and nothing needs it.

    Raises:
        MissingFieldError: ``monitor_use`` needs the monitor and the logs lack it.
        TypeError: ``monitor_use`` needs it and it is not a single number.
    """
    value = logs.get(monitor)
    if value is None:
        if monitor_use is None:
            return None
        hint = ""
        if monitor.startswith("val_"):
            hint = "; validation metrics exist only when fit has validation data"
        raise MissingFieldError(
            f"monitor '{monitor}' ({monitor_use}) is not in the logs at {where} "
            f"(available: {', '.join(sorted(logs)) or 'nothing'}){hint}",
            (monitor,),
            tuple(sorted(logs)),
        )
    if not is_number(value):
        if monitor_use is None:
            return None
        raise TypeError(
            f"monitor '{monitor}' is {value!r} at {where}; it must be a single "
            "number to compare checkpoints by"
        )
    return float(value)


def not_validated(logs: Mapping[str, Any], end_of_epoch: bool) -> bool:
    """Whether these are the logs of an epoch end that ran no validation."""
    return end_of_epoch and not any(str(key).startswith("val_") for key in logs)


def skipped_for_validation(error: MissingFieldError, subject: str, where: str) -> str | None:
    """The warning for a save skipped because its epoch ran no validation.

    Returns ``None`` where ``error`` is about anything but ``val_*`` values
    (the caller then raises it).
    """
    if not error.fields or not all(f.startswith("val_") for f in error.fields):
        return None
    return (
        f"{subject} is not in the logs at {where} (available: "
        f"{', '.join(error.available) or 'nothing'}): that epoch ran no validation "
        "(fit validates only with validation data, and then every validation_freq epochs), "
        "so its save is skipped; later saves skipped for the same reason are not reported"
    )


def announce(
    verbose: int,
    best_only: bool,
    monitor: str,
    epoch: int,
    best: float | None,
    improved: bool,
    current: float | None,
    shown: str,
) -> bool:
    """Print what ``verbose`` asks for, in Keras's words; whether the save goes ahead."""
    best_text = "None" if best is None else f"{best:.5f}"
    if best_only and not improved:
        if verbose > 0:
            print(f"\nEpoch {epoch}: {monitor} did not improve from {best_text}")
        return False
    if verbose > 0 and best_only:
        print(
            f"\nEpoch {epoch}: {monitor} improved from {best_text} to "
            f"{current:.5f}, saving model to {shown}"
        )
    elif verbose > 0:
        print(f"\nEpoch {epoch}: saving model to {shown}")
    return True


def check_extras(extras: object) -> None:
    """Refuse extras that are not a mapping or a function, or that reuse a counter name."""
    if isinstance(extras, Mapping):
        for key in extras:
            if key in COUNTERS:
                raise RenderError(
                    f"extras key {key!r} is a counter the callback fills itself "
                    f"({', '.join(COUNTERS)}); rename the extra"
                )
    elif extras is not None and not callable(extras):
        raise TypeError(
            f"extras must be a dict or a function returning one, got {type(extras).__name__}"
        )


def check_extras_clash(extras: Mapping[str, Any], logs: Mapping[str, Any]) -> None:
    """Refuse an extra whose key is also a key of the logs."""
    for key in extras:
        if key in logs:
            raise RenderError(
                f"extras key {key!r} is also a key of the logs; rename the extra so "
                "that the template field is not ambiguous"
            )


def _fields_text(fields: Sequence[str]) -> str:
    names = ", ".join(f"'{f}'" for f in fields)
    return f"field {names}" if len(fields) == 1 else f"fields {names}"
