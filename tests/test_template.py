"""Template: syntax, every spec type, exact error texts, both styles, folders."""

from __future__ import annotations

import math
import pickle
import re
import sys

import numpy as np
import pytest

from ckptname import MissingFieldError, RenderError, Template, TemplateError
from ckptname._template import FieldView, _keep_one_group, same_value

NEEDS_Z = pytest.mark.skipif(sys.version_info < (3, 11), reason="'z' specs need Python 3.11")

# template, values, name, what parse gives back
ROUND_TRIPS = [
    # Keras-style names
    (
        "ep{epoch:02d}-{val_loss:.2f}.keras",
        {"epoch": 7, "val_loss": 0.5234},
        "ep07-0.52.keras",
        {"epoch": 7, "val_loss": 0.52},
    ),
    (
        "ep{epoch:02d}-{val_loss:.2f}.keras",
        {"epoch": 100, "val_loss": -1.5},
        "ep100--1.50.keras",
        {"epoch": 100, "val_loss": -1.5},
    ),
    (
        "model_batch_at_{batch:05d}.weights.h5",
        {"batch": 123456},
        "model_batch_at_123456.weights.h5",
        {"batch": 123456},
    ),
    (
        "model_batch_at_{batch:05d}.weights.h5",
        {"batch": 0},
        "model_batch_at_00000.weights.h5",
        {"batch": 0},
    ),
    (
        "weights.{epoch:02d}-{val_loss:.4f}.h5",
        {"epoch": 3, "val_loss": 0.123456},
        "weights.03-0.1235.h5",
        {"epoch": 3, "val_loss": 0.1235},
    ),
    ("{epoch}", {"epoch": 12}, "12", {"epoch": 12}),
    ("{epoch}-{val_loss}", {"epoch": 3, "val_loss": 0.1}, "3-0.1", {"epoch": 3, "val_loss": 0.1}),
    ("no-fields.keras", {}, "no-fields.keras", {}),
    # integers
    ("e{x:d}", {"x": -42}, "e-42", {"x": -42}),
    ("e{x:+d}", {"x": 42}, "e+42", {"x": 42}),
    ("e{x: d}", {"x": 42}, "e 42", {"x": 42}),
    ("e{x:03d}", {"x": -5}, "e-05", {"x": -5}),
    ("e{x:,d}", {"x": 1234567}, "e1,234,567", {"x": 1234567}),
    ("e{x:_d}", {"x": -1234567}, "e-1_234_567", {"x": -1234567}),
    ("e{x:x}", {"x": 255}, "eff", {"x": 255}),
    ("e{x:#X}", {"x": 255}, "e0XFF", {"x": 255}),
    ("e{x:#06x}", {"x": 255}, "e0x00ff", {"x": 255}),
    ("e{x:_x}", {"x": 0x12345}, "e1_2345", {"x": 0x12345}),
    ("e{x:o}", {"x": 8}, "e10", {"x": 8}),
    ("e{x:#b}", {"x": 5}, "e0b101", {"x": 5}),
    ("e{x:>6d}", {"x": 42}, "e    42", {"x": 42}),
    ("e{x:*<6d}", {"x": 42}, "e42****", {"x": 42}),
    ("e{x:_^7d}", {"x": -42}, "e__-42__", {"x": -42}),
    ("e{x:=+6d}", {"x": 42}, "e+   42", {"x": 42}),
    ("e{x:0>4d}", {"x": 7}, "e0007", {"x": 7}),
    ("e{x:d}", {"x": True}, "e1", {"x": 1}),
    ("e{x:d}", {"x": 10**30}, "e" + "1" + "0" * 30, {"x": 10**30}),
    # floats
    ("l{x:.3f}", {"x": 1 / 3}, "l0.333", {"x": 0.333}),
    ("l{x:.0f}", {"x": 2.6}, "l3", {"x": 3.0}),
    ("l{x:#.0f}", {"x": 2.6}, "l3.", {"x": 3.0}),
    ("l{x:.2F}", {"x": math.inf}, "lINF", {"x": math.inf}),
    ("l{x:.2f}", {"x": -math.inf}, "l-inf", {"x": -math.inf}),
    ("l{x:+.1f}", {"x": 0.25}, "l+0.2", {"x": 0.2}),
    pytest.param("l{x:z.1f}", {"x": -0.01}, "l0.0", {"x": 0.0}, marks=NEEDS_Z),
    ("l{x:08.3f}", {"x": -3.14159}, "l-003.142", {"x": -3.142}),
    ("l{x:,.1f}", {"x": 1234567.89}, "l1,234,567.9", {"x": 1234567.9}),
    ("l{x:.1e}", {"x": 3e-4}, "l3.0e-04", {"x": 3e-4}),
    ("l{x:.0e}", {"x": 1e-3}, "l1e-03", {"x": 1e-3}),
    ("l{x:.2E}", {"x": 12345.0}, "l1.23E+04", {"x": 12300.0}),
    ("l{x:e}", {"x": 1e100}, "l1.000000e+100", {"x": 1e100}),
    ("l{x:g}", {"x": 1e-7}, "l1e-07", {"x": 1e-7}),
    ("l{x:.3g}", {"x": 123456.0}, "l1.23e+05", {"x": 123000.0}),
    ("l{x:G}", {"x": 0.5}, "l0.5", {"x": 0.5}),
    ("l{x:.1%}", {"x": 0.1234}, "l12.3%", {"x": 0.123}),
    ("l{x:%}", {"x": 1}, "l100.000000%", {"x": 1.0}),
    ("l{x:.2f}", {"x": 3}, "l3.00", {"x": 3.0}),
    ("l{x}", {"x": 1e-5}, "l1e-05", {"x": 1e-5}),
    ("l{x}", {"x": 0.30000000000000004}, "l0.30000000000000004", {"x": 0.30000000000000004}),
    ("l{x:>7}", {"x": 0.5}, "l    0.5", {"x": 0.5}),
    ("l{x:.3}", {"x": 2 / 3}, "l0.667", {"x": 0.667}),
    # strings and fields without a type
    ("{run:s}.keras", {"run": "a.b c"}, "a.b c.keras", {"run": "a.b c"}),
    ("{run:.3s}-{e}", {"run": "abc", "e": 1}, "abc-1", {"run": "abc", "e": 1}),
    ("{run:_<6}|", {"run": "ab"}, "ab____|", {"run": "ab"}),
    ("{run:>6s}|", {"run": "ab"}, "    ab|", {"run": "ab"}),
    (
        "{run}-{epoch:02d}",
        {"run": "my-run-v2", "epoch": 5},
        "my-run-v2-05",
        {"run": "my-run-v2", "epoch": 5},
    ),
    ("{flag}-{e}", {"flag": True, "e": 1}, "True-1", {"flag": True, "e": 1}),
    ("{name:s}", {"name": "12"}, "12", {"name": "12"}),
    ("{x:5}|{y:5}", {"x": 3, "y": "ab"}, "    3|ab   ", {"x": 3, "y": "ab"}),
    # keys that are not identifiers
    ("{val/loss:.3f}", {"val/loss": 0.25}, "0.250", {"val/loss": 0.25}),
    ("{dense_1.accuracy:.2f}", {"dense_1.accuracy": 0.5}, "0.50", {"dense_1.accuracy": 0.5}),
    # literal braces and unicode
    ("{{ep}}{epoch}", {"epoch": 3}, "{ep}3", {"epoch": 3}),
    ("modèle-{epoch:02d}", {"epoch": 3}, "modèle-03", {"epoch": 3}),
    # repeated fields must agree
    ("{epoch}/ep{epoch:03d}.keras", {"epoch": 4}, "4/ep004.keras", {"epoch": 4}),
    # folders
    (
        "runs/lr={lr:.0e}/seed={seed}/ep{epoch:03d}.keras",
        {"lr": 1e-3, "seed": 7, "epoch": 3},
        "runs/lr=1e-03/seed=7/ep003.keras",
        {"lr": 1e-3, "seed": 7, "epoch": 3},
    ),
    ("/abs/ckpt/{epoch:02d}.keras", {"epoch": 1}, "/abs/ckpt/01.keras", {"epoch": 1}),
]

