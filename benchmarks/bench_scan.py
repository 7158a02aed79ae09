"""Finding the latest of 100,000 checkpoints: ckptname against the alternatives.

Builds a folder of checkpoint names from one run with the Keras-style
template ``ep{epoch:02d}-b{batch:05d}.keras`` (epochs past 99, batches past
99,999), plus the decoys real folders hold: temporary files of saves in
progress, ``.backup`` copies, another run's checkpoints, sidecars, and an empty
file left by a crash during a non-atomic save. Files were written in progress
order, decoys last (so they are the most recently modified).

Then it times, median of several repeats (the listing methods take turns in
each round, so that a change in the machine's load hits them alike), and
checks each answer:

* ``os.listdir`` alone: the floor for anything that lists the folder;
* ``ckptname.find_latest(root, template)``: by listing and reading names back;
* ``ckptname.find_latest(root)``: through the folder's state file;
* the ``parse`` package doing the same scan (``parse.compile``), which reads
  ``{epoch:02d}`` as at most two digits, so epoch 100 and batch 100000 vanish;
* Keras's own helper (``ModelCheckpoint._get_most_recently_modified_file_
  matching_pattern``), which turns fields into ``.*`` and picks by mtime;
* ``ckptname.scan(root, template)``: every record, against ``os.listdir``
  too, with the steps it takes timed one by one. Here 99% of the checkpoints
  have no sidecar (they were written the way Keras writes them), so each
  must be stat'ed once to drop empty files.

Then the same checkpoints as ``BatchAwareCheckpoint`` writes them, each with
its sidecar: a full scan there stats nothing.

Run: ``python benchmarks/bench_scan.py`` (``--count``, ``--repeats``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from itertools import filterfalse
from typing import Any

import ckptname
from ckptname._metadata import STATE_NAME, encode

TEMPLATE = "ep{epoch:02d}-b{batch:05d}.keras"
BATCHES_PER_EPOCH = 2500
SAVE_EVERY = 3


def build(root: str, count: int) -> str:
    """Write the folder; return the name of the true latest checkpoint."""
    mtime = 1_700_000_000.0
    last = ""
    for i in range(1, count + 1):
        batch = i * SAVE_EVERY
        epoch = (batch - 1) // BATCHES_PER_EPOCH + 1
        last = f"ep{epoch:02d}-b{batch:05d}.keras"
        path = os.path.join(root, last)
        with open(path, "wb") as fh:
            fh.write(b"w")
        os.utime(path, (mtime + i, mtime + i))
    top = count * SAVE_EVERY
    decoys: list[tuple[str, bytes]] = []
    for j in range(1, 2001):  # saves in progress, under temporary names
        b = top + j * SAVE_EVERY
        decoys.append(
            (f".ckptname-tmp-{j:04x}-ep{b // BATCHES_PER_EPOCH + 1:02d}-b{b}.keras", b"w")
        )
    for j in range(1000):  # copies someone made by hand
        b = top - j * SAVE_EVERY
        decoys.append((f"ep{(b - 1) // BATCHES_PER_EPOCH + 1:02d}-b{b:05d}.keras.backup", b"w"))
    for j in range(1000):  # a fine-tuning run that wrote into the same folder
        decoys.append((f"ep{j % 150 + 1:02d}-b{j * 7:05d}-finetune.keras", b"w"))
    for j in range(1000):  # metadata sidecars
        b = top - j * SAVE_EVERY
        decoys.append(
            (f"ep{(b - 1) // BATCHES_PER_EPOCH + 1:02d}-b{b:05d}.keras.ckptname.json", b"{}")
        )
    # A crash during a non-atomic save (Keras writes in place) leaves an empty
    # file under the next checkpoint's name.
    b = top + SAVE_EVERY
    decoys.append((f"ep{(b - 1) // BATCHES_PER_EPOCH + 1:02d}-b{b:05d}.keras", b""))
    later = mtime + count + 1
    for k, (name, data) in enumerate(decoys):
        path = os.path.join(root, name)
        with open(path, "wb") as fh:
            fh.write(data)
        os.utime(path, (later + k, later + k))
    state = {
        "format": "ckptname.state/1",
        "template": TEMPLATE,
        "latest": {"name": last, "epoch": None, "batch": top},
        "best": None,
        "time": later,
    }
    with open(os.path.join(root, STATE_NAME), "wb") as fh:
        fh.write(encode(state))
    return last


def median_ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    answer = fn()  # warm-up: page cache, compiled patterns
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        answer = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, answer


def interleaved_ms(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, tuple[float, Any]]:
    """Median times of several functions, run in turn in each round.

    Taking turns spreads any change in the machine's load over all of them,
    so that their ratios hold even where the times drift.
    """
    answers = {label: fn() for label, fn in fns.items()}  # warm-up
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            start = time.perf_counter()
            answers[label] = fn()
            times[label].append(time.perf_counter() - start)
    return {label: (statistics.median(times[label]) * 1000, answers[label]) for label in fns}


def parse_package(root: str) -> Callable[[], str | None]:
    import parse  # type: ignore[import-untyped]  # benchmark-only dependency

    pattern = parse.compile(TEMPLATE)

    def latest() -> str | None:
        best: tuple[int, int] | None = None
        best_name = None
        for name in os.listdir(root):
            result = pattern.parse(name)
            if result is None:
                continue
            key = (result["batch"], result["epoch"])
            if best is None or key > best:
                best, best_name = key, name
        return best_name

    return latest


def keras_helper(root: str) -> Callable[[], str | None] | str:
    try:
        from keras.src.callbacks.model_checkpoint import ModelCheckpoint
    except ImportError as exc:  # pragma: no cover - depends on the machine
        return f"not installed ({exc})"
    helper = ModelCheckpoint._get_most_recently_modified_file_matching_pattern
    pattern = os.path.join(root, TEMPLATE)

    def latest() -> str | None:
        # The helper never touches `self`; it is a function in a method's place.
        path = helper(None, pattern)
        return None if path is None else os.path.basename(path)

    return latest


def first_call_in_new_process(root: str) -> tuple[float, str]:
    """Median time of the first find_latest(root) in fresh interpreters, and its answer."""
    code = (
        "import time, ckptname\n"
        "t = time.perf_counter()\n"
        f"found = ckptname.find_latest({root!r})\n"
        "print(time.perf_counter() - t, found.name)\n"
    )
    runs = []
    answer = ""
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        seconds, answer = out.stdout.split()
        runs.append(float(seconds) * 1000)
    return statistics.median(runs), answer


def build_committed(root: str, count: int) -> str:
    """The same checkpoints as BatchAwareCheckpoint writes them: each with its sidecar."""
    last = ""
    for i in range(1, count + 1):
        batch = i * SAVE_EVERY
        epoch = (batch - 1) // BATCHES_PER_EPOCH + 1
        last = f"ep{epoch:02d}-b{batch:05d}.keras"
        path = os.path.join(root, last)
        with open(path + ".ckptname.json", "wb") as fh:
            fh.write(encode({"format": "ckptname.checkpoint/1", "name": last, "batch": batch}))
        with open(path, "wb") as fh:
            fh.write(b"w")
    state = {
        "format": "ckptname.state/1",
        "template": TEMPLATE,
        "latest": {"name": last, "epoch": None, "batch": count * SAVE_EVERY},
        "best": None,
        "time": 0.0,
    }
    with open(os.path.join(root, STATE_NAME), "wb") as fh:
        fh.write(encode(state))
    return last


def where_scan_time_goes(root: str, repeats: int) -> list[tuple[str, float]]:
    """The steps of a full local scan, each timed alone with ckptname's own pieces.

    ``scan`` lists with ``os.scandir`` (types, no stat), reads every name
    back, stats the matches no sidecar vouches for, makes one record each,
    and sorts them into progress order.
    """
    from ckptname._rank import sort_by_progress
    from ckptname._roots import layout_for
    from ckptname._scan import _LocalFolder, _make, _records_in_bulk

    layout = layout_for(TEMPLATE)
    parse = layout.leaf.parse

    def listing() -> list[str]:
        with _LocalFolder(root) as folder:
            return folder.files

    def make(matched: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        with _records_in_bulk():  # as scan makes them: no cycle collection meanwhile
            return [_make(root + "/" + n, n, v, TEMPLATE) for n, v in matched]

    names = listing()
    listed = set(names)
    matched = [(n, v) for n in names if ".ckptname" not in n for v in [parse(n)] if v is not None]
    unvouched = [n for n, _ in matched if n + ".ckptname.json" not in listed]
    fd = os.open(root, os.O_RDONLY)
    try:
        steps = [
            ("os.scandir, entry types (no stat)", listing),
            (
                "read every name back (Template.parse)",
                lambda: [parse(n) for n in names if ".ckptname" not in n],
            ),
            (
                f"stat the {len(unvouched):,} matches no sidecar vouches for",
                lambda: [os.stat(n, dir_fd=fd, follow_symlinks=False) for n in unvouched],
            ),
            (f"make {len(matched):,} Checkpoint records", lambda: make(matched)),
        ]
        records = make(matched)
        steps.append(("sort them into progress order", lambda: sort_by_progress(list(records))))
        times = interleaved_ms(dict(steps), repeats)
    finally:
        os.close(fd)
    return [(label, times[label][0]) for label, _ in steps]


def where_latest_time_goes(root: str, repeats: int) -> list[tuple[str, float]]:
    """The steps of find_latest(root, template), each timed alone with ckptname's own pieces."""
    from ckptname._roots import layout_for

    search = layout_for(TEMPLATE).fast_bytes
    assert search is not None
    broot = os.fsencode(root)
    raw = os.listdir(broot)
    joined = b"\x00".join([b"", *raw, b""])
    texts = search.findall(joined)
    refused = {int(max(texts, key=int))}
    steps = [
        ("os.listdir, names as bytes", lambda: os.listdir(broot)),
        ("join the names with NUL", lambda: b"\x00".join([b"", *raw, b""])),
        (
            f"search the counter of every name ({len(texts):,} found)",
            lambda: search.findall(joined),
        ),
        ("the newest counter (max by int)", lambda: max(texts, key=int)),
        (
            "the next newest, the newest being an empty file",
            lambda: max(filterfalse(refused.__contains__, list(map(int, texts)))),
        ),
    ]
    times = interleaved_ms(dict(steps), repeats)
    return [(label, times[label][0]) for label, _ in steps]


