"""Checkpoint filepath templates: compile once, render names, read names back.

A template is compiled into an immutable :class:`Template` holding its fields,
an anchored regular expression and one converter per field. ``render`` fills it
exactly as ``str.format`` would; ``parse`` is its inverse.

Examples, as template -> name -> ``parse(name)``::

    ep{epoch:02d}-{val_loss:.2f}.keras  ep07-0.52.keras      {'epoch': 7, 'val_loss': 0.52}
    ep{epoch:02d}-{val_loss:.2f}.keras  ep100--1.50.keras    {'epoch': 100, 'val_loss': -1.5}
    at_{batch:05d}.weights.h5           at_123456.weights.h5 {'batch': 123456}
    <epoch:03d>-<lr:.1e>.keras          012-3.0e-04.keras    {'epoch': 12, 'lr': 0.0003}
    lr={lr:.0e}/ep{epoch}.h5            lr=1e-03/ep3.h5      {'lr': 0.001, 'epoch': 3}
"""

from __future__ import annotations

import contextlib
import re
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache, partial
from typing import Any, AnyStr, NamedTuple

from ._errors import MissingFieldError, RenderError, TemplateError

__all__ = ["FieldView", "Template"]

# Characters a rendered value may contain: anything but a path separator,
# a Windows separator or NUL (those are refused at render time).
_FREE = r"[^/\\\x00]"
# A string in a field written without a format type: no dot either, so that
# `step-{step}` never reads `step-100.backup` (the dot starts a suffix).
_WORD = r"[^./\\\x00]"
_FORBIDDEN_IN_VALUE = ("/", "\\", "\x00")
_MAX_PART_BYTES = 255

_SPEC_GRAMMAR = re.compile(
    r"(?:(?P<fill>.)?(?P<align>[<>=^]))?"
    r"(?P<sign>[-+ ])?(?P<z>z)?(?P<alt>\#)?(?P<zero>0)?(?P<width>[0-9]+)?"
    r"(?P<grouping>[,_])?(?:\.(?P<precision>[0-9]+))?(?P<type>[a-zA-Z%])?",
    re.S,
)
_INT_TYPES = "dxXob"
_FLOAT_TYPES = "fFeEgG%"
_TYPES = _INT_TYPES + _FLOAT_TYPES + "s"
_REFUSED_TYPES = {
    "n": "it depends on the locale, so names would change from machine to machine; use 'd' or 'g'",
    "c": "it writes a character, not a number that reads back; use 'd'",
}
_DIGITS = {
    "d": ("[0-9]", "[1-9]"),
    "x": ("[0-9a-f]", "[1-9a-f]"),
    "X": ("[0-9A-F]", "[1-9A-F]"),
    "o": ("[0-7]", "[1-7]"),
    "b": ("[01]", "1"),
}
_DIGIT_CHARS = {
    "d": "0123456789",
    "x": "0123456789abcdef",
    "X": "0123456789ABCDEF",
    "o": "01234567",
    "b": "01",
}
_BASES = {"d": 10, "x": 16, "X": 16, "o": 8, "b": 2}
_PREFIX = {"x": "0x", "X": "0X", "o": "0o", "b": "0b"}

# Shapes used to infer the type of a field written without a format type.
_CANONICAL_INT = re.compile(r"0|-?[1-9][0-9]*")
_FLOAT_SHAPE = re.compile(r"-?(?:[0-9]+\.[0-9]+(?:e[-+][0-9]+)?|[0-9]e[-+][0-9]+|inf|nan)")
_SIGN_PREFIX = re.compile(r"[-+ ]?(?:0[xXob])?")
# The pattern of a non-negative number's sign, by the spec's sign option; a
# negative number always starts with '-'.
_NONNEG_SIGN = {"-": "", "+": r"\+", " ": " "}


class _Reject(ValueError):
    """Raised by a converter for text that rendering cannot produce."""


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Token:
    """A literal run (``name is None``) or a field, with its span in the template text."""

    literal: str
    name: str | None
    spec: str
    start: int
    end: int
    spec_start: int


def _tokenize(text: str, style: str | None) -> tuple[str, list[_Token]]:
    """Split template text into tokens and decide its style (``'brace'`` or ``'angle'``)."""
    if style == "angle":
        return "angle", _tokenize_angle(text)
    brace_error: TemplateError | None = None
    tokens: list[_Token] = []
    try:
        tokens = _tokenize_brace(text)
    except TemplateError as exc:
        brace_error = exc
    if style == "brace" or (brace_error is None and any(t.name is not None for t in tokens)):
        if brace_error is not None:
            raise brace_error
        _refuse_other_style(text, tokens, "<>", "{…}")
        return "brace", tokens
    if "<" in text or ">" in text:
        tokens = _tokenize_angle(text)
        _refuse_other_style(text, tokens, "{}", "<…>")
        return "angle", tokens
    if brace_error is not None:
        raise brace_error
    return "brace", tokens


def _refuse_other_style(text: str, tokens: list[_Token], chars: str, style: str) -> None:
    for tok in tokens:
        if tok.name is not None:
            continue
        for i in range(tok.start, tok.end):
            if text[i] in chars:
                raise TemplateError(
                    f"'{text[i]}' in a {style} template; a template uses one field style, "
                    "and '<', '>' are not valid in portable file names",
                    text,
                    i,
                )


def _tokenize_brace(text: str) -> list[_Token]:
    """Tokenize with the interpreter's own ``str.format`` parser, tracking columns."""
    tokens: list[_Token] = []
    pos = 0
    # Formatter().parse yields lazily, so a syntax error surfaces at the token
    # where it occurs and `pos` says how far the text was good.
    it = iter(string.Formatter().parse(text))
    while True:
        try:
            item = next(it)
        except StopIteration:
            break
        except ValueError as exc:
            raise _brace_syntax_error(text, pos, str(exc)) from None
        literal, name, spec, conversion = item
        if literal:
            size = len(literal) + literal.count("{") + literal.count("}")
            tokens.append(_Token(literal, None, "", pos, pos + size, pos))
            pos += size
        if name is None:
            continue
        start = pos
        end = _field_end(text, start)
        if conversion is not None:
            col = text.index("!", start)
            raise TemplateError(
                f"conversion '!{conversion}' in field '{name}' is not supported; "
                "the format spec alone decides how a value is written",
                text,
                col,
            )
        spec = spec or ""
        spec_start = end - 1 - len(spec)
        if "{" in spec or "}" in spec:
            raise TemplateError(
                f"nested field in the format spec of field '{name}' is not supported; "
                "write the spec out, e.g. {" + name + ":.2f}",
                text,
                spec_start + spec.index("{") if "{" in spec else spec_start,
            )
        tokens.append(_Token("", name, spec, start, end, spec_start))
        pos = end
    return tokens


def _field_end(text: str, start: int) -> int:
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)  # pragma: no cover - the parser has already refused this


def _brace_syntax_error(text: str, pos: int, message: str) -> TemplateError:
    i = pos
    while i < len(text):
        c = text[i]
        if c in "{}" and text.startswith(c * 2, i):
            i += 2
            continue
        if c == "}":
            return TemplateError(
                "single '}' is not allowed; write '}}' for a literal brace", text, i
            )
        if c == "{":
            return TemplateError(
                "field is never closed; add '}' or write '{{' for a literal brace", text, i
            )
        i += 1
    return TemplateError(f"invalid template: {message}", text, pos)  # pragma: no cover


def _tokenize_angle(text: str) -> list[_Token]:
    """Tokenize ``<name:spec>`` fields; ``<<`` and ``>>`` are literal ``<`` and ``>``."""
    tokens: list[_Token] = []
    lit: list[str] = []
    lit_start = 0
    i = 0
    n = len(text)

    def flush(upto: int) -> None:
        if lit:
            tokens.append(_Token("".join(lit), None, "", lit_start, upto, lit_start))
            lit.clear()

    while i < n:
        c = text[i]
        if c == ">" and not text.startswith(">>", i):
            raise TemplateError("single '>' is not allowed; write '>>' for a literal '>'", text, i)
        if c == "<" and not text.startswith("<<", i):
            flush(i)
            tok = _angle_field(text, i)
            tokens.append(tok)
            i = tok.end
            continue
        if not lit:
            lit_start = i
        lit.append(c)
        i += 2 if c in "<>" else 1
    flush(n)
    return tokens


