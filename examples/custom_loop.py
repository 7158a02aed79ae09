"""Checkpoints from a hand-written tf.GradientTape loop, without fit.

One callback saves every 5 global batches with the training loss in the name;
another saves at epoch end only when the validation loss improves. The loop calls
the same hooks that ``fit`` would. Run: ``python examples/custom_loop.py``.
"""

from _common import names, output_dir, tf, tiny_model, toy_data

from ckptname import find_best
from ckptname.keras import BatchAwareCheckpoint

out = output_dir(__doc__.splitlines()[0], "example_runs/custom_loop")
x, y = toy_data(320)
xv, yv = toy_data(96, seed=1)
model = tiny_model()
loss_fn = tf.keras.losses.BinaryCrossentropy()
optimizer = model.optimizer

every5 = BatchAwareCheckpoint(
    str(out / "batches/b{batch:04d}-{loss:.3f}.weights.h5"),
    save_weights_only=True,
    save_freq=5,
    keep_last=3,
)
best = BatchAwareCheckpoint(
    str(out / "best/ep{epoch:02d}-{val_loss:.4f}.keras"), monitor="val_loss", save_best_only=True
)
callbacks = [every5, best]
for cb in callbacks:
    cb.set_model(model)
    cb.on_train_begin()

dataset = tf.data.Dataset.from_tensor_slices((x, y[:, None])).batch(32)
for epoch in range(4):
    for cb in callbacks:
        cb.on_epoch_begin(epoch)
    for step, (xb, yb) in enumerate(dataset):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        for cb in callbacks:
            cb.on_train_batch_end(step, {"loss": float(loss)})
    val_loss = float(loss_fn(yv[:, None], model(xv, training=False)))
    for cb in callbacks:
        cb.on_epoch_end(epoch, {"loss": float(loss), "val_loss": val_loss})
for cb in callbacks:
    cb.on_train_end()

print("every 5 batches (3 kept):", " ".join(names(out / "batches")))
print("best by val_loss:        ", " ".join(names(out / "best")))
print("find_best:               ", find_best(out / "best", "val_loss").name)
