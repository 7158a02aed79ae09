"""File formats: the sidecar and the state file, encoded, decoded, read and written."""

from __future__ import annotations

import errno
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import ckptname
from ckptname import MetadataError, find_best, find_latest, read_metadata, scan
from ckptname._metadata import (
    METADATA_LIMIT,
    SIDECAR_SUFFIX,
    STATE_FORMAT,
    STATE_NAME,
    decode,
    encode,
    is_reserved,
    read_sidecar,
    read_state,
    sidecar_path,
    state_record,
    write_state,
)
from ckptname._storage import FsspecStorage, LocalStorage, temp_name

# ------------------------------------------------------------------ encode / decode


def same(a: Any, b: Any) -> bool:
    """Equal, where NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


ROUND_TRIP = [
    {"metrics": {"loss": 0.5, "val_loss": math.nan, "acc": math.inf, "err": -math.inf}},
    {"metric_state": {"loss": [math.nan, 3.0], "auc": [[math.inf, 1.0], [-math.inf]]}},
    {"best": {"name": "ep02.keras", "value": math.nan}},
    {"best": {"name": "ep02.keras", "value": -math.inf}},
    {"epoch": 3, "batch": 120, "extras": {"lr": 0.001}, "name": "ep03-nan.keras"},
]


@pytest.mark.parametrize("record", ROUND_TRIP)
def test_encode_decode_round_trip(record: dict[str, Any]) -> None:
    assert same(decode(encode(record), "sidecar 'x'"), record)


def test_encode_writes_non_finite_floats_as_strings() -> None:
    raw = encode({"metrics": {"a": math.nan, "b": math.inf, "c": -math.inf}})
    assert b"NaN" not in raw and b"Infinity" not in raw
    assert b'"nan"' in raw and b'"inf"' in raw and b'"-inf"' in raw


def test_strings_outside_the_float_sections_stay_strings() -> None:
    # A name or an extra that reads "nan" is text, not a number.
    data = decode(encode({"name": "nan", "extras": {"tag": "inf"}}), "sidecar 'x'")
    assert data == {"name": "nan", "extras": {"tag": "inf"}}


DECODE_FAIL = [
    (
        b"{",
        "sidecar 'x' is not valid JSON (Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)); it may be truncated",
    ),
    (
        b"",
        "sidecar 'x' is not valid JSON (Expecting value: line 1 column 1 (char 0)); "
        "it may be truncated",
    ),
    (
        b"\xff",
        "sidecar 'x' is not valid JSON ('utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte); it may be truncated",
    ),
    (b"[]", "sidecar 'x' holds list, expected a JSON object"),
    (b"null", "sidecar 'x' holds NoneType, expected a JSON object"),
    (b"3", "sidecar 'x' holds int, expected a JSON object"),
]


@pytest.mark.parametrize(("raw", "message"), DECODE_FAIL)
def test_decode_fail(raw: bytes, message: str) -> None:
    with pytest.raises(MetadataError) as info:
        decode(raw, "sidecar 'x'")
    assert str(info.value) == message


def test_decode_refuses_more_bytes_than_the_limit_before_parsing() -> None:
    """What a ranged read of a larger remote object gives: the limit and a byte."""
    raw = b"{" + b" " * METADATA_LIMIT  # 16 MiB + 1, valid JSON if it were read whole
    with pytest.raises(MetadataError) as info:
        decode(raw + b"}", "sidecar 'x'")
    assert str(info.value) == (
        "sidecar 'x' is larger than 16 MiB; ckptname reads its files only as regular files "
        "of at most 16 MiB"
    )
    assert decode(raw[:-2] + b"}", "sidecar 'x'") == {}  # exactly 16 MiB: read


def test_metadata_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        decode(b"[]", "sidecar 'x'")


# ------------------------------------------------------------------ reserved names

RESERVED = [
    "ep03.keras.ckptname.json",
    ".ckptname-state.json",
    ".ckptname.lock",
    ".ckptname-tmp-0123456789ab-ep03.keras",
    temp_name("ep03.keras"),
]
NOT_RESERVED = ["ep03.keras", "ckptname.keras", "ep03.keras.json", "ckptname_x", "ckptname"]


@pytest.mark.parametrize("name", RESERVED)
def test_is_reserved(name: str) -> None:
    assert is_reserved(name)


@pytest.mark.parametrize("name", NOT_RESERVED)
def test_is_reserved_fail(name: str) -> None:
    assert not is_reserved(name)


def test_sidecar_path() -> None:
    assert sidecar_path("runs/ep03.keras") == "runs/ep03.keras.ckptname.json"
    assert sidecar_path("runs/ep03.keras").endswith(SIDECAR_SUFFIX)


# ------------------------------------------------------------------ sidecars


def test_read_sidecar(tmp_path: Path) -> None:
    storage = LocalStorage()
    ckpt = tmp_path / "ep03.keras"
    assert read_sidecar(storage, str(ckpt)) is None
    (tmp_path / "ep03.keras.ckptname.json").write_bytes(encode({"epoch": 3}))
    assert read_sidecar(storage, str(ckpt)) == {"epoch": 3}
    assert read_sidecar(storage, str(tmp_path / "file" / "ep03.keras")) is None


def test_read_sidecar_of_a_missing_folder_is_none(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    assert read_sidecar(LocalStorage(), str(tmp_path / "file" / "ep03.keras")) is None
    assert read_sidecar(LocalStorage(), str(tmp_path / "missing" / "ep03.keras")) is None


def test_read_sidecar_corrupt(tmp_path: Path) -> None:
    side = tmp_path / "ep03.keras.ckptname.json"
    side.write_bytes(b'{"epoch": 3')
    with pytest.raises(MetadataError) as info:
        read_sidecar(LocalStorage(), str(tmp_path / "ep03.keras"))
    assert str(info.value) == (
        f"sidecar {str(side)!r} is not valid JSON (Expecting ',' delimiter: line 1 column 12 "
        "(char 11)); it may be truncated"
    )


def test_read_metadata_without_a_sidecar(tmp_path: Path) -> None:
    ckpt = str(tmp_path / "ep03.keras")
    with pytest.raises(FileNotFoundError) as info:
        read_metadata(ckpt)
    assert str(info.value) == (
        f"checkpoint {ckpt!r} has no metadata sidecar (ep03.keras.ckptname.json); "
        "it was not written by ckptname, or its save did not complete"
    )


def test_read_sidecar_remote_names_it_by_url(memory_folder: tuple[FsspecStorage, str]) -> None:
    storage, folder = memory_folder
    ckpt = storage.join(folder, "ep03.keras")
    assert read_sidecar(storage, ckpt) is None
    storage.write_bytes(sidecar_path(ckpt), b"[1]")
    with pytest.raises(MetadataError) as info:
        read_sidecar(storage, ckpt)
    assert str(info.value) == (
        f"sidecar 'memory://{folder}/ep03.keras.ckptname.json' holds list, expected a JSON object"
    )


# ------------------------------------------------------------------ state file


def test_state_record() -> None:
    before = time.time()
    state = state_record("ep{epoch}.keras", {"name": "ep3.keras", "epoch": 3}, None)
    assert before <= state.pop("time") <= time.time()
    assert state == {
        "format": STATE_FORMAT,
        "template": "ep{epoch}.keras",
        "latest": {"name": "ep3.keras", "epoch": 3},
        "best": None,
    }


def test_state_record_since() -> None:
    """Object stores: since when the folder is ckptname's, kept on every rewrite."""
    assert state_record("ep{epoch}.keras", None, None, since=5.0)["since"] == 5.0
    assert "since" not in state_record("ep{epoch}.keras", None, None)