ANGLE_ROUND_TRIPS = [
    (
        "<epoch:02d>-<val_loss:.2f>.keras",
        {"epoch": 7, "val_loss": 0.5234},
        "07-0.52.keras",
        {"epoch": 7, "val_loss": 0.52},
    ),
    (
        "<epoch:03d>-<lr:.1e>.keras",
        {"epoch": 12, "lr": 3e-4},
        "012-3.0e-04.keras",
        {"epoch": 12, "lr": 3e-4},
    ),
    ("<x:>5>|", {"x": 3}, "    3|", {"x": 3}),
    ("<x:>>5d>|", {"x": 3}, ">>>>3|", {"x": 3}),
    ("<x:<5d>|", {"x": 3}, "3    |", {"x": 3}),
    ("a<<<x>>>b", {"x": 3}, "a<3>b", {"x": 3}),
    (
        "lr=<lr:.0e>/ep<epoch:03d>.keras",
        {"lr": 1e-3, "epoch": 3},
        "lr=1e-03/ep003.keras",
        {"lr": 1e-3, "epoch": 3},
    ),
]


@pytest.mark.parametrize(("text", "values", "name", "parsed"), ROUND_TRIPS)
def test_brace_round_trip(text, values, name, parsed):
    t = Template(text)
    assert t.style == "brace"
    assert t.render(values) == name
    assert text.format(**values) == name if all(k.isidentifier() for k in values) else True
    assert t.parse(name) == parsed
    assert all(type(t.parse(name)[k]) is type(v) for k, v in parsed.items())


