"""Integer save_freq: names follow the global batch count across epochs.

``keras.callbacks.ModelCheckpoint`` fills ``{batch}`` with the index inside the
epoch, so its names restart every epoch; ``BatchAwareCheckpoint`` fills it with
the global count. Run: ``python examples/batch_naming.py``.
"""

from _common import keras, names, output_dir, tiny_model, toy_data

from ckptname.keras import BatchAwareCheckpoint

out = output_dir(__doc__.splitlines()[0], "example_runs/batch_naming")
x, y = toy_data(320)  # 10 batches of 32 per epoch

ours = BatchAwareCheckpoint(
    str(out / "ours/model_batch_at_{batch:05d}.weights.h5"), save_weights_only=True, save_freq=4
)
tiny_model().fit(x, y, batch_size=32, epochs=3, callbacks=[ours], verbose=0)

theirs = keras.callbacks.ModelCheckpoint(
    str(out / "keras/model_batch_at_{batch:05d}.weights.h5"), save_weights_only=True, save_freq=4
)
tiny_model().fit(x, y, batch_size=32, epochs=3, callbacks=[theirs], verbose=0)

print("BatchAwareCheckpoint:     ", " ".join(names(out / "ours")))
print("keras ModelCheckpoint:    ", " ".join(names(out / "keras")))
assert names(out / "ours") == [f"model_batch_at_{b:05d}.weights.h5" for b in range(4, 31, 4)]
