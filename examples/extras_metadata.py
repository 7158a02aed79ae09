"""Store a float with every checkpoint (here the learning rate) and read it back.

``extras`` values go into each checkpoint's metadata sidecar and are offered as
template fields; the sidecar also keeps the exact, unrounded metrics.
Run: ``python examples/extras_metadata.py``.
"""

from _common import keras, output_dir, tiny_model, toy_data

from ckptname import read_metadata, scan
from ckptname.keras import BatchAwareCheckpoint

out = output_dir(__doc__.splitlines()[0], "example_runs/extras")
x, y = toy_data(320)
model = tiny_model()
schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.05 * 0.5**epoch)


def extras() -> dict[str, float]:
    """Called at every save: the learning rate and temperature in force."""
    return {"lr": float(model.optimizer.learning_rate.numpy()), "temperature": 0.7}


ckpt = BatchAwareCheckpoint(
    str(out / "ep{epoch:02d}-lr{lr:.1e}-{loss:.3f}.keras"), monitor="loss", extras=extras
)
model.fit(x, y, batch_size=32, epochs=3, callbacks=[schedule, ckpt], verbose=0)

for record in scan(out, "ep{epoch:02d}-lr{lr:.1e}-{loss:.3f}.keras"):
    meta = read_metadata(record.path)
    exact_loss = meta["metrics"]["loss"]
    print(
        f"{record.name}: lr in the name {record.values['lr']:.1e}, in the sidecar "
        f"{meta['extras']['lr']!r}; loss {record.values['loss']} (exact {exact_loss:.6f})"
        f"; temperature {meta['extras']['temperature']}"
    )
    assert abs(meta["extras"]["lr"] - record.values["lr"]) < 0.05 * record.values["lr"]