@pytest.mark.parametrize(("text", "values", "name", "parsed"), ANGLE_ROUND_TRIPS)
def test_angle_round_trip(text, values, name, parsed):
    t = Template(text)
    assert t.style == "angle"
    assert t.render(values) == name
    assert t.parse(name) == parsed


def test_nan_reads_back_as_nan():
    t = Template("ep{epoch:02d}-{val_loss:.2f}.keras")
    name = t.render(epoch=3, val_loss=math.nan)
    assert name == "ep03-nan.keras"
    assert math.isnan(t.parse(name)["val_loss"])


# template, name that rendering cannot produce
PARSE_REJECTS = [
    ("ep{epoch:02d}.keras", "ep7.keras"),  # width is a minimum: 7 renders as 07
    ("ep{epoch:02d}.keras", "ep007.keras"),  # 7 renders as 07, 100 as 100
    ("ep{epoch:02d}.keras", "ep-0.keras"),
    ("ep{epoch:02d}.keras", "EP07.keras"),  # case-sensitive
    ("ep{epoch:02d}.keras", "ep07.KERAS"),
    ("ep{epoch:02d}.keras", "ep07.keras.backup"),  # anchored at the end
    ("ep{epoch:02d}.keras", "old-ep07.keras"),  # anchored at the start
    ("ep{epoch:02d}.keras", "ep٠٧.keras"),  # Arabic-Indic digits are not digits here
    ("step-{step}", "step-100.backup"),
    ("step-{step}", "step-100/x"),
    ("{x:d}", "1,000"),
    ("{x:d}", "+5"),
    ("{x:d}", "05"),
    ("{x:d}", "-0"),
    ("{x:,d}", "1000"),
    ("{x:,d}", "1,00"),
    ("{x:x}", "FF"),
    ("{x:.2f}", "0.5"),
    ("{x:.2f}", "0.500"),
    ("{x:.2f}", "00.50"),
    ("{x:.2f}", "NaN"),
    ("{x:.2f}", "99999999999999999999.00"),  # no float renders like this
    pytest.param("{x:z.1f}", "-0.0", marks=NEEDS_Z),
    ("{x:.1e}", "3.0e-4"),
    ("{x:.1e}", "30.0e-05"),
    ("{x:>4d}", "  5"),
    ("{x:>4d}", "   05"),
    ("{x}", "True.x"),
    ("<epoch:02d>.keras", "7.keras"),
]


@pytest.mark.parametrize(("text", "name"), PARSE_REJECTS)
def test_parse_rejects_what_render_cannot_produce(text, name):
    assert Template(text).parse(name) is None


def test_epoch_wider_than_padding_parses_back():
    t = Template("{epoch:02d}-{batch:05d}")
    assert t.parse("100-100000") == {"epoch": 100, "batch": 100000}


def test_zero_padded_float_does_not_take_the_next_fields_sign():
    t = Template("{a:01f}-{epoch:d}")
    assert t.parse(t.render(a=0.0, epoch=-1)) == {"a": 0.0, "epoch": -1}


def test_grouped_zero_padding_reads_back():
    t = Template("n={x:06,d}")
    assert t.render(x=5) == "n=00,005"
    assert t.parse("n=00,005") == {"x": 5}


@pytest.mark.parametrize("name", ["", ".", "..", "./e1", "../e1"])
def test_parts_that_name_no_file_do_not_parse(name):
    assert Template("{run:s}/e{epoch}").parse(name) is None
    assert Template("{run:s}").parse(name.split("/")[0]) is None


def test_typeless_field_with_a_spec_reads_no_string_with_a_dot():
    # '0.' is no float's rendering, and such a field's strings hold no dot
    assert Template("{a:<}").parse("0.") is None