def print_rows(rows: list[tuple[str, float | None, str, str]], floor: float) -> None:
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{'method':<{width}}  {'time':>10}  {'vs floor':>8}  correct  answer")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 8}  -------  {'-' * 28}")
    for label, ms, ok, answer in rows:
        t = "-" if ms is None else (f"{ms:.3f} ms" if ms < 1 else f"{ms:.1f} ms")
        ratio = "-" if ms is None else f"{ms / floor:.2f}x"
        print(f"{label:<{width}}  {t:>10}  {ratio:>8}  {ok:<7}  {answer}")


def print_breakdown(
    steps: list[tuple[str, float]], total_ms: float, floor: float, what: str = "a full scan's"
) -> None:
    width = max(len(label) for label, _ in steps)
    print(f"\nwhere {what} {total_ms:.0f} ms go (each step timed alone):")
    for label, ms in steps:
        print(f"  {label:<{width}}  {ms:>7.1f} ms  {ms / floor:>5.2f}x floor")
    total = sum(ms for _, ms in steps)
    print(f"  {'sum of the steps':<{width}}  {total:>7.1f} ms  {total / floor:>5.2f}x floor")


def timed_build(builder: Any, root: str, count: int) -> tuple[str, int, float]:
    """Build a folder with ``builder``: its true latest, its entry count, the seconds it took."""
    start = time.perf_counter()
    truth = builder(root, count)
    seconds = time.perf_counter() - start
    return truth, len(os.listdir(root)), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="checkpoints to write")
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per method")
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="ckptname-bench-")
    committed = tempfile.mkdtemp(prefix="ckptname-bench-")
    try:
        truth, entries, seconds = timed_build(build, root, args.count)
        print(
            f"{entries:,} entries ({args.count:,} checkpoints of {TEMPLATE!r} + decoys) "
            f"in {root}, built in {seconds:.1f} s; "
            f"true latest: {truth}; median of {args.repeats} runs"
        )
        rows: list[tuple[str, float | None, str, str]] = []

        def ours_scanning() -> str | None:
            found = ckptname.find_latest(root, TEMPLATE)
            return None if found is None else found.name

        def ours_state() -> str | None:
            found = ckptname.find_latest(root)
            return None if found is None else found.name

        def ours_scan_all() -> str | None:
            records = ckptname.scan(root, TEMPLATE)
            return records[-1].name if records else None

        def ours_scan_sizes() -> str | None:
            records = ckptname.scan(root, TEMPLATE, sizes=True)
            return records[-1].name if records else None

        listing = "ckptname.find_latest(root, template), listing"
        full = "ckptname.scan(root, template)[-1], all records"
        fast = interleaved_ms(
            {
                "floor": lambda: os.listdir(root),
                # find_latest lists with bytes names (it decodes only the few
                # it parses); shown so that what it stands on is visible.
                "bytes": lambda: os.listdir(os.fsencode(root)),
                listing: ours_scanning,
                full: ours_scan_all,
            },
            args.repeats,
        )
        floor = fast["floor"][0]
        rows.append(("os.listdir alone (the floor)", floor, "-", f"{entries:,} names"))
        rows.append(
            ("  os.listdir, names as bytes", fast["bytes"][0], "-", "what find_latest lists")
        )
        ms, answer = fast[listing]
        rows.append((listing, ms, "yes" if answer == truth else "NO", str(answer)))
        scan_ms, answer = fast[full]
        rows.append((full, scan_ms, "yes" if answer == truth else "NO", str(answer)))

        for label, fn, repeats in [
            ("ckptname.find_latest(root), state file", ours_state, 1000),
            ("  scan(root, template, sizes=True)", ours_scan_sizes, max(3, args.repeats // 3)),
            ("parse.compile(template), same scan", parse_package(root), args.repeats),
        ]:
            ms, answer = median_ms(fn, repeats)
            rows.append((label, ms, "yes" if answer == truth else "NO", str(answer)))
        cold, answer = first_call_in_new_process(root)
        rows.insert(
            5,
            (
                "  the same, first call in a new process",
                cold,
                "yes" if answer == truth else "NO",
                f"{answer} (compiles the template)",
            ),
        )
        helper = keras_helper(root)
        if isinstance(helper, str):
            rows.append(("Keras _get_most_recently_modified_file_...", None, "-", helper))
        else:
            ms, answer = median_ms(helper, max(3, args.repeats // 3))
            rows.append(
                (
                    "Keras ModelCheckpoint mtime helper",
                    ms,
                    "yes" if answer == truth else "NO",
                    str(answer),
                )
            )
        print_rows(rows, floor)
        print_breakdown(
            where_latest_time_goes(root, args.repeats), fast[listing][0], floor, "find_latest's"
        )
        print_breakdown(where_scan_time_goes(root, args.repeats), scan_ms, floor)

        # The same checkpoints as the callback writes them: every one has its
        # sidecar, which vouches for it, so a full scan stats nothing.
        truth, entries, seconds = timed_build(build_committed, committed, args.count)
        print(
            f"\n{entries:,} entries: the same {args.count:,} checkpoints as BatchAwareCheckpoint "
            f"writes them (each with its sidecar, no decoys), built in {seconds:.1f} s"
        )

        def committed_scan() -> str | None:
            records = ckptname.scan(committed, TEMPLATE)
            return records[-1].name if records else None

        def committed_latest() -> str | None:
            found = ckptname.find_latest(committed, TEMPLATE)
            return None if found is None else found.name

        times = interleaved_ms(
            {
                "floor": lambda: os.listdir(committed),
                listing: committed_latest,
                full: committed_scan,
            },
            args.repeats,
        )
        floor = times["floor"][0]
        rows = [("os.listdir alone (the floor)", floor, "-", f"{entries:,} names")]
        for label in (listing, full):
            ms, answer = times[label]
            rows.append((label, ms, "yes" if answer == truth else "NO", str(answer)))
        print_rows(rows, floor)
        print_breakdown(where_scan_time_goes(committed, args.repeats), times[full][0], floor)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(committed, ignore_errors=True)


if __name__ == "__main__":
    main()
