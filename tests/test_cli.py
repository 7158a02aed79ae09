"""The ckptname command, in-process and through the installed script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from ckptname.cli import main

T = "ep{epoch:02d}-{val_loss:.2f}.keras"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


RENDER = [
    ((T, "epoch=3", "val_loss=0.5"), 0, "ep03-0.50.keras\n", ""),
    (("{run:s}/e{epoch}", "run=a.b", "epoch=1"), 0, "a.b/e1\n", ""),
    (("{flag}", "flag=True"), 0, "True\n", ""),
    (
        (T, "epoch=3"),
        2,
        "",
        "ckptname render: no value for field 'val_loss' of template "
        "'ep{epoch:02d}-{val_loss:.2f}.keras' (given: epoch)\n",
    ),
    (("{a}", "a"), 2, "", "ckptname render: value 'a' is not key=value; write e.g. epoch=3\n"),
    (
        ("{a:02q}",),
        2,
        "",
        "ckptname render: unknown format type 'q' in field 'a'\n  {a:02q}\n       ^\n",
    ),
]


@pytest.mark.parametrize(("argv", "code", "out", "err"), RENDER)
def test_render(capsys, argv, code, out, err):
    assert run(capsys, "render", *argv) == (code, out, err)


PARSE = [
    ((T, "ep100--1.50.keras"), 0, {"epoch": 100, "val_loss": -1.5}, ""),
    ((T, "ep03-nan.keras"), 0, {"epoch": 3, "val_loss": "nan"}, ""),
    (
        (T, "ep7-0.50.keras"),
        1,
        None,
        "'ep7-0.50.keras' is not a name of template 'ep{epoch:02d}-{val_loss:.2f}.keras'\n",
    ),
    (
        ("{epoch}{batch}", "12"),
        2,
        None,
        "ckptname parse: template '{epoch}{batch}' cannot be read back: fields 'epoch' and "
        "'batch' touch, so one can run into the other; put a separator between 'epoch' and "
        "'batch', e.g. {epoch}-{batch}\n",
    ),
]


@pytest.mark.parametrize(("argv", "code", "values", "err"), PARSE)
def test_parse(capsys, argv, code, values, err):
    got_code, out, got_err = run(capsys, "parse", *argv)
    assert (got_code, got_err) == (code, err)
    assert (json.loads(out) if out else None) == values


def test_check_valid_template_lists_fields_and_notes(capsys):
    code, out, _ = run(capsys, "check", T)
    assert code == 0
    assert out == (
        "template:   ep{epoch:02d}-{val_loss:.2f}.keras\n"
        "style:      brace\n"
        "fields:     epoch (int, 02d), val_loss (float, .2f)\n"
        "reversible: yes\n"
        "note:       'val_loss' is a validation metric: it exists only at epoch end, so save "
        "with save_freq='epoch'\n"
        "note:       'val_loss' is rounded in the name, so close values share a name; "
        "find_best breaks such ties with the exact value in the metadata sidecar\n"
    )


CHECK_NOTES = [
    ("/abs/{epoch}.keras", "the template leaves its folder"),
    ("model-{loss:.3f}.keras", "no epoch, batch or batch_in_epoch field"),
    ("b{batch}.keras", "{batch} is the global batch count here"),
    ("{run}-{epoch:02d}.keras", "'run' has no format type"),
    ("ep{epoch}:{x:d}.keras", "':' cannot appear in Windows file names"),
]


@pytest.mark.parametrize(("template", "note"), CHECK_NOTES)
def test_check_notes(capsys, template, note):
    code, out, _ = run(capsys, "check", template)
    assert code == 0
    assert note in out


def test_check_irreversible_and_invalid_exit_2(capsys):
    code, out, _ = run(capsys, "check", "{epoch:02d}{batch:05d}")
    assert code == 2
    assert "reversible: no: fields 'epoch' and 'batch' touch" in out
    code, out, _ = run(capsys, "check", "{epoch:02q}")
    assert (code, out) == (
        2,
        "invalid: unknown format type 'q' in field 'epoch'\n  {epoch:02q}\n           ^\n",
    )


def test_usage_error_exits_2(capsys):
    code, _, err = run(capsys, "frobnicate")
    assert code == 2
    assert "invalid choice: 'frobnicate'" in err


def test_installed_script_and_module_run():
    script = shutil.which("ckptname", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert script is not None, "the ckptname console script is not installed"
    for cmd in ([script], [sys.executable, "-m", "ckptname"]):
        done = subprocess.run(
            [*cmd, "render", T, "epoch=7", "val_loss=0.5234"], capture_output=True, text=True
        )
        assert (done.returncode, done.stdout, done.stderr) == (0, "ep07-0.52.keras\n", "")
        done = subprocess.run([*cmd, "parse", T, "ep7.keras"], capture_output=True, text=True)
        assert done.returncode == 1
        assert "Traceback" not in done.stderr


# ----------------------------------------------------------------------------- folders

T3 = "ep{epoch:03d}-{val_loss:.3f}.keras"
HOUR = 3600


def _folder(path, template=T3, rows=((1, 0.9), (2, 0.5), (10, 0.4), (99, 0.41), (100, 0.45))):
    import os
    import time

    from ckptname import Template

    t = Template(template)
    path.mkdir(parents=True, exist_ok=True)
    old = time.time() - 2 * HOUR
    for epoch, loss in rows:
        f = path / t.render(epoch=epoch, val_loss=loss)
        f.write_bytes(b"x" * 100 * epoch)
        os.utime(f, (old, old))
    (path / "ep002-0.500.keras.backup").write_bytes(b"decoy")
    (path / ".ckptname-tmp-1-ep101-0.100.keras").write_bytes(b"partial")
    return path


def test_ls_table(capsys, tmp_path):
    root = _folder(tmp_path / "run")
    code, out, err = run(capsys, "ls", str(root), "--template", T3)
    assert (code, err) == (0, "")
    assert out == (
        "name               epoch  batch  val_loss    size  age\n"
        "ep001-0.900.keras      1      -       0.9   100 B   2h\n"
        "ep002-0.500.keras      2      -       0.5   200 B   2h\n"
        "ep010-0.400.keras     10      -       0.4  1000 B   2h\n"
        "ep099-0.410.keras     99      -      0.41  9.7 KB   2h\n"
        "ep100-0.450.keras    100      -      0.45  9.8 KB   2h\n"
    )


def test_ls_json_and_empty(capsys, tmp_path):
    root = _folder(tmp_path / "run")
    code, out, _ = run(capsys, "ls", str(root), "-t", T3, "--json")
    records = json.loads(out)
    assert code == 0
    assert [r["epoch"] for r in records] == [1, 2, 10, 99, 100]
    assert records[-1]["val_loss"] == 0.45
    (tmp_path / "empty").mkdir()
    assert run(capsys, "ls", str(tmp_path / "empty"), "-t", T3) == (
        1,
        "",
        f"no checkpoints under {str(tmp_path / 'empty')!r}\n",
    )


def test_ls_without_template_or_state_file_says_to_pass_one(capsys, tmp_path):
    root = _folder(tmp_path / "run")
    code, _, err = run(capsys, "ls", str(root))
    assert code == 2
    assert err == (
        f"ckptname ls: no template given, and {str(root)!r} has no state file "
        "(.ckptname-state.json) to read one from; pass --template with the template the "
        "checkpoints were saved with, e.g. --template 'ep{epoch:02d}-{val_loss:.2f}.keras'\n"
    )


def test_latest_and_best(capsys, tmp_path):
    root = _folder(tmp_path / "run")
    assert run(capsys, "latest", str(root), "-t", T3) == (0, f"{root / 'ep100-0.450.keras'}\n", "")
    assert run(capsys, "best", str(root), "-m", "val_loss", "-t", T3) == (
        0,
        f"{root / 'ep010-0.400.keras'}\n",
        "",
    )
    code, out, _ = run(
        capsys, "best", str(root), "-m", "val_loss", "--mode", "max", "-t", T3, "--json"
    )
    assert (code, json.loads(out)["epoch"]) == (0, 1)
    assert run(capsys, "best", str(root), "-m", "speed", "-t", T3) == (
        2,
        "",
        "ckptname best: cannot tell whether a higher or a lower 'speed' is better; "
        "pass --mode min or --mode max\n",
    )
    assert run(capsys, "latest", str(tmp_path / "nowhere"), "-t", T3)[0] == 1


def test_prune_shows_the_plan_and_deletes_only_with_yes(capsys, tmp_path):
    root = _folder(tmp_path / "run")
    (root / "ep001-0.900.keras.ckptname.json").write_text("{}")
    argv = ["prune", str(root), "--keep-last", "1", "--keep-best", "1", "-m", "val_loss", "-t", T3]
    plan = (
        "delete  ep001-0.900.keras\n"
        "delete  ep002-0.500.keras\n"
        "keep    ep010-0.400.keras  (best)\n"
        "delete  ep099-0.410.keras\n"
        "keep    ep100-0.450.keras  (newest, latest)\n"
    )
    before = sorted(p.name for p in root.iterdir())
    assert run(capsys, *argv) == (
        0,
        plan + "3 checkpoint(s) would be deleted; pass --yes to delete them\n",
        "",
    )
    assert sorted(p.name for p in root.iterdir()) == before
    assert run(capsys, *argv, "--yes") == (
        0,
        plan + "deleted 3 checkpoint(s) and their sidecars\n",
        "",
    )
    assert sorted(p.name for p in root.iterdir()) == [
        ".ckptname-tmp-1-ep101-0.100.keras",
        "ep002-0.500.keras.backup",
        "ep010-0.400.keras",
        "ep100-0.450.keras",
    ]


def test_prune_needs_a_policy(capsys, tmp_path):
    root = _folder(tmp_path / "run")
    assert run(capsys, "prune", str(root), "-t", T3) == (
        2,
        "",
        "ckptname prune: say what to keep: --keep-last N and/or --keep-best K --monitor M\n",
    )


def test_prune_keep_best_without_monitor_names_the_flag(capsys, tmp_path):
    root = _folder(tmp_path / "run")
    assert run(capsys, "prune", str(root), "--keep-best", "1", "-t", T3) == (
        2,
        "",
        "ckptname prune: keep_best=1 needs a metric to rank by; pass --monitor, "
        "e.g. --monitor val_loss\n",
    )


def test_unusable_state_template_advice_names_the_flag_for_a_root_with_parentheses(
    capsys, tmp_path
):
    from ckptname._metadata import STATE_FORMAT, STATE_NAME, encode

    root = _folder(tmp_path / "run (1)")
    (root / STATE_NAME).write_bytes(
        encode({"format": STATE_FORMAT, "template": "{epoch}{batch}", "latest": None})
    )
    code, out, err = run(capsys, "latest", str(root))
    assert (code, out) == (2, "")
    assert err == (
        f"ckptname latest: state file {str(root / STATE_NAME)!r} holds a template that "
        "cannot be used (template '{epoch}{batch}' cannot be read back: fields 'epoch' and "
        "'batch' touch, so one can run into the other; put a separator between 'epoch' and "
        "'batch', e.g. {epoch}-{batch}), and no template was given; pass --template with "
        "the template the checkpoints were saved with, e.g. "
        "--template 'ep{epoch:02d}-{val_loss:.2f}.keras'\n"
    )


@pytest.mark.parametrize("command", ["ls", "latest"])
def test_a_file_system_error_exits_1(capsys, tmp_path, command):
    import errno
    import os

    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code, out, err = run(capsys, command, str(loop), "-t", T3)
    assert (code, out) == (1, "")
    # A StorageError naming the folder, in one line.
    assert err == f"ckptname {command}: could not list {str(loop)!r}: {os.strerror(errno.ELOOP)}\n"


SWEEP = "lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}-{val_loss:.3f}.keras"


def _sweep(root):
    from ckptname import Template

    t = Template(SWEEP)
    for lr in (1e-3, 1e-2):
        for seed in (0, 1):
            for epoch in (1, 2, 3):
                f = root / t.render(
                    lr=lr, seed=seed, epoch=epoch, val_loss=1 / epoch + lr * 10 + seed / 100
                )
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(b"w")
    return root


def test_ls_of_a_sweep_tree_carries_the_folder_fields(capsys, tmp_path):
    root = _sweep(tmp_path / "sweeps")
    code, out, _ = run(capsys, "ls", str(root), "-t", SWEEP)
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["name", "epoch", "batch", "lr", "seed", "val_loss", "size", "age"]
    assert len(lines) == 1 + 12
    assert lines[1].split()[:5] == ["lr=1e-03/seed=0/ep001-1.010.keras", "1", "-", "0.001", "0"]


def test_plot_writes_one_line_per_run(capsys, tmp_path):
    root = _sweep(tmp_path / "sweeps")
    out_png = tmp_path / "loss.png"
    code, out, err = run(
        capsys, "plot", str(root), "-m", "val_loss", "-t", SWEEP, "-o", str(out_png)
    )
    assert (code, out, err) == (0, f"{out_png}\n", "")
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run(capsys, "plot", str(root), "-m", "accuracy", "-t", SWEEP) == (
        1,
        "",
        f"no checkpoint under {str(root)!r} has a value for 'accuracy'\n",
    )


def test_plot_without_matplotlib_says_how_to_install_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    root = _sweep(tmp_path / "sweeps")
    assert run(capsys, "plot", str(root), "-m", "val_loss", "-t", SWEEP) == (
        2,
        "",
        "ckptname plot: plot needs matplotlib; install it with pip install 'ckptname[plot]'\n",
    )


def test_ls_of_an_fsspec_url(capsys):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    for epoch in (9, 10, 100):
        fs.pipe_file(f"/cli-run/ep{epoch:03d}-0.500.keras", b"abc")
        fs.pipe_file(f"/cli-run/ep{epoch:03d}-0.500.keras.bak", b"abc")
    try:
        code, out, _ = run(capsys, "latest", "memory://cli-run", "-t", T3)
        assert (code, out) == (0, "memory://cli-run/ep100-0.500.keras\n")
    finally:
        fs.rm("/cli-run", recursive=True)


# ----------------------------------------------------------------------------- resource limits


def _limited(*argv: str, memory: int = 1 << 30) -> subprocess.CompletedProcess[str]:
    """``python -m ckptname ARGV`` with at most ``memory`` bytes of address space."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return subprocess.run(
        [sys.executable, "-m", "ckptname", *argv],
        capture_output=True,
        text=True,
        preexec_fn=limit,
        timeout=60,
    )


