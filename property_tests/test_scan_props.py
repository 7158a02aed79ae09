"""scan, find_latest and find_best against a plain reference, on real folders.

The reference parses every written name with the template, drops empty files
(unless their sidecar vouches for them), folders, links that lead nowhere or
out of the root, and ckptname's own files, and orders by (batch, epoch, batch
in epoch, name with digits as numbers). Every path of the queries must agree
with it: the searches of the joined listing (the sample and the newest names
of find_latest, the monitor of find_best, the names and sidecars of scan) and
the general paths they fall back to.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from typing import Any
from unittest import mock

from hypothesis import example, given
from hypothesis import strategies as st

from ckptname import RenderError, Template, _scan, find_best, find_latest, scan
from ckptname._metadata import encode

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


# ------------------------------------------------------------------ every path against a reference

# Templates whose counters the fast paths read in different ways: padded,
# without a type (texts with leading zeros, floats and strings read there
# too), signed, and with a folder level.
FAST_TEMPLATES = [
    "e{epoch:02d}-b{batch:05d}.h5",
    "ck-{batch}.pt",
    "b{batch:+d}-{loss:.2f}.h5",
    "e{epoch}-i{batch_in_epoch:04d}-{loss:.3f}.h5",
    "run{seed:d}/e{epoch:03d}-{loss:.1f}.keras",
]
# Names a counter without a type reads: leading zeros, a whole float, a
# float, a string, a negative number.
ODD_COUNTERS = ["0900", "1e+16", "100000.0", "2.5", "final", "-7", "00"]
KINDS = [
    "file",
    "file",
    "file",
    "empty",
    "dir",
    "link to a file",
    "link to an empty file",
    "link to nowhere",
    "link out of the root",
    "link to a folder",
]


@st.composite
def trees(draw: Any) -> tuple[str, list[tuple[str, str, bool]]]:
    """A template and entries (name, kind, with a sidecar) under one root."""
    text = draw(st.sampled_from(FAST_TEMPLATES))
    template = Template(text)
    values = st.fixed_dictionaries(
        {
            "epoch": st.integers(0, 150),
            "batch": st.integers(-5, 3_000_000) | st.integers(0, 40),
            "batch_in_epoch": st.integers(0, 12_000),
            "loss": st.sampled_from([0.5, 0.25, 1.0, 0.3, float("nan")]),
            "seed": st.integers(0, 2),
        }
    )
    entries: dict[str, tuple[str, bool]] = {}
    for v in draw(st.lists(values, max_size=30)):
        try:
            name = template.render(v)
        except RenderError:
            continue
        if text.startswith("ck-") and draw(st.integers(0, 5)) == 0:
            name = f"ck-{draw(st.sampled_from(ODD_COUNTERS))}.pt"
        kind = draw(st.sampled_from(KINDS))
        entries[name] = (kind, draw(st.integers(0, 3)) == 0)
        if draw(st.integers(0, 4)) == 0:
            decoy = draw(st.sampled_from(DECOYS)).format(name)
            entries.setdefault(decoy, ("file", False))
    return text, sorted((name, kind, side) for name, (kind, side) in entries.items())


def build_tree(root: str, outside: str, entries: list[tuple[str, str, bool]]) -> None:
    store = os.path.join(root, "store")  # inside the root; no template matches it
    os.makedirs(store, exist_ok=True)
    os.makedirs(outside, exist_ok=True)
    with open(os.path.join(store, "full"), "wb") as fh:
        fh.write(b"x")
    open(os.path.join(store, "empty"), "wb").close()
    with open(os.path.join(outside, "secret"), "wb") as fh:
        fh.write(b"x")
    targets = {
        "link to a file": os.path.join(store, "full"),
        "link to an empty file": os.path.join(store, "empty"),
        "link to nowhere": os.path.join(store, "gone"),
        "link out of the root": os.path.join(outside, "secret"),
        "link to a folder": store,
    }
    for name, kind, side in entries:
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if kind == "dir":
            os.makedirs(path, exist_ok=True)
        elif kind in targets:
            os.symlink(targets[kind], path)
        elif name.endswith(".ckptname.json"):
            write_sidecar(path[: -len(".ckptname.json")])
        else:
            with open(path, "wb") as fh:
                fh.write(b"" if kind == "empty" else b"x")
        if side:
            write_sidecar(path)


def write_sidecar(checkpoint: str) -> None:
    data = {"format": "ckptname.checkpoint/1", "name": os.path.basename(checkpoint)}
    with open(checkpoint + ".ckptname.json", "wb") as fh:
        fh.write(encode(data))


def whole_number(value: Any) -> int | None:
    """A counter as the README defines it: an int, a whole float, or ASCII digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def reference_tree(text: str, entries: list[tuple[str, str, bool]]) -> list[tuple[Any, ...]]:
    """Every checkpoint of the tree by the README's rules, oldest first, name by name."""
    template = Template(text)
    sidecars = {name for name, kind, _ in entries if kind == "file"}
    sidecars |= {name + ".ckptname.json" for name, _, side in entries if side}
    found = []
    for name, kind, _ in entries:
        values = template.parse(name)
        if values is None or ".ckptname" in name:
            continue
        # A file, or a link inside the root to a file; complete where not
        # empty or where its sidecar vouches for it.
        if kind in ("file", "link to a file"):
            pass
        elif kind in ("empty", "link to an empty file"):
            if name + ".ckptname.json" not in sidecars:
                continue
        else:
            continue
        counters = [
            whole_number(values[c]) if c in values else None
            for c in ("batch", "epoch", "batch_in_epoch")
        ]
        key = tuple(-math.inf if c is None else c for c in counters)
        in_sequence = all(whole_number(values[c]) is not None for c in values if c in COUNTERS)
        found.append((key, natural(name), name, values, in_sequence))
    found.sort(key=lambda f: f[:3])
    return found


