"""Properties of Template: rendering is str.format, parsing is its exact inverse."""

from __future__ import annotations

import math
import re
from typing import Any

import parse as parse_pkg
from hypothesis import assume, example, given
from hypothesis import strategies as st
from strategies import (
    EXACT_SPECS,
    FLOAT_TYPES,
    INT_TYPES,
    SAFE_SEPARATORS,
    format_specs,
    templates,
    values_for,
)

from ckptname import RenderError, Template, TemplateError


def _draw_values(data: st.DataObject, fields: list[tuple[str, str]]) -> dict[str, Any]:
    return {name: data.draw(values_for(spec), label=name) for name, spec in fields}


def _same_to_precision(spec: str, given: Any, back: Any) -> bool:
    """The value read back is the value rendered, to the precision of the spec."""
    if format(back, spec) != format(given, spec):
        return False
    typ = spec[-1:]
    if isinstance(given, float) or typ in FLOAT_TYPES or (spec and typ == "s"):
        return True  # floats to the spec's precision; '.3s' truncates
    if isinstance(given, bool) and spec:
        return back == int(given)
    return type(back) is type(given) and back == given


@given(templates(), st.data())
def test_render_is_str_format_and_parses_back(template, data):
    text, fields = template
    t = Template(text)
    values = _draw_values(data, fields)
    try:
        expected = text.format(**values)
    except (ValueError, TypeError, OverflowError):
        expected = None
    try:
        name = t.render(values)
    except RenderError:
        return  # refused: a value that would not read back, or that str.format refuses
    # Rule 1: byte-identical to str.format whenever render succeeds.
    assert name == expected
    if not t.reversible:
        return
    # Rule 3: every name render returns reads back to the same values.
    back = t.parse(name)
    assert back is not None, name
    for field_name, spec in fields:
        assert _same_to_precision(spec, values[field_name], back[field_name]), (
            field_name,
            spec,
            values[field_name],
            back[field_name],
        )


@given(
    templates(
        specs=format_specs(types=[*INT_TYPES, *FLOAT_TYPES], fills=False),
        separators=SAFE_SEPARATORS,
    ),
    st.data(),
)
def test_numbers_between_safe_separators_always_render(template, data):
    """Render refuses nothing that str.format writes, where numbers cannot be confused."""
    text, fields = template
    t = Template(text)
    values = _draw_values(data, fields)
    try:
        expected = text.format(**values)
    except (ValueError, TypeError, OverflowError):
        assume(False)
    assume(all(len(part.encode()) <= 255 for part in expected.split("/")))  # refused by design
    try:
        name = t.render(values)
    except RenderError as exc:
        assert "past the largest float" in str(exc)  # '.0e' rounds 1.5e308 up to 2e+308
        return
    assert name == expected
    back = t.parse(expected)
    assert back is not None
    for field_name, spec in fields:
        assert _same_to_precision(spec, values[field_name], back[field_name])


@given(templates(specs=st.sampled_from(EXACT_SPECS)), st.data())
@example(  # a part over 255 bytes matches the pattern, but no file has such a name
    ("{a:d}={epoch:+d}={val_loss:_b}.weights.h5", []), "1=+1=1" + "_0000" * 60 + ".weights.h5"
)
def test_every_name_the_pattern_matches_renders_back_exactly(template, data):
    """For exact specs, t.regex is the language of render: parse, re-render, same name.

    Except for length: names with a path part over 255 bytes match the pattern,
    and parse returns None for them.
    """
    t = Template(template[0])
    assume(t.reversible)
    name = data if isinstance(data, str) else data.draw(st.from_regex(t.regex, fullmatch=True))
    if any(len(part.encode()) > 255 for part in name.split("/")):
        assert t.parse(name) is None
        return
    back = t.parse(name)
    assert back is not None, name
    try:
        again = t.render(back)
    except RenderError as exc:
        # the name splits more than one way ('0' between binary fields): parse
        # picks one reading, render refuses to write such a name
        assert "would not read back" in str(exc)
        return
    assert again == name


