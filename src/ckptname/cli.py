"""The ``ckptname`` command: look at checkpoint folders and templates from a shell.

Exit codes: 0 success, 1 nothing found, 2 bad usage or a bad template. A user
error prints one line (or a template with a caret) on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from ._errors import CkptnameError, TemplateError
from ._template import Template

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2

_COUNTERS = ("epoch", "batch", "batch_in_epoch")
_WINDOWS_INVALID = set(':*?"|\\')


class _UsageError(Exception):
    """A mistake in how the command was called: exit code 2."""


def _value(text: str) -> Any:
    """A command-line value, typed as a template would read it back."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    return text


def _json_default(value: Any) -> Any:
    return str(value)


def _dump(data: Any) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return repr(v)
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(data), default=_json_default, ensure_ascii=False)


# ----------------------------------------------------------------------------- commands


def cmd_render(args: argparse.Namespace) -> int:
    t = Template(args.template)
    values: dict[str, Any] = {}
    for item in args.values:
        key, sep, text = item.partition("=")
        if not sep:
            raise _UsageError(f"value {item!r} is not key=value; write e.g. epoch=3")
        values[key] = _value(text)
    print(t.render(values))
    return EXIT_OK


def cmd_parse(args: argparse.Namespace) -> int:
    t = Template(args.template)
    values = t.parse(args.name)
    if values is None:
        print(f"{args.name!r} is not a name of template {args.template!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(_dump(values))
    return EXIT_OK


def check_notes(t: Template) -> list[str]:
    """What will go wrong with a template, and why, in plain sentences."""
    notes: list[str] = []
    parts = t.text.split("/")
    if t.text.startswith("/") or ".." in parts:
        notes.append(
            "the template leaves its folder ('/' at the start or a '..' part): scanning "
            "needs a template relative to the checkpoint folder"
        )
    if not any(c in t.fields for c in _COUNTERS):
        notes.append(
            "no epoch, batch or batch_in_epoch field: the latest checkpoint is found from "
            "the metadata sidecars, then from modification times; add {epoch} or {batch}"
        )
    if "batch" in t.fields:
        notes.append(
            "{batch} is the global batch count here (Keras's ModelCheckpoint writes the "
            "index inside the epoch there; that is {batch_in_epoch})"
        )
    for f in t._fields:
        spec = f.parsed
        if f.name.startswith("val_"):
            notes.append(
                f"'{f.name}' is a validation metric: it exists only at epoch end, so save "
                "with save_freq='epoch'"
            )
        if spec.type in ("f", "F", "e", "E", "%") or (spec.type in ("g", "G")):
            notes.append(
                f"'{f.name}' is rounded in the name, so close values share a name; "
                "find_best breaks such ties with the exact value in the metadata sidecar"
            )
        if spec.type == "" and f.spec == "" and f.name not in _COUNTERS:
            notes.append(
                f"'{f.name}' has no format type: it is read back by its shape, and a "
                f"string there cannot hold a dot; give it a type, e.g. {{{f.name}:s}}"
            )
    literal = "".join(t._literals)
    bad = sorted(_WINDOWS_INVALID & set(literal))
    if bad:
        notes.append(f"{', '.join(repr(c) for c in bad)} cannot appear in Windows file names")
    return notes


def cmd_check(args: argparse.Namespace) -> int:
    try:
        t = Template(args.template)
    except TemplateError as exc:
        print(f"invalid: {exc}")
        return EXIT_USAGE
    print(f"template:   {t.text}")
    print(f"style:      {t.style}")
    kinds: list[str] = []
    seen: set[str] = set()
    for f in t._fields:
        if f.name in seen:
            continue
        seen.add(f.name)
        typ = f.parsed.type
        kind = (
            "int"
            if typ in "dxXob" and typ
            else "float"
            if typ in "fFeEgG%" and typ
            else "str"
            if typ == "s"
            else "read by shape"
        )
        kinds.append(f"{f.name} ({kind}{', ' + f.spec if f.spec else ''})")
    print(f"fields:     {', '.join(kinds) if kinds else '(none)'}")
    if not t.reversible:
        assert t._why is not None
        print(f"reversible: no: {t._why}")
        return EXIT_USAGE
    print("reversible: yes")
    notes = check_notes(t)
    for note in notes:
        print(f"note:       {note}")
    return EXIT_OK


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ckptname",
        description="Name, find and resume training checkpoints: templates read back by numbers.",
    )
    parser.add_argument("--version", action="version", version=f"ckptname {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("render", help="fill a template: ckptname render T epoch=3 val_loss=0.5")
    p.add_argument("template")
    p.add_argument("values", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("parse", help="read a name back into values (JSON)")
    p.add_argument("template")
    p.add_argument("name")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("check", help="is a template valid and reversible; what will go wrong")
    p.add_argument("template")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help, --version, or a usage error
        return int(exc.code or 0)
    try:
        result: int = args.func(args)
        return result
    except _UsageError as exc:
        print(f"ckptname {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (TemplateError, ValueError, LookupError) as exc:
        print(f"ckptname {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CkptnameError as exc:
        print(f"ckptname {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ImportError) as exc:
        print(f"ckptname {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
