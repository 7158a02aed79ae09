"""scan and find_latest against a plain reference, on real folders.

The reference parses every written name with the template, drops empty files
(unless their sidecar vouches for them) and ckptname's own files, and orders
by (batch, epoch, name with digits as numbers). find_latest's fast path (one
search over the joined listing) and its general path must both agree with it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from ckptname import Template, find_latest, scan

TEMPLATES = [
    "e{epoch:02d}-b{batch:05d}.h5",  # padded: widths are minimums
    "ck-{batch}.pt",  # no format type: read by shape
    "e{epoch:03d}.keras",
    "b{batch:d}-{loss:.2f}.h5",  # several names per batch
    "e{epoch}-i{batch_in_epoch:04d}.h5",
]

DECOYS = ["{}.backup", "x{}", ".ckptname-tmp-7-{}", "{}.ckptname.json", "{}~"]


@st.composite
def folders(draw: Any) -> tuple[str, list[tuple[str, bool]]]:
    text = draw(st.sampled_from(TEMPLATES))
    template = Template(text)
    values = st.fixed_dictionaries(
        {
            "epoch": st.integers(0, 150),
            "batch": st.integers(0, 200_000),
            "batch_in_epoch": st.integers(0, 12_000),
            "loss": st.sampled_from([0.5, 0.25, 1.0, float("nan")]),
        }
    )
    files: dict[str, bool] = {}
    for v in draw(st.lists(values, max_size=25)):
        name = template.render(v)
        files[name] = draw(st.booleans() | st.just(True))  # mostly non-empty
        if draw(st.integers(0, 4)) == 0:
            decoy = draw(st.sampled_from(DECOYS)).format(name)
            files.setdefault(decoy, True)
    return text, sorted(files.items())


def natural(name: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"([0-9]+)", name))


def reference(text: str, files: list[tuple[str, bool]]) -> list[str]:
    template = Template(text)
    listed = {name for name, _ in files}
    found = []
    for name, non_empty in files:
        values = template.parse(name)
        if values is None or ".ckptname" in name:
            continue
        # An empty file is never a checkpoint, unless its sidecar vouches for
        # it: the callback renames only complete files into place beside one.
        if not non_empty and name + ".ckptname.json" not in listed:
            continue
        found.append(
            (
                values.get("batch", -1),
                values.get("epoch", -1),
                values.get("batch_in_epoch", -1),
                natural(name),
                name,
            )
        )
    return [f[-1] for f in sorted(found)]


@given(folders())
@example(("e{epoch:02d}-b{batch:05d}.h5", [("e100-b100000.h5", True), ("e99-b99999.h5", True)]))
@example(("ck-{batch}.pt", [("ck-10.pt", True), ("ck-9.pt", True), ("ck-11.pt", False)]))
@example(("b{batch:d}-{loss:.2f}.h5", [("b7-0.50.h5", True), ("b7-0.25.h5", True)]))
@example(
    (
        "e{epoch:02d}-b{batch:05d}.h5",
        [("e00-b00000.h5", False), ("e00-b00000.h5.ckptname.json", True), ("e00-b00001.h5", False)],
    )
)
def test_scan_and_find_latest_agree_with_reference(
    folder: tuple[str, list[tuple[str, bool]]],
) -> None:
    text, files = folder
    root = tempfile.mkdtemp(prefix="ckptname-scan-")
    try:
        for name, non_empty in files:
            with open(os.path.join(root, name), "wb") as fh:
                fh.write(b"x" if non_empty else b"")
        want = reference(text, files)
        assert [r.name for r in scan(root, text)] == want
        latest = find_latest(root, text)
        assert (latest.name if latest else None) == (want[-1] if want else None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