COUNTERS = ("batch", "epoch", "batch_in_epoch")


def compared(record: Any) -> tuple[Any, ...]:
    """What record equality compares (values by repr: a NaN equals no other NaN)."""
    r = record
    return (r.path, r.name, repr(r.values), r.epoch, r.batch, r.batch_in_epoch, r.template)


def reference_best(found: list[tuple[Any, ...]], monitor: str) -> str | None:
    """The lowest monitor value, NaN never; of equal values the earliest."""
    best = None
    for _key, _nat, name, values, _seq in found:  # oldest first: the earlier wins ties
        value = values.get(monitor)
        if isinstance(value, float) and math.isnan(value):
            continue
        if best is None or value < best[0]:
            best = (value, name)
    return None if best is None else best[1]


@given(trees(), st.sampled_from([(1, 1), (1, 3), (4, 2), (2048, 256)]))
@example(
    ("ck-{batch}.pt", [("ck-0900.pt", "file", False), ("ck-10.pt", "file", False)]), (1, 1)
)
@example(
    (
        "e{epoch:02d}-b{batch:05d}.h5",
        [
            ("e00-b00003.h5", "empty", False),
            ("e00-b00002.h5", "link to a file", False),
            ("e00-b00001.h5", "file", False),
        ],
    ),
    (1, 1),
)
def test_fast_paths_agree_with_a_reference_on_any_tree(
    tree: tuple[str, list[tuple[str, str, bool]]], sampling: tuple[int, int]
) -> None:
    """scan, find_latest and find_best against the rules, with the sample taken at any size.

    ``sampling`` sets from how many names find_latest first looks for the
    newest names alone, and how large its sample is: here down to every
    folder and a sample of one name, so that its fast path runs on trees
    small enough to build by the hundred.
    """
    text, entries = tree
    base = tempfile.mkdtemp(prefix="ckptname-scan-")
    root, outside = os.path.join(base, "root"), os.path.join(base, "outside")
    try:
        build_tree(root, outside, entries)
        found = reference_tree(text, entries)
        with (
            mock.patch.object(_scan, "_SAMPLED_FROM", sampling[0]),
            mock.patch.object(_scan, "_SAMPLE", sampling[1]),
        ):
            records = scan(root, text)
            latest = find_latest(root, text)
            best = find_best(root, "loss", "min", text) if "loss" in text else None
        # repr: a NaN read from a name equals no other NaN.
        assert [(r.name, repr(r.values)) for r in records] == [(f[2], repr(f[3])) for f in found]
        newest = [f[2] for f in found if f[4]]
        assert (latest.name if latest else None) == (newest[-1] if newest else None)
        for one in (latest, best):
            if one is not None:
                (same,) = [r for r in records if r.name == one.name]
                assert compared(one) == compared(same) and one.size is not None
        if "loss" in text:
            assert (best.name if best else None) == reference_best(found, "loss")
        with_sizes = scan(root, text, sizes=True)
        assert list(map(compared, with_sizes)) == list(map(compared, records))
        assert all(r.size is not None for r in with_sizes)
    finally:
        shutil.rmtree(base, ignore_errors=True)
