"""Finding the latest of many checkpoints, and full scans: ckptname against the alternatives.

For each size (10,000, 100,000 and 1,000,000 checkpoints by default; the
largest on tmpfs at /dev/shm where there is one), builds a folder of
checkpoint names from one run with the Keras-style template
``ep{epoch:02d}-b{batch:05d}.keras`` (epochs past 99, batches past 99,999),
plus the decoys real folders hold: temporary files of saves in progress,
``.backup`` copies, another run's checkpoints, sidecars, and an empty file
left by a crash during a non-atomic save. Files were written in progress
order, decoys last (so they are the most recently modified).

Then it times, median of several repeats (the listing methods take turns
with ``os.listdir`` in each round, so that a change in the machine's load
hits them alike; a method's ratio is to the listings of its own rounds), and
checks each answer:

* ``os.listdir`` alone: the floor for anything that lists the folder;
* ``ckptname.find_latest(root, template)``: by listing and reading names back;
* ``ckptname.find_latest(root)``: through the folder's state file;
* ``ckptname.scan(root, template)``: every record. Here 99% of the
  checkpoints have no sidecar (they were written the way Keras writes them),
  so each must be stat'ed once to drop empty files: the floor of that is
  shown too (a typed listing and one ``stat`` per match, nothing else);
* the ``parse`` package doing the same scan (``parse.compile``), which reads
  ``{epoch:02d}`` as at most two digits, so epoch 100 and batch 100000 vanish;
* Keras's own helper (``ModelCheckpoint._get_most_recently_modified_file_
  matching_pattern``), which turns fields into ``.*`` and picks by mtime.

Then the same checkpoints as ``BatchAwareCheckpoint`` writes them, each with
its sidecar: a full scan there stats nothing. Then the peak memory of a full
scan and of ``os.listdir`` (``tracemalloc``, each in a fresh interpreter).
Where a step-by-step breakdown is printed, each step is timed alone with
ckptname's own pieces. The last table holds the goals and whether each is met.

Run: ``python benchmarks/bench_scan.py`` (``--sizes``, ``--repeats``,
``--big-dir``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import ckptname
from ckptname._metadata import STATE_NAME, encode

TEMPLATE = "ep{epoch:02d}-b{batch:05d}.keras"
BATCHES_PER_EPOCH = 2500
SAVE_EVERY = 3
SIDECAR = ".ckptname.json"

# The goals: find_latest within 1.25x os.listdir, a full scan within
# 3x (in both folders), and a scan's peak memory within 2x that of os.listdir.
GOAL_LATEST = 1.25
GOAL_SCAN = 3.0
GOAL_MEMORY = 2.0


def write(path: str, data: bytes, mtime: float | None = None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def name_of(batch: int) -> str:
    return f"ep{(batch - 1) // BATCHES_PER_EPOCH + 1:02d}-b{batch:05d}.keras"


def build(root: str, count: int) -> str:
    """Write the folder as Keras leaves it, with decoys; return the true latest checkpoint."""
    mtime = 1_700_000_000.0
    last = ""
    for i in range(1, count + 1):
        last = name_of(i * SAVE_EVERY)
        write(os.path.join(root, last), b"w", mtime + i)
    top = count * SAVE_EVERY
    decoys: list[tuple[str, bytes]] = []
    for j in range(1, 2001):  # saves in progress, under temporary names
        b = top + j * SAVE_EVERY
        decoys.append((f".ckptname-tmp-{j:04x}-{name_of(b)}", b"w"))
    for j in range(1000):  # copies someone made by hand
        decoys.append((name_of(top - j * SAVE_EVERY) + ".backup", b"w"))
    for j in range(1000):  # a fine-tuning run that wrote into the same folder
        decoys.append((f"ep{j % 150 + 1:02d}-b{j * 7:05d}-finetune.keras", b"w"))
    for j in range(1000):  # metadata sidecars
        decoys.append((name_of(top - j * SAVE_EVERY) + SIDECAR, b"{}"))
    # A crash during a non-atomic save (Keras writes in place) leaves an empty
    # file under the next checkpoint's name.
    decoys.append((name_of(top + SAVE_EVERY), b""))
    later = mtime + count + 1
    for k, (name, data) in enumerate(decoys):
        write(os.path.join(root, name), data, later + k)
    state = {
        "format": "ckptname.state/1",
        "template": TEMPLATE,
        "latest": {"name": last, "epoch": None, "batch": top},
        "best": None,
        "time": later,
    }
    write(os.path.join(root, STATE_NAME), encode(state))
    return last


def build_committed(root: str, count: int) -> str:
    """The same checkpoints as BatchAwareCheckpoint writes them: each with its sidecar."""
    last = ""
    for i in range(1, count + 1):
        batch = i * SAVE_EVERY
        last = name_of(batch)
        path = os.path.join(root, last)
        sidecar = {"format": "ckptname.checkpoint/1", "name": last, "batch": batch}
        write(path + SIDECAR, encode(sidecar))
        write(path, b"w")
    state = {
        "format": "ckptname.state/1",
        "template": TEMPLATE,
        "latest": {"name": last, "epoch": None, "batch": count * SAVE_EVERY},
        "best": None,
        "time": 0.0,
    }
    write(os.path.join(root, STATE_NAME), encode(state))
    return last


# --------------------------------------------------------------------------- timing


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


# --------------------------------------------------------------------------- alternatives


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


def keras_helper_ms(root: str, repeats: int) -> tuple[float | None, str]:
    """Median time and answer of Keras's mtime helper, in a fresh interpreter.

    Keras loads its backend, and a process with TensorFlow in it holds so many
    objects that every cyclic collection costs more: the other methods are
    timed without it.
    """
    code = (
        "import json, os, statistics, sys, time\n"
        "try:\n"
        "    from keras.src.callbacks.model_checkpoint import ModelCheckpoint\n"
        "except ImportError as exc:\n"
        "    print(json.dumps([None, f'not installed ({exc})'])); sys.exit()\n"
        "helper = ModelCheckpoint._get_most_recently_modified_file_matching_pattern\n"
        f"pattern = os.path.join({root!r}, {TEMPLATE!r})\n"
        "times = []\n"
        f"for _ in range({repeats + 1}):\n"
        "    start = time.perf_counter()\n"
        # The helper never touches `self`; it is a function in a method's place.
        "    path = helper(None, pattern)\n"
        "    times.append(time.perf_counter() - start)\n"
        "answer = None if path is None else os.path.basename(path)\n"
        "print(json.dumps([statistics.median(times[1:]) * 1000, answer]))\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    ms, answer = json.loads(out.stdout.splitlines()[-1])
    return ms, str(answer)


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


def peak_memory_mb(root: str, call: str) -> tuple[float, float]:
    """Peak and retained memory (tracemalloc, MB) of ``call`` in a fresh interpreter.

    ``call`` is ``"listdir"`` or ``"scan"``; retained is what its result holds.
    """
    code = (
        "import json, os, sys, tracemalloc, ckptname\n"
        f"root, call = {root!r}, {call!r}\n"
        "tracemalloc.start()\n"
        f"result = os.listdir(root) if call == 'listdir' else ckptname.scan(root, {TEMPLATE!r})\n"
        "current, peak = tracemalloc.get_traced_memory()\n"
        "print(json.dumps([peak / 2**20, current / 2**20]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, current = json.loads(out.stdout)
    return peak, current


# --------------------------------------------------------------------------- where the time goes


def where_latest_time_goes(root: str, repeats: int) -> list[tuple[str, float]]:
    """The steps of find_latest(root, template), each timed alone with ckptname's own pieces."""
    from ckptname._rank import as_counter
    from ckptname._scan import _sample_step

    leaf = ckptname.Template(TEMPLATE)
    broot = os.fsencode(root)
    raw = os.listdir(broot)
    sample = raw[:: _sample_step(len(raw))]
    _, values = leaf.parse_many([os.fsdecode(n) for n in sample])
    bound = max(c for v in values if (c := as_counter(v["batch"])) is not None)
    found = leaf.names_at_least(raw, "batch", bound)
    assert found is not None
    names = [os.fsdecode(n) for n in found]
    newest = sorted(names, key=lambda n: leaf.parse(n)["batch"])[-2:]  # type: ignore[index]
    steps = [
        ("os.listdir, names as bytes", lambda: os.listdir(broot)),
        (
            f"read back a sample of {len(sample)} names: newest batch {bound:,}",
            lambda: leaf.parse_many([os.fsdecode(n) for n in sample]),
        ),
        (
            f"search every name for a batch of at least that ({len(found)} found)",
            lambda: leaf.names_at_least(raw, "batch", bound),
        ),
        (f"read back those {len(found)}", lambda: leaf.parse_many(names)),
        (
            "stat the newest (empty) and the next",
            lambda: [os.stat(os.path.join(root, n)) for n in newest],
        ),
    ]
    times = interleaved_ms(dict(steps), repeats)
    return [(label, times[label][0]) for label, _ in steps]