HUGE_WIDTH = "e{x:04294967296d}.keras"
HUGE_WIDTH_ERROR = (
    "width 4294967296 in field 'x' cannot fit in a file name: a path part holds at most "
    "255 bytes, so use a width of at most 255\n  e{x:04294967296d}.keras\n       ^"
)


def test_a_width_no_file_name_can_hold_is_refused_before_any_memory_is_asked():
    done = _limited("check", HUGE_WIDTH)
    assert (done.returncode, done.stdout, done.stderr) == (2, f"invalid: {HUGE_WIDTH_ERROR}\n", "")


@pytest.mark.parametrize("command", ["ls", "latest"])
def test_a_state_file_naming_a_huge_width_is_one_message(tmp_path, command):
    from ckptname._metadata import STATE_FORMAT, STATE_NAME, encode

    (tmp_path / "e1.keras").write_bytes(b"w")
    (tmp_path / STATE_NAME).write_bytes(
        encode({"format": STATE_FORMAT, "template": HUGE_WIDTH, "latest": {"name": "e1.keras"}})
    )
    done = _limited(command, str(tmp_path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"ckptname {command}: state file {str(tmp_path / STATE_NAME)!r} holds a template that "
        f"cannot be used ({HUGE_WIDTH_ERROR.splitlines()[0]}), and no template was given; "
        "pass --template with the template the checkpoints were saved with, e.g. "
        "--template 'ep{epoch:02d}-{val_loss:.2f}.keras'\n"
    )


# ------------------------------------------------------------------- counters that are no numbers


def test_prune_never_deletes_a_name_whose_counter_is_not_a_number(capsys, tmp_path):
    for name in ["ckpt-1.keras", "ckpt-2.keras", "ckpt-3.keras", "ckpt-final.keras"]:
        (tmp_path / name).write_bytes(b"w")
    argv = ["prune", str(tmp_path), "--keep-last", "2", "-t", "ckpt-{epoch}.keras", "--yes"]
    assert run(capsys, *argv) == (
        0,
        "keep    ckpt-final.keras  (not numbered)\n"
        "delete  ckpt-1.keras\n"
        "keep    ckpt-2.keras  (latest)\n"
        "keep    ckpt-3.keras  (newest, latest)\n"
        "deleted 1 checkpoint(s) and their sidecars\n",
        "",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-2.keras",
        "ckpt-3.keras",
        "ckpt-final.keras",
    ]


@pytest.mark.parametrize(
    ("template", "note"),
    [
        ("ckpt-{epoch}.keras", "counter 'epoch' has no format type, so names whose 'epoch' is "
         "not a number (e.g. 'epoch=final') match too; they are not part of the sequence "
         "(never the latest, never pruned); give it an integer type, e.g. {epoch:d}"),
        ("b<batch:s>.keras", "counter 'batch' is read as str, so names whose 'batch' is not a "
         "number (e.g. 'batch=final') match too; they are not part of the sequence (never the "
         "latest, never pruned); give it an integer type, e.g. <batch:d>"),
    ],
)  # fmt: skip
def test_check_warns_about_counters_without_an_integer_type(capsys, template, note):
    code, out, _ = run(capsys, "check", template)
    assert code == 0
    assert f"note:       {note}\n" in out


def test_prune_by_modification_time_only_when_asked(capsys, tmp_path):
    import os

    for i, run_name in enumerate(["alpha", "beta", "gamma"]):
        path = tmp_path / f"{run_name}.keras"
        path.write_bytes(b"w")
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))
    argv = ["prune", str(tmp_path), "--keep-last", "1", "-t", "{run:s}.keras"]
    assert run(capsys, *argv, "--yes") == (
        2,
        "",
        "ckptname prune: 3 checkpoint(s) have no epoch, batch or batch_in_epoch in their names "
        "(template '{run:s}.keras') or sidecars, so only modification times could tell the "
        "newest, and copies and restores change those; pass --order-by-mtime to prune in "
        "modification-time order anyway\n",
    )
    assert len(list(tmp_path.iterdir())) == 3
    assert run(capsys, *argv, "--order-by-mtime") == (
        0,
        "order:  by modification time (--order-by-mtime): 3 checkpoint(s) have no counter in "
        "their names or sidecars\n"
        "delete  alpha.keras\n"
        "delete  beta.keras\n"
        "keep    gamma.keras  (newest, latest)\n"
        "2 checkpoint(s) would be deleted; pass --yes to delete them\n",
        "",
    )


