"""Render and parse speed of ckptname templates against the baselines.

Measured in one run, on the same names:

* render: ``Template.render`` (with its read-back guarantee) against ``str.format``;
* parse: ``Template.parse`` against the ``parse`` package and a hand-written
  compiled regex with int()/float() conversion (the floor for a Python parser);
* the cost of ``import ckptname`` in a fresh interpreter.

Targets: parse at most 1 µs per name including conversion; render at most 3x
``str.format``; import under 50 ms. Run: ``python benchmarks/bench_template.py``.
"""

from __future__ import annotations

import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import parse as parse_pkg

from ckptname import Template

CASES = [
    # (template, hand-written regex, converters, value factory)
    (
        "ep{epoch:02d}-{val_loss:.2f}.keras",
        r"ep(\d{2,})-(-?\d+\.\d{2})\.keras",
        (int, float),
        lambda i: {"epoch": i % 300 + 1, "val_loss": (i * 7919 % 10000) / 3000},
    ),
    (
        "model_batch_at_{batch:05d}.weights.h5",
        r"model_batch_at_(\d{5,})\.weights\.h5",
        (int,),
        lambda i: {"batch": i * 37},
    ),
    (
        "ckpt-e{epoch:03d}-b{batch:06d}-{loss:.4f}-{val_accuracy:.4f}.keras",
        r"ckpt-e(\d{3,})-b(\d{6,})-(-?\d+\.\d{4})-(-?\d+\.\d{4})\.keras",
        (int, int, float, float),
        lambda i: {
            "epoch": i % 120 + 1,
            "batch": i * 13,
            "loss": (i % 997) / 331,
            "val_accuracy": (i % 1000) / 1000,
        },
    ),
]
N = 20_000
REPEATS = 7


def per_item(fn: Callable[[], object], n: int) -> float:
    """Median seconds per item over REPEATS runs of fn (which does n items)."""
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / n


def import_time(cached: bool) -> float:
    """Median seconds of ``import ckptname`` in a fresh interpreter.

    ``cached``: with bytecode written by a first import, as after ``pip
    install``; otherwise compiling every module from source (as with
    PYTHONDONTWRITEBYTECODE set and no cache yet).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with tempfile.TemporaryDirectory() as cache:
        env["PYTHONPYCACHEPREFIX"] = cache  # a private cache: never stale, never shared
        if not cached:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        code = "import time; t=time.perf_counter(); import ckptname; print(time.perf_counter()-t)"
        subprocess.run([sys.executable, "-c", "import ckptname"], check=True, env=env)
        runs = [
            float(
                subprocess.run(
                    [sys.executable, "-c", code],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=env,
                ).stdout
            )
            for _ in range(7)
        ]
    return statistics.median(runs)


def measure(text: str, hand: str, convs: tuple[type, ...], make: Callable[[int], dict]) -> tuple:
    t = Template(text)
    values = [make(i) for i in range(N)]
    names = [text.format(**v) for v in values]
    assert [t.render(v) for v in values] == names

    fmt = per_item(lambda: [text.format(**v) for v in values], N)
    ren = per_item(lambda: [t.render(v) for v in values], N)

    rx = re.compile(hand)

    def hand_parse(name: str) -> tuple[object, ...] | None:
        m = rx.fullmatch(name)
        return None if m is None else tuple(c(g) for c, g in zip(convs, m.groups()))

    pp = parse_pkg.compile(text)
    ours = per_item(lambda: [t.parse(n) for n in names], N)
    hand_t = per_item(lambda: [hand_parse(n) for n in names], N)
    pkg = per_item(lambda: [pp.parse(n) for n in names], N)
    ok = all(t.parse(n) is not None for n in names)
    pkg_ok = sum(pp.parse(n) is not None for n in names)
    return (text, fmt, ren, ours, hand_t, pkg, ok, pkg_ok)


def main() -> None:
    random.seed(0)
    rows = [measure(*case) for case in CASES]
    print(f"ckptname template benchmark: {N} names per template, median of {REPEATS} runs\n")
    print(f"{'template':<62} {'str.format':>10} {'render':>8} {'ratio':>6}")
    for text, fmt, ren, *_ in rows:
        print(f"{text:<62} {fmt * 1e6:>8.2f}µs {ren * 1e6:>6.2f}µs {ren / fmt:>5.2f}x")
    print()
    print(
        f"{'template':<62} {'parse':>7} {'hand re':>8} {'parse pkg':>10} {'vs pkg':>7} "
        f"{'pkg read':>9}"
    )
    for text, _, _, ours, hand_t, pkg, ok, pkg_ok in rows:
        print(
            f"{text:<62} {ours * 1e6:>5.2f}µs {hand_t * 1e6:>6.2f}µs {pkg * 1e6:>8.2f}µs "
            f"{pkg / ours:>6.1f}x {pkg_ok:>5}/{N}"
        )
        assert ok
    print()
    print(
        f"import ckptname: {import_time(cached=True) * 1e3:.1f} ms with cached bytecode, "
        f"as installed (target < 50 ms); {import_time(cached=False) * 1e3:.1f} ms "
        "compiling from source"
    )


if __name__ == "__main__":
    main()
