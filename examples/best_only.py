"""save_best_only with mode='auto', initial_value_threshold, keep_best and keep_last.

``val_accuracy`` is maximised (mode 'auto' knows accuracy means more-is-better);
nothing is saved until it beats 0.6; a second callback keeps the 2 best and the
1 latest checkpoints by validation loss. Run: ``python examples/best_only.py``.
"""

from _common import names, output_dir, tiny_model, toy_data

from ckptname import find_best, find_latest
from ckptname.keras import BatchAwareCheckpoint

out = output_dir(__doc__.splitlines()[0], "example_runs/best_only")
x, y = toy_data(320)
xv, yv = toy_data(96, seed=1)

best_only = BatchAwareCheckpoint(
    str(out / "best/ep{epoch:02d}-acc{val_accuracy:.3f}.keras"),
    monitor="val_accuracy",
    mode="auto",
    save_best_only=True,
    initial_value_threshold=0.6,
)
pruned = BatchAwareCheckpoint(
    str(out / "all/ep{epoch:02d}-{val_loss:.4f}.keras"),
    monitor="val_loss",
    keep_best=2,
    keep_last=1,
)
tiny_model(lr=0.05).fit(
    x,
    y,
    validation_data=(xv, yv),
    batch_size=32,
    epochs=8,
    callbacks=[best_only, pruned],
    verbose=0,
)

print("best-only saves (val_accuracy > 0.6, improving):", " ".join(names(out / "best")))
print("2 best + 1 latest by val_loss:                 ", " ".join(names(out / "all")))
print(
    "find_best(val_loss):",
    find_best(out / "all", "val_loss").name,
    "| find_latest:",
    find_latest(out / "all").name,
)