def test_ls_into_a_reader_that_stops_early_exits_quietly(tmp_path):
    # `ckptname ls ROOT | head -1`: more lines than a pipe holds, and a reader that
    # leaves after the first one.
    for epoch in range(1, 3001):
        (tmp_path / f"ep{epoch:04d}-0.500.keras").write_bytes(b"w")
    template = "ep{epoch:04d}-{loss:.3f}.keras"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ckptname", "ls", str(tmp_path), "-t", template],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().split() == ["name", "epoch", "batch", "loss", "size", "age"]
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert (proc.wait(timeout=60), err) == (1, "")


# ------------------------------------------------------------------ sweep views

BY_SWEEP = "lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}-{val_loss:.4f}.keras"


def _small_sweep(root):
    """3 learning rates x seeds 2 and 10 x 2 epochs, files two hours old."""
    import os
    import time

    from ckptname import Template

    t = Template(BY_SWEEP)
    old = time.time() - 2 * HOUR
    for lr in (1e-2, 1e-3, 3e-4):
        for seed in (2, 10):
            for epoch in (1, 2):
                loss = 0.6 / epoch + lr + seed / 1000
                f = root / t.render(lr=lr, seed=seed, epoch=epoch, val_loss=loss)
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(b"w" * 10)
                os.utime(f, (old, old))
    return root


