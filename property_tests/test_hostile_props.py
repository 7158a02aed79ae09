"""Hostile input: names stay inside the root, pruning stays inside the template."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import templates

import ckptname
from ckptname import CkptnameError, Template

HOSTILE_STRINGS = st.sampled_from(
    [
        "../x",
        "..",
        ".",
        "/abs",
        "a/../../b",
        "a\\b",
        "C:\\x",
        "nul\x00byte",
        "x" * 300,
        "é" * 130,
        "",
        " ",
        "-",
        "a-b",
        "a.b",
        "~",
        "$HOME",
        "%s",
        "{epoch}",
        "<x>",
        "\n",
        ".",
    ]
) | st.text(max_size=20)
HOSTILE_NUMBERS = (
    st.sampled_from(
        [
            math.nan,
            math.inf,
            -math.inf,
            -0.0,
            10**400,
            -(10**400),
            2**63,
            True,
            False,
            np.float32(np.nan),
            np.int64(-1),
            np.float16(65504),
            np.array(3),
            np.bool_(True),
            np.float64(1e308),
        ]
    )
    | st.integers()
    | st.floats()
)
HOSTILE = HOSTILE_STRINGS | HOSTILE_NUMBERS | st.none() | st.just(np.zeros(2))


@given(templates(), st.data())
@example(("{a}/{b:s}.keras", [("a", ""), ("b", "s")]), None)
def test_rendering_hostile_values_gives_a_name_inside_the_root_or_a_clear_error(template, data):
    text, fields = template
    t = Template(text)
    values = (
        {"a": "..", "b": "x"}
        if data is None
        else {name: data.draw(HOSTILE, label=name) for name, _ in fields}
    )
    try:
        name = t.render(values)
    except CkptnameError as exc:
        assert str(exc)  # a clear message, never an empty one
        return
    root = "/r/o/o/t"
    full = os.path.normpath(os.path.join(root, name))
    assert full.startswith(root + os.sep), name
    parts = name.split("/")
    assert ".." not in parts and "" not in parts and "." not in parts
    assert all(len(p.encode()) <= 255 for p in parts)
    assert "\x00" not in name and "\\" not in name
    if t.reversible:
        assert t.parse(name) is not None


NAMES = st.sampled_from(
    [
        "ep001-0.500.keras",
        "ep002-0.400.keras",
        "ep010-0.300.keras",
        "ep100-0.350.keras",
        "ep099-nan.keras",
        "ep003-0.100.keras.backup",
        "notes.txt",
        "ep004-0.2.keras",
        ".ckptname-tmp-1-ep005-0.100.keras",
        "ep006-0.100.keras.ckptname.json",
        "EP007-0.100.keras",
        "ep008-0.100.KERAS",
    ]
)
TEMPLATE = "ep{epoch:03d}-{val_loss:.3f}.keras"


@given(
    names=st.sets(NAMES, min_size=1),
    outside=st.sets(st.sampled_from(["ep011-0.010.keras", "ep012-0.020.keras", "x.keras"])),
    links=st.sets(st.sampled_from(["ep020-0.001.keras", "ep021-0.002.keras"])),
    keep_last=st.none() | st.integers(min_value=0, max_value=3),
    keep_best=st.none() | st.integers(min_value=0, max_value=3),
)
def test_prune_never_deletes_outside_the_root_or_the_template(
    names, outside, links, keep_last, keep_best
):
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root, elsewhere = base / "root", base / "elsewhere"
        root.mkdir()
        elsewhere.mkdir()
        for name in names:
            (root / name).write_bytes(b"data")
        for name in outside:
            (elsewhere / name).write_bytes(b"keep me")
        # Checkpoint names in the root that are links to files outside it.
        for name in links:
            (elsewhere / ("target-" + name)).write_bytes(b"target")
            (root / name).symlink_to(elsewhere / ("target-" + name))
        (root / "sub").symlink_to(elsewhere, target_is_directory=True)
        before_outside = {p.name: p.read_bytes() for p in elsewhere.iterdir()}

        records = ckptname.scan(str(root), TEMPLATE)
        plan = ckptname.plan_retention(
            records,
            keep_last=keep_last,
            keep_best=keep_best,
            monitor="val_loss" if keep_best is not None else None,
        )
        deleted = ckptname.apply_retention(plan, str(root), template=TEMPLATE)

        t = Template(TEMPLATE)
        # Nothing outside the root changed: files, and link targets.
        assert {p.name: p.read_bytes() for p in elsewhere.iterdir()} == before_outside
        # Everything that the template does not match is still in the root.
        for name in names | {"sub"}:
            if t.parse(name) is None:
                assert os.path.lexists(root / name), name
        for path in deleted:
            assert Path(path).parent == root
            assert t.parse(Path(path).name) is not None
        # The newest checkpoint always survives.
        if records:
            assert os.path.lexists(records[-1].path)
