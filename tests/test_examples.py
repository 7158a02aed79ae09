"""Every example runs as a user would run it, and says what it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# example, extra arguments, lines its output must contain
CASES = [
    ("template_demo.py", [], ["read back and ordered by the global batch count:"]),
    (
        "batch_naming.py",
        [],
        [
            "BatchAwareCheckpoint:      model_batch_at_00004.weights.h5 model_batch_at_00008"
            ".weights.h5 model_batch_at_00012.weights.h5"
        ],
    ),
    ("custom_loop.py", [], ["every 5 batches (3 kept): b0030-", "find_best:"]),
    ("extras_metadata.py", [], ["ep01-lr5.0e-02-", "in the sidecar 0.0500000"]),
    ("best_only.py", [], ["best-only saves (val_accuracy > 0.6, improving):"]),
    (
        "resume.py",
        [],
        ["resumed at epoch 2, global batch 12, 2 batches into the epoch", "(30 steps)"],
    ),
    ("sweep_report.py", [], ["8 checkpoints in 4 runs", "best_per_lr.csv"]),
    (
        "demo.py",
        ["--epochs", "3", "--preempt-at", "60"],
        [
            "preempted at global batch 60",
            "resumed from b00050-ep02-",
            "same checkpoint names as the uninterrupted run: True; optimizer steps 141 vs 141",
            "$ ckptname ls",
            "$ ckptname best",
        ],
    ),
]


@pytest.mark.parametrize(("script", "args", "expected"), CASES, ids=[c[0] for c in CASES])
def test_example_runs(script, args, expected, tmp_path):
    out_args = [] if script == "template_demo.py" else ["--out", str(tmp_path / "out")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *out_args, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in expected:
        assert line in done.stdout, done.stdout