def test_name_with_a_part_over_255_bytes_does_not_parse():
    t = Template("run-{a:s}/ep{epoch}.keras")
    assert t.parse("run-" + "x" * 252 + "/ep1.keras") is None  # 256 bytes
    assert t.parse("run-" + "x" * 251 + "/ep1.keras") is not None  # 255 bytes
    assert t.parse("run-" + "x" * 200 + "/ep1.keras") == {"a": "x" * 200, "epoch": 1}


def test_repeated_fields_that_disagree_do_not_parse():
    assert Template("{epoch}/ep{epoch:03d}.keras").parse("4/ep005.keras") is None


# template, message (exact, including the template line and caret)
COMPILE_ERRORS = [
    (
        "{epoch:02q}-{val_loss:.2f}.keras",
        "unknown format type 'q' in field 'epoch'\n"
        "  {epoch:02q}-{val_loss:.2f}.keras\n"
        "           ^",
    ),
    (
        "<epoch:02q>.keras",
        "unknown format type 'q' in field 'epoch'\n  <epoch:02q>.keras\n           ^",
    ),
    (
        "{a!r}",
        "conversion '!r' in field 'a' is not supported; the format spec alone decides how a "
        "value is written\n  {a!r}\n    ^",
    ),
    (
        "<a!s>",
        "conversion '!s' in field 'a' is not supported; the format spec alone decides how a "
        "value is written\n  <a!s>\n    ^",
    ),
    (
        "{a:{b}}",
        "nested field in the format spec of field 'a' is not supported; write the spec out, "
        "e.g. {a:.2f}\n  {a:{b}}\n     ^",
    ),
    ("ab}c", "single '}' is not allowed; write '}}' for a literal brace\n  ab}c\n    ^"),
    (
        "ep{epoch",
        "field is never closed; add '}' or write '{{' for a literal brace\n  ep{epoch\n    ^",
    ),
    (
        "ep<epoch",
        "field is never closed; add '>' or write '<<' for a literal '<'\n  ep<epoch\n    ^",
    ),
    ("ep>", "single '>' is not allowed; write '>>' for a literal '>'\n  ep>\n    ^"),
    ("{}", "empty field name; name the value to fill in, e.g. {epoch}\n  {}\n  ^"),
    (
        "x{0}",
        "positional field '0' is not supported; name the value to fill in, e.g. {epoch}"
        "\n  x{0}\n   ^",
    ),
    (
        "{a[0]}",
        "field name 'a[0]' contains '['; indexing is not supported, name the key "
        "directly\n  {a[0]}\n    ^",
    ),
    (
        "<a>-{b}",
        "'<' in a {…} template; a template uses one field style, and '<', '>' are "
        "not valid in portable file names\n  <a>-{b}\n  ^",
    ),
    (
        "<a>-{{b",
        "'{' in a <…> template; a template uses one field style, and '<', '>' are "
        "not valid in portable file names\n  <a>-{{b\n      ^",
    ),
    (
        "{a:n}",
        "format type 'n' in field 'a' is not supported: it depends on the locale, so "
        "names would change from machine to machine; use 'd' or 'g'\n  {a:n}\n     ^",
    ),
    (
        "{a:c}",
        "format type 'c' in field 'a' is not supported: it writes a character, not a "
        "number that reads back; use 'd'\n  {a:c}\n     ^",
    ),
    ("{a:02.q}", "invalid format spec '02.q' in field 'a'\n  {a:02.q}\n       ^"),
    (
        "{a:,s}",
        "invalid format spec ',s' in field 'a': Cannot specify ',' with 's'.\n  {a:,s}\n     ^",
    ),
    (
        "{a:.2d}",
        "invalid format spec '.2d' in field 'a': Precision not allowed in integer "
        "format specifier\n  {a:.2d}\n     ^",
    ),
    (
        "{a:/>5}",
        "fill character '/' in field 'a' cannot be part of a file name; choose "
        "another fill\n  {a:/>5}\n     ^",
    ),
    (
        "{epoch:<02d}",
        "fill '0' in field 'epoch' can also be part of the number, so two values would get "
        "the same name; pad with another character, or with zeros on the left: {epoch:02d}"
        "\n  {epoch:<02d}\n         ^",
    ),
    (
        "{x:->3d}",
        "fill '-' in field 'x' can also be part of the number, so two values would get the "
        "same name; pad with another character, or with zeros on the left: {x:03d}"
        "\n  {x:->3d}\n     ^",
    ),
    (
        "{x:1>5.1f}",
        "fill '1' in field 'x' can also be part of the number, so two values would get the "
        "same name; pad with another character, or with zeros on the left: {x:05.1f}"
        "\n  {x:1>5.1f}\n     ^",
    ),
]