def _angle_field(text: str, start: int) -> _Token:
    """The field that opens with the ``<`` at ``start``."""
    n = len(text)
    j = start + 1
    while j < n and text[j] not in ":>!<":
        j += 1
    if j == n or text[j] == "<":
        raise _unclosed_angle(text, start)
    name = text[start + 1 : j]
    if text[j] == "!":
        raise TemplateError(
            f"conversion '{text[j : j + 2]}' in field '{name}' is not supported; "
            "the format spec alone decides how a value is written",
            text,
            j,
        )
    if text[j] == ">":
        return _Token("", name, "", start, j + 1, j)
    spec_start = j + 1
    spec_end = _angle_spec_end(text, spec_start)
    if spec_end is None:
        raise _unclosed_angle(text, start)
    return _Token("", name, text[spec_start:spec_end], start, spec_end + 1, spec_start)


def _unclosed_angle(text: str, start: int) -> TemplateError:
    return TemplateError(
        "field is never closed; add '>' or write '<<' for a literal '<'", text, start
    )


def _angle_spec_end(text: str, spec_start: int) -> int | None:
    """Index of the ``>`` closing an angle field's spec.

    ``>`` is also the right-align character, so the spec runs to the *last*
    ``>`` (before any ``<`` or ``/``) that leaves a well-formed spec:
    ``<a:>5>`` has spec ``>5``, ``<a:>>`` has spec ``>``.
    """
    candidates = []
    k = spec_start
    # '<' may be the fill or the alignment (the first two characters of a spec).
    while k < len(text) and text[k] != "/" and (text[k] != "<" or k < spec_start + 2):
        if text[k] == ">":
            candidates.append(k)
        k += 1
    if not candidates:
        return None
    for end in reversed(candidates):
        m = _SPEC_GRAMMAR.fullmatch(text, spec_start, end)
        if m is not None:
            return end
    return candidates[0]


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True, slots=True)
class _Spec:
    fill: str
    align: str | None
    sign: str
    z: bool
    alt: bool
    zero: bool
    width: int
    grouping: str
    precision: int | None
    type: str


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    spec: str
    parsed: _Spec
    kinds: frozenset[str]
    greedy: str
    lazy: str
    convert: Callable[[str], Any]
    # True where the converter already proves that the text is the canonical
    # rendering of the value it returns; False where render must check it.
    exact: bool
    typeless_str: bool
    # For the compile-time proof that a name splits into fields one way only:
    # the characters the field's text may hold after its first one (None: any),
    # and whether no text of the field is a proper prefix of another.
    tail: frozenset[str] | None
    prefix_free: bool


def _compile_spec(text: str, name: str, spec: str, spec_start: int) -> _Spec:
    m = _SPEC_GRAMMAR.match(spec)
    assert m is not None  # every group is optional
    typ = m["type"] or ""
    if m.end() != len(spec):
        raise TemplateError(
            f"invalid format spec '{spec}' in field '{name}'", text, spec_start + m.end()
        )
    if typ and typ not in _TYPES:
        col = spec_start + m.start("type")
        if typ in _REFUSED_TYPES:
            raise TemplateError(
                f"format type '{typ}' in field '{name}' is not supported: {_REFUSED_TYPES[typ]}",
                text,
                col,
            )
        raise TemplateError(f"unknown format type '{typ}' in field '{name}'", text, col)
    fill = m["fill"]
    if fill is not None and fill in _FORBIDDEN_IN_VALUE:
        raise TemplateError(
            f"fill character {fill!r} in field '{name}' cannot be part of a file name; "
            "choose another fill",
            text,
            spec_start,
        )
    for what in ("width", "precision"):
        _check_size(text, name, what, m[what], spec_start + m.start(what))
    zero = m["zero"] is not None
    align = m["align"]
    if fill is None:
        fill = "0" if zero else " "
    return _Spec(
        fill=fill,
        align=align,
        sign=m["sign"] or "-",
        z=m["z"] is not None,
        alt=m["alt"] is not None,
        zero=zero,
        width=int(m["width"].lstrip("0") or 0) if m["width"] else 0,
        grouping=m["grouping"] or "",
        precision=None if m["precision"] is None else int(m["precision"].lstrip("0") or 0),
        type=typ,
    )


def _check_size(text: str, name: str, what: str, digits: str | None, column: int) -> None:
    """Refuse a width or precision that no path part could hold, before formatting anything.

    A width asks for that many characters (``format(0, '1000000000d')``
    allocates a gigabyte), and a precision for about as many digits; a path
    part holds at most 255 bytes. The digits are compared as text first, so
    that a 5,000-digit width is never converted to a number.
    """
    if digits is None:
        return
    significant = digits.lstrip("0") or "0"
    if len(significant) <= 3 and int(significant) <= _MAX_PART_BYTES:
        return
    shown = digits if len(digits) <= 20 else f"{digits[:12]}… ({len(digits)} digits)"
    raise TemplateError(
        f"{what} {shown} in field '{name}' cannot fit in a file name: a path part holds at "
        f"most {_MAX_PART_BYTES} bytes, so use a {what} of at most {_MAX_PART_BYTES}",
        text,
        column,
    )


def _refuse_confusable_fill(text: str, name: str, s: _Spec, spec_start: int) -> None:
    """Refuse a fill that numbers can hold, which gives two values one name.

    ``{epoch:<02d}`` writes both 1 and 10 as ``10``; ``{x:->3d}`` writes 5 and -5
    as ``--5``. Zeros on the left (``{epoch:02d}``, ``{x:0>3d}``) stay readable.
    """
    typ = s.type
    if s.width <= 1 or not typ or typ == "s" or s.fill == " ":
        return  # a width of 1 never pads
    number_chars = set("+-" + s.grouping)
    if typ in _INT_TYPES:
        number_chars |= set(_DIGIT_CHARS[typ])
        if s.alt:
            number_chars |= set(_PREFIX.get(typ, ""))
    else:
        number_chars |= set("0123456789.eEinfaINFA%")
    align = s.align or ("=" if s.zero else ">")
    if s.fill not in number_chars or (s.fill == "0" and align in (">", "=")):
        return
    precision = "" if s.precision is None else f".{s.precision}"
    example = "{" + f"{name}:0{s.width}{s.grouping}{precision}{s.type}" + "}"
    raise TemplateError(
        f"fill {s.fill!r} in field '{name}' can also be part of the number, so two values "
        f"would get the same name; pad with another character, or with zeros on the "
        f"left: {example}",
        text,
        spec_start,
    )


def _kinds(text: str, name: str, spec: str, typ: str, spec_start: int) -> frozenset[str]:
    """Which Python value kinds the spec can format, asking the interpreter itself."""
    wanted = {"int": 0, "float": 0.0, "str": ""}
    if typ and typ in _INT_TYPES:
        wanted = {"int": 0}
    elif typ and typ in _FLOAT_TYPES:
        wanted = {"float": 0.0}
    elif typ == "s":
        wanted = {"str": ""}
    kinds = set()
    last_error: Exception | None = None
    for kind, sample in wanted.items():
        try:
            format(sample, spec)
        except ValueError as exc:
            last_error = exc
        else:
            kinds.add(kind)
    if not kinds:
        raise TemplateError(
            f"invalid format spec '{spec}' in field '{name}': {last_error}", text, spec_start
        )
    if typ and typ in _FLOAT_TYPES:
        kinds.add("int")  # ints format with float types; they read back as floats
    return frozenset(kinds)


def _q(lazy: bool) -> str:
    return "?" if lazy else ""


def _alts(parts: list[str], lazy: bool) -> str:
    # Greedy patterns try longer alternatives first, lazy ones shorter first, so
    # that comparing the two readings of a name finds every ambiguity of a split.
    return "(?:" + "|".join(reversed(parts) if lazy else parts) + ")"


def _canonical_digits(typ: str, grouping: str, lazy: bool, nonzero: bool = False) -> str:
    digit, first = _DIGITS[typ]
    q = _q(lazy)
    if grouping:
        size = 3 if typ == "d" else 4
        sep = re.escape(grouping)
        body = f"{first}{digit}{{0,{size - 1}}}{q}(?:{sep}{digit}{{{size}}})*{q}"
    else:
        body = f"{first}{digit}*{q}"
    if nonzero:
        return body
    return _alts([body, "0"], lazy)


