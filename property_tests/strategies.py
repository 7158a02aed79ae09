"""Shared Hypothesis strategies: format specs, field values, templates."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from ckptname import Template, TemplateError

INT_TYPES = ["d", "x", "X", "o", "b"]
FLOAT_TYPES = ["f", "F", "e", "E", "g", "G", "%"]
ALL_TYPES = [*INT_TYPES, *FLOAT_TYPES, "s", ""]

# Specs whose pattern matches exactly the texts rendering produces. Not floats:
# past 15 significant digits not every digit string names one, and a field
# without a type admits float-shaped text that is no float's repr ("1.50").
EXACT_SPECS = [
    "d",
    "02d",
    "05d",
    "+d",
    ",d",
    "_d",
    "x",
    "#x",
    "X",
    "o",
    "#o",
    "b",
    "_b",
    "s",
    ".3s",
    "03d",
    "+05d",
]

# Literals no number can contain, so that numeric fields always split one way.
SAFE_SEPARATORS = ["=", "@", "~", "/", "=/", "#"]
ANY_SEPARATORS = [*SAFE_SEPARATORS, "-", "_", ".", "+", "e", " ", "--", "_b", "0", ","]

text_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="/\\\x00{}<>"),
    max_size=10,
)
int_values = st.integers(min_value=-(10**20), max_value=10**20) | st.booleans()
float_values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**6), 10**6)


def kinds_of(spec: str) -> list[str]:
    """Which of int, float, str the interpreter can format with this spec."""
    out = []
    for kind, sample in (("int", 0), ("float", 0.0), ("str", "")):
        try:
            format(sample, spec)
        except ValueError:
            continue
        out.append(kind)
    return out


@st.composite
def format_specs(draw: st.DrawFn, types: list[str] = ALL_TYPES, fills: bool = True) -> str:
    """A valid format spec built from the mini-language's parts."""
    typ = draw(st.sampled_from(types))
    align = draw(st.sampled_from(["", "", "<", ">", "^", "="]))
    fill = draw(st.sampled_from(["", "", "_", "0", "*", " ", "x"])) if align and fills else ""
    sign = draw(st.sampled_from(["", "", "+", "-", " "]))
    z = draw(st.sampled_from(["", "z"])) if typ in FLOAT_TYPES else ""
    alt = draw(st.sampled_from(["", "#"]))
    zero = draw(st.sampled_from(["", "", "0"]))
    width = draw(st.sampled_from(["", "", "1", "2", "3", "5", "8"]))
    grouping = draw(st.sampled_from(["", "", ",", "_"]))
    precision = "" if typ in INT_TYPES else draw(st.sampled_from(["", "", ".0", ".1", ".3", ".6"]))
    spec = fill + align + sign + z + alt + zero + width + grouping + precision + typ
    if not kinds_of(spec):
        return typ
    try:
        Template("{a:" + spec + "}")
    except TemplateError:
        return typ  # e.g. a fill that numbers hold: refused at compile time, tested apart
    return spec


def values_for(spec: str) -> st.SearchStrategy[Any]:
    kinds = kinds_of(spec)
    typ = spec[-1:] if spec[-1:].isalpha() or spec[-1:] == "%" else ""
    options = []
    if "int" in kinds and typ not in FLOAT_TYPES:
        options.append(int_values)
    if "float" in kinds:
        options.append(float_values)
    if "str" in kinds:
        options.append(text_values)
    return st.one_of(*options)


NAMES = ["a", "epoch", "val_loss", "val/loss", "b2", "lr"]


@st.composite
def templates(
    draw: st.DrawFn,
    specs: st.SearchStrategy[str] | None = None,
    separators: list[str] = ANY_SEPARATORS,
    max_fields: int = 3,
) -> tuple[str, list[tuple[str, str]]]:
    """A brace template text and its (name, spec) fields, separated by literals."""
    specs = specs if specs is not None else format_specs()
    n = draw(st.integers(min_value=1, max_value=max_fields))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=n, max_size=n, unique=True))
    fields = [(name, draw(specs)) for name in names]
    parts = [draw(st.sampled_from(["", "ep", "ckpt-", "runs/"]))]
    for i, (name, spec) in enumerate(fields):
        parts.append("{" + name + (":" + spec if spec else "") + "}")
        if i < n - 1:
            parts.append(draw(st.sampled_from(separators)))
    parts.append(draw(st.sampled_from(["", ".keras", ".weights.h5", "@x"])))
    return "".join(parts), fields


# ------------------------------------------------------------------ hostile metadata files

# Any JSON value: scalars (the strings readers give meaning to included),
# nested lists and objects.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["nan", "inf", "-inf", "", "ep002-0.40.keras", "ckptname.state/1"])
    | st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    """JSON nested up to 200,000 deep, in lists or objects: past any recursion limit."""
    depth = draw(st.integers(min_value=1, max_value=200_000))
    opening, closing = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    return opening * depth + b"1" + closing * depth


# What can sit under the name of a sidecar, a state file or a lock.
FILE_KINDS = [
    "bytes",
    "fifo",
    "directory",
    "link to /dev/zero",
    "link to nowhere",
    "link to a regular file",
]
