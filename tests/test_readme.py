"""Every Python block in README.md runs, and printed output matches the comments under it."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _expected_output(block: str) -> str | None:
    """The comment lines that follow a print() call, as the output they promise."""
    lines = block.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith("print(") or "    print(" in line:
            following = []
            for nxt in lines[i + 1 :]:
                if nxt.startswith("# "):
                    following.append(nxt[2:])
                elif following:
                    break
            if following:
                return " ".join(following)
    return None


def test_readme_has_python_blocks_and_the_two_commands():
    text = README.read_text()
    assert BLOCKS
    assert "make test" in text and "make demo" in text


def test_readme_blocks_run_in_order(tmp_path, monkeypatch):
    """Blocks build on earlier ones, as a reader running them in order would."""
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for index, block in enumerate(BLOCKS):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, f"README.md block {index + 1}", "exec"), namespace)
        expected = _expected_output(block)
        if expected is not None:
            got = " ".join(out.getvalue().split())
            assert got == " ".join(expected.split()), f"block {index + 1}"