def test_best_by_prints_the_best_of_each_group_in_number_order(capsys, tmp_path):
    root = _small_sweep(tmp_path / "sweeps")
    assert run(capsys, "best", str(root), "-m", "val_loss", "-t", BY_SWEEP, "--by", "lr,seed") == (
        0,
        "    lr  seed  val_loss  epoch  name\n"
        "0.0003     2    0.3023      2  lr=3e-04/seed=2/ep002-0.3023.keras\n"
        "0.0003    10    0.3103      2  lr=3e-04/seed=10/ep002-0.3103.keras\n"
        " 0.001     2     0.303      2  lr=1e-03/seed=2/ep002-0.3030.keras\n"
        " 0.001    10     0.311      2  lr=1e-03/seed=10/ep002-0.3110.keras\n"
        "  0.01     2     0.312      2  lr=1e-02/seed=2/ep002-0.3120.keras\n"
        "  0.01    10      0.32      2  lr=1e-02/seed=10/ep002-0.3200.keras\n",
        "",
    )
    code, out, _ = run(
        capsys, "best", str(root), "-m", "val_loss", "--mode", "max", "-t", BY_SWEEP, "--by", "lr",
        "--json",
    )
    assert code == 0
    assert [(r["lr"], r["name"]) for r in json.loads(out)] == [
        (0.0003, "lr=3e-04/seed=10/ep001-0.6103.keras"),
        (0.001, "lr=1e-03/seed=10/ep001-0.6110.keras"),
        (0.01, "lr=1e-02/seed=10/ep001-0.6200.keras"),
    ]