def where_scan_time_goes(root: str, repeats: int) -> list[tuple[str, float]]:
    """The steps of a full local scan, each timed alone with ckptname's own pieces.

    ``scan`` lists with ``os.scandir`` (types, no stat), reads every name back
    and finds the sidecars in the same search, stats the matches no sidecar
    vouches for, makes one record each, and sorts them into progress order.
    """
    from ckptname._listing import Folder, _LocalFolder, _RecordMaker, records_in_bulk
    from ckptname._rank import sort_by_progress
    from ckptname._roots import layout_for, open_root

    layout = layout_for(TEMPLATE)
    where = open_root(root)
    make = _RecordMaker(where, layout, Folder(where.inner, "", {}, False))

    def listing() -> list[str]:
        with _LocalFolder(root) as folder:
            return folder.files

    files = listing()
    names, values, with_sidecar = layout.leaf.read_listing(files, SIDECAR)
    unvouched = [n for n in names if n not in with_sidecar]

    # As scan reads and makes them: with no cycle collection meanwhile.
    def read_back() -> Any:
        with records_in_bulk():
            return layout.leaf.read_listing(files, SIDECAR)

    def make_records() -> list[Any]:
        with records_in_bulk():
            return make.many(names, values)

    fd = os.open(root, os.O_RDONLY)
    try:
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("os.scandir, entry types (no stat)", listing),
            (f"read every name back, and find {len(with_sidecar):,} sidecars", read_back),
            (
                f"stat the {len(unvouched):,} matches no sidecar vouches for",
                lambda: [os.stat(n, dir_fd=fd, follow_symlinks=False) for n in unvouched],
            ),
            (f"make {len(names):,} Checkpoint records", make_records),
        ]
        records = make_records()
        steps.append(("sort them into progress order", lambda: sort_by_progress(list(records))))
        times = interleaved_ms(dict(steps), repeats)
    finally:
        os.close(fd)
    return [(label, times[label][0]) for label, _ in steps]


