"""The ``ckptname`` command: look at checkpoint folders and templates from a shell.

Exit codes: 0 success; 1 nothing found, or a file system or network error
(``OSError``, which an object store's failure is as a ``StorageError``, and
any error a storage library raised itself; also, silently, when the program
reading the output has gone, as in ``ckptname ls ROOT | head -1``); 2 bad
usage: a bad template (names too long to save included), bad arguments or
values, or an optional package the command needs that is not installed. An
error prints one line (or a template with a caret) on stderr, never a
traceback; where the library's message says how to fix a call (``pass
mode='min'``), the command line says it with its flags (``pass --mode min``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import select
import stat
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._errors import CkptnameError, RenderError, TemplateError
from ._metadata import read_metadata
from ._rank import COUNTERS, as_counter, metric_value
from ._retention import apply_retention, plan_retention
from ._scan import Checkpoint, best_per_group, find_best, find_latest, scan
from ._template import Template
from ._transaction import check_name_length
from ._version import __version__

if TYPE_CHECKING:
    from typing import TypeAlias

    _Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_IO_ERROR = 1
EXIT_USAGE = 2

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


def _values(items: Sequence[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise _UsageError(f"value {item!r} is not key=value; write e.g. epoch=3")
        values[key] = _value(text)
    return values


def cmd_render(args: argparse.Namespace) -> int:
    t = Template(args.template)
    print(t.render(_values(args.values)))
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
    if not any(c in t.fields for c in COUNTERS):
        notes.append(
            "no epoch, batch or batch_in_epoch field: the latest checkpoint is found from "
            "the metadata sidecars, then from modification times; add {epoch} or {batch}"
        )
    for f in t.field_views:
        if f.name in COUNTERS and f.kind != "int":
            typed = f"<{f.name}:d>" if t.style == "angle" else f"{{{f.name}:d}}"
            what = "has no format type" if f.kind == "shape" else f"is read as {f.kind}"
            notes.append(
                f"counter '{f.name}' {what}, so names whose '{f.name}' is not a number "
                f"(e.g. '{f.name}=final') match too; they are not part of the sequence (never "
                f"the latest, never pruned); give it an integer type, e.g. {typed}"
            )
    if "batch" in t.fields:
        notes.append(
            "{batch} is the global batch count here (Keras's ModelCheckpoint writes the "
            "index inside the epoch there; that is {batch_in_epoch})"
        )
    for f in t.field_views:
        if f.name.startswith("val_"):
            notes.append(
                f"'{f.name}' is a validation metric: it exists only at epoch end, so save "
                "with save_freq='epoch'"
            )
        if f.kind == "float":
            notes.append(
                f"'{f.name}' is rounded in the name, so close values share a name; "
                "find_best breaks such ties with the exact value in the metadata sidecar"
            )
        if f.spec == "" and f.name not in COUNTERS:
            notes.append(
                f"'{f.name}' has no format type: it is read back by its shape, and a "
                f"string there cannot hold a dot; give it a type, e.g. {{{f.name}:s}}"
            )
    literal = "".join(t.literals)
    bad = sorted(_WINDOWS_INVALID & set(literal))
    if bad:
        notes.append(f"{', '.join(repr(c) for c in bad)} cannot appear in Windows file names")
    return notes


def cmd_check(args: argparse.Namespace) -> int:
    values = _values(args.values)
    try:
        t = Template(args.template)
        # Names a save cannot write (a local save adds a temporary name).
        check_name_length(t)
        if values:
            check_name_length(t, values)
    except (TemplateError, RenderError) as exc:
        print(f"invalid: {exc}")
        return EXIT_USAGE
    print(f"template:   {t.text}")
    print(f"style:      {t.style}")
    kinds: list[str] = []
    seen: set[str] = set()
    for f in t.field_views:
        if f.name in seen:
            continue
        seen.add(f.name)
        kind = "read by shape" if f.kind == "shape" else f.kind
        kinds.append(f"{f.name} ({kind}{', ' + f.spec if f.spec else ''})")
    print(f"fields:     {', '.join(kinds) if kinds else '(none)'}")
    why_not = t.why_not_reversible
    if why_not is not None:
        print(f"reversible: no: {why_not}")
        return EXIT_USAGE
    print("reversible: yes")
    notes = check_notes(t)
    for note in notes:
        print(f"note:       {note}")
    return EXIT_OK


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:.1f} {unit}"


def _age(record: Checkpoint, now: float) -> str:
    mtime = record.mtime
    if mtime is None and "://" not in record.path:
        try:
            mtime = os.stat(record.path).st_mtime
        except OSError:
            mtime = None
    if mtime is None:
        return "-"
    seconds = max(0.0, now - mtime)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def _records_json(records: Sequence[Checkpoint]) -> str:
    return "[" + ",\n ".join(_dump(r.as_dict()) for r in records) + "]"


def cmd_ls(args: argparse.Namespace) -> int:
    by = _by_fields(args.by)
    records = scan(args.root, args.template, sizes=True)  # the table shows sizes and ages
    if records and by:
        _check_by(by, records)
    if args.json:
        if by:
            print(_groups_json(_groups(records, by), by))
        else:
            print(_records_json(records))
        return EXIT_OK if records else EXIT_NOT_FOUND
    if not records:
        print(f"no checkpoints under {args.root!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    # A sweep tree lists run by run (by the values of its folder fields, as
    # numbers), each run in progress order.
    records = sorted(records, key=_run_key)
    metrics: list[str] = []
    for record in records:
        for key in record.values:
            if key not in COUNTERS and key not in metrics and key not in by:
                metrics.append(key)
    header = ["name", "epoch", "batch", *metrics, "size", "age"]
    now = time.time()

    def row(record: Checkpoint) -> list[str]:
        return (
            [record.name, _cell(record.epoch), _cell(record.batch)]
            + [_cell(record.values.get(m)) for m in metrics]
            + [_size(record.size), _age(record, now)]
        )

    if not by:
        _print_table(header, [row(r) for r in records])
        return EXIT_OK
    # One table, aligned across groups; each group under a heading, as
    # `ls` prints folders.
    groups = _groups(records, by)
    tables = {group: [row(r) for r in members] for group, members in groups.items()}
    widths = _widths(header, [r for rows in tables.values() for r in rows])
    for i, (group, rows) in enumerate(tables.items()):
        if i:
            print()
        print(f"{_group_words(by, group)}:")
        _print_table(header, rows, widths)
    return EXIT_OK


def _by_fields(text: str | None) -> tuple[str, ...]:
    """The fields of ``--by lr,seed``; ``()`` without ``--by``."""
    if text is None:
        return ()
    fields = tuple(part.strip() for part in text.split(","))
    if not all(fields):
        raise _UsageError(
            f"--by takes field names separated by commas, e.g. --by lr,seed; got {text!r}"
        )
    return fields


def _check_by(by: Sequence[str], records: Sequence[Checkpoint]) -> None:
    """Refuse a ``--by`` field that the checkpoints' template does not have."""
    for text in dict.fromkeys(r.template for r in records):
        if text is None:
            continue
        known = Template(text).fields
        for name in by:
            if name not in known:
                raise _UsageError(
                    f"cannot group by {name!r}: it is not a field of template {text!r} "
                    f"(fields: {', '.join(known)})"
                )