def test_ls_by_lists_group_by_group(capsys, tmp_path):
    root = _small_sweep(tmp_path / "sweeps")
    code, out, err = run(capsys, "ls", str(root), "-t", BY_SWEEP, "--by", "seed")
    assert (code, err) == (0, "")
    assert out == (
        "seed=2:\n"
        "name                                 epoch  batch      lr  val_loss  size  age\n"
        "lr=3e-04/seed=2/ep001-0.6023.keras       1      -  0.0003    0.6023  10 B   2h\n"
        "lr=3e-04/seed=2/ep002-0.3023.keras       2      -  0.0003    0.3023  10 B   2h\n"
        "lr=1e-03/seed=2/ep001-0.6030.keras       1      -   0.001     0.603  10 B   2h\n"
        "lr=1e-03/seed=2/ep002-0.3030.keras       2      -   0.001     0.303  10 B   2h\n"
        "lr=1e-02/seed=2/ep001-0.6120.keras       1      -    0.01     0.612  10 B   2h\n"
        "lr=1e-02/seed=2/ep002-0.3120.keras       2      -    0.01     0.312  10 B   2h\n"
        "\n"
        "seed=10:\n"
        "name                                 epoch  batch      lr  val_loss  size  age\n"
        "lr=3e-04/seed=10/ep001-0.6103.keras      1      -  0.0003    0.6103  10 B   2h\n"
        "lr=3e-04/seed=10/ep002-0.3103.keras      2      -  0.0003    0.3103  10 B   2h\n"
        "lr=1e-03/seed=10/ep001-0.6110.keras      1      -   0.001     0.611  10 B   2h\n"
        "lr=1e-03/seed=10/ep002-0.3110.keras      2      -   0.001     0.311  10 B   2h\n"
        "lr=1e-02/seed=10/ep001-0.6200.keras      1      -    0.01      0.62  10 B   2h\n"
        "lr=1e-02/seed=10/ep002-0.3200.keras      2      -    0.01      0.32  10 B   2h\n"
    )
    code, out, _ = run(capsys, "ls", str(root), "-t", BY_SWEEP, "--by", "lr", "--json")
    groups = json.loads(out)
    assert code == 0
    assert [(g["group"], len(g["checkpoints"])) for g in groups] == [
        ({"lr": 0.0003}, 4),
        ({"lr": 0.001}, 4),
        ({"lr": 0.01}, 4),
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ("best", "-m", "val_loss", "--by", "lr,batch_size"),
        ("ls", "--by", "batch_size"),
    ],
)
def test_by_a_field_the_template_lacks_names_the_fields_it_has(capsys, tmp_path, argv):
    root = _small_sweep(tmp_path / "sweeps")
    command, *rest = argv
    assert run(capsys, command, str(root), "-t", BY_SWEEP, *rest) == (
        2,
        "",
        f"ckptname {command}: cannot group by 'batch_size': it is not a field of template "
        "'lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}-{val_loss:.4f}.keras' "
        "(fields: lr, seed, epoch, val_loss)\n",
    )