SIZE_LIMIT = "a path part holds at most 255 bytes"
COMPILE_ERRORS += [
    (
        "e{x:1000000000d}.keras",
        f"width 1000000000 in field 'x' cannot fit in a file name: {SIZE_LIMIT}, so use a "
        "width of at most 255\n  e{x:1000000000d}.keras\n      ^",
    ),
    (
        "e{x:04294967296d}.keras",
        f"width 4294967296 in field 'x' cannot fit in a file name: {SIZE_LIMIT}, so use a "
        "width of at most 255\n  e{x:04294967296d}.keras\n       ^",
    ),
    (
        "e{x:" + "9" * 5000 + "d}",
        f"width 999999999999… (5000 digits) in field 'x' cannot fit in a file name: "
        f"{SIZE_LIMIT}, so use a width of at most 255\n  e{{x:{'9' * 5000}d}}\n      ^",
    ),
    (
        "<x:>256>",
        f"width 256 in field 'x' cannot fit in a file name: {SIZE_LIMIT}, so use a width of "
        "at most 255\n  <x:>256>\n      ^",
    ),
    (
        "{loss:.300f}",
        f"precision 300 in field 'loss' cannot fit in a file name: {SIZE_LIMIT}, so use a "
        "precision of at most 255\n  {loss:.300f}\n         ^",
    ),
    (
        "{run:.99999999999s}",
        f"precision 99999999999 in field 'run' cannot fit in a file name: {SIZE_LIMIT}, so use "
        "a precision of at most 255\n  {run:.99999999999s}\n        ^",
    ),
    (
        "{x:_>300,.400e}",
        f"width 300 in field 'x' cannot fit in a file name: {SIZE_LIMIT}, so use a width of "
        "at most 255\n  {x:_>300,.400e}\n       ^",
    ),
]


@pytest.mark.parametrize(
    "text", ["{x:255d}", "{x:0255d}", "{x:.255s}", "{x:0" + "0" * 5000 + "5d}"]
)
def test_widths_and_precisions_a_path_part_can_hold(text):
    Template(text)


@pytest.mark.parametrize(("text", "message"), COMPILE_ERRORS)
def test_compile_error_text(text, message):
    with pytest.raises(TemplateError) as info:
        Template(text)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_template_error_carries_column():
    with pytest.raises(TemplateError) as info:
        Template("{epoch:02q}")
    assert (info.value.template, info.value.column) == ("{epoch:02q}", 9)
    assert info.value.reason == "unknown format type 'q' in field 'epoch'"


def test_long_literal_part_is_refused():
    with pytest.raises(TemplateError, match="path part of 300 bytes; most file systems allow"):
        Template("x" * 300 + "{epoch}")


IRREVERSIBLE = [
    (
        "{epoch}{batch}",
        "template '{epoch}{batch}' cannot be read back: fields 'epoch' and 'batch' touch, so one "
        "can run into the other; put a separator between 'epoch' and 'batch', e.g. "
        "{epoch}-{batch}",
    ),
    (
        "{epoch:02d}{batch:05d}",
        "template '{epoch:02d}{batch:05d}' cannot be read back: fields 'epoch' and 'batch' "
        "touch, so one can run into the other (widths are minimums: a padded field still takes "
        "longer values); put a separator between 'epoch' and 'batch', e.g. "
        "{epoch:02d}-{batch:05d}",
    ),
    (
        "<a:d><b>",
        "template '<a:d><b>' cannot be read back: fields 'a' and 'b' touch, so one can run into "
        "the other; put a separator between 'a' and 'b', e.g. <a:d>-<b>",
    ),
]


@pytest.mark.parametrize(("text", "message"), IRREVERSIBLE)
def test_irreversible_template_renders_but_parse_says_why(text, message):
    t = Template(text)
    assert not t.reversible
    assert t.render({"epoch": 1, "batch": 2, "a": 1, "b": 2})
    with pytest.raises(TemplateError) as info:
        t.parse("12")
    assert str(info.value) == message


@pytest.mark.parametrize("text", ["{epoch}-{batch}", "{a}/{b}", "{a:.2f}{b}", "{a:d}.{b:d}"])
def test_separated_fields_are_reversible(text):
    # '.2f' always ends two digits after its point, so nothing can run past it;
    # but it still touches {b}: only a literal separates.
    assert Template(text).reversible is ("}{" not in text)