def test_write_state_then_read_state(tmp_path: Path) -> None:
    storage = LocalStorage()
    best = {"name": "ep2.keras", "monitor": "val_loss", "mode": "min", "value": math.nan}
    state = state_record("ep{epoch}.keras", {"name": "ep3.keras"}, best)
    write_state(storage, str(tmp_path), state)
    assert os.listdir(tmp_path) == [STATE_NAME]
    read = read_state(storage, str(tmp_path))
    assert read is not None
    assert same(read, state)


def test_write_state_remote(memory_folder: tuple[FsspecStorage, str]) -> None:
    storage, folder = memory_folder
    state = state_record("ep{epoch}.keras", None, None)
    write_state(storage, folder, state)
    assert [e.name for e in storage.listdir(folder)] == [STATE_NAME]
    assert read_state(storage, folder) == state


def test_failed_write_state_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = LocalStorage()
    old = state_record("ep{epoch}.keras", {"name": "ep1.keras"}, None)
    write_state(storage, str(tmp_path), old)

    def replace(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        write_state(storage, str(tmp_path), state_record("ep{epoch}.keras", None, None))
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [STATE_NAME]
    assert read_state(storage, str(tmp_path)) == old


def test_read_state_missing_is_none(tmp_path: Path) -> None:
    assert read_state(LocalStorage(), str(tmp_path)) is None
    assert read_state(LocalStorage(), str(tmp_path / "missing")) is None


READ_STATE_FAIL = [
    (b"{", "is not valid JSON (Expecting property name enclosed in double quotes: "
     "line 1 column 2 (char 1)); it may be truncated"),
    (b'"x"', "holds str, expected a JSON object"),
    (b"{}", "has format None, expected 'ckptname.state/1'"),
    (b'{"format": "ckptname.state/2", "template": "a{epoch}"}',
     "has format 'ckptname.state/2', expected 'ckptname.state/1'"),
    (b'{"format": "ckptname.state/1"}', "has no template"),
    (b'{"format": "ckptname.state/1", "template": ""}', "has no template"),
    (b'{"format": "ckptname.state/1", "template": 3}', "has no template"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "problem"), READ_STATE_FAIL)
def test_read_state_fail(tmp_path: Path, raw: bytes, problem: str) -> None:
    path = tmp_path / STATE_NAME
    path.write_bytes(raw)
    with pytest.raises(MetadataError) as info:
        read_state(LocalStorage(), str(tmp_path))
    assert str(info.value) == f"state file {str(path)!r} {problem}"


def test_write_state_takes_any_mapping(tmp_path: Path) -> None:
    latest = MappingProxyType({"name": "ep3.keras", "epoch": 3})
    state = MappingProxyType(dict(state_record("ep{epoch}.keras", latest, None)))
    write_state(LocalStorage(), str(tmp_path), state)
    assert read_state(LocalStorage(), str(tmp_path)) == dict(state, latest=dict(latest))


# ------------------------------------------------------------------ hostile and damaged files
#
# Anyone who can write into a checkpoint folder can put anything under the
# names of the sidecars and the state file. Every reader must warn and fall
# back to listing: never hang, never fill memory, never raise a raw error.

HOSTILE_TEMPLATE = "b{batch:03d}.keras"
LIMIT_WORDS = "ckptname reads its files only as regular files of at most 16 MiB"
NOT_OURS = "it was not written by ckptname, or is damaged"


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail (instead of hanging the test run) where a reader blocks for 5 s."""
    import signal

    def timeout(signum: int, frame: Any) -> None:
        raise TimeoutError("a reader blocked for 5 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def hostile_run(tmp_path: Path) -> Path:
    """A folder as the callback leaves it: 3 checkpoints, their sidecars, the state file.

    ``val_loss`` is in the sidecars only; b020 is the best.
    """
    for batch, loss in [(10, 0.9), (20, 0.1), (30, 0.5)]:
        name = f"b{batch:03d}.keras"
        (tmp_path / name).write_bytes(b"weights")
        meta = {"format": "ckptname.checkpoint/1", "name": name, "template": HOSTILE_TEMPLATE,
                "batch": batch, "metrics": {"val_loss": loss}}  # fmt: skip
        (tmp_path / (name + SIDECAR_SUFFIX)).write_bytes(encode(meta))
    state = state_record(HOSTILE_TEMPLATE, {"name": "b030.keras", "batch": 30}, None)
    write_state(LocalStorage(), str(tmp_path), state)
    return tmp_path


def _deep(depth: int, opening: bytes, closing: bytes, inner: bytes = b"1") -> bytes:
    return opening * depth + inner + closing * depth


def _make_hostile(path: Path, kind: str) -> None:
    """Put a hostile file of ``kind`` at ``path`` (replacing what is there)."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "over 16 MiB":
        with open(path, "wb") as fh:
            fh.truncate((16 << 20) + 1)  # sparse: no disk used
    elif kind == "nested 100,000 deep (lists)":
        path.write_bytes(_deep(100_000, b"[", b"]"))
    elif kind == "nested 100,000 deep (objects)":
        path.write_bytes(_deep(100_000, b'{"a":', b"}"))
    else:
        raise AssertionError(kind)


# (kind, what a reader says about it)
HOSTILE_KINDS = [
    ("fifo", f"is a FIFO; {LIMIT_WORDS}"),
    ("link to /dev/zero", f"is a character device; {LIMIT_WORDS}"),
    ("directory", f"is a directory; {LIMIT_WORDS}"),
    ("over 16 MiB", f"is larger than 16 MiB; {LIMIT_WORDS}"),
    ("nested 100,000 deep (lists)",
     "nests its JSON too deeply to read; it was not written by ckptname"),
    ("nested 100,000 deep (objects)",
     "nests its JSON too deeply to read; it was not written by ckptname"),
]  # fmt: skip
HOSTILE_IDS = [kind for kind, _ in HOSTILE_KINDS]

STATE_SCHEMA_FAIL = [
    ({"latest": [1, 2]}, f"has 'latest' of type list, expected a JSON object or null; {NOT_OURS}"),
    ({"best": "b020.keras"}, f"has 'best' of type str, expected a JSON object or null; {NOT_OURS}"),
]


def _messages(caught: Any) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, ckptname.CkptnameWarning)]