def stat_floor(root: str) -> Callable[[], int]:
    """A typed listing and one stat per match, nothing else: what a scan must do here."""
    leaf = ckptname.Template(TEMPLATE)
    with os.scandir(root) as it:
        matches = set(leaf.parse_many([e.name for e in it])[0])

    def floor() -> int:
        fd = os.open(root, os.O_RDONLY)
        try:
            with os.scandir(fd) as it:
                files = [e.name for e in it if e.is_file(follow_symlinks=False)]
            return sum(
                os.stat(n, dir_fd=fd, follow_symlinks=False).st_size > 0
                for n in files
                if n in matches
            )
        finally:
            os.close(fd)

    return floor


# --------------------------------------------------------------------------- printing


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
    steps: list[tuple[str, float]], total_ms: float, floor: float, what: str
) -> None:
    width = max(len(label) for label, _ in steps)
    print(f"\nwhere {what} {total_ms:.0f} ms go (each step timed alone):")
    for label, ms in steps:
        print(f"  {label:<{width}}  {ms:>8.1f} ms  {ms / floor:>5.2f}x floor")
    total = sum(ms for _, ms in steps)
    print(f"  {'sum of the steps':<{width}}  {total:>8.1f} ms  {total / floor:>5.2f}x floor")


def timed_build(builder: Any, root: str, count: int) -> tuple[str, int, float]:
    """Build a folder with ``builder``: its true latest, its entry count, the seconds it took."""
    start = time.perf_counter()
    truth = builder(root, count)
    seconds = time.perf_counter() - start
    return truth, len(os.listdir(root)), seconds


