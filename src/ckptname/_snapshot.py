"""A shadow copy of a model that holds its state at one step, for saving in the background.

This module is reserved for taking a consistent snapshot of everything a
checkpoint file holds (the layers' variables, trainable or not, and the
optimizer's) while the training loop goes on changing the model.

The shadow is built once, the way ``keras.models.load_model`` builds a model
from a ``.keras`` file: from the model's serialized config, compile config
and build config, so it has the same layers, variables and optimizer
variables, in the same order. A snapshot then copies each variable's value
into its twin, as cheaply as the backend allows:

==========  ==================================================================
backend     what taking a snapshot costs
==========  ==================================================================
TensorFlow  no copy at the snapshot: the shadow's variable shares the buffer;
            TensorFlow's resource variables copy on write, so the next
            training step that updates a variable writes a fresh buffer (one
            copy of the state, made by that step)
JAX         one device copy of each array (Keras donates the training state's
            buffers to the next step, so sharing them is not enough)
PyTorch     one copy into the shadow's tensors (the optimizer updates in place)
==========  ==================================================================

Either way the shadow holds one extra copy of the weights and optimizer state
for as long as it lives; the callback keeps it from its first background save
to the end of training.

A model whose config cannot be rebuilt (a subclassed model without
``get_config``), or whose rebuilt twin does not have the same variables, has
no shadow: :func:`build_shadow` says why, and the callback saves that model
synchronously.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import keras

from ._background import BackgroundSaver
from ._errors import CheckpointSaveError, CkptnameWarning
from ._keras_backend import outside_distribution, outside_strategy, save_model
from ._transaction import CheckpointFolder

__all__ = ["BackgroundSaves", "SaveFailed", "Shadow", "Snapshots", "build_shadow"]


class Shadow:
    """A rebuilt twin of a model; :meth:`take` copies the model's state into it."""

    def __init__(self, model: Any, twin: Any) -> None:
        self.model = twin
        self._pairs = list(zip(_state(model), _state(twin), strict=True))
        self._copy = _copier()

    def take(self, model: Any) -> None:
        """Copy the values of ``model``'s variables (read them on the training thread)."""
        source = _state(model)
        if len(source) != len(self._pairs):
            raise ValueError("the model's variables changed since its shadow was built")
        for (_, twin), variable in zip(self._pairs, source, strict=True):
            self._copy(variable, twin)


class Snapshots:
    """The twin a callback's background saves write from: built at the first, reused after."""

    def __init__(self) -> None:
        self.shadow: Shadow | None = None
        self._warned = False

    def take(self, model: Any) -> Shadow | None:
        """The twin, holding ``model``'s state now; ``None`` where none can be built.

        A model that cannot be rebuilt from its config is saved synchronously
        instead, with one warning per callback: a checkpoint late is better
        than none.
        """
        if self.shadow is None:
            built = build_shadow(model)
            if isinstance(built, str):
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        "save_on_background=True needs a copy of the model to save from, and "
                        f"this model cannot be rebuilt from its config ({built}); saving "
                        "synchronously instead (give the model a get_config, or pass "
                        "save_on_background=False)",
                        CkptnameWarning,
                        stacklevel=6,
                    )
                return None
            self.shadow = built
        self.shadow.take(model)
        return self.shadow

    def drop(self) -> None:
        """Let the copy of the state go (between fits it is not needed)."""
        self.shadow = None


def build_shadow(model: Any) -> Shadow | str:
    """A :class:`Shadow` of ``model``, or the reason there can be none."""
    # Only the chief builds one: its variables live on this process alone, outside
    # any distribution or strategy scope.
    twin = outside_strategy(lambda: _rebuild(model))
    if isinstance(twin, str):
        return twin
    ours, theirs = _state(model), _state(twin)
    if len(ours) != len(theirs):
        return (
            f"its rebuilt copy has {len(theirs)} variables where the model has {len(ours)}"
        )
    for mine, other in zip(ours, theirs, strict=True):
        if tuple(mine.shape) != tuple(other.shape) or mine.dtype != other.dtype:
            return (
                f"its rebuilt copy's variable {other.path!r} is {other.dtype}{tuple(other.shape)} "
                f"where the model's {mine.path!r} is {mine.dtype}{tuple(mine.shape)}"
            )
    return Shadow(model, twin)


def _rebuild(model: Any) -> Any:
    """The twin of ``model``, rebuilt from its config, optimizer built; or why it cannot be."""
    with outside_distribution():
        try:
            config = keras.saving.serialize_keras_object(model)
            # The config is this process's own model: rebuilding its lambdas
            # is no risk, and refusing them would refuse such models for no reason.
            twin = keras.saving.deserialize_keras_object(config, safe_mode=False)
        except Exception as exc:  # any failure of a user's get_config/from_config
            return f"{type(exc).__name__}: {exc}"
        optimizer: Any = getattr(twin, "optimizer", None)
        has_optimizer = getattr(model, "optimizer", None) is not None and optimizer is not None
        if has_optimizer and not optimizer.built and twin.built:
            optimizer.build(twin.trainable_variables)
    return twin


def _state(model: Any) -> list[Any]:
    """What a checkpoint file holds: the layers' variables, then the optimizer's."""
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        variables.extend(optimizer.variables)
    return variables


def _copier() -> Any:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        # AssignVariableOp shares the buffer; updates copy on write.
        return lambda source, twin: twin.assign(source.value)
    if backend == "jax":
        import jax.numpy as jnp  # type: ignore[import-not-found,unused-ignore]  # JAX only

        def copy(source: Any, twin: Any) -> None:
            value = source.value
            if not getattr(value, "is_fully_addressable", True):
                # Replicated over the processes of a cluster: the local shard is the whole.
                value = value.addressable_data(0)
            twin.assign(jnp.array(value, copy=True))

        return copy
    if backend == "torch":
        # Keras's torch variables assign with copy_ into their own tensor.
        return lambda source, twin: twin.assign(source.value)
    return lambda source, twin: twin.assign(keras.ops.copy(source.value))


class SaveFailed(Exception):
    """A background save's error, with the best tracker as it was before that save."""

    def __init__(self, error: CheckpointSaveError, tracker: Any) -> None:
        super().__init__(str(error))
        self.error = error
        self.tracker = tracker


class BackgroundSaves:
    """A callback's background saves: the twin of its model and the one worker thread."""

    def __init__(self) -> None:
        self.saver = BackgroundSaver()
        self.snapshots = Snapshots()

    def submit(
        self,
        model: Any,
        folder: CheckpointFolder,
        name: str,
        meta: dict[str, Any],
        *,
        weights_only: bool,
        best: Mapping[str, Any] | None,
        previous: Mapping[str, Any] | None,
        tracker: Any,
        done: Callable[[str], None],
    ) -> bool:
        """Snapshot ``model`` and hand its save to the worker; ``done(path)`` runs there after.

        Returns ``False`` where the model has no twin (its config cannot be
        rebuilt): the caller then saves synchronously. A failure reaches
        :meth:`collect` as a :class:`SaveFailed` carrying ``tracker``.
        """
        shadow = self.snapshots.take(model)
        if shadow is None:
            return False

        def write(target: str) -> None:
            save_model(shadow.model, target, weights_only=weights_only)

        def job() -> None:
            try:
                path = folder.save(name, meta, write, best=best, previous_best=previous)
            except CheckpointSaveError as exc:
                raise SaveFailed(exc, tracker) from exc
            done(path)

        self.saver.submit(job)
        return True

    def collect(self) -> BaseException | None:
        """Wait for the save in flight; its error (or an earlier one not yet reported)."""
        return self.saver.take_error()
