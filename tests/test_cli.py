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