def _int_pattern(s: _Spec, lazy: bool) -> tuple[str, bool]:
    """Pattern of an integer field, and whether it is exact (no padding to undo)."""
    typ = s.type or "d"
    prefix = re.escape(_PREFIX.get(typ, "")) if s.alt else ""
    nonneg = _NONNEG_SIGN[s.sign]
    zero_pad = s.width > 0 and s.fill == "0" and (s.align == "=" or (s.align is None and s.zero))
    if s.width == 0 or (zero_pad and not s.grouping):
        alts = []
        digit, first = _DIGITS[typ]
        q = _q(lazy)
        for sign, negative in ((nonneg, False), ("-", True)):
            sign_len = len(sign.replace("\\", ""))
            k = s.width - sign_len - len(prefix.replace("\\", "")) if s.width else 0
            if k <= 1:
                digits = _canonical_digits(typ, s.grouping, lazy, nonzero=negative)
            else:
                longer = f"{first}{digit}{{{k},}}{q}"
                if negative:
                    exactly = "|".join(f"0{{{j}}}{first}{digit}{{{k - 1 - j}}}" for j in range(k))
                    exactly = f"(?:{exactly})"
                else:
                    exactly = f"{digit}{{{k}}}"
                digits = _alts([longer, exactly], lazy)
            alts.append(sign + prefix + digits)
        return _alts(alts, lazy), True
    body = _alts(
        [
            nonneg + prefix + _canonical_digits(typ, s.grouping, lazy),
            "-" + prefix + _canonical_digits(typ, s.grouping, lazy, nonzero=True),
        ],
        lazy,
    )
    unsigned = _canonical_digits(typ, s.grouping, lazy)
    return _padded(body, s, lazy, r"[-+ ]?" + prefix, unsigned), False


def _padded(body: str, s: _Spec, lazy: bool, sign_prefix: str = "", unsigned: str = "") -> str:
    """Wrap a field's pattern in its padding; ``=`` pads between sign and digits."""
    if s.width == 0:
        return body
    pad = f"{re.escape(s.fill)}*{_q(lazy)}"
    align = s.align or ("=" if s.zero and sign_prefix else ">")
    if align == "<":
        return body + pad
    if align == "^":
        return pad + body + pad
    if align == "=":
        if s.grouping and s.fill == "0":
            # format(5, "06,d") == "00,005": zero padding is grouped too
            pad = f"[0{re.escape(s.grouping)}]*{_q(lazy)}"
        return f"(?:{sign_prefix}{pad}{unsigned})"
    return pad + body


def _float_pattern(s: _Spec, lazy: bool) -> str:
    typ = s.type
    q = _q(lazy)
    upper = typ in "FEG"
    specials = ["INF", "NAN"] if upper else ["inf", "nan"]
    nonneg = _NONNEG_SIGN[s.sign]
    if typ in "fF%":
        precision = 6 if s.precision is None else s.precision
        intpart = _canonical_digits("d", s.grouping, lazy)
        frac = f"\\.[0-9]{{{precision}}}" if precision else ("\\." if s.alt else "")
        number = intpart + frac
    elif typ in "eE":
        precision = 6 if s.precision is None else s.precision
        frac = f"\\.[0-9]{{{precision}}}" if precision else ("\\." if s.alt else "")
        e = "E" if upper else "e"
        number = f"[0-9]{frac}{e}[-+][0-9]{{2,}}{q}"
    else:  # g, G and floats in a field without a type: checked by re-rendering
        e = "[eE]"
        number = f"[0-9][0-9,_]*{q}(?:\\.[0-9]*{q})?(?:{e}[-+][0-9]+{q})?"
    pct = "%" if typ == "%" else ""
    body = _alts(
        [
            nonneg + _alts([number, *specials], lazy) + pct,
            "-" + _alts([number, specials[0]], lazy) + pct,
        ],
        lazy,
    )
    unsigned = _alts([number, *specials], lazy) + pct
    return _padded(body, s, lazy, r"[-+ ]?", unsigned)


def _str_pattern(s: _Spec, lazy: bool, chars: str = _FREE) -> str:
    q = _q(lazy)
    if s.width and s.precision is None and chars == _FREE:
        return f"{chars}{{{s.width},}}{q}"
    if s.precision is not None and not s.width:
        return f"{chars}{{0,{s.precision}}}{q}"
    return f"{chars}*{q}"


def _compile_field(text: str, tok: _Token) -> _Field:
    name = tok.name
    assert name is not None
    _check_field_name(text, name, tok.start)
    spec = tok.spec
    s = _compile_spec(text, name, spec, tok.spec_start)
    kinds = _kinds(text, name, spec, s.type, tok.spec_start)
    _refuse_confusable_fill(text, name, s, tok.spec_start)
    typ = s.type
    if typ and typ in _INT_TYPES:
        reading = _int_reading(spec, s)
    elif typ and typ in _FLOAT_TYPES:
        reading = _float_reading(spec, s)
    elif typ == "s":
        reading = _str_reading(spec, s)
    else:
        reading = _shape_reading(spec, s, kinds)
    tail, prefix_free = _tail_chars(s, kinds)
    return _Field(
        name,
        spec,
        s,
        kinds,
        reading.greedy,
        reading.lazy,
        reading.convert,
        reading.exact,
        typ == "",
        tail,
        prefix_free,
    )


def _check_field_name(text: str, name: str, start: int) -> None:
    if name == "":
        raise TemplateError(
            "empty field name; name the value to fill in, e.g. {epoch}", text, start
        )
    if name.isdigit():
        raise TemplateError(
            f"positional field '{name}' is not supported; name the value to fill in, "
            "e.g. {epoch}",
            text,
            start,
        )
    for ch in "[]":
        if ch in name:
            raise TemplateError(
                f"field name '{name}' contains '{ch}'; indexing is not supported, "
                "name the key directly",
                text,
                start + 1 + name.index(ch),
            )


class _Reading(NamedTuple):
    """How a field's text is matched (greedy and lazy patterns) and converted."""

    greedy: str
    lazy: str
    convert: Callable[[str], Any]
    exact: bool  # see _Field.exact


def _int_reading(spec: str, s: _Spec) -> _Reading:
    greedy, exact = _int_pattern(s, False)
    lazy = _int_pattern(s, True)[0]
    base = _BASES[s.type]
    convert: Callable[[str], Any]
    if exact:
        plain: Callable[[str], int] = int if base == 10 else partial(int, base=base)
        convert = _strip_commas(plain) if s.grouping == "," else plain
    else:
        convert = _checked(spec, s, partial(_int_from, base=base))
    return _Reading(greedy, lazy, convert, exact)


def _float_reading(spec: str, s: _Spec) -> _Reading:
    typ = s.type
    exact = typ in "fF" and not s.width and not s.z and not s.grouping
    convert: Callable[[str], Any]
    if typ == "%":
        convert = _checked(spec, s, _float_from_percent)
    elif exact:
        convert = partial(_short_float, spec=spec)
    else:
        convert = _checked(spec, s, _float_from)
    return _Reading(_float_pattern(s, False), _float_pattern(s, True), convert, exact)


def _str_reading(spec: str, s: _Spec) -> _Reading:
    exact = not s.width
    convert = str if exact else _checked(spec, s, str)
    return _Reading(_str_pattern(s, False), _str_pattern(s, True), convert, exact)


def _shape_reading(spec: str, s: _Spec, kinds: frozenset[str]) -> _Reading:
    """A field without a format type: any value its spec can write, told apart by shape."""
    int_s = replace(s, precision=None, type="d")
    float_s = replace(s, type="g")

    def pattern(lazy: bool) -> str:
        parts = []
        if spec == "":
            # str(float): the shape of a repr; "1.50" is refused by the converter.
            q = _q(lazy)
            parts.append(
                f"-?(?:[0-9]+{q}\\.[0-9]+{q}(?:e[-+][0-9]+{q})?|[0-9]e[-+][0-9]+{q}|inf)|nan"
            )
        elif "float" in kinds:
            parts.append(_float_pattern(float_s, lazy))
        if "int" in kinds:
            parts.append(_int_pattern(int_s, lazy)[0])
        if "str" in kinds:
            parts.append(_padded(_str_pattern(s, lazy, _WORD), s, lazy))
        return _alts(parts, lazy)

    exact = spec == ""
    convert = _infer if exact else _checked(spec, s, _infer_all)
    return _Reading(pattern(False), pattern(True), convert, exact)


def _tail_chars(s: _Spec, kinds: frozenset[str]) -> tuple[frozenset[str] | None, bool]:
    """Characters that can follow the first one in a field's text; prefix-freeness."""
    typ = s.type
    if "str" in kinds:
        return None, False
    chars = set(s.grouping)
    if s.width:
        chars.add(s.fill)
        # With '=' alignment (and the 0 flag) or '<', a sign can only come first.
        if s.align in (">", "^") or (s.align is None and not s.zero):
            chars |= {"+", "-", " "}
    if typ and typ in _INT_TYPES:
        digits, _ = _DIGITS[typ]
        chars |= set(
            re.sub(r"[\[\]]", "", digits)
            .replace("0-9", "0123456789")
            .replace("a-f", "abcdef")
            .replace("A-F", "ABCDEF")
            .replace("0-7", "01234567")
        )
        if s.alt:
            chars |= set(_PREFIX.get(typ, ""))
        return frozenset(chars), False
    chars |= set("0123456789.infaINFA%")
    if typ not in ("f", "F", "%"):
        chars |= set("eE+-,_")
    prefix_free = typ in ("f", "F", "%") and s.precision != 0 and not s.width
    return frozenset(chars), prefix_free


