"""The README's examples run as written.

Every ```python block runs alone, as a reader would paste it: a fresh interpreter (``python -c``),
in an empty temporary folder, with nothing from the other blocks. And the README's test command in
its Quick start is the command CI runs (the last line of ``.ci/run``): the two must stay in step.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_SCRIPT = ROOT / ".ci" / "run"
BLOCK_SECONDS = 300  # one block: the training example takes seconds; this only stops a hang


def fenced_blocks(text: str, language: str) -> list[str]:
    """The bodies of the ```<language> fenced blocks of a Markdown ``text``, in order."""
    return re.findall(rf"^```{language}[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.MULTILINE | re.DOTALL)


def section(text: str, heading: str) -> str:
    """The Markdown section under ``## <heading>``, up to the next heading of level 2."""
    match = re.search(rf"^## {re.escape(heading)}[ \t]*\n(.*?)(?=^## |\Z)", text, flags=re.MULTILINE | re.DOTALL)
    assert match is not None, f"README.md has no '## {heading}' section"
    return match[1]


PYTHON_BLOCKS = fenced_blocks(README.read_text(encoding="utf-8"), "python")


def test_readme_has_python_examples():
    assert PYTHON_BLOCKS, "README.md has no ```python blocks; this test would check nothing"


@pytest.mark.parametrize("block", PYTHON_BLOCKS,
                         ids=[f"{i}:{block.strip().splitlines()[0][:50]}" for i, block in enumerate(PYTHON_BLOCKS)])
def test_readme_python_block_runs_alone(block, tmp_path):
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True,
                          timeout=BLOCK_SECONDS)
    assert done.returncode == 0, f"this README block exited {done.returncode}:\n{block}\nstderr:\n{done.stderr}"


def test_quick_start_test_command_is_the_one_ci_runs():
    commands = [block.strip() for block in fenced_blocks(section(README.read_text(encoding="utf-8"), "Quick start"),
                                                         "bash") if "pytest" in block]
    assert len(commands) == 1, f"expected one test command (a ```bash block running pytest) in Quick start: {commands}"
    ci_lines = [line.strip() for line in CI_SCRIPT.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert commands[0] == ci_lines[-1], "README's Quick start test command and the last line of .ci/run differ"
