"""Ordering rules: progress order, the mode of a metric, and the best-ranking key."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from ckptname import Checkpoint, MonitorError, resolve_mode
from ckptname._errors import Advice
from ckptname._rank import (
    COUNTERS,
    as_counter,
    best_key,
    improves,
    is_number,
    progress_key,
    sort_by_progress,
)


def ckpt(
    name: str,
    values: dict[str, Any] | None = None,
    *,
    mtime: float | None = None,
    metadata: dict[str, Any] | None = None,
) -> Checkpoint:
    values = dict(values or {})
    return Checkpoint(
        "/runs/" + name,
        name,
        values,
        values.get("epoch"),
        values.get("batch"),
        values.get("batch_in_epoch"),
        mtime=mtime,
        metadata=metadata,
    )


def oldest_first(records: list[Checkpoint]) -> list[str]:
    shuffled = records[:]
    random.Random(0).shuffle(shuffled)
    return [r.name for r in sorted(shuffled, key=progress_key)]


# ------------------------------------------------------------------ resolve_mode

MODE_PASS = [
    ("val_loss", "auto", "min"),
    ("loss", "auto", "min"),
    ("val/loss", "auto", "min"),
    ("valLoss", "auto", "min"),
    ("mean_absolute_error", "auto", "min"),
    ("val_mse", "auto", "min"),
    ("categorical_crossentropy", "auto", "min"),
    ("kl_divergence", "auto", "min"),
    ("perplexity", "auto", "min"),
    ("val_wer", "auto", "min"),
    ("accuracy", "auto", "max"),
    ("val_accuracy", "auto", "max"),
    ("acc", "auto", "max"),
    ("val_acc", "auto", "max"),
    ("sparse_categorical_accuracy", "auto", "max"),
    ("top_5_accuracy", "auto", "max"),
    # tensorflow #40604, keras #10863: these were minimised by 'auto'.
    ("val_auc", "auto", "max"),
    ("auc_1", "auto", "max"),
    ("val_precision", "auto", "max"),
    ("recall", "auto", "max"),
    ("f1_score", "auto", "max"),
    ("val_f1", "auto", "max"),
    ("mean_io_u", "auto", "max"),
    ("val_iou", "auto", "max"),
    ("dice", "auto", "max"),
    ("map", "auto", "max"),
    ("val/mAP50", "auto", "max"),
    ("psnr", "auto", "max"),
    # An explicit mode always wins over the name.
    ("val_loss", "max", "max"),
    ("val_accuracy", "min", "min"),
    ("lr", "min", "min"),
]


@pytest.mark.parametrize(("monitor", "mode", "expected"), MODE_PASS)
def test_resolve_mode(monitor: str, mode: str, expected: str) -> None:
    assert resolve_mode(monitor, mode) == expected


MODE_FAIL = [
    (
        "lr",
        "auto",
        "cannot tell whether a higher or a lower 'lr' is better; pass mode='min' or mode='max'",
    ),
    (
        "false_positives",
        "auto",
        "cannot tell whether a higher or a lower 'false_positives' is better; "
        "pass mode='min' or mode='max'",
    ),
    (
        "loss_accuracy",
        "auto",
        "cannot tell whether a higher or a lower 'loss_accuracy' is better "
        "('loss' says lower, 'accuracy' says higher); pass mode='min' or mode='max'",
    ),
    (
        "val_loss",
        "minimum",
        "mode must be 'min', 'max' or 'auto', got 'minimum'; use 'min' where lower is "
        "better (losses, errors) and 'max' where higher is better (accuracies, scores)",
    ),
    (
        "val_loss",
        "MIN",
        "mode must be 'min', 'max' or 'auto', got 'MIN'; use 'min' where lower is "
        "better (losses, errors) and 'max' where higher is better (accuracies, scores)",
    ),
    (
        "val_loss",
        None,
        "mode must be 'min', 'max' or 'auto', got None; use 'min' where lower is "
        "better (losses, errors) and 'max' where higher is better (accuracies, scores)",
    ),
    ("", "auto", "monitor must be a metric name such as 'val_loss', got ''"),
    (3, "auto", "monitor must be a metric name such as 'val_loss', got 3"),
]


@pytest.mark.parametrize(("monitor", "mode", "message"), MODE_FAIL)
def test_resolve_mode_fail(monitor: Any, mode: Any, message: str) -> None:
    with pytest.raises(MonitorError) as info:
        resolve_mode(monitor, mode)
    assert str(info.value) == message


def test_undecided_mode_gives_advice_for_the_command_line() -> None:
    with pytest.raises(MonitorError) as info:
        resolve_mode("lr")
    advice = info.value.advice
    assert advice == Advice("pass mode='min' or mode='max'", "pass --mode min or --mode max")
    assert str(info.value).replace(advice.api, advice.cli) == (
        "cannot tell whether a higher or a lower 'lr' is better; pass --mode min or --mode max"
    )


def test_a_bad_mode_carries_no_advice() -> None:
    with pytest.raises(MonitorError) as info:
        resolve_mode("val_loss", "minimum")
    assert info.value.advice is None


def test_monitor_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        resolve_mode("lr")


# ------------------------------------------------------------------ counters and numbers

AS_COUNTER_PASS = [
    (0, 0),
    (7, 7),
    (10**20, 10**20),
    (-3, -3),  # an int is taken as it is
    (7.0, 7),
    (-0.0, 0),
    ("7", 7),
    ("007", 7),  # a counter written with the 's' type
    ("0", 0),
]


@pytest.mark.parametrize(("value", "expected"), AS_COUNTER_PASS)
def test_as_counter(value: object, expected: int) -> None:
    counter = as_counter(value)
    assert counter == expected
    assert type(counter) is int


AS_COUNTER_FAIL = [
    None,
    True,
    False,
    7.5,
    math.nan,
    math.inf,
    -math.inf,
    "",
    "-3",
    "+3",
    " 7",
    "7 ",
    "7.0",
    "0x10",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: a digit, not an ASCII one
    "\u00b2",  # SUPERSCRIPT TWO: isdigit() says yes, int() says no
    b"7",
    [7],
]


@pytest.mark.parametrize("value", AS_COUNTER_FAIL)
def test_as_counter_fail(value: object) -> None:
    assert as_counter(value) is None


def test_counters_in_progress_order() -> None:
    assert COUNTERS == ("batch", "epoch", "batch_in_epoch")


IS_NUMBER_PASS = [0, 3, -2, 0.5, math.nan, math.inf, -math.inf, 10**30]
IS_NUMBER_FAIL = [True, False, None, "0.5", "nan", b"1", [1.0], complex(1, 0)]


@pytest.mark.parametrize("value", IS_NUMBER_PASS)
def test_is_number(value: object) -> None:
    assert is_number(value)


@pytest.mark.parametrize("value", IS_NUMBER_FAIL)
def test_is_number_fail(value: object) -> None:
    assert not is_number(value)


# ------------------------------------------------------------------ improves

IMPROVES_PASS = [
    ("min", 0.4, 0.5),
    ("max", 0.6, 0.5),
    ("min", 0.5, None),
    ("max", 0.5, None),
    ("min", math.inf, None),
    ("min", -math.inf, 0.5),
    ("max", math.inf, 0.5),
    ("min", 0.5, math.inf),
]


@pytest.mark.parametrize(("mode", "value", "best"), IMPROVES_PASS)
def test_improves(mode: Any, value: float, best: float | None) -> None:
    assert improves(mode, value, best) is True


IMPROVES_FAIL = [
    ("min", 0.6, 0.5),
    ("max", 0.4, 0.5),
    # An equal value does not improve: the earlier checkpoint stays the best.
    ("min", 1.0, 1.0),
    ("max", 1.0, 1.0),
    ("min", math.inf, math.inf),
    ("max", -math.inf, -math.inf),
]


@pytest.mark.parametrize(("mode", "value", "best"), IMPROVES_FAIL)
def test_improves_fail(mode: Any, value: float, best: float | None) -> None:
    assert improves(mode, value, best) is False


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("best", [None, 0.5, math.inf, -math.inf])
def test_nan_never_improves(mode: Any, best: float | None) -> None:
    assert improves(mode, math.nan, best) is False


# ------------------------------------------------------------------ progress

PROGRESS_PASS = [
    # (records oldest first, what decides)
    ([ckpt("ep9", {"epoch": 9}), ckpt("ep10", {"epoch": 10})], "epoch as a number"),
    ([ckpt("ep99", {"epoch": 99}), ckpt("ep100", {"epoch": 100})], "epoch past padding"),
    (
        [ckpt("b99999", {"batch": 99999}), ckpt("b100000", {"batch": 100000})],
        "batch past padding",
    ),
    (
        # Keras-style batch_in_epoch restarts each epoch; the global batch decides.
        [
            ckpt("e01-b00003", {"epoch": 1, "batch": 3}),
            ckpt("e02-b00004", {"epoch": 2, "batch": 4}),
            ckpt("e02-b00006", {"epoch": 2, "batch": 6}),
        ],
        "batch before epoch",
    ),
    (
        [
            ckpt("e02-i00009", {"epoch": 2, "batch_in_epoch": 9}),
            ckpt("e03-i00001", {"epoch": 3, "batch_in_epoch": 1}),
            ckpt("e03-i00002", {"epoch": 3, "batch_in_epoch": 2}),
        ],
        "epoch before batch in epoch",
    ),
    (
        [ckpt("seed=2/ep5", {"epoch": 5}), ckpt("seed=10/ep5", {"epoch": 5})],
        "equal counters: name, digits as numbers",
    ),
]


@pytest.mark.parametrize(("records", "why"), PROGRESS_PASS, ids=[p[1] for p in PROGRESS_PASS])
def test_progress_order(records: list[Checkpoint], why: str) -> None:
    assert oldest_first(records) == [r.name for r in records]


def test_mtime_never_used_when_counters_exist() -> None:
    records = [
        ckpt("ep1", {"epoch": 1}, mtime=300.0),
        ckpt("ep2", {"epoch": 2}, mtime=200.0),
        ckpt("ep3", {"epoch": 3}, mtime=100.0),
    ]
    assert oldest_first(records) == ["ep1", "ep2", "ep3"]


def test_string_order_never_used() -> None:
    # rl-baselines3-zoo #141: string sorting put rl_model_9000 after rl_model_10000.
    records = [ckpt("rl_model_9000"), ckpt("rl_model_10000")]
    assert oldest_first(records) == ["rl_model_9000", "rl_model_10000"]


def test_sidecar_counters_before_mtime_where_names_have_none() -> None:
    records = [
        ckpt("best-0.31", {"val_loss": 0.31}, mtime=900.0, metadata={"batch": 40}),
        ckpt("best-0.52", {"val_loss": 0.52}, mtime=100.0, metadata={"batch": 80}),
    ]
    assert oldest_first(records) == ["best-0.31", "best-0.52"]


def test_sidecar_counters_read_as_counters() -> None:
    records = [
        ckpt("best-c", metadata={"batch": 6}),
        ckpt("best-a", metadata={"batch": "007"}),
        ckpt("best-b", metadata={"batch": 8.0}),
    ]
    assert oldest_first(records) == ["best-c", "best-a", "best-b"]


def test_sidecar_counter_that_is_not_a_count_sorts_as_missing() -> None:
    records = [
        ckpt("best-a", metadata={"batch": 2.5}),
        ckpt("best-d", metadata={"batch": True}),
        ckpt("best-c", metadata={"batch": 1}),
    ]
    assert oldest_first(records) == ["best-a", "best-d", "best-c"]


def test_mtime_last_resort_where_neither_name_nor_sidecar_has_counters() -> None:
    records = [
        ckpt("model-b", {"tag": "b"}, mtime=100.0),
        ckpt("model-a", {"tag": "a"}, mtime=200.0),
    ]
    assert oldest_first(records) == ["model-b", "model-a"]


def test_keys_of_any_two_records_compare() -> None:
    mixed = [ckpt("a", {"epoch": 3}), ckpt("b"), ckpt("c", mtime=5.0), ckpt("d", {"batch": 1})]
    assert len(sorted(mixed, key=progress_key)) == 4


def _counters(rng: random.Random, kind: str) -> dict[str, Any]:
    """Values of one generated record, for the sort_by_progress cases."""
    if kind == "unique batches":
        return {"batch": rng.randrange(10**6), "epoch": rng.randrange(100)}
    if kind == "shared batches":
        return {"batch": rng.randrange(5), "epoch": rng.randrange(3), "batch_in_epoch": 1}
    if kind == "epochs only":
        return {"epoch": rng.randrange(4)}
    if kind == "batches, some missing":
        return {"batch": rng.choice([None, 1, 2]), "epoch": rng.randrange(3)}
    if kind == "counters that are not ints":
        return {"batch": rng.choice([1, 2.0, True]), "epoch": 1}
    return {}  # no counters: sidecars, then times


@pytest.mark.parametrize(
    "kind",
    [
        "unique batches",
        "shared batches",
        "epochs only",
        "batches, some missing",
        "counters that are not ints",
        "no counters",
    ],
)
def test_sort_by_progress_is_the_order_of_progress_key(kind: str) -> None:
    rng = random.Random(kind)
    for size in (0, 1, 2, 50, 400):
        records = []
        for i in range(size):
            values = _counters(rng, kind)
            meta = {"batch": rng.randrange(3)} if rng.random() < 0.5 else None
            mtime = rng.choice([None, 1.0, 2.0])
            name = f"seed={rng.randrange(12)}/ep{i % 7}"
            record = ckpt(name, values, mtime=mtime, metadata=meta)
            records.append(record)
        fast = records[:]
        sort_by_progress(fast)
        # The very same order, equal records included (both sorts are stable).
        assert list(map(id, fast)) == list(map(id, sorted(records, key=progress_key)))


# ------------------------------------------------------------------ best


def best_first(records: list[Checkpoint], monitor: str, mode: str) -> list[str]:
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    ranked = sorted(shuffled, key=lambda r: best_key(r, monitor, mode), reverse=True)  # type: ignore[arg-type]
    return [r.name for r in ranked]


def test_best_min_and_max() -> None:
    records = [ckpt(f"ep{i}", {"epoch": i, "m": v}) for i, v in [(1, 0.5), (2, 0.2), (3, 0.9)]]
    assert best_first(records, "m", "min") == ["ep2", "ep1", "ep3"]
    assert best_first(records, "m", "max") == ["ep3", "ep1", "ep2"]


@pytest.mark.parametrize("mode", ["min", "max"])
def test_nan_never_wins(mode: str) -> None:
    records = [
        ckpt("ep1", {"epoch": 1, "m": math.nan}),
        ckpt("ep2", {"epoch": 2, "m": 0.5}),
        ckpt("ep3", {"epoch": 3, "m": math.nan}),
        ckpt("ep4", {"epoch": 4}),  # no value at all
    ]
    assert best_first(records, "m", mode)[0] == "ep2"


def test_infinities_rank_as_numbers() -> None:
    records = [
        ckpt("ep1", {"epoch": 1, "m": math.inf}),
        ckpt("ep2", {"epoch": 2, "m": 0.5}),
        ckpt("ep3", {"epoch": 3, "m": -math.inf}),
    ]
    assert best_first(records, "m", "min") == ["ep3", "ep2", "ep1"]


def test_tie_on_rounded_value_broken_by_exact_sidecar_value() -> None:
    records = [
        ckpt("ep1", {"epoch": 1, "m": 0.52}, metadata={"metrics": {"m": 0.5187}}),
        ckpt("ep2", {"epoch": 2, "m": 0.52}, metadata={"metrics": {"m": 0.5212}}),
        ckpt("ep3", {"epoch": 3, "m": 0.52}, metadata={"metrics": {"m": 0.5150}}),
    ]
    assert best_first(records, "m", "min") == ["ep3", "ep1", "ep2"]
    assert best_first(records, "m", "max") == ["ep2", "ep1", "ep3"]


def test_tie_without_sidecars_goes_to_the_earlier_checkpoint_as_in_keras() -> None:
    records = [ckpt(f"ep{i}", {"epoch": i, "m": 0.52}) for i in (1, 2, 3)]
    assert best_first(records, "m", "min") == ["ep1", "ep2", "ep3"]
    assert best_first(records, "m", "max") == ["ep1", "ep2", "ep3"]


def test_nan_in_sidecar_does_not_override_the_name() -> None:
    records = [
        ckpt("ep1", {"epoch": 1, "m": 0.52}, metadata={"metrics": {"m": "nan"}}),
        ckpt("ep2", {"epoch": 2, "m": 0.52}, metadata={"metrics": {"m": math.nan}}),
    ]
    assert best_first(records, "m", "min") == ["ep1", "ep2"]


def test_metric_only_in_sidecar_ranks_by_it() -> None:
    records = [
        ckpt("ep1", {"epoch": 1}, metadata={"metrics": {"m": 0.3}}),
        ckpt("ep2", {"epoch": 2}, metadata={"metrics": {"m": 0.1}}),
    ]
    assert best_first(records, "m", "min") == ["ep2", "ep1"]