@pytest.mark.parametrize(("kind", "problem"), HOSTILE_KINDS, ids=HOSTILE_IDS)
def test_hostile_state_file_warns_and_lists(
    hostile_run: Path, no_hang: None, kind: str, problem: str
) -> None:
    path = hostile_run / STATE_NAME
    _make_hostile(path, kind)
    expected = (
        f"state file {str(path)!r} {problem}; finding checkpoints by listing the folder, "
        f"with the template {HOSTILE_TEMPLATE!r} that their sidecars record"
    )
    for call, answer in [
        (lambda: find_latest(hostile_run).name, "b030.keras"),
        (lambda: [r.name for r in scan(hostile_run)], ["b010.keras", "b020.keras", "b030.keras"]),
        (lambda: find_best(hostile_run, "val_loss").name, "b020.keras"),
    ]:
        with pytest.warns(ckptname.CkptnameWarning) as caught:
            assert call() == answer
        assert _messages(caught) == [expected]


@pytest.mark.parametrize(("fields", "problem"), STATE_SCHEMA_FAIL, ids=["latest", "best"])
def test_state_file_with_sections_of_the_wrong_type(
    hostile_run: Path, fields: dict[str, Any], problem: str
) -> None:
    path = hostile_run / STATE_NAME
    bad = dict(state_record(HOSTILE_TEMPLATE, {"name": "b030.keras"}, None), **fields)
    path.write_bytes(json.dumps(bad).encode())
    with pytest.raises(MetadataError) as info:
        read_state(LocalStorage(), str(hostile_run))
    assert str(info.value) == f"state file {str(path)!r} {problem}"
    with pytest.warns(ckptname.CkptnameWarning):
        assert find_latest(hostile_run).name == "b030.keras"  # type: ignore[union-attr]