def _groups(
    records: Sequence[Checkpoint], by: Sequence[str]
) -> dict[tuple[Any, ...], list[Checkpoint]]:
    """Records by the values of the ``by`` fields, groups in order, numbers as numbers."""
    groups: dict[tuple[Any, ...], list[Checkpoint]] = {}
    for record in records:
        groups.setdefault(tuple(record.values[f] for f in by), []).append(record)
    return {group: groups[group] for group in sorted(groups, key=_values_key)}


def _values_key(values: Sequence[Any]) -> tuple[Any, ...]:
    # Numbers before text, each in its own order, so mixed values still sort.
    return tuple((0, v) if isinstance(v, (int, float)) and v == v else (1, str(v)) for v in values)


def _group_words(by: Sequence[str], group: Sequence[Any]) -> str:
    return " ".join(f"{name}={_cell(value)}" for name, value in zip(by, group))


def _groups_json(groups: dict[tuple[Any, ...], list[Checkpoint]], by: Sequence[str]) -> str:
    return (
        "["
        + ",\n ".join(
            _dump({"group": dict(zip(by, group)), "checkpoints": [r.as_dict() for r in members]})
            for group, members in groups.items()
        )
        + "]"
    )


def _widths(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[int]:
    return [max(len(c) for c in column) for column in zip(header, *rows)]


def _print_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    widths: Sequence[int] | None = None,
    *,
    left: Sequence[int] = (0,),
) -> None:
    """Columns separated by two spaces: text columns (``left``) flush left, numbers right."""
    widths = widths or _widths(header, rows)
    for cells in [header, *rows]:
        line = "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )
        print(line.rstrip())


@functools.lru_cache(maxsize=16)
def _run_fields(template: str | None) -> tuple[str, ...]:
    if template is None:
        return ()
    return tuple(f for part in Template(template).segments[:-1] for f in part.fields)


def _run_key(record: Checkpoint) -> tuple[Any, ...]:
    return _values_key([record.values.get(f) for f in _run_fields(record.template)])


