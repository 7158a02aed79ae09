"""Reading a whole folder listing at once agrees with reading it name by name.

``Template.parse_many`` and ``read_listing`` must give exactly what ``parse``
gives for each name; ``names_at_least`` may give more names than asked for,
but never fewer: every name whose field reads as a number at or above the
bound is among them, whatever the template's other fields hold.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import assume, example, given
from hypothesis import strategies as st
from strategies import format_specs, templates, values_for

from ckptname import RenderError, Template
from ckptname._rank import as_counter

SIDECAR = ".ckptname.json"


def same(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN, and of the same types."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


@st.composite
def listings(draw: st.DrawFn, text: str, fields: list[tuple[str, str]]) -> list[str]:
    """Names of the template, near misses, and their sidecars, in any order."""
    template = Template(text)
    names: list[str] = []
    for _ in range(draw(st.integers(0, 8))):
        values = {name: draw(values_for(spec)) for name, spec in fields}
        try:
            name = template.render(values)
        except RenderError:
            continue
        names.append(name)
        variant = draw(st.sampled_from(["", ".backup", "x", "-", SIDECAR, "cut", "0"]))
        if variant == "cut":
            names.append(name[:-1])
        elif variant in ("x", "0"):
            names.append(variant + name)
        elif variant:
            names.append(name + variant)
    names += draw(st.lists(st.text(min_size=1, max_size=12).filter(lambda n: "\x00" not in n)))
    return draw(st.permutations(names))


@given(templates(), st.data())
@example(("{a}", [("a", "")]), None)
def test_read_listing_is_parse_name_by_name(template: Any, data: Any) -> None:
    text, fields = template
    t = Template(text)
    assume(t.reversible)
    names = data.draw(listings(text, fields)) if data is not None else ["..", ".", "x", "1"]
    expected = [(n, t.parse(n)) for n in names if t.parse(n) is not None]
    found, values, companions = t.read_listing(names, SIDECAR)
    assert len(found) == len(expected)
    for (name, value), (want_name, want) in zip(zip(found, values), expected):
        assert name == want_name and same(value, want), (name, value, want)
    assert t.parse_many(names)[0] == found
    listed = set(names)
    for name in found:
        assert (name in companions) == (name + SIDECAR in listed), name


COUNTER_SPECS = st.sampled_from(["", "d", "02d", "05d", "+d", " d", "+06d", "_d", "x", ">4d"])


@given(
    counter_spec=COUNTER_SPECS,
    other=templates(max_fields=2),
    data=st.data(),
)
@example(counter_spec="", other=("ep{a:.2f}", [("a", ".2f")]), data=None)
def test_names_at_least_misses_no_name_at_or_above_the_bound(
    counter_spec: str, other: Any, data: Any
) -> None:
    # The counter field first or last, next to fields of any spec.
    head, fields = other
    counter = "{step" + (":" + counter_spec if counter_spec else "") + "}"
    texts = [f"s{counter}-{head}", f"{head}=s{counter}.h5"]
    for text in texts:
        t = Template(text)
        if not t.reversible:
            continue
        all_fields = [*fields, ("step", counter_spec)]
        if data is None:
            names = ["s007-ep0.50", "ep0.50=s007.h5", "s1e+16-ep0.50", "s0900-ep1.00"]
            bounds = [1, 7, 8, 900, 10**16]
        else:
            names = data.draw(listings(text, all_fields))
            bounds = data.draw(st.lists(st.integers(-3, 10**7), min_size=1, max_size=3))
        counters = {}
        for name in names:
            values = t.parse(name)
            if values is not None and as_counter(values["step"]) is not None:
                counters[name] = as_counter(values["step"])
        bounds += list(counters.values())
        for bound in bounds:
            found = t.names_at_least(names, "step", bound)
            found_bytes = t.names_at_least([n.encode() for n in names], "step", bound)
            if found is None:
                # Only where the field is not read as a plain number, or no bound applies.
                assert not 1 <= bound < 10**40 or counter_spec in ("_d", "x", ">4d")
                continue
            must = {n for n, c in counters.items() if c >= bound}
            assert must <= set(found), (text, bound, must - set(found))
            if found_bytes is not None:
                assert {n.encode() for n in must} <= set(found_bytes)


@given(format_specs(), st.data())
def test_a_field_of_any_spec_does_not_hide_a_name_from_the_search(spec: str, data: Any) -> None:
    # The loosely matched field holds any value its spec can write.
    t = Template("b{batch:d}_{x" + (":" + spec if spec else "") + "}.h5")
    assume(t.reversible)
    value = data.draw(values_for(spec))
    batch = data.draw(st.integers(1, 10**9))
    try:
        name = t.render(batch=batch, x=value)
    except RenderError:
        return
    assert t.names_at_least([name], "batch", batch) == [name]
