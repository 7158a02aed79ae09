"""Hostile input: names stay inside the root, pruning stays inside the template."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from strategies import FILE_KINDS, deep_json, json_values, templates

import ckptname
from ckptname import CkptnameError, Template, TemplateError

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


# ------------------------------------------------------------------ hostile metadata files

META_TEMPLATE = "b{batch:03d}.keras"
META_LOSSES = {10: 0.9, 20: 0.1, 30: 0.5}


def _good_run(root: Path) -> None:
    """Three checkpoints as the callback leaves them; 'loss' in the sidecars only."""
    from ckptname._metadata import encode, state_record

    for batch, loss in META_LOSSES.items():
        name = f"b{batch:03d}.keras"
        (root / name).write_bytes(b"weights")
        meta = {"format": "ckptname.checkpoint/1", "name": name, "template": META_TEMPLATE,
                "batch": batch, "metrics": {"loss": loss}}  # fmt: skip
        (root / (name + ".ckptname.json")).write_bytes(encode(meta))
    state = state_record(META_TEMPLATE, {"name": "b030.keras", "batch": 30}, None)
    (root / ".ckptname-state.json").write_bytes(encode(state))


def _put(path: Path, kind: str, content: bytes) -> None:
    """Replace ``path`` by a file of ``kind`` (content for regular files)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    if kind == "bytes":
        path.write_bytes(content)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "link to nowhere":
        path.symlink_to(path.parent / "nowhere")
    else:
        target = path.parent.parent / ("target-" + path.name)
        target.write_bytes(content)
        path.symlink_to(target)


class _Blocked(Exception):
    pass


def _within_seconds(seconds: float):
    """A context in which a blocking call (a FIFO opened for reading) fails the example."""
    import contextlib
    import signal

    @contextlib.contextmanager
    def guard():
        def timeout(signum, frame):
            raise _Blocked(f"a reader blocked for {seconds} s")

        previous = signal.signal(signal.SIGALRM, timeout)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    return guard()


CONTENTS = json_values.map(lambda v: json.dumps(v).encode()) | deep_json() | st.binary(max_size=40)


@given(kind=st.sampled_from(FILE_KINDS), content=CONTENTS, which=st.sampled_from(["state", "b020"]))
@example(kind="fifo", content=b"", which="state")
@example(kind="bytes", content=b"[" * 100_000 + b"]" * 100_000, which="b020")
def test_any_metadata_file_gives_an_answer_or_a_ckptname_error(kind, content, which):
    """A state file or sidecar of any kind and any content: readers never hang, never
    raise anything but a CkptnameError, and answer as the listing does where the
    damaged file is not needed for the answer."""
    import warnings

    from ckptname._lock import read_owner

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        root.mkdir()
        _good_run(root)
        name = ".ckptname-state.json" if which == "state" else "b020.keras.ckptname.json"
        _put(root / name, kind, content)
        with _within_seconds(5), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            listed = [r.name for r in ckptname.scan(root, META_TEMPLATE)]
            assert listed == ["b010.keras", "b020.keras", "b030.keras"]
            try:
                latest = ckptname.find_latest(root)
                records = [r.name for r in ckptname.scan(root)]
                best = ckptname.find_best(root, "loss")
            except CkptnameError as exc:
                # Only a state file that is gone (a link to nowhere) or a readable
                # one naming another template leaves no template to list with.
                assert which == "state" and isinstance(exc, ckptname.TemplateError), exc
            else:
                assert latest is not None and latest.name == "b030.keras"
                assert records == listed
                assert best is not None and best.name in listed
            best = ckptname.find_best(root, "loss", template=META_TEMPLATE)
            assert best is not None and best.name in listed
            if which == "state":
                assert best.name == "b020.keras"
            try:
                meta = ckptname.read_metadata(root / "b020.keras")
            except (CkptnameError, FileNotFoundError):
                pass
            else:
                for key in ("metrics", "extras", "metric_state", "latest", "best"):
                    assert meta.get(key) is None or isinstance(meta[key], dict), key
            _put(root / ".ckptname.lock", kind, content)
            owner = read_owner(str(root / ".ckptname.lock")) if kind != "link to nowhere" else None
            assert owner is None  # nothing generated here is a lock


