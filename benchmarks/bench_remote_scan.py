"""Sweep trees on an S3-compatible server: ckptname's requests and time against the floor.

Starts moto's S3 server on 127.0.0.1 (reached through s3fs, as any
S3-compatible store is) with a middleware that counts the requests it
receives, by operation. Builds two sweep trees through ckptname's own writing
path (the storage layer, the sidecar and state writers), with the template

    sweeps/lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}-{val_loss:.4f}.keras

* 2,000 checkpoints in 221 folders: 20 learning rates x 10 seeds x 10 epochs;
* 10,000 checkpoints in 1,101 folders: 100 learning rates x 10 seeds x 10 epochs;

each checkpoint with its sidecar, each run folder with its state file. Then
it times, median of several repeats with fresh fsspec caches, and counts the
requests of:

* ``fs.find`` of the prefix: one flat listing, 1,000 keys a page (the floor
  for anything that sees every checkpoint);
* ``fs.glob`` of the template turned into a pattern;
* ``ckptname.scan``, ``find_latest`` (with the template), ``find_best``, and
  ``best_per_group`` over a ``scan`` (per learning rate), as a sweep tool
  calls them; and ``find_best`` of a metric that only the sidecars hold,
  which reads every sidecar (concurrently, one GET each);
* the same ``scan`` folder by folder, as ckptname listed every remote tree
  before, and still lists where a store cannot list a prefix flatly.

Run: ``python benchmarks/bench_remote_scan.py`` (``--sizes``, ``--repeats``).
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import parse_qs

import ckptname
from ckptname._metadata import encode, sidecar_record, state_record, write_state
from ckptname._storage import FsspecStorage, storage_for

TEMPLATE = "sweeps/lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}-{val_loss:.4f}.keras"
RUN_TEMPLATE = "ep{epoch:03d}-{val_loss:.4f}.keras"  # what each run's callback saw
BUCKET = "ckptname-bench"
SEEDS = 10
EPOCHS = 10


def operation(environ: dict[str, Any]) -> str:
    """What an S3 request asks for: a flat or a per-folder listing, a read, a HEAD..."""
    method = str(environ["REQUEST_METHOD"])
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    key = environ.get("PATH_INFO", "/").lstrip("/").partition("/")[2]
    if method == "GET" and "list-type" in query:
        return "list" if query.get("delimiter", [""])[0] else "flat list"
    if method == "GET" and key:
        return "get"
    return method.lower()


class CountingServer:
    """moto's S3 server on 127.0.0.1, counting the requests it receives."""

    def __init__(self) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        app = DomainDispatcherApplication(create_backend_app)

        def counting(environ: dict[str, Any], start_response: Any) -> Any:
            with self._lock:
                self.counts[operation(environ)] += 1
            return app(environ, start_response)

        self._server = make_server(
            "127.0.0.1", 0, counting, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host!s}:{port}"

    def take(self) -> Counter[str]:
        """The counts since the last call, and start again from zero."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()


def learning_rates(count: int) -> list[float]:
    """``count`` learning rates that ``{lr:.0e}`` writes apart: 1e-01, 2e-01, ... 9e-12."""
    rates = [m * 10.0**-e for e in range(1, 13) for m in range(1, 10)]
    return rates[:count]


def build(root: str, lrs: int) -> int:
    """Write a sweep of ``lrs`` learning rates; return the number of objects written.

    Every run's checkpoints go through the storage layer (one PUT each, as
    the callback's upload), then each checkpoint's sidecar (its commit
    marker, written by the sidecar writer), then the run's state file (the
    state writer); writes run on a thread pool so that 21,000 objects take
    seconds, not minutes.
    """
    storage, inner = storage_for(root)
    rng = random.Random(lrs)
    writes: list[Callable[[], None]] = []
    states: list[Callable[[], None]] = []
    template = ckptname.Template(TEMPLATE)
    for lr in learning_rates(lrs):
        for seed in range(SEEDS):
            latest: dict[str, Any] = {}
            for epoch in range(1, EPOCHS + 1):
                loss = 0.2 + 0.8 / epoch + 10 * lr + rng.random() / 50
                name = template.render(lr=lr, seed=seed, epoch=epoch, val_loss=loss)
                path = storage.join(inner, name)
                meta = sidecar_record(
                    name=name.rsplit("/", 1)[1],
                    template=RUN_TEMPLATE,
                    epoch=epoch,
                    batch=epoch * 100,
                    batch_in_epoch=100,
                    iterations=epoch * 100,
                    end_of_epoch=True,
                    steps_per_epoch=100,
                    metrics={"val_loss": loss, "loss": loss * 0.9},
                    extras={"lr": lr, "seed": seed},
                    save_weights_only=False,
                )
                side = encode(meta)
                writes.append(partial(storage.write_bytes, path, b"model weights"))
                writes.append(partial(storage.write_bytes, path + ".ckptname.json", side))
                latest = {"name": name.rsplit("/", 1)[1], "epoch": epoch, "batch": epoch * 100}
            folder = storage.join(inner, name.rsplit("/", 1)[0])
            state = state_record(RUN_TEMPLATE, latest, None)
            states.append(partial(write_state, storage, folder, state))
    with ThreadPoolExecutor(32) as pool:
        for batch in (writes, states):
            for future in [pool.submit(w) for w in batch]:
                future.result()
    return len(writes) + len(states)


def requests_text(counts: Counter[str]) -> str:
    return ", ".join(f"{n:,} {op}" for op, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def run_size(server: CountingServer, lrs: int, repeats: int) -> None:
    root = f"s3://{BUCKET}/sweep-{lrs}"
    fs, inner = storage_for(root)[0].fs, storage_for(root)[1]  # type: ignore[attr-defined]
    start = time.perf_counter()
    objects = build(root, lrs)
    built = time.perf_counter() - start
    checkpoints = lrs * SEEDS * EPOCHS
    folders = 1 + lrs + lrs * SEEDS
    print(
        f"\n{checkpoints:,} checkpoints in {folders:,} folders ({objects:,} objects, built in "
        f"{built:.1f} s through the storage layer); median of {repeats} runs, fresh caches"
    )
    base = f"{inner}/sweeps"
    pattern = f"{base}/lr=*/seed=*/ep*.keras"

    def folder_by_folder() -> list[ckptname.Checkpoint]:
        flat_find = FsspecStorage.find
        FsspecStorage.find = lambda self, path: None  # type: ignore[method-assign]
        try:
            return ckptname.scan(root, TEMPLATE)
        finally:
            FsspecStorage.find = flat_find  # type: ignore[method-assign]

    def name(record: ckptname.Checkpoint) -> str:
        return record.name.split("/", 1)[1]

    def count(unit: str) -> Callable[[Any], str]:
        return lambda items: f"{len(items):,} {unit}"

    # (label, call, what to show of its answer, once): calls that make a
    # request per folder or per sidecar run once; they are here for their
    # requests, and take tens of seconds on moto.
    calls: list[tuple[str, Callable[[], Any], Callable[[Any], str], bool]] = [
        ("fs.find(prefix): one flat listing (the floor)", lambda: fs.find(base), count("keys"),
         False),
        ("fs.glob('.../lr=*/seed=*/ep*.keras')", lambda: fs.glob(pattern), count("paths"), True),
        ("ckptname.scan(root, template)", lambda: ckptname.scan(root, TEMPLATE), count("records"),
         False),
        (
            "ckptname.find_latest(root, template)",
            lambda: ckptname.find_latest(root, TEMPLATE),
            name,
            False,
        ),
        (
            "ckptname.find_best(root, 'val_loss', template=...)",
            lambda: ckptname.find_best(root, "val_loss", template=TEMPLATE),
            name,
            False,
        ),
        (
            "scan + best_per_group(records, 'val_loss', by='lr')",
            lambda: ckptname.best_per_group(ckptname.scan(root, TEMPLATE), "val_loss", by="lr"),
            count("groups"),
            False,
        ),
        (
            "ckptname.find_best(root, 'loss'): in sidecars only, all read",
            lambda: ckptname.find_best(root, "loss", template=TEMPLATE),
            name,
            True,
        ),
        ("ckptname.scan folder by folder (before; stores that cannot list flat)",
         folder_by_folder, count("records"), True),
    ]  # fmt: skip
    # The calls take turns in each round, so that a change in the machine's
    # load (moto runs in this process) hits them alike.
    times: dict[str, list[float]] = {label: [] for label, *_ in calls}
    requests: dict[str, Counter[str]] = {}
    answers: dict[str, str] = {}
    for round in range(repeats):
        for label, call, show, once in calls:
            if once and round:
                continue
            fs.invalidate_cache()
            server.take()
            start = time.perf_counter()
            answer = call()
            times[label].append(time.perf_counter() - start)
            if not round:
                requests[label] = server.take()
                answers[label] = show(answer)
    rows = [
        (
            label + (" (1 run)" if once else ""),
            statistics.median(times[label]) * 1000,
            requests[label],
            answers[label],
        )
        for label, _, _, once in calls
    ]

    floor_ms, floor_counts = rows[0][1], rows[0][2]
    floor_requests = sum(floor_counts.values())
    width = max(len(r[0]) for r in rows)
    print(
        f"{'call':<{width}}  {'requests':<24}  {'vs floor':>8}  "
        f"{'time':>9}  {'vs floor':>8}  answer"
    )
    print(f"{'-' * width}  {'-' * 24}  {'-' * 8}  {'-' * 9}  {'-' * 8}  {'-' * 20}")
    for label, ms, counts, answer in rows:
        total = sum(counts.values())
        extra = (
            f"+{total - floor_requests}" if total >= floor_requests else f"{total - floor_requests}"
        )
        print(
            f"{label:<{width}}  {requests_text(counts):<24}  {extra:>8}  "
            f"{ms:>6.0f} ms  {ms / floor_ms:>7.2f}x  {answer}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="20,100",
        help="learning rates per tree, comma-separated (x100 checkpoints)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per call")
    args = parser.parse_args()
    try:
        import fsspec
        import moto  # noqa: F401  (the server is imported where it is built)
        import s3fs  # noqa: F401
    except ImportError as exc:
        sys.exit(f"needs fsspec, s3fs and moto[server]: {exc}")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # Fake credentials, set here only: nothing may reach a real account.
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        os.environ[key] = "testing"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    os.environ.pop("AWS_PROFILE", None)
    server = CountingServer()
    try:
        fsspec.config.conf["s3"] = {
            "endpoint_url": server.endpoint,
            "key": "testing",
            "secret": "testing",
        }
        fs = fsspec.filesystem("s3")
        fs.mkdir(BUCKET)
        print(f"moto S3 server at {server.endpoint}, through s3fs; template {TEMPLATE!r}")
        for lrs in (int(x) for x in args.sizes.split(",")):
            run_size(server, lrs, args.repeats)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