def _print_one(record: Checkpoint | None, args: argparse.Namespace, what: str) -> int:
    if record is None:
        print(f"no {what} checkpoint under {args.root!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(_dump(record.as_dict()) if args.json else record.path)
    return EXIT_OK


def cmd_latest(args: argparse.Namespace) -> int:
    return _print_one(find_latest(args.root, args.template), args, "complete")


def cmd_best(args: argparse.Namespace) -> int:
    by = _by_fields(args.by)
    if not by:
        record = find_best(args.root, args.monitor, args.mode, args.template)
        return _print_one(record, args, f"{args.monitor!r}")
    records = scan(args.root, args.template)
    if not records:
        print(f"no checkpoints under {args.root!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    _check_by(by, records)
    best = best_per_group(records, args.monitor, args.mode, by=by)
    if not best:
        print(f"no {args.monitor!r} checkpoint under {args.root!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        print(_records_json(list(best.values())))
        return EXIT_OK
    # The best of each group: its group, its value, its counters, its name.
    counters = [
        c for c in ("epoch", "batch") if any(getattr(r, c) is not None for r in best.values())
    ]
    header = [*by, args.monitor, *counters, "name"]
    rows = [
        [_cell(v) for v in group]
        + [_cell(metric_value(record, args.monitor)[0])]
        + [_cell(getattr(record, c)) for c in counters]
        + [record.name]
        for group, record in best.items()
    ]
    _print_table(header, rows, left=(len(header) - 1,))
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    if args.keep_last is None and args.keep_best is None:
        raise _UsageError("say what to keep: --keep-last N and/or --keep-best K --monitor M")
    records = scan(args.root, args.template)
    if not records:
        print(f"no checkpoints under {args.root!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    by_time = [r for r in records if _ordered_by_mtime(r)]
    if by_time and not args.order_by_mtime:
        raise _UsageError(
            f"{len(by_time)} checkpoint(s) have no epoch, batch or batch_in_epoch in their "
            f"names (template {by_time[0].template!r}) or sidecars, so only modification "
            "times could tell the newest, and copies and restores change those; pass "
            "--order-by-mtime to prune in modification-time order anyway"
        )
    if by_time:
        print(
            f"order:  by modification time (--order-by-mtime): {len(by_time)} checkpoint(s) "
            "have no counter in their names or sidecars"
        )
    plan = plan_retention(
        records,
        keep_last=args.keep_last,
        keep_best=args.keep_best,
        monitor=args.monitor,
        mode=args.mode,
    )
    for record in records:
        if record in plan.keep:
            why = ", ".join(plan.reasons.get(record.path, ()))
            print(f"keep    {record.name}" + (f"  ({why})" if why else ""))
        else:
            print(f"delete  {record.name}")
    if not plan.delete:
        print("nothing to delete")
        return EXIT_OK
    if not args.yes:
        print(f"{len(plan.delete)} checkpoint(s) would be deleted; pass --yes to delete them")
        return EXIT_OK
    deleted = apply_retention(plan, args.root, template=args.template)
    print(f"deleted {len(deleted)} checkpoint(s) and their sidecars")
    return EXIT_OK


def _ordered_by_mtime(record: Checkpoint) -> bool:
    """Whether only the file's modification time places ``record`` in progress order."""
    if any(c in record.values for c in COUNTERS):
        return False  # a counter in the name (or a name outside the sequence)
    meta = record.metadata or {}
    return all(as_counter(meta.get(c)) is None for c in COUNTERS)


def _metric(record: Checkpoint, metric: str) -> float | None:
    value = record.values.get(metric)
    if value is None:
        try:
            value = read_metadata(record.path).get("metrics", {}).get(metric)
        except (OSError, CkptnameError):
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def cmd_plot(args: argparse.Namespace) -> int:
    try:
        import matplotlib
    except ImportError:
        raise _UsageError(
            "plot needs matplotlib; install it with pip install 'ckptname[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = scan(args.root, args.template)
    runs: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        y = _metric(record, args.metric)
        x = record.batch if record.batch is not None else record.epoch
        if y is None or x is None:
            continue
        run = "/".join(record.name.split("/")[:-1]) or os.path.basename(os.path.normpath(args.root))
        runs.setdefault(run, []).append((float(x), y))
    if not runs:
        print(f"no checkpoint under {args.root!r} has a value for {args.metric!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run, points in sorted(runs.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=run)
    uses_batch = any(r.batch is not None for r in records)
    ax.set_xlabel("global batch" if uses_batch else "epoch")
    ax.set_ylabel(args.metric)
    ax.set_title(f"{args.metric} in {args.root}")
    if len(runs) > 1:
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    output = args.output or f"ckptname-{args.metric.replace('/', '_')}.png"
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    print(output)
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
    _add_folder_commands(sub)
    _add_template_commands(sub)
    return parser


def _add_folder_commands(sub: _Subparsers) -> None:
    """The commands that read (and prune) a folder of checkpoints."""
    p = _folder_command(sub, "ls", "list checkpoints in progress order", cmd_ls)
    _template_option(p, json_help="one JSON record per checkpoint")
    _by_option(p, "list group by group, e.g. --by lr (one table, a heading per group)")

    p = _folder_command(sub, "latest", "the newest complete checkpoint", cmd_latest)
    _template_option(p, json_help="print the record, not the path")

    p = _folder_command(sub, "best", "the best checkpoint by a metric", cmd_best)
    p.add_argument("--monitor", "-m", required=True, help="e.g. val_loss")
    _mode_option(p)
    _template_option(p, json_help="print the record, not the path")
    _by_option(p, "the best of each group, as a table, e.g. --by lr,seed")

    p = _folder_command(sub, "prune", "show (and with --yes apply) a retention plan", cmd_prune)
    p.add_argument("--keep-last", type=int, metavar="N")
    p.add_argument("--keep-best", type=int, metavar="K")
    p.add_argument("--monitor", "-m")
    _mode_option(p)
    _template_option(p)
    p.add_argument(
        "--order-by-mtime",
        action="store_true",
        help="prune checkpoints whose names and sidecars hold no counter by modification time",
    )
    p.add_argument("--yes", action="store_true", help="delete; without it, only show the plan")

    p = _folder_command(
        sub, "plot", "a metric against the global batch, one line per run", cmd_plot
    )
    p.add_argument("--metric", "-m", required=True)
    _template_option(p)
    p.add_argument("-o", "--output", help="PNG file (default: ckptname-METRIC.png)")


def _add_template_commands(sub: _Subparsers) -> None:
    """The commands that work on a template alone."""
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
    p.add_argument(
        "values",
        nargs="*",
        metavar="key=value",
        help="values fixed for a run (extras): are its checkpoint names short enough to save",
    )
    p.set_defaults(func=cmd_check)


def _folder_command(
    sub: _Subparsers, name: str, help: str, func: Callable[[argparse.Namespace], int]
) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help)
    p.add_argument("root", help="a folder or a URL (s3://bucket/run)")
    p.set_defaults(func=func)
    return p


def _template_option(p: argparse.ArgumentParser, *, json_help: str | None = None) -> None:
    p.add_argument(
        "--template",
        "-t",
        help="template relative to ROOT (default: the one in ROOT's state file)",
    )
    if json_help is not None:
        p.add_argument("--json", action="store_true", help=json_help)


def _by_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--by", metavar="FIELD[,FIELD...]", help=help)


def _mode_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=("min", "max", "auto"), default="auto")


def _in_cli_words(exc: BaseException) -> str:
    """The error's message, with its way out spelled as command-line flags."""
    message = str(exc)
    advice = getattr(exc, "advice", None)
    if advice is not None:
        message = message.replace(advice.api, advice.cli)
    return message


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone; if so, silence it.

    Unix tools exit quietly when the program reading their output stops
    (``ckptname ls ROOT | head -1``). Standard output is pointed at
    ``/dev/null`` so that the flush at interpreter exit does not fail again.
    A broken pipe elsewhere (a network connection) is not this.
    """
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, OSError, ValueError):
        return False  # not a real descriptor (a test's capture), or no poll here
    if not any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events):
        return False
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except OSError:
        pass
    return True


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
    except BrokenPipeError as exc:
        if _stdout_closed():
            return EXIT_IO_ERROR  # the reader went away (`ckptname ls | head -1`): quietly
        print(f"ckptname {args.command}: {_in_cli_words(exc)}", file=sys.stderr)
        return EXIT_IO_ERROR
    except OSError as exc:  # before CkptnameError: a failed save is both
        print(f"ckptname {args.command}: {_in_cli_words(exc)}", file=sys.stderr)
        return EXIT_IO_ERROR
    except (_UsageError, CkptnameError, ValueError, LookupError, ImportError) as exc:
        print(f"ckptname {args.command}: {_in_cli_words(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _from_storage_library(exc):
            raise
        # An error a storage library raised that ckptname did not wrap: still one line.
        print(f"ckptname {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_IO_ERROR


# Libraries below fsspec whose own errors mean that the storage failed.
_STORAGE_LIBRARIES = frozenset(
    {"fsspec", "s3fs", "gcsfs", "adlfs", "botocore", "aiobotocore", "aiohttp", "urllib3"}
)


def _from_storage_library(exc: BaseException) -> bool:
    return any(
        cls.__module__.partition(".")[0] in _STORAGE_LIBRARIES for cls in type(exc).__mro__
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
