"""README.md's commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)


def test_ci_runs_the_readme_test_command_as_written() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line for block in _bash_blocks(quick_start) for line in block.splitlines()]
    (test_command,) = [c for c in commands if "nox -s tests" in c]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
    # nox lives in the .venv the command creates, never in the system interpreter.
    assert not any(re.search(r"python3? -m pip install", c) for c in commands)