SECTION = st.sampled_from(["metrics", "extras", "metric_state", "latest", "best", "batch"])


@given(
    sidecar=st.dictionaries(SECTION, json_values, max_size=4),
    state=st.dictionaries(SECTION | st.sampled_from(["template"]), json_values, max_size=4),
)
def test_metadata_of_any_shape_gives_an_answer_or_a_ckptname_error(sidecar, state):
    """Sidecars and state files in the right format with sections of any type: what a
    reader gets back has its sections of the right type, or it warns and lists."""
    import warnings

    from ckptname._metadata import encode

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        root.mkdir()
        _good_run(root)
        side = root / "b030.keras.ckptname.json"
        side.write_bytes(encode({"format": "ckptname.checkpoint/1", **sidecar}))
        (root / ".ckptname-state.json").write_bytes(
            encode({"format": "ckptname.state/1", "template": META_TEMPLATE, **state})
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for call in (
                lambda: ckptname.find_latest(root),
                lambda: ckptname.scan(root),
                lambda: ckptname.find_best(root, "loss"),
                lambda: ckptname.read_metadata(root / "b030.keras"),
            ):
                try:
                    got = call()
                except CkptnameError:
                    continue
                if isinstance(got, dict):
                    for key in ("metrics", "extras", "metric_state"):
                        assert got.get(key) is None or isinstance(got[key], dict), key
                    for values in (got.get("metric_state") or {}).values():
                        assert isinstance(values, list)


# ------------------------------------------------------------------ widths and precisions

DIGITS = (
    st.integers(min_value=0, max_value=300).map(str)
    | st.integers(min_value=256, max_value=10**12).map(str)
    | st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n)
    | st.tuples(st.integers(1, 5000), st.integers(0, 300)).map(lambda t: "0" * t[0] + str(t[1]))
)


def _over(digits: str | None) -> bool:
    """Whether a width or precision asks for more than a path part's 255 bytes."""
    significant = (digits or "").lstrip("0")
    return len(significant) > 3 or (significant != "" and int(significant) > 255)


@given(
    align=st.sampled_from(["", ">", "_<", "^", "="]),
    zero=st.sampled_from(["", "0"]),
    width=st.none() | DIGITS,
    precision=st.none() | DIGITS,
    typ=st.sampled_from(["", "d", "x", "f", "e", "g", "%", "s"]),
    value=st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=5),
)
@example(align="", zero="0", width="4294967296", precision=None, typ="d", value=0)
@example(align="", zero="", width="1000000000", precision=None, typ="d", value=0)
def test_any_width_or_precision_compiles_fast_or_is_refused_with_a_caret(
    align, zero, width, precision, typ, value
):
    """Widths and precisions are memory requests: a template either holds ones a path
    part can (and renders names whose parts fit, or refuses the value), or is refused
    with a TemplateError pointing at the number, before anything is formatted."""
    spec = align + zero + (width or "") + ("" if precision is None else "." + precision) + typ
    text = "e{x:" + spec + "}.keras"
    sizes = (("width", width), ("precision", precision))
    too_big = [what for what, digits in sizes if _over(digits)]
    try:
        t = Template(text)
    except TemplateError as exc:
        assert exc.column is not None and exc.template == text
        if too_big:
            assert exc.reason.startswith(f"{too_big[0]} "), exc.reason
        return
    assert not too_big, text
    try:
        name = t.render(x=value)
    except CkptnameError as exc:
        assert str(exc)
        return
    assert all(len(part.encode()) <= 255 for part in name.split("/"))