SIDECAR_SCHEMA_FAIL = [
    ({"metrics": [0.1]}, f"has 'metrics' of type list, expected a JSON object; {NOT_OURS}"),
    ({"metrics": {"val_loss": {"v": 0.1}}},
     f"has metric 'val_loss' of type dict, expected a number; {NOT_OURS}"),
    ({"extras": "lr=0.1"}, f"has 'extras' of type str, expected a JSON object; {NOT_OURS}"),
    ({"metric_state": [1.0, 2.0]},
     f"has 'metric_state' of type list, expected a JSON object; {NOT_OURS}"),
    ({"metric_state": {"loss": "1.0"}},
     "has 'metric_state' entry 'loss' that is not a list of numbers (nested at most 32 deep); "
     + NOT_OURS),
    ({"metric_state": {"loss": json.loads(_deep(100, b"[", b"]"))}},
     "has 'metric_state' entry 'loss' that is not a list of numbers (nested at most 32 deep); "
     + NOT_OURS),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "problem"),
    [*HOSTILE_KINDS, *((json.dumps(f), p) for f, p in SIDECAR_SCHEMA_FAIL)],
    ids=[*HOSTILE_IDS, *(f"wrong type {i}" for i in range(len(SIDECAR_SCHEMA_FAIL)))],
)
def test_hostile_sidecar_warns_and_ranks_the_others(
    hostile_run: Path, no_hang: None, kind: str, problem: str
) -> None:
    ckpt = hostile_run / "b020.keras"
    side = hostile_run / ("b020.keras" + SIDECAR_SUFFIX)
    if kind.startswith("{"):
        meta = json.loads(side.read_bytes())
        side.write_bytes(json.dumps({**meta, **json.loads(kind)}).encode())
    else:
        _make_hostile(side, kind)
    with pytest.raises(MetadataError) as info:
        read_metadata(ckpt)
    assert str(info.value) == f"sidecar {str(side)!r} {problem}"
    with pytest.warns(ckptname.CkptnameWarning) as caught:
        best = find_best(hostile_run, "val_loss", template=HOSTILE_TEMPLATE)
    assert best is not None and best.name == "b030.keras"
    assert _messages(caught) == [
        f"sidecar {str(side)!r} {problem}; ordering and ranking those checkpoints without "
        "their metadata"
    ]


@pytest.mark.parametrize(("kind", "problem"), HOSTILE_KINDS[:4], ids=HOSTILE_IDS[:4])
def test_command_line_on_a_hostile_state_file(
    hostile_run: Path, no_hang: None, capsys: pytest.CaptureFixture[str], kind: str, problem: str
) -> None:
    from ckptname.cli import main

    _make_hostile(hostile_run / STATE_NAME, kind)
    with pytest.warns(ckptname.CkptnameWarning):
        assert main(["latest", str(hostile_run)]) == 0
    assert capsys.readouterr().out == str(hostile_run / "b030.keras") + "\n"


def test_deeply_nested_state_file_is_one_message_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ckptname.cli import main

    (tmp_path / "b010.keras").write_bytes(b"w")
    _make_hostile(tmp_path / STATE_NAME, "nested 100,000 deep (objects)")
    assert main(["ls", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"ckptname ls: state file {str(tmp_path / STATE_NAME)!r} nests its JSON too deeply "
        "to read; it was not written by ckptname, and no template was given; pass --template "
        "with the template the checkpoints were saved with, e.g. --template "
        "'ep{epoch:02d}-{val_loss:.2f}.keras'\n"
    )