def test_best_by_a_metric_no_checkpoint_carries_names_the_fields(capsys, tmp_path):
    root = _small_sweep(tmp_path / "sweeps")
    assert run(capsys, "best", str(root), "-m", "val_accuracy", "-t", BY_SWEEP, "--by", "lr") == (
        2,
        "",
        "ckptname best: monitor 'val_accuracy' is not a field of template "
        "'lr={lr:.0e}/seed={seed:d}/ep{epoch:03d}-{val_loss:.4f}.keras' and no checkpoint's "
        "sidecar records it; rank by one of the template's fields (lr, seed, epoch, val_loss) "
        "or by a metric the sidecars hold\n",
    )


def test_by_needs_field_names(capsys, tmp_path):
    root = _small_sweep(tmp_path / "sweeps")
    assert run(capsys, "best", str(root), "-m", "val_loss", "-t", BY_SWEEP, "--by", "lr,") == (
        2,
        "",
        "ckptname best: --by takes field names separated by commas, e.g. --by lr,seed; "
        "got 'lr,'\n",
    )


# ------------------------------------------------------------------ names too long to save

_TOO_LONG = (
    "a save adds 41 bytes to a name (the temporary name of its sidecar, '.ckptname-tmp-<id>-' "
    "+ name + '.ckptname.json'): 256 bytes, more than the 255 that file systems allow in a name"
)