# template, values, message (exact)
RENDER_ERRORS = [
    (
        "{a}-{b}",
        {"a": "x-y", "b": "z"},
        "name 'x-y-z' would not read back to the values that made it ('a' could be read as 'x' "
        "instead of 'x-y'); keep separators of the template out of string values, or put a "
        "literal that values cannot contain between the fields",
    ),
    (
        "{a}-{b}",
        {"a": "x", "b": "y-z"},
        "name 'x-y-z' would not read back to the values that made it ('a' could be read as "
        "'x-y' instead of 'x'); keep separators of the template out of string values, or put a "
        "literal that values cannot contain between the fields",
    ),
    (
        "{run}/{e}",
        {"run": "..", "e": 1},
        "string value '..' for field 'run' contains '.', which a field without a format type "
        "does not read back (so that suffixes such as '.backup' never match); give the field "
        "the 's' type: {run:s}",
    ),
    (
        "{run:s}/{e}",
        {"run": "..", "e": 1},
        "name '../1' has the path part '..', which does not name a file or folder of its own; "
        "change the value that fills it",
    ),
    (
        "{run:s}/{e}",
        {"run": "", "e": 1},
        "name '/1' has the path part '', which does not name a file or folder of its own; "
        "change the value that fills it",
    ),
    (
        "{run}/{e}",
        {"run": "a/b", "e": 1},
        "value 'a/b' for field 'run' contains '/', which would make a path outside the "
        "template's folders; remove it from the value",
    ),
    (
        "{run:s}",
        {"run": "/abs"},
        "value '/abs' for field 'run' contains '/', which would make a path outside the "
        "template's folders; remove it from the value",
    ),
    (
        "{run}",
        {"run": "a\\b"},
        "value 'a\\\\b' for field 'run' contains '\\\\', which would make a path outside the "
        "template's folders; remove it from the value",
    ),
    (
        "{run}",
        {"run": "a\x00b"},
        "value 'a\\x00b' for field 'run' contains '\\x00', which would make a path outside the "
        "template's folders; remove it from the value",
    ),
    (
        "{seed}",
        {"seed": "12"},
        "string value '12' for field 'seed' would read back as the int 12; pass an int, or give "
        "the field the 's' type: {seed:s}",
    ),
    (
        "<seed>",
        {"seed": "nan"},
        "string value 'nan' for field 'seed' would read back as the float nan; pass a float, or "
        "give the field the 's' type: <seed:s>",
    ),
    (
        "{e:d}",
        {"e": 1.5},
        "cannot write 1.5 (float) into field 'e' with spec 'd': Unknown format code 'd' for "
        "object of type 'float'",
    ),
    (
        "{e:.2f}",
        {"e": 10**400},
        "cannot write " + str(10**400) + " (int) into field 'e' with spec '.2f': int too large "
        "to convert to float",
    ),
    ("{e:.2f}", {"e": None}, "value None for field 'e'; pass a number or a string"),
    (
        "{e:.2f}",
        {"e": np.zeros(3)},
        "value for field 'e' is an array of shape (3,); pass a single number",
    ),
    (
        "{x:_<6}|",
        {"x": "ab_"},
        "value 'ab_' for field 'x' is written 'ab____', which reads back as 'ab'; keep the "
        "fill character out of the values",
    ),
    (
        "{x:.0e}",
        {"x": 1.5e308},
        "value 1.5e+308 for field 'x' is written '2e+308', which no value reads back from "
        "(rounding took it past the largest float); use a spec with more precision",
    ),
    (
        "{x:s}.keras",
        {"x": "y" * 300},
        "path part 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy'... of the name is 306 bytes; most "
        "file systems allow 255; shorten the values that fill it",
    ),
]


@pytest.mark.parametrize(("text", "values", "message"), RENDER_ERRORS)
def test_render_error_text(text, values, message):
    with pytest.raises(RenderError) as info:
        Template(text).render(values)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


MISSING = [
    (
        "{epoch:02d}-{val_loss:.2f}.keras",
        {"epoch": 1, "loss": 0.5},
        "no value for field 'val_loss' of template '{epoch:02d}-{val_loss:.2f}.keras' "
        "(given: epoch, loss)",
        ("val_loss",),
    ),
    (
        "{a}-{b}-{a}",
        {},
        "no value for fields 'a', 'b' of template '{a}-{b}-{a}' (given: nothing)",
        ("a", "b"),
    ),
]


