"""Interrupt a run and resume it: the names are those of an uninterrupted run.

The first run is stopped in the middle of epoch 2; ``resume`` loads the latest
checkpoint into a new model, and ``fit_resumed`` finishes the interrupted epoch
exactly before going on. Run: ``python examples/resume.py``.
"""

from _common import keras, names, output_dir, tiny_model, toy_data

from ckptname.keras import BatchAwareCheckpoint, fit_resumed, resume

out = output_dir(__doc__.splitlines()[0], "example_runs/resume")
x, y = toy_data(320)  # 10 batches per epoch
TEMPLATE = "b{batch:03d}-ep{epoch}.keras"


class Stop(Exception):
    pass


class StopAt(keras.callbacks.Callback):
    def __init__(self, ckpt: BatchAwareCheckpoint, at: int) -> None:
        super().__init__()
        self.ckpt, self.at = ckpt, at

    def on_train_batch_end(self, batch, logs=None):
        if self.ckpt.batch == self.at:
            raise Stop


def run(folder, stop_at=None):
    model = tiny_model()
    point = resume(model, str(folder / TEMPLATE))
    ckpt = BatchAwareCheckpoint(str(folder / TEMPLATE), save_freq=4)
    callbacks = [ckpt] + ([StopAt(ckpt, stop_at)] if stop_at else [])
    try:
        fit_resumed(
            model,
            x,
            y,
            resume=point,
            epochs=3,
            batch_size=32,
            shuffle=False,
            callbacks=callbacks,
            verbose=0,
        )
    except Stop:
        print(f"stopped at global batch {ckpt.batch}; latest checkpoint: {ckpt.last_checkpoint}")
    return point, int(model.optimizer.iterations.numpy())


run(out / "interrupted", stop_at=14)
point, steps = run(out / "interrupted")
print(
    f"resumed at epoch {point.epoch}, global batch {point.batch}, "
    f"{point.batch_in_epoch} batches into the epoch"
)
_, ref_steps = run(out / "uninterrupted")
print("interrupted + resumed:", " ".join(names(out / "interrupted", ".keras")), f"({steps} steps)")
print(
    "uninterrupted:        ",
    " ".join(names(out / "uninterrupted", ".keras")),
    f"({ref_steps} steps)",
)
assert names(out / "interrupted", ".keras") == names(out / "uninterrupted", ".keras")
assert steps == ref_steps == 30