@given(templates(), st.data())
@example(("{a:<}", [("a", "<")]), "0.")  # a string with a dot was read; render refuses it
def test_parse_of_any_matching_name_is_none_or_renders_back(template, data):
    t = Template(template[0])
    assume(t.reversible)
    name = data if isinstance(data, str) else data.draw(st.from_regex(t.regex, fullmatch=True))
    back = t.parse(name)
    if back is None:
        return  # not renderable: e.g. a path part over 255 bytes
    try:
        again = t.render(back)
    except RenderError as exc:
        # a string that splits two ways: parse picks one reading, render refuses
        assert "would not read back" in str(exc) or "reads back as" in str(exc)
        return
    assert again == name


@given(st.from_regex(Template("{a}-e").regex, fullmatch=True))
@example("-0-e")  # '-0' is no int rendering: it reads as the string '-0'
@example("nan-e")
@example("1.50-e")  # no float's repr, and typeless strings hold no dot: refused
def test_typeless_field_reads_by_shape_and_renders_back(name):
    t = Template("{a}-e")
    back = t.parse(name)
    if back is None:
        # only float-shaped text that is no float's repr is refused
        field = name[:-2]
        assert re.fullmatch(r"-?[0-9]+\.[0-9]+(e[-+][0-9]+)?", field)
        assert repr(float(field)) != field
        return
    try:
        assert t.render(back) == name
    except RenderError as exc:
        assert "would not read back" in str(exc)  # 'x-y' splits two ways


@given(st.text(alphabet="{}<>:!.-_/0123456789abdefgsxz%=+ ,#^*", max_size=20))
@example("{a:<5}")
@example("<a:>>")
@example("<a:<<5d>")
@example("{:}")
@example("<>")
def test_compiling_any_text_gives_a_template_or_a_template_error(text):
    try:
        t = Template(text)
    except TemplateError as exc:
        assert str(exc).startswith(exc.reason)
        return
    assert t.text == text


@given(templates(), st.text(max_size=30))
def test_parsing_any_text_gives_a_dict_or_none(template, name):
    t = Template(template[0])
    assume(t.reversible)
    result = t.parse(name)
    assert result is None or isinstance(result, dict)


@given(
    st.sampled_from(
        ["ep{epoch:d}-{val_loss:.2f}.keras", "{epoch:d}_{batch:d}.h5", "lr={lr:.3f}/seed={seed:d}"]
    ),
    st.integers(min_value=-(10**9), max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
    st.floats(min_value=-1e6, max_value=1e6),
)
def test_agrees_with_the_parse_package_on_unpadded_fields(text, a, b, x):
    values = {"epoch": a, "batch": b, "seed": b, "val_loss": x, "lr": x}
    name = Template(text).render(values)
    ours = Template(text).parse(name)
    theirs = parse_pkg.parse(text, name, case_sensitive=True)
    assert theirs is not None
    assert ours == theirs.named


@given(st.integers(min_value=100, max_value=10**6))
def test_the_parse_package_loses_epochs_wider_than_their_padding(epoch):
    """The bug ckptname exists to avoid: '{epoch:02d}' read as at most two digits."""
    name = f"ep{epoch:02d}.keras"
    assert Template("ep{epoch:02d}.keras").parse(name) == {"epoch": epoch}
    theirs = parse_pkg.parse("ep{epoch:02d}.keras", name)
    assert theirs is None or theirs["epoch"] != epoch


@given(st.floats(allow_nan=False), format_specs(types=["f", "e", "g", "%"], fills=False))
@example(1.797693134862316e306, "%")  # 100x overflows to inf: 'inf%' reads back
def test_floats_read_back_to_the_precision_of_the_spec(x, spec):
    t = Template("v={x:" + spec + "}")
    assume(len(format(x, spec)) < 250)  # longer names are refused by design
    assume(abs(x) < 1e300)  # rounding may pass the largest float; render refuses that
    name = t.render(x=x)
    back = t.parse(name)
    assert back is not None
    assert format(back["x"], spec) == format(x, spec)
    if math.isinf(x):
        assert back["x"] == x