@pytest.mark.parametrize(("text", "values", "message", "fields"), MISSING)
def test_missing_value_is_a_lookup_error_not_a_keyerror(text, values, message, fields):
    with pytest.raises(MissingFieldError) as info:
        Template(text).render(values)
    assert str(info.value) == message
    assert info.value.fields == fields
    assert isinstance(info.value, LookupError)
    assert not isinstance(info.value, KeyError)


def test_keyword_values_win_over_the_mapping_and_extra_keys_are_ignored():
    t = Template("{epoch:02d}")
    assert t.render({"epoch": 1, "loss": 0.3}, epoch=2) == "02"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.int64(7), "07-"),
        (np.int32(7), "07-"),
        (np.array(7), "07-"),
        (np.bool_(True), "01-"),
    ],
)
def test_numpy_integers(value, expected):
    assert Template("{e:02d}-").render(e=value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.float32(0.1), "0.100"),
        (np.float64(0.25), "0.250"),
        (np.array(0.25), "0.250"),
        (np.array(np.float16(0.5)), "0.500"),
    ],
)
def test_numpy_floats(value, expected):
    assert Template("{loss:.3f}").render(loss=value) == expected


def test_numpy_float32_without_spec_is_written_as_keras_writes_it():
    # Keras converts logs with float() before formatting its filepath.
    assert Template("{loss}").render(loss=np.float32(0.1)) == str(float(np.float32(0.1)))


def test_attributes():
    t = Template("runs/{run}/ep{epoch:02d}-{val/loss:.2f}-{epoch}.keras")
    assert t.text == "runs/{run}/ep{epoch:02d}-{val/loss:.2f}-{epoch}.keras"
    assert t.fields == ("run", "epoch", "val/loss")
    assert t.reversible
    assert isinstance(t.regex, re.Pattern)
    assert t.regex.fullmatch("runs/a/ep01-0.50-1.keras")
    assert repr(t) == "Template('runs/{run}/ep{epoch:02d}-{val/loss:.2f}-{epoch}.keras')"


def test_segments_split_at_slashes_outside_fields():
    t = Template("lr={lr:.0e}/{val/loss:.2f}/ep{epoch:03d}.keras")
    assert [s.text for s in t.segments] == ["lr={lr:.0e}", "{val/loss:.2f}", "ep{epoch:03d}.keras"]
    assert [s.text for s in Template("<a>/b/<c>").segments] == ["<a>", "b", "<c>"]
    assert all(s.style == "angle" for s in Template("<a>/b/<c>").segments)


def test_templates_are_values():
    a, b = Template("{epoch}.keras"), Template("{epoch}.keras")
    assert a == b and hash(a) == hash(b)
    assert a != Template("{epoch}.h5")
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a.text = "x"  # type: ignore[misc]


def test_template_text_must_be_a_string():
    with pytest.raises(TypeError, match="template must be a str, got int"):
        Template(3)  # type: ignore[arg-type]


def test_render_needs_a_mapping():
    with pytest.raises(TypeError, match="values must be a mapping of field names, got list"):
        Template("{a}").render([1])  # type: ignore[arg-type]


# ------------------------------------------------------------------ read-only views

VIEWS = [
    (
        "ep{epoch:02d}-{val_loss:.2f}.keras",
        [("epoch", "02d", "d", "int"), ("val_loss", ".2f", "f", "float")],
        ("ep", "-", ".keras"),
    ),
    ("{run:s}/{step}", [("run", "s", "s", "str"), ("step", "", "", "shape")], ("", "/", "")),
    ("<x:>5x>_<y:.1%>", [("x", ">5x", "x", "int"), ("y", ".1%", "%", "float")], ("", "_", "")),
    ("a{{{x:03}}}.h5", [("x", "03", "", "shape")], ("a{", "}.h5")),
    ("e{epoch}-e{epoch}", [("epoch", "", "", "shape")] * 2, ("e", "-e", "")),
    ("plain.keras", [], ("plain.keras",)),
]


@pytest.mark.parametrize(("text", "views", "literals"), VIEWS)
def test_field_views_and_literals_show_the_template_as_written(text, views, literals):
    t = Template(text)
    assert t.field_views == tuple(FieldView(*v) for v in views)
    assert t.literals == literals
    assert len(t.literals) == len(t.field_views) + 1


def test_why_not_reversible_is_the_reason_parse_gives():
    assert Template("ep{epoch}-{batch}").why_not_reversible is None
    t = Template("{epoch:02d}{batch}")
    assert t.why_not_reversible == (
        "fields 'epoch' and 'batch' touch, so one can run into the other (widths are "
        "minimums: a padded field still takes longer values); put a separator between "
        "'epoch' and 'batch', e.g. {epoch:02d}-{batch}"
    )
    with pytest.raises(TemplateError) as info:
        t.parse("0112")
    assert info.value.reason == f"template '{t.text}' cannot be read back: {t.why_not_reversible}"