def yes(answer: Any, truth: str) -> str:
    return "yes" if answer == truth else "NO"


# --------------------------------------------------------------------------- one size


def run_size(
    count: int, base: str, repeats: int, goals: list[tuple[str, str, float, float]]
) -> None:
    root = tempfile.mkdtemp(prefix="ckptname-bench-", dir=base)
    committed = tempfile.mkdtemp(prefix="ckptname-bench-", dir=base)
    size = f"{count:,}"
    try:
        truth, entries, seconds = timed_build(build, root, count)
        print(
            f"\n=== {size} checkpoints of {TEMPLATE!r} + decoys: {entries:,} entries in {root}, "
            f"built in {seconds:.1f} s; true latest: {truth}; median of {repeats} runs"
        )

        def ours_latest() -> str | None:
            found = ckptname.find_latest(root, TEMPLATE)
            return None if found is None else found.name

        def ours_state() -> str | None:
            found = ckptname.find_latest(root)
            return None if found is None else found.name

        def ours_scan() -> tuple[str | None, int]:
            records = ckptname.scan(root, TEMPLATE)
            return (records[-1].name if records else None), len(records)

        def ours_scan_sizes() -> str | None:
            records = ckptname.scan(root, TEMPLATE, sizes=True)
            return records[-1].name if records else None

        listing = "ckptname.find_latest(root, template), listing"
        full = "ckptname.scan(root, template)[-1], all records"
        # find_latest and scan each take turns with os.listdir, in runs of
        # their own: a scan frees tens of megabytes, and whatever runs next
        # pays to get them back from the kernel.
        fast = interleaved_ms(
            {
                "floor": lambda: os.listdir(root),
                # find_latest lists with bytes names (it decodes only the few
                # it reads back); shown so that what it stands on is visible.
                "bytes": lambda: os.listdir(os.fsencode(root)),
                listing: ours_latest,
            },
            repeats,
        )
        floor = fast["floor"][0]
        latest_ms, answer = fast[listing]
        slow = interleaved_ms({"floor": lambda: os.listdir(root), full: ours_scan}, repeats)
        # The scan's ratio is to the listings of its own runs.
        scan_ms = slow[full][0] * floor / slow["floor"][0]
        scan_answer, scan_count = slow[full][1]
        rows: list[tuple[str, float | None, str, str]] = [
            ("os.listdir alone (the floor)", floor, "-", f"{entries:,} names"),
            ("  os.listdir, names as bytes", fast["bytes"][0], "-", "what find_latest lists"),
            (listing, latest_ms, yes(answer, truth), str(answer)),
            (full, scan_ms, yes(scan_answer, truth), f"{scan_answer} ({scan_count:,} records)"),
        ]
        few = max(3, repeats // 3)
        floor_ms, kept = median_ms(stat_floor(root), few)
        rows.append(
            ("  floor: os.scandir + a stat of each match", floor_ms, "-", f"{kept:,} non-empty")
        )
        for label, fn, runs in [
            ("  scan(root, template, sizes=True)", ours_scan_sizes, few),
            ("ckptname.find_latest(root), state file", ours_state, 1000 if count <= 10**5 else 100),
            ("parse.compile(template), same scan", parse_package(root), few),
        ]:
            ms, answer = median_ms(fn, runs)
            rows.append((label, ms, yes(answer, truth), str(answer)))
        cold, answer = first_call_in_new_process(root)
        rows.append(
            (
                "  the same, first call in a new process",
                cold,
                yes(answer, truth),
                f"{answer} (compiles the template)",
            )
        )
        helper_ms, answer = keras_helper_ms(root, few)
        label = "Keras ModelCheckpoint mtime helper"
        rows.append((label, helper_ms, "-" if helper_ms is None else yes(answer, truth), answer))
        print_rows(rows, floor)
        print_breakdown(where_latest_time_goes(root, repeats), latest_ms, floor, "find_latest's")
        print_breakdown(where_scan_time_goes(root, few), scan_ms, floor, "a full scan's")
        label = f"find_latest(root, template), {size}"
        goals.append((label, "time", latest_ms / floor, GOAL_LATEST))
        label = f"scan, {size}, no sidecars (floor {floor_ms / floor:.1f}x)"
        goals.append((label, "time", scan_ms / floor, GOAL_SCAN))

        # Peak memory: each call alone in a fresh interpreter.
        list_peak, _ = peak_memory_mb(root, "listdir")
        scan_peak, scan_kept = peak_memory_mb(root, "scan")
        print(
            f"\npeak memory (tracemalloc, fresh interpreter): os.listdir {list_peak:.1f} MB; "
            f"scan {scan_peak:.1f} MB ({scan_peak / list_peak:.1f}x), of which its "
            f"{scan_count:,} records hold {scan_kept:.1f} MB ({scan_kept / list_peak:.1f}x)"
        )
        goals.append(
            (
                f"scan peak memory, {size} (its result alone {scan_kept / list_peak:.1f}x)",
                "memory",
                scan_peak / list_peak,
                GOAL_MEMORY,
            )
        )
        shutil.rmtree(root, ignore_errors=True)

        # The same checkpoints as the callback writes them: every one has its
        # sidecar, which vouches for it, so a full scan stats nothing.
        truth, entries, seconds = timed_build(build_committed, committed, count)
        print(
            f"\n{entries:,} entries: the same {size} checkpoints as BatchAwareCheckpoint "
            f"writes them (each with its sidecar, no decoys), built in {seconds:.1f} s"
        )

        def committed_scan() -> str | None:
            records = ckptname.scan(committed, TEMPLATE)
            return records[-1].name if records else None

        def committed_latest() -> str | None:
            found = ckptname.find_latest(committed, TEMPLATE)
            return None if found is None else found.name

        times = interleaved_ms(
            {"floor": lambda: os.listdir(committed), listing: committed_latest}, repeats
        )
        floor = times["floor"][0]
        slow = interleaved_ms(
            {"floor": lambda: os.listdir(committed), full: committed_scan}, repeats
        )
        scan_ms = slow[full][0] * floor / slow["floor"][0]
        rows = [("os.listdir alone (the floor)", floor, "-", f"{entries:,} names")]
        rows.append((listing, times[listing][0], yes(times[listing][1], truth), truth))
        rows.append((full, scan_ms, yes(slow[full][1], truth), str(slow[full][1])))
        print_rows(rows, floor)
        steps = where_scan_time_goes(committed, few)
        print_breakdown(steps, scan_ms, floor, "a full scan's")
        goals.append((f"scan, {size}, every sidecar beside", "time", scan_ms / floor, GOAL_SCAN))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(committed, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="10000,100000,1000000", help="checkpoint counts, comma-separated"
    )
    parser.add_argument(
        "--repeats", type=int, default=15, help="timed runs at 100,000 (more below, fewer above)"
    )
    parser.add_argument(
        "--big-dir",
        default="/dev/shm",
        help="where folders of a million names or more go, where it exists (tmpfs)",
    )
    args = parser.parse_args()
    goals: list[tuple[str, str, float, float]] = []
    for count in (int(s) for s in args.sizes.split(",")):
        big = count >= 1_000_000 and os.path.isdir(args.big_dir)
        base = args.big_dir if big else tempfile.gettempdir()
        if count < 100_000:
            repeats = args.repeats * 2
        elif count <= 100_000:
            repeats = args.repeats
        else:
            repeats = max(3, args.repeats * 100_000 // count)
        run_size(count, base, repeats, goals)
    width = max(len(g[0]) for g in goals)
    print(f"\n{'goal':<{width}}  {'ratio':>7}  {'goal':>6}  met")
    for label, _, ratio, goal in goals:
        met = "yes" if ratio <= goal else "no"
        print(f"{label:<{width}}  {ratio:>6.2f}x  {goal:>5.2f}x  {met}")


if __name__ == "__main__":
    main()
