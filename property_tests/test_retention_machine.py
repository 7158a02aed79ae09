"""Retention as a state machine, against a plain list as the model.

Saves, decoys and prunes happen in any order on a real folder; after every
step the folder must hold exactly the checkpoints the model says, every decoy
(anything the template does not match, or an empty file) must still be there,
and the newest and every protected checkpoint must have survived.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ckptname import apply_retention, plan_retention, scan

TEMPLATE = "b{batch:05d}-{loss:.2f}.h5"

# Mostly a few values, so that ties on the rounded value are common; the rest
# anything a loss can be, rounded in the name to two places.
FEW = [0.0, 0.25, 0.5, 1.0, math.nan, math.inf]
losses = st.one_of(
    st.sampled_from(FEW),
    st.sampled_from(FEW),
    st.floats(min_value=0, max_value=3, allow_nan=False, allow_infinity=False),
)


@dataclass(frozen=True)
class Saved:
    name: str
    batch: int
    loss: float  # as the name rounds it


def expected_keep(
    model: list[Saved],
    keep_last: int | None,
    keep_best: int | None,
    mode: str,
    protected: set[str],
) -> set[str]:
    """The reference policy, written out plainly."""
    if not model:
        return set()
    if keep_last is None and keep_best is None:
        return {m.name for m in model}
    keep = {model[-1].name} | (protected & {m.name for m in model})
    if keep_last:
        keep |= {m.name for m in model[-keep_last:]}
    if keep_best:
        ranked = [m for m in model if not math.isnan(m.loss)]
        sign = 1 if mode == "min" else -1
        # Better value first; of equal values the earlier save first (as Keras).
        ranked.sort(key=lambda m: (sign * m.loss, m.batch))
        keep |= {m.name for m in ranked[:keep_best]}
    return keep


class RetentionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="ckptname-retention-")
        self.model: list[Saved] = []
        self.batch = 0
        self.decoys: set[str] = set()
        self.protected: set[str] = set()

    def teardown(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _write(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.root, name), "wb") as fh:
            fh.write(data)

    # -------------------------------------------------------------- rules

    @rule(step=st.integers(min_value=1, max_value=40_000), loss=losses)
    def save(self, step: int, loss: float) -> None:
        # Saves land on even batches; empty decoys on odd ones, so no save
        # ever overwrites a decoy.
        self.batch += 2 * step
        name = f"b{self.batch:05d}-{loss:.2f}.h5"
        self._write(name, b"weights")
        self.model.append(Saved(name, self.batch, float(f"{loss:.2f}")))

    @rule(
        kind=st.sampled_from(["backup", "temp", "other run", "empty", "sidecar", "prefix"]),
    )
    def decoy(self, kind: str) -> None:
        b = self.batch + 1
        name = {
            "backup": f"b{b:05d}-0.01.h5.backup",
            "temp": f".ckptname-tmp-1a-b{b:05d}-0.01.h5",
            "other run": f"run2-b{b:05d}-0.01.h5",
            "empty": f"b{b:05d}-0.01.h5",
            # A sidecar with no checkpoint (not beside the empty decoy: a sidecar
            # vouches for the file next to it, see ckptname._scan).
            "sidecar": f"b{b:05d}-0.02.h5.ckptname.json",
            "prefix": f"xb{b:05d}-0.01.h5",
        }[kind]
        self._write(name, b"" if kind == "empty" else b"not a checkpoint")
        self.decoys.add(name)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def protect(self, data: st.DataObject) -> None:
        self.protected.add(data.draw(st.sampled_from([m.name for m in self.model])))

    @rule(
        keep_last=st.none() | st.integers(min_value=0, max_value=4),
        keep_best=st.none() | st.integers(min_value=0, max_value=3),
        mode=st.sampled_from(["min", "max"]),
    )
    def prune(self, keep_last: int | None, keep_best: int | None, mode: str) -> None:
        records = scan(self.root, TEMPLATE)
        assert [r.name for r in records] == [m.name for m in self.model]
        plan = plan_retention(
            records,
            keep_last=keep_last,
            keep_best=keep_best,
            monitor="loss",
            mode=mode,
            protect=[os.path.join(self.root, name) for name in self.protected],
        )
        want = expected_keep(self.model, keep_last, keep_best, mode, self.protected)
        assert {r.name for r in plan.keep} == want
        assert {r.name for r in plan.keep}.isdisjoint(r.name for r in plan.delete)
        apply_retention(plan, self.root, template=TEMPLATE)
        self.model = [m for m in self.model if m.name in want]
        self.protected &= want

    # -------------------------------------------------------------- invariants

    @invariant()
    def folder_matches_model(self) -> None:
        on_disk = set(os.listdir(self.root))
        assert self.decoys <= on_disk, "a decoy was deleted"
        assert on_disk - self.decoys == {m.name for m in self.model}

    @invariant()
    def newest_and_protected_survive(self) -> None:
        on_disk = set(os.listdir(self.root))
        if self.model:
            assert self.model[-1].name in on_disk
        assert self.protected <= on_disk


TestRetentionMachine = RetentionMachine.TestCase
TestRetentionMachine.settings = settings(stateful_step_count=25)
