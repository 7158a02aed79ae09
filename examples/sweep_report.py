"""A small sweep over two hyperparameters, then the best checkpoint per group.

Each run writes to ``lr=<lr>/seed=<seed>/``; ``scan`` reads the whole tree back,
values from folder names included, and ``best_per_group`` picks the best
checkpoint per learning rate. The table is also written as CSV.
Run: ``python examples/sweep_report.py``.
"""

import csv

from _common import output_dir, tiny_model, toy_data

from ckptname import best_per_group, scan
from ckptname.keras import BatchAwareCheckpoint

out = output_dir(__doc__.splitlines()[0], "example_runs/sweep")
TEMPLATE = "lr={lr:.0e}/seed={seed:d}/ep{epoch:02d}-{val_loss:.4f}.keras"
x, y = toy_data(320)
xv, yv = toy_data(96, seed=1)

for lr in (0.003, 0.03):
    for seed in (0, 1):
        path = str(out / TEMPLATE.replace("{lr:.0e}", f"{lr:.0e}").replace("{seed:d}", str(seed)))
        ckpt = BatchAwareCheckpoint(path, monitor="val_loss", keep_best=2)
        tiny_model(lr=lr, seed=seed).fit(
            x, y, validation_data=(xv, yv), batch_size=32, epochs=4, callbacks=[ckpt], verbose=0
        )

records = scan(out, TEMPLATE)
runs = {(r.values["lr"], r.values["seed"]) for r in records}
print(f"{len(records)} checkpoints in {len(runs)} runs")
best = best_per_group(records, "val_loss", by=("lr",))
rows = [
    {
        "lr": lr,
        "seed": r.values["seed"],
        "epoch": r.epoch,
        "val_loss": r.values["val_loss"],
        "path": r.name,
    }
    for (lr,), r in best.items()
]
print(f"{'lr':>8} {'seed':>5} {'epoch':>6} {'val_loss':>9}  checkpoint")
for row in rows:
    print(
        f"{row['lr']:>8g} {row['seed']:>5} {row['epoch']:>6} {row['val_loss']:>9.4f}  {row['path']}"
    )
with open(out / "best_per_lr.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
print(f"wrote {out / 'best_per_lr.csv'}")
