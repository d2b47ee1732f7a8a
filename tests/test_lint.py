"""`make lint` (ruff and mypy) is wired into CI, configured strictly, and passes.

The tool runs take about a second with mypy's cache warm (CI runs `make lint` first), ten cold.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _make_recipe(target: str) -> list[str]:
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return recipe


def _commands(script: str) -> list[str]:
    lines = (line.strip() for line in script.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_ci_runs_lint_before_the_tests() -> None:
    commands = _commands((ROOT / ".ci" / "run").read_text())
    assert "make lint" in commands and "make test" in commands
    assert commands.index("make lint") < commands.index("make test")


def test_lint_target_runs_ruff_and_mypy() -> None:
    recipe = _make_recipe("lint")
    assert "$(VENV)/bin/ruff check ." in recipe
    assert "$(VENV)/bin/ruff format --check ." in recipe
    assert any(re.fullmatch(r"\$\(VENV\)/bin/mypy\b.*", command) for command in recipe), recipe


def test_mypy_is_pinned_and_configured_strictly() -> None:
    requirements = (ROOT / "requirements-dev.txt").read_text()
    assert re.search(r"^mypy==\S+$", requirements, re.M)
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["python_version"] == "3.12"
    assert set(config["files"]) >= {"app.py", "chalicelib", "tools", "imageshelf_client"}
    for flag in (
        "disallow_untyped_defs",
        "warn_unused_ignores",
        "warn_redundant_casts",
        "no_implicit_optional",
        "strict_equality",
    ):
        assert config.get(flag) is True, flag
    assert "ignore_missing_imports" not in config, "only per module, for libraries without types"
    for override in config.get("overrides", []):
        weakened = override.get("ignore_errors") or override.get("disallow_untyped_defs") is False
        assert not weakened, f"strictness weakened for {override['module']}"


def _run(*command: str) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize(
    "command",
    [
        ("-m", "ruff", "check", "."),
        ("-m", "ruff", "format", "--check", "."),
        ("-m", "mypy"),
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_lint_passes(command: tuple[str, ...]) -> None:
    _run(sys.executable, *command)