def test_same_value_holds_nan_equal_to_nan():
    assert same_value(1, 1.0) and same_value("a", "a") and same_value(math.nan, math.nan)
    assert not same_value(math.nan, 1.0) and not same_value("nan", math.nan)


# ------------------------------------------------------------------ listing search

KEEP_PASS = [
    (r"ep((?:[0-9]{2}))-(x)", 1, r"ep((?:[0-9]{2}))-(?:x)"),
    (r"ep((?:[0-9]{2}))-(x)", 2, r"ep(?:(?:[0-9]{2}))-(x)"),
    (r"a([^/\\\x00]*)b(\d+)", 2, r"a(?:[^/\\\x00]*)b(\d+)"),
    (r"\(lit\)(\d)", 1, r"\(lit\)(\d)"),
    (r"[(]x(\d)", 1, r"[(]x(\d)"),
    (r"(?<=a)(\d)(?=b)", 1, r"(?<=a)(\d)(?=b)"),
]


@pytest.mark.parametrize(("pattern", "keep", "expected"), KEEP_PASS)
def test_keep_one_group(pattern: str, keep: int, expected: str) -> None:
    assert _keep_one_group(pattern, keep) == expected


@pytest.mark.parametrize(
    "pattern",
    [
        r"a.b(\d)",  # '.' matches NUL
        r"a[^/]b(\d)",  # a negated class without NUL matches it
        r"a\x00(\d)",
        r"a[\x00-\x1f](\d)",
        r"a\D(\d)",
        r"(?P<n>\d)",
        r"(\d)\1",
    ],
)
def test_keep_one_group_refuses_what_may_match_nul(pattern: str) -> None:
    assert _keep_one_group(pattern, 1) is None


COUNTERS = ("batch", "epoch", "batch_in_epoch")
LISTING = [
    "ep01-b00010.keras",
    "ep100-b123456.keras",
    "ep02-b00020.keras.backup",
    "ep03-b00030.keras.ckptname.json",
    "xep04-b00040.keras",
    "ep05-b.keras",
]

COUNTER_SEARCH = [
    ("ep{epoch:02d}-b{batch:05d}.keras", ["00010", "123456"]),  # batch before epoch
    ("ep{epoch}-b{batch_in_epoch:05d}.keras", ["01", "100"]),  # epoch before batch_in_epoch
    ("ep{epoch:02d}-b{loss:s}.keras", ["01", "100", "05"]),
    ("ep{epoch:02d}-b{batch}.keras", ["00010", "123456", ""]),  # no type: parse decides
]


@pytest.mark.parametrize(("text", "found"), COUNTER_SEARCH)
def test_counter_search_finds_the_first_counter_of_every_matching_name(text, found):
    t = Template(text)
    pattern = t.counter_search(COUNTERS)
    assert pattern is not None
    assert pattern.findall("\0".join(["", *LISTING, ""])) == found
    assert len(found) == sum(t.parse(name) is not None for name in LISTING)


COUNTER_SEARCH_FAIL = [
    "ep{epoch:02x}.keras",  # read in base 16
    "ep{epoch:>5d}.keras",  # padding to undo
    "ep{epoch:05}.keras",  # no type but a spec: read back by rendering
    "ep{epoch:,d}.keras",  # commas to remove
    "ep{epoch}-{epoch}.keras",  # parse compares the two copies
    "model-{loss:.3f}.keras",  # no counter
]


@pytest.mark.parametrize("text", COUNTER_SEARCH_FAIL)
def test_counter_search_fail(text):
    assert Template(text).counter_search(COUNTERS) is None


def test_counter_search_agrees_with_parse_on_the_counters_it_finds():
    t = Template("lr{lr:.0e}-ep{epoch}.h5")
    names = ["lr1e-03-ep7.h5", "lr1e-03-ep07.h5", "lr1e-03-ep-7.h5", "lr1e-03-epx.h5", "ep7.h5"]
    pattern = t.counter_search(COUNTERS)
    assert pattern is not None
    found = pattern.findall("\0".join(["", *names, ""]))
    assert found == ["7", "07", "-7", "x"]
    assert [t.parse(n) for n in names] == [
        {"lr": 0.001, "epoch": value} for value in (7, "07", -7, "x")
    ] + [None]