def test_check_refuses_a_template_whose_names_cannot_be_saved(capsys):
    template = "runs/" + "x" * 205 + "-{epoch:03d}.keras"
    code, out, _ = run(capsys, "check", template)
    assert (code, out) == (
        2,
        f"invalid: checkpoint names of this template take at least 215 bytes, and {_TOO_LONG}; "
        f"make its last part give names of at most 214 bytes\n  {template}\n       ^\n",
    )
    code, out, _ = run(capsys, "check", template.replace("x" * 205, "x" * 204))
    assert code == 0 and out.startswith("template:")


def test_check_with_values_refuses_names_those_values_make_too_long(capsys):
    template = "{run}-b{batch:05d}.keras"
    code, out, _ = run(capsys, "check", template, "run=" + "r" * 202)
    assert (code, out) == (
        2,
        f"invalid: checkpoint names of template '{template}' take at least 215 bytes with "
        f"run='rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr...', and {_TOO_LONG}; shorten the values "
        "or the template's last part to give names of at most 214 bytes\n",
    )
    code, out, _ = run(capsys, "check", template, "run=" + "r" * 201)
    assert code == 0 and out.startswith("template:")


def test_an_error_a_storage_library_raised_itself_is_one_line(capsys, monkeypatch):
    """Raised outside what ckptname wraps (here, opening the file system): one line, exit 1."""
    pytest.importorskip("fsspec")
    import fsspec

    ClientError = type("ClientError", (Exception,), {"__module__": "botocore.exceptions"})

    def refuse(*args, **kwargs):
        raise ClientError("An error occurred (InvalidAccessKeyId) when calling ListObjectsV2")

    monkeypatch.setattr(fsspec.core, "url_to_fs", refuse)
    code, out, err = run(capsys, "ls", "s3://bucket/run", "-t", T)
    assert (code, out, err) == (
        1,
        "",
        "ckptname ls: ClientError: An error occurred (InvalidAccessKeyId) when calling "
        "ListObjectsV2\n",
    )