def _strip_commas(conv: Callable[[str], int]) -> Callable[[str], int]:
    def convert(text: str) -> int:
        return conv(text.replace(",", ""))

    return convert


def _int_from(text: str, base: int) -> list[Any]:
    return [int(text.replace(",", ""), base)]


def _float_from(text: str) -> list[Any]:
    return [float(text.replace(",", ""))]


def _float_from_percent(text: str) -> list[Any]:
    if not text.endswith("%"):
        raise _Reject(text)
    body = text[:-1].replace(",", "")
    if body.lstrip("+- ").lower() in ("inf", "nan"):
        return [float(body)]
    # "12.3e-2" reads as the double nearest 0.123, which "12.3" / 100 need not be.
    return [float(body + "e-2")]


def _short_float(text: str, spec: str) -> float:
    value = float(text)
    # Up to 15 significant digits survive text -> float -> text unchanged
    # (DBL_DIG); longer texts may name no float at all, so check those.
    if len(text) > 15 and format(value, spec) != text:
        raise _Reject(text)
    return value


def _infer(text: str) -> Any:
    """Type of a value written without a format type, read from its shape."""
    if _CANONICAL_INT.fullmatch(text):
        return int(text)
    if text == "True":
        return True
    if text == "False":
        return False
    if _FLOAT_SHAPE.fullmatch(text) or text == "-inf":
        value = float(text)
        if repr(value) == text:
            return value
    if "." in text:
        # Float-shaped but no float's repr (1.50), and no string either: strings
        # in a field without a type hold no dot.
        raise _Reject(text)
    return text


def _infer_all(text: str) -> list[Any]:
    out: list[Any] = []
    plain = text.replace(",", "")
    with contextlib.suppress(ValueError):
        out.append(int(plain))
    with contextlib.suppress(ValueError):
        out.append(float(plain))
    if "." not in text:  # strings in a field without a type hold no dot
        out.append(text)
    return out


def _unpadded(text: str, s: _Spec, kinds: frozenset[str]) -> Iterator[str]:
    """Candidate value texts for a padded field, most padding first.

    Where the fill could also belong to the value (``{x:0<3d}`` writes both 5 and
    500 as ``500``), the reading with the most padding wins; ``render`` refuses
    the values that would read back differently.
    """
    if not s.width or len(text) > s.width:
        yield text
        return
    fill = s.fill
    if s.align:
        aligns = [s.align]
    else:
        aligns = []
        if kinds & {"int", "float"}:
            aligns.append("=" if s.zero else ">")
        if "str" in kinds:
            aligns.append("<")
    found: list[tuple[int, str]] = []
    for align in aligns:
        if align == ">":
            body = text.lstrip(fill)
            for i in range(len(text) - len(body), -1, -1):
                found.append((i, text[i:]))
        elif align == "<":
            body = text.rstrip(fill)
            for i in range(len(text) - len(body), -1, -1):
                found.append((i, text[: len(text) - i]))
        elif align == "^":
            for n in range(len(text), -1, -1):
                left, right = n // 2, n - n // 2
                if text[:left] == fill * left and text[len(text) - right :] == fill * right:
                    found.append((n, text[left : len(text) - right]))
        else:
            m = _SIGN_PREFIX.match(text)
            head = m.group() if m else ""
            rest = text[len(head) :]
            body = rest.lstrip(fill)
            for i in range(len(rest) - len(body), -1, -1):
                found.append((i, head + rest[i:]))
    found.sort(key=lambda pair: -pair[0])
    for _, body in found:
        yield body


def _checked(spec: str, s: _Spec, candidates: Callable[[str], Any]) -> Callable[[str], Any]:
    """A converter that returns the value whose rendering is exactly ``text``."""
    kinds = frozenset({"int", "float", "str"})

    def convert(text: str) -> Any:
        for body in _unpadded(text, s, kinds):
            try:
                values = candidates(body)
            except ValueError:
                continue
            if not isinstance(values, list):
                values = [values]
            for value in values:
                try:
                    if format(value, spec) == text:
                        return value
                except (ValueError, TypeError):
                    continue
        raise _Reject(text)

    return convert


# --------------------------------------------------------------------------- values


def _plain_value(value: Any) -> Any:
    """Turn NumPy scalars, 0-d arrays and eager tensors into Python values.

    Keras converts its logs with ``float()`` before formatting a filepath; doing
    the same here keeps names identical to what Keras would write.
    """
    cls = type(value)
    if cls is int or cls is float or cls is str or cls is bool:
        return value
    if hasattr(value, "numpy") and callable(value.numpy) and not hasattr(value, "item"):
        value = value.numpy()
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "item"):
        if shape != ():
            raise _BadValue(f"is an array of shape {tuple(shape)}; pass a single number")
        return value.item()
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return value.item()
    return value


class _BadValue(Exception):
    pass


_PLAIN = frozenset({int, float, str, bool})


def _plain_value_for(f: _Field, value: Any) -> Any:
    if value is None:
        raise RenderError(f"value None for field '{f.name}'; pass a number or a string")
    try:
        return _plain_value(value)
    except _BadValue as exc:
        raise RenderError(f"value for field '{f.name}' {exc}") from None


# --------------------------------------------------------------------------- template


def _compile_fields(
    text: str, style: str, tokens: list[_Token]
) -> tuple[list[str], list[_Field], str | None]:
    """The literals and fields of a template, and why it is not reversible (or ``None``).

    There is one more literal than fields: literal ``i`` comes before field ``i``.
    """
    literals: list[str] = []
    fields: list[_Field] = []
    pending = ""
    why: str | None = None
    for tok in tokens:
        if tok.name is None:
            pending += tok.literal
            continue
        f = _compile_field(text, tok)
        if fields and pending == "" and why is None:
            why = _touching(style, fields[-1], f)
        literals.append(pending)
        pending = ""
        fields.append(f)
    literals.append(pending)
    return literals, fields, why


def _touching(style: str, first: _Field, second: _Field) -> str:
    why = f"fields '{first.name}' and '{second.name}' touch, so one can run into the other"
    if first.parsed.width:
        why += " (widths are minimums: a padded field still takes longer values)"
    return why + (
        f"; put a separator between '{first.name}' and '{second.name}', "
        f"e.g. {_field_source(style, first)}-{_field_source(style, second)}"
    )


def _check_part_lengths(text: str, literals: list[str]) -> None:
    for literal in literals:
        for segment in literal.split("/"):
            if len(segment.encode()) > _MAX_PART_BYTES:
                raise TemplateError(
                    f"path part of {len(segment.encode())} bytes; most file systems "
                    f"allow {_MAX_PART_BYTES}",
                    text,
                    text.find(segment[:20]),
                )


def _field_parts(literals: list[str]) -> tuple[int, ...]:
    """The ``/``-separated parts of a rendered name that hold a field, by index."""
    parts = set()
    part = 0
    for literal in literals[:-1]:
        part += literal.count("/")
        parts.add(part)
    return tuple(sorted(parts))


@dataclass(frozen=True, slots=True)
class FieldView:
    """One field occurrence of a template, as written; see :attr:`Template.field_views`.

    Attributes:
        name: the field name, e.g. ``"val_loss"``.
        spec: the format spec as written: ``"02d"``, ``".2f"``, ``""``.
        type: the spec's type letter, ``""`` where it has none.
        kind: what ``parse`` reads the field's text as: ``"int"``,
            ``"float"``, ``"str"``, or ``"shape"`` for a field without a type,
            read as an int, a float or a string by the shape of its text.
    """

    name: str
    spec: str
    type: str
    kind: str


def _kind(typ: str) -> str:
    if typ == "":
        return "shape"
    if typ in _INT_TYPES:
        return "int"
    if typ in _FLOAT_TYPES:
        return "float"
    return "str"


@dataclass(frozen=True, slots=True, eq=False)
class Template:
    """A compiled checkpoint filepath template.

    Fields are written ``{name:spec}`` (as ``str.format`` and Keras
    ``ModelCheckpoint`` write them) or ``<name:spec>``; one template uses one
    style. A doubled delimiter (``{{``, ``<<``) is a literal.

    Args:
        text: the template, e.g. ``"ckpt/{epoch:02d}-{val_loss:.2f}.keras"``.

    Raises:
        TemplateError: the text is not a valid template; the message shows the
            template with a caret under the offending column.

    Attributes:
        text: the template text.
        style: ``"brace"`` or ``"angle"``.
        fields: field names in order of first appearance.
        reversible: whether names can be read back; where ``False``,
            ``parse`` raises a ``TemplateError`` that says why.
        regex: the compiled, anchored pattern that ``parse`` matches names with,
            one group per field occurrence.

    Tools that describe or search with a template (the command line, the
    scanner) read it through :attr:`field_views`, :attr:`literals`,
    :attr:`why_not_reversible` and :meth:`counter_search`, never through its
    private attributes. A whole folder listing is read in one search by
    :meth:`parse_many` and :meth:`read_listing` (every name, as ``parse``
    reads it), :meth:`read_field` (one field of every name) and
    :meth:`names_at_least` (the names whose counter reaches a bound).
    """

    text: str
    style: str = field(init=False)
    fields: tuple[str, ...] = field(init=False)
    reversible: bool = field(init=False)
    regex: re.Pattern[str] = field(init=False, repr=False)
    _why: str | None = field(init=False, repr=False)
    _lazy: re.Pattern[str] = field(init=False, repr=False)
    _literals: tuple[str, ...] = field(init=False, repr=False)
    _fields: tuple[_Field, ...] = field(init=False, repr=False)
    _converters: tuple[Callable[[str], Any], ...] = field(init=False, repr=False)
    _parse_fast: Callable[[str], dict[str, Any] | None] | None = field(init=False, repr=False)
    _names: tuple[str, ...] = field(init=False, repr=False)
    _duplicates: bool = field(init=False, repr=False)
    _inexact: tuple[int, ...] = field(init=False, repr=False)
    _field_parts: tuple[int, ...] = field(init=False, repr=False)
    _joiner: Callable[..., str] = field(init=False, repr=False)
    _proven_unique: bool = field(init=False, repr=False)
    _risky_parts: bool = field(init=False, repr=False)

    def __init__(self, text: str, *, _style: str | None = None) -> None:
        if not isinstance(text, str):
            raise TypeError(f"template must be a str, got {type(text).__name__}")
        style, tokens = _tokenize(text, _style)
        literals, fields, why = _compile_fields(text, style, tokens)
        _check_part_lengths(text, literals)
        names = tuple(f.name for f in fields)
        sets = object.__setattr__
        sets(self, "text", text)
        sets(self, "style", style)
        sets(self, "fields", tuple(dict.fromkeys(names)))
        sets(self, "reversible", why is None)
        sets(self, "_why", why)
        sets(self, "regex", re.compile(_join_pattern(literals, [f.greedy for f in fields]), re.S))
        sets(self, "_lazy", re.compile(_join_pattern(literals, [f.lazy for f in fields]), re.S))
        sets(self, "_literals", tuple(literals))
        sets(self, "_fields", tuple(fields))
        sets(self, "_converters", tuple(f.convert for f in fields))
        sets(self, "_parse_fast", _make_parser(self.regex, fields))
        sets(self, "_names", names)
        sets(self, "_duplicates", len(set(names)) != len(names))
        sets(self, "_inexact", tuple(i for i, f in enumerate(fields) if not f.exact))
        sets(self, "_field_parts", _field_parts(literals))
        sets(
            self,
            "_joiner",
            "{}".join(lit.replace("{", "{{").replace("}", "}}") for lit in literals).format,
        )
        sets(self, "_proven_unique", why is None and _splits_one_way(literals, fields))
        sets(self, "_risky_parts", any(_risky_parts(literals)))

    # ------------------------------------------------------------------ views

    @property
    def field_views(self) -> tuple[FieldView, ...]:
        """Every field occurrence, in order, as written in the template.

        A field that appears twice appears twice here; ``fields`` lists names
        once. ``Template("ep{epoch:02d}-{val_loss:.2f}").field_views`` is
        ``(FieldView("epoch", "02d", "d", "int"), FieldView("val_loss", ".2f", "f", "float"))``.
        """
        return tuple(
            FieldView(f.name, f.spec, f.parsed.type, _kind(f.parsed.type)) for f in self._fields
        )

    @property
    def literals(self) -> tuple[str, ...]:
        """The literal text around the fields: before the first, between each two, after the last.

        There is one more literal than there are field occurrences, some may be
        empty, and doubled delimiters are undone: ``Template("a{{{x}}}.h5").literals``
        is ``("a{", "}.h5")``.
        """
        return self._literals

    @property
    def why_not_reversible(self) -> str | None:
        """Why names of this template cannot be read back, or ``None`` where they can.

        The same sentence ``parse`` raises in its ``TemplateError``, e.g.
        "fields 'epoch' and 'batch' touch, so one can run into the other; ...".
        """
        return self._why

    # ------------------------------------------------------------------ dunder

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Template):
            return self.text == other.text and self.style == other.style
        return NotImplemented

    def __hash__(self) -> int:
        return hash((Template, self.text))

    def __reduce__(self) -> tuple[Any, ...]:
        return (Template, (self.text,))

    # ------------------------------------------------------------------ render

    def render(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> str:
        """Fill the template, exactly as ``str.format`` would.

        Args:
            values: a mapping of field values (needed for keys such as
                ``"val/loss"`` that are not Python identifiers).
            **kwargs: more values; they win over ``values``.

        Extra keys are ignored, so Keras logs can be passed whole. Values may be
        Python ints, floats, bools and strings, NumPy scalars or 0-d arrays.

        Returns:
            The name. It always reads back: ``parse(render(v))`` gives ``v``
            (floats to the spec's precision).

        Raises:
            MissingFieldError: a field has no value.
            RenderError: a value cannot be written with its spec, contains
                ``/``, ``\\`` or NUL, makes a ``.``/``..``/empty path part or a
                part over 255 bytes, or gives a name that would read back as
                other values.
        """
        if values is None:
            given: Mapping[str, Any] = kwargs
        elif kwargs:
            given = {**values, **kwargs}
        else:
            given = values
        try:
            raw = [given[key] for key in self._names]
        except KeyError:
            missing = [key for key in self._names if key not in given]
            raise self._missing(missing, given) from None
        except TypeError:
            raise TypeError(
                f"values must be a mapping of field names, got {type(given).__name__}"
            ) from None
        pieces = []
        for f, value in zip(self._fields, raw):
            if type(value) not in _PLAIN:
                value = _plain_value_for(f, value)
            try:
                piece = format(value, f.spec)
            except (ValueError, TypeError, OverflowError) as exc:
                raise RenderError(
                    f"cannot write {value!r} ({type(value).__name__}) into field "
                    f"'{f.name}' with spec '{f.spec}': {exc}"
                ) from None
            if f.tail is None:
                self._check_text(f, value, piece)
            pieces.append(piece)
        name = self._joiner(*pieces)
        if self._risky_parts or len(name) > _MAX_PART_BYTES // 4:
            self._check_parts(name)
        if not self._proven_unique:
            self._check_split(name, pieces)
        for i in self._inexact:
            self._check_inexact(i, pieces[i], raw[i])
        return name

    def _check_text(self, f: _Field, value: Any, piece: str) -> None:
        for bad in _FORBIDDEN_IN_VALUE:
            if bad in piece:
                raise RenderError(
                    f"value {value!r} for field '{f.name}' contains {bad!r}, which would "
                    "make a path outside the template's folders; remove it from the value"
                )
        if f.typeless_str and type(value) is str:
            if "." in value:
                raise RenderError(
                    f"string value {value!r} for field '{f.name}' contains '.', which a "
                    "field without a format type does not read back (so that suffixes such "
                    "as '.backup' never match); give the field the 's' type: "
                    f"{_field_source(self.style, f, 's')}"
                )
            back = _infer(piece) if f.spec == "" else value
            if type(back) is not str:
                kind = type(back).__name__
                raise RenderError(
                    f"string value {value!r} for field '{f.name}' would read back as the "
                    f"{kind} {back!r}; pass {'an' if kind == 'int' else 'a'} {kind}, or give "
                    f"the field the 's' type: {_field_source(self.style, f, 's')}"
                )

    def _missing(self, missing: list[str], given: Mapping[str, Any]) -> MissingFieldError:
        keys = sorted(str(k) for k in given)
        names = ", ".join(f"'{m}'" for m in dict.fromkeys(missing))
        noun = "field" if len(set(missing)) == 1 else "fields"
        return MissingFieldError(
            f"no value for {noun} {names} of template '{self.text}' "
            f"(given: {', '.join(keys) if keys else 'nothing'})",
            tuple(dict.fromkeys(missing)),
            tuple(keys),
        )

    def _check_parts(self, name: str) -> None:
        parts = name.split("/")
        for index in self._field_parts:
            part = parts[index]
            if part in ("", ".", ".."):
                raise RenderError(
                    f"name {name!r} has the path part {part!r}, which does not name a "
                    "file or folder of its own; change the value that fills it"
                )
            if len(part) > _MAX_PART_BYTES // 4 and len(part.encode()) > _MAX_PART_BYTES:
                raise RenderError(
                    f"path part {part[:40]!r}... of the name is {len(part.encode())} bytes; "
                    f"most file systems allow {_MAX_PART_BYTES}; shorten the values that "
                    "fill it"
                )

    def _check_split(self, name: str, pieces: list[str]) -> None:
        """Refuse a name that reads back as other pieces, or as more than one split.

        The greedy pattern finds the reading whose fields are longest from the
        left, the lazy one the reading whose fields are shortest; a name that
        splits one way only gives the same pieces under both.
        """
        if not self.reversible:
            return
        groups = tuple(pieces)
        for pattern in (self.regex, self._lazy):
            m = pattern.fullmatch(name)
            if m is None or m.groups() != groups:
                raise self._ambiguous(name, m.groups() if m else None, groups)

    def _check_inexact(self, i: int, piece: str, value: Any) -> None:
        f = self._fields[i]
        try:
            back = f.convert(piece)
        except ValueError:
            raise RenderError(
                f"value {value!r} for field '{f.name}' is written {piece!r}, which no value "
                "reads back from (rounding took it past the largest float); use a spec with "
                "more precision"
            ) from None
        # The piece is the canonical text of `back`; for floats that is all that
        # "the same value to the spec's precision" asks; other values must come
        # back themselves (`{x:0<3d}` writes 5 and 500 alike).
        if not isinstance(back, float) and back != _plain_value(value):
            raise RenderError(
                f"value {value!r} for field '{f.name}' is written {piece!r}, which reads "
                f"back as {back!r}; keep the fill character out of the values"
            )

    def _ambiguous(
        self, name: str, got: tuple[str | Any, ...] | None, want: tuple[str, ...]
    ) -> RenderError:
        detail = ""
        if got is not None:
            for f, a, b in zip(self._fields, got, want):
                if a != b:
                    detail = f" ('{f.name}' could be read as {a!r} instead of {b!r})"
                    break
        return RenderError(
            f"name {name!r} would not read back to the values that made it{detail}; "
            "keep separators of the template out of string values, or put a literal "
            "that values cannot contain between the fields"
        )

    # ------------------------------------------------------------------ parse

    def parse(self, name: str) -> dict[str, Any] | None:
        """Read a name back into the values that render it.

        The whole name must match (no prefix or suffix), case-sensitively.
        Integers come back as ``int``, floats as ``float``, other text as ``str``;
        a field written without a type is read by its shape.

        Returns:
            A dict of field values, or ``None`` if ``name`` is not a name that
            ``render`` could produce.

        Raises:
            TemplateError: the template is not reversible (see ``reversible``).
        """
        if self._why is not None:
            raise TemplateError(f"template '{self.text}' cannot be read back: {self._why}")
        # No file system holds a path part over 255 bytes, and render never
        # writes one; a part needs 64 characters or more to be that long.
        if len(name) > _MAX_PART_BYTES // 4 and _has_long_part(name):
            return None
        if self._parse_fast is not None:
            return self._parse_fast(name)
        m = self.regex.fullmatch(name)
        if m is None:
            return None
        try:
            values = [conv(text) for conv, text in zip(self._converters, m.groups())]
        except ValueError:
            return None
        if self._duplicates:
            out: dict[str, Any] = {}
            for key, value in zip(self._names, values):
                if key in out and not same_value(out[key], value):
                    return None
                out[key] = value
            return out
        return dict(zip(self._names, values))

    # ------------------------------------------------------------------ parts

    @property
    def segments(self) -> tuple[Template, ...]:
        """The template split at ``/`` into one template per path part.

        ``Template("lr={lr:.0e}/ep{epoch}.keras").segments`` is
        ``(Template("lr={lr:.0e}"), Template("ep{epoch}.keras"))``. A ``/``
        inside a field name (``{val/loss}``) does not split.
        """
        return tuple(
            Template(part, _style=self.style) for part in _split_parts(self.text, self.style)
        )

    # ------------------------------------------------------------------ listings

    def counter_search(self, counters: Sequence[str]) -> re.Pattern[str] | None:
        """A pattern that finds a progress counter in every name of a whole folder listing.

        Searched over ``"\\0" + "\\0".join(names) + "\\0"``, the pattern's
        ``findall`` gives, for every name that fully matches the template, the
        text of the first of ``counters`` that the template has. One
        ``findall`` over the joined listing costs a fraction of a ``parse``
        per name, because it makes one short string per match instead of a
        match object and a dict.

        The search finds exactly the names ``parse`` accepts only where the
        counter is read by ``int`` (a ``d`` type without padding to undo, or
        no type, where ``int`` reads the same numbers), no field appears
        twice (``parse`` compares the copies), and nothing in the pattern can
        match NUL (so no match spans two names). Elsewhere there is no such
        pattern, and the caller parses every name.

        Args:
            counters: field names in the order to look for them, e.g.
                ``("batch", "epoch", "batch_in_epoch")``.

        Returns:
            The compiled pattern with one group (the counter's text), or
            ``None``.
        """
        if self._duplicates:
            return None
        for counter in counters:
            if counter not in self._names:
                continue
            index = self._names.index(counter)
            convert = self._fields[index].convert
            if convert is not int and convert is not _infer:
                return None
            pattern = _keep_one_group(self.regex.pattern, index + 1)
            if pattern is None:
                return None
            return re.compile("\x00(?:" + pattern + ")(?=\x00)", self.regex.flags)
        return None

    def parse_many(self, names: Sequence[str]) -> tuple[list[str], list[dict[str, Any]]]:
        """Read back every name of a folder listing at once.

        The result is what ``parse`` gives name by name, leaving out the names it
        refuses, as two lists in the listing's order: the names that read back, and
        their values. The names are searched a few thousand at a time, joined
        with NUL, by one pattern that splits every name that matches into its
        fields; that costs a fraction of a ``parse`` per name, most of all
        where most names do not match. The names are those of a folder as
        listed: none holds NUL (no file name can), which would split it in two.

        Raises:
            TemplateError: the template is not reversible (see ``reversible``).
        """
        found, values, _ = self.read_listing(names, "")
        return found, values

    def read_listing(
        self, names: Sequence[str], companion: str
    ) -> tuple[list[str], list[dict[str, Any]], set[str]]:
        """:meth:`parse_many`, and which names have a companion file in the listing.

        A companion of a name is the name with ``companion`` appended (a
        sidecar, ``.ckptname.json``). The third result holds, of every name
        the template's pattern matches in full, those whose companion is in
        ``names`` (and maybe other names that the template does not match).
        The same search finds both where no name of the template can end with
        ``companion``; elsewhere the listing is looked through once more.
        With ``companion`` empty, the set is empty.

        Raises:
            TemplateError: the template is not reversible (see ``reversible``).
        """
        if self._why is not None:
            raise TemplateError(f"template '{self.text}' cannot be read back: {self._why}")
        out_names: list[str] = []
        out_values: list[dict[str, Any]] = []
        companions: set[str] = set()
        reader = _bulk_reader(self, companion)
        if reader is None:
            for name in names:
                values = self.parse(name)
                if values is not None:
                    out_names.append(name)
                    out_values.append(values)
        else:
            pattern, read = reader
            for chunk in _joined(names, "\x00"):
                read(pattern.findall(chunk), out_names, out_values, companions)
        if companion and (reader is None or not _companions_found(self, companion)):
            # A name of the template could end with the companion's text, so a
            # match may have taken a companion for a name: look at every name.
            size = len(companion)
            companions = {name[:-size] for name in names if name.endswith(companion)}
        return out_names, out_values, companions

    def read_field(self, names: Sequence[str], name: str) -> tuple[list[str], list[Any]] | None:
        """One field of every name of a folder listing, read in one search.

        Returns the names that the template's pattern matches in full, and the
        value ``parse`` reads for the field ``name`` from each (of its first
        occurrence). Only that field is converted: a name whose other fields
        ``parse`` refuses (a float text longer than any float's, copies of a
        field that disagree) may be among them, so parse the names you keep.

        Returns ``None`` where the template has no such field, or where its
        pattern could match across names (see :meth:`counter_search`).
        """
        reader = _field_reader(self, name)
        if reader is None:
            return None
        pattern, convert = reader
        rows: list[tuple[str, str]] = []
        for chunk in _joined(names, "\x00"):
            rows += pattern.findall(chunk)
        texts = [text for _, text in rows]
        try:
            values = list(map(convert, texts))
        except ValueError:
            # Some text is refused (and so is its name, by parse): one by one.
            kept = []
            values = []
            for row in rows:
                try:
                    values.append(convert(row[1]))
                except ValueError:
                    continue
                kept.append(row)
            rows = kept
        return [found for found, _ in rows], values

    def names_at_least(
        self, names: Sequence[AnyStr], name: str, at_least: int
    ) -> list[AnyStr] | None:
        """The names of a folder listing whose field ``name`` may read as at least ``at_least``.

        Every name that ``parse`` reads with that field at least ``at_least``
        is among them, where the field's value counts as a number when it is
        an ``int``, a whole ``float``, or a text of ASCII digits (as
        ``ckptname._rank.as_counter`` reads a counter). Others may be too: the
        search checks the other fields only loosely, so parse the names you
        keep. With ``at_least`` near the largest value in the listing, few
        names come out, and the search costs little more than joining them.

        ``names`` may be ``str`` or ``bytes`` (``os.listdir`` of a ``bytes``
        path): bytes are searched as bytes, and the names come back as given.

        Returns ``None`` where the field is not read as a plain decimal
        integer (``d`` without grouping, padded with zeros if at all) or
        without a format type, where ``at_least`` is below 1 or longer than
        40 digits, or where a search of bytes would need a pattern that is
        not ASCII.
        """
        text = _at_least_pattern(self, name, at_least)
        if text is None or not names:
            return None if text is None else []
        pattern: re.Pattern[Any]
        if isinstance(names[0], bytes):
            if not text.isascii():
                return None
            pattern = re.compile(text.encode("ascii"))
            sep: Any = b"\x00"
        else:
            pattern = re.compile(text)
            sep = "\x00"
        found: list[AnyStr] = []
        for chunk in _joined(names, sep):
            found += pattern.findall(chunk)
        return [match[1:] for match in found]  # each match starts with the NUL before it


def _make_parser(
    regex: re.Pattern[str], fields: list[_Field]
) -> Callable[[str], dict[str, Any] | None] | None:
    """Generate a parse function for this template's fields (as attrs does for __init__).

    Common converters are inlined (``int(g0)``, ``float(g1)``); the generic loop
    in ``Template.parse`` costs about a third more per name. Templates that
    repeat a field keep the generic path, which checks that repeats agree.
    """
    names = [f.name for f in fields]
    if len(set(names)) != len(names):
        return None
    ns: dict[str, Any] = {"_match": regex.fullmatch, "_format": format}
    lines = ["def parse(name):", "    m = _match(name)", "    if m is None:", "        return None"]
    if not fields:
        lines.append("    return {}")
    else:
        groups = ", ".join(f"g{i}" for i in range(len(fields)))
        lines.append(f"    {groups}{',' if len(fields) == 1 else ''} = m.groups()")
        lines.append("    try:")
        converting, value = _converting(fields, ns, "        ", "return None")
        lines += converting
        lines.append(f"        return {value}")
        lines.append("    except ValueError:")
        lines.append("        return None")
    # Safe: the code is built above from repr()'d field names and fixed text only.
    exec("\n".join(lines), ns)
    parse: Callable[[str], dict[str, Any] | None] = ns["parse"]
    return parse


def _converting(
    fields: list[_Field], ns: dict[str, Any], indent: str, refuse: str
) -> tuple[list[str], str]:
    """Lines that convert the texts ``g0``, ``g1``... of the fields, and the values' dict.

    The generated parsers share this: common converters inline, others
    called from ``ns``; ``refuse`` is the statement for a text that no value
    reads back from (``return None``, or ``continue`` in a loop over names).
    """
    lines: list[str] = []
    items = []
    for i, f in enumerate(fields):
        conv = f.convert
        if conv is int:
            expr = f"int(g{i})"
        elif conv is str:
            expr = f"g{i}"
        elif isinstance(conv, partial) and conv.func is _short_float:
            ns[f"_s{i}"] = f.spec
            lines.append(f"{indent}v{i} = float(g{i})")
            lines.append(f"{indent}if len(g{i}) > 15 and _format(v{i}, _s{i}) != g{i}:")
            lines.append(f"{indent}    {refuse}")
            expr = f"v{i}"
        else:
            ns[f"_c{i}"] = conv
            expr = f"_c{i}(g{i})"
        items.append(f"{f.name!r}: {expr}")
    return lines, "{" + ", ".join(items) + "}"


# --------------------------------------------------------------------------- listings

# Names joined for one search of a listing: enough to make a search cost little
# more than its matching, few enough that the joined text stays in the CPU's
# cache (joining a million names at once costs as much as searching them).
_CHUNK = 4096


def _joined(names: Sequence[AnyStr], sep: AnyStr) -> Iterator[AnyStr]:
    """``names`` joined by ``sep`` (NUL) a chunk at a time, with ``sep`` before and after each.

    No file name holds NUL, so each name stays one name in the joined text;
    the listing methods ask for names of a folder as listed.
    """
    for i in range(0, len(names), _CHUNK):
        yield sep + sep.join(names[i : i + _CHUNK]) + sep


_BulkReader = Callable[[list[Any], list[str], list[dict[str, Any]], set[str]], None]


@lru_cache(maxsize=128)
def _bulk_reader(
    template: Template, companion: str
) -> tuple[re.Pattern[str], _BulkReader] | None:
    """The pattern and the generated loop behind :meth:`Template.read_listing`.

    ``findall`` of the pattern over a joined listing gives ``(name, g0, g1,
    ..., companion)`` per name that the template's regex matches in full
    (the same pattern, so the same split), where the last text is the
    companion suffix if the name was matched with it; the loop converts the
    texts of the others as the generated ``parse`` does and appends what
    reads back, and collects the names with a companion. ``None`` for a
    template that repeats a field (parse compares the copies) or whose
    pattern could match across names: those are parsed name by name.
    """
    fields = list(template._fields)
    if template._duplicates:
        return None
    kept = _keep_groups(template.regex.pattern, frozenset(range(1, len(fields) + 1)))
    if kept is None:
        return None
    side = f"({re.escape(companion)})?" if companion else ""
    pattern = re.compile("\x00(" + kept + ")" + side + "(?=\x00)", template.regex.flags)
    ns: dict[str, Any] = {"_format": format, "_long": _has_long_part, "_LONG": _MAX_PART_BYTES // 4}
    groups = [f"g{i}" for i in range(len(fields))] + (["side"] if companion else [])
    row = ", ".join(["name", *groups]) if groups else "name"
    converting, value = _converting(fields, ns, "            ", "continue")
    lines = [
        "def read(rows, names, values, companions):",
        "    add_name = names.append",
        "    add_value = values.append",
        f"    for {row} in rows:",
    ]
    if companion:
        lines += ["        if side:", "            companions.add(name)", "            continue"]
    lines += [
        # As in parse: no file system holds a path part over 255 bytes.
        "        if len(name) > _LONG and _long(name):",
        "            continue",
        "        try:",
        *converting,
        f"            value = {value}",
        "        except ValueError:",
        "            continue",
        "        add_name(name)",
        "        add_value(value)",
    ]
    # Safe: the code is built from repr()'d field names and fixed text only.
    exec("\n".join(lines), ns)
    read: _BulkReader = ns["read"]
    return pattern, read


def _companions_found(template: Template, companion: str) -> bool:
    """Whether one search tells every name of the template that has a companion in the listing.

    A match of a companion (a name of the template, then ``companion``)
    could instead be a match of the template alone only where a name of the
    template can end with ``companion``'s text. It cannot where the template
    ends with a literal, and neither that literal nor ``companion`` ends
    with the other.
    """
    last = template._literals[-1]
    return bool(last) and not companion.endswith(last) and not last.endswith(companion)


@lru_cache(maxsize=128)
def _field_reader(
    template: Template, name: str
) -> tuple[re.Pattern[str], Callable[[str], Any]] | None:
    """The pattern and converter behind :meth:`Template.read_field`.

    ``findall`` gives ``(name, text)`` per name the template's regex matches in
    full, the text being that of the field's first occurrence, split as
    ``parse`` splits it (the pattern is the template's own).
    """
    if name not in template._names:
        return None
    index = template._names.index(name)
    kept = _keep_groups(template.regex.pattern, frozenset({index + 1}))
    if kept is None:
        return None
    pattern = re.compile("\x00(" + kept + ")(?=\x00)", template.regex.flags)
    return pattern, template._fields[index].convert


@lru_cache(maxsize=64)
def _at_least_pattern(template: Template, name: str, at_least: int) -> str | None:
    """The pattern behind :meth:`Template.names_at_least`, or ``None``.

    The literals are the template's; the field ``name`` (its first
    occurrence) must read as a number of at least ``at_least``; every other
    field is matched by a class of the characters its texts can hold, which
    is a superset of its exact pattern and costs less to try. No groups: each
    match is the NUL before a name and the name.
    """
    if at_least < 1 or name not in template._names:
        return None
    first = template._names.index(name)
    literals = template._literals
    parts = []
    for i, f in enumerate(template._fields):
        piece = _counter_at_least(f, at_least) if i == first else _loose(f)
        if piece is None or "\x00" in literals[i]:
            return None
        parts += [re.escape(literals[i]), piece]
    if "\x00" in literals[-1]:
        return None
    parts.append(re.escape(literals[-1]))
    return "\x00(?:" + "".join(parts) + ")(?=\x00)"


def _loose(f: _Field) -> str:
    """A pattern of every text the field can hold, and more: one class of characters.

    Where the field can hold any text (a string), the class is that of
    strings; elsewhere the characters its texts are made of: those
    :func:`_tail_chars` says can follow the first, a sign and the fill. (One
    class costs the search less than a first character and then the rest.)
    """
    if f.tail is None:
        return _FREE + "*"
    chars = set(f.tail) | {"+", "-", " ", f.parsed.fill}
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]*"


# The longest bound :func:`_at_least_digits` writes a pattern for; a counter
# with more digits than this has no place in a listing worth searching fast.
_MAX_BOUND_DIGITS = 40


def _counter_at_least(f: _Field, at_least: int) -> str | None:
    """A pattern of the field's texts that read as a number of at least ``at_least``, and more.

    For a plain decimal integer (``d``, maybe signed or padded with zeros):
    the sign the spec writes before a positive number, zeros, then a number
    of at least ``at_least``. For a field
    without a format type, also a text of digits with leading zeros (a
    string that reads as a number) and a whole float's shapes
    (``300000.0``, ``1e+16``). ``None`` for any other field.
    """
    digits = _at_least_digits(at_least)
    if digits is None:
        return None
    if f.convert is int and not f.parsed.grouping:
        return _NONNEG_SIGN[f.parsed.sign] + "0*" + digits
    if f.convert is _infer:
        return f"(?:0*{digits}(?:\\.0)?|[0-9]+(?:\\.[0-9]+)?e\\+[0-9]+)"
    return None


def _at_least_digits(at_least: int) -> str | None:
    """A pattern of the decimal numbers without leading zeros that are at least ``at_least``.

    Longer numbers, or as long and larger digit by digit:
    ``_at_least_digits(2994)`` is ``(?:[1-9][0-9]{4,}|(?:[3-9][0-9]{3}|299(?:[5-9]|4)))``.
    """
    text = str(at_least)
    n = len(text)
    if at_least < 1 or n > _MAX_BOUND_DIGITS:
        return None
    same = ""  # the pattern of the digits after position i, at least those of text
    for i in reversed(range(n)):
        digit = int(text[i])
        rest = n - 1 - i
        exact = text[i] + same
        if digit == 9:
            same = exact
            continue
        higher = ("9" if digit == 8 else f"[{digit + 1}-9]") + (f"[0-9]{{{rest}}}" if rest else "")
        same = f"(?:{higher}|{exact})"
    return f"(?:[1-9][0-9]{{{n},}}|{same})"


def _splits_one_way(literals: list[str], fields: list[_Field]) -> bool:
    """Whether every name of the template splits into its fields in one way only.

    A field's end is forced when the text after it starts with a character the
    field can only hold as its first one (``-`` after ``{epoch:02d}``), with a
    ``/``, at the end of the name, or when no text of the field is a prefix of
    another (``{val_loss:.2f}`` always ends two digits after its point). Where
    every field's end is forced, the split is unique and ``render`` skips its
    run-time check.
    """
    for f, after in zip(fields, literals[1:]):
        if after == "" or after[0] == "/" or f.prefix_free:
            continue
        if f.tail is not None and after[0] not in f.tail:
            continue
        return False
    return True


def _risky_parts(literals: list[str]) -> list[bool]:
    """For each path part: could it render as '', '.' or '..'?

    Only a part made of fields and dots can; ``ep{epoch}`` never can.
    """
    parts: list[str] = [""]
    for i, lit in enumerate(literals):
        pieces = lit.split("/")
        parts[-1] += pieces[0]
        parts.extend(pieces[1:])
        if i < len(literals) - 1:
            parts[-1] += "\x00"  # marks a field
    return ["\x00" in p and p.replace("\x00", "").strip(".") == "" for p in parts]


# At the start of a path part: not '', '.' or '..' (no file has such a name).
_NOT_DOTS = r"(?!\.{0,2}(?:/|\Z))"


def _join_pattern(literals: list[str], patterns: list[str]) -> str:
    risky = iter(_risky_parts(literals))

    def literal(text: str) -> str:
        pieces = text.split("/")
        out = re.escape(pieces[0])
        for piece in pieces[1:]:
            out += "/" + (_NOT_DOTS if next(risky) else "") + re.escape(piece)
        return out

    out = [(_NOT_DOTS if next(risky) else "") + literal(literals[0])]
    for pattern, lit in zip(patterns, literals[1:]):
        out.append(f"({pattern})")
        out.append(literal(lit))
    return "".join(out)


def _has_long_part(name: str) -> bool:
    return any(len(part.encode()) > _MAX_PART_BYTES for part in name.split("/"))


def same_value(a: Any, b: Any) -> bool:
    """Whether two values read from names are the same value (NaN is the same as NaN)."""
    if a == b:
        return True
    return isinstance(a, float) and isinstance(b, float) and a != a and b != b


def _field_source(style: str, f: _Field, typ: str | None = None) -> str:
    spec = f.spec if typ is None else f.spec + typ
    inner = f.name + (":" + spec if spec else "")
    return "{" + inner + "}" if style == "brace" else "<" + inner + ">"


def _split_parts(text: str, style: str) -> list[str]:
    _, tokens = _tokenize(text, style)
    parts: list[str] = []
    current = ""
    for tok in tokens:
        source = text[tok.start : tok.end]
        if tok.name is not None:
            current += source
            continue
        pieces = source.split("/")
        current += pieces[0]
        for piece in pieces[1:]:
            parts.append(current)
            current = piece
    parts.append(current)
    return parts


# --------------------------------------------------------------------------- listings


def _keep_one_group(pattern: str, keep: int) -> str | None:
    """``pattern`` with every capturing group but number ``keep`` made non-capturing.

    Returns ``None`` where the pattern may match NUL or holds something this
    small reader of regular expressions does not handle (named groups,
    backreferences, conditionals): the caller then takes the general path.
    """
    return _keep_groups(pattern, {keep})


def _keep_groups(pattern: str, keep: set[int] | frozenset[int]) -> str | None:
    """``pattern`` with the capturing groups not numbered in ``keep`` made non-capturing.

    ``\\Z`` (the end of a name, in ``_NOT_DOTS``) becomes ``(?=\\x00)``: in a
    joined listing a name ends at the NUL after it. Returns ``None`` as
    :func:`_keep_one_group` does.
    """
    out: list[str] = []
    group = 0
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            size = _escape_size(pattern, i)
            if size is None:
                return None
            escape = pattern[i : i + size]
            out.append("(?=\\x00)" if escape == "\\Z" else escape)
            i += size
        elif c == "[":
            end = _class_end(pattern, i)
            if end is None:
                return None
            out.append(pattern[i:end])
            i = end
        elif c == "(":
            if pattern.startswith("(?", i):
                kind = pattern[i + 2 : i + 3]
                if kind in ("P", "(", "") or (kind == "<" and pattern[i + 3 : i + 4] not in "=!"):
                    return None  # named group, conditional: not worth handling
                out.append("(?")
                i += 2
            else:
                group += 1
                out.append("(" if group in keep else "(?:")
                i += 1
        elif c in ".\x00":
            return None
        else:
            out.append(c)
            i += 1
    return "".join(out)


_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


def _escape_size(pattern: str, i: int) -> int | None:
    """Length of the escape at ``pattern[i]``, or ``None`` if it may match NUL."""
    kind = pattern[i + 1 : i + 2]
    if kind in _HEX_ESCAPES:
        digits = pattern[i + 2 : i + 2 + _HEX_ESCAPES[kind]]
        try:
            if int(digits, 16) == 0:
                return None
        except ValueError:
            return None
        return 2 + len(digits)
    if kind == "" or kind.isdigit() or kind in "DSWN":
        return None  # octal/NUL, backreference, classes that include NUL
    return 2


def _class_end(pattern: str, start: int) -> int | None:
    """End of the character class at ``start``, or ``None`` if it may match NUL."""
    i = start + 1
    negated = pattern.startswith("^", i)
    if negated:
        i += 1
    if pattern.startswith("]", i):
        i += 1
    excludes_nul = False
    while i < len(pattern):
        c = pattern[i]
        if c == "]":
            # A negated class matches NUL unless it lists it; a positive one
            # has already been refused if it lists it.
            return i + 1 if (excludes_nul or not negated) else None
        if c == "\\":
            kind = pattern[i + 1 : i + 2]
            if kind == "x" and pattern[i + 2 : i + 4] == "00":
                if not negated:
                    return None
                excludes_nul = True
                i += 4
                continue
            size = _escape_size(pattern, i)
            if size is None:
                return None
            i += size
            continue
        if c == "\x00":
            return None
        i += 1
    return None
