"""The package's layers (pyproject.toml's import-linter contracts): kept, and a wrong import fails them by name."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the ``mixtral_cli`` under ``root``, with ``root``'s pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--no-logo"]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "mixtral_cli", tmp_path / "mixtral_cli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def add_line(module: Path, line: str) -> None:
    module.write_text(module.read_text() + f"\n{line}\n")


def test_the_package_keeps_its_contracts():
    result = lint_imports(ROOT)

    assert result.returncode == 0, result.stdout
    assert "0 broken" in result.stdout


def test_an_import_that_points_up_fails_naming_it(tmp_path):
    root = package_copy(tmp_path)
    add_line(root / "mixtral_cli" / "base" / "units.py", "from ..engine import model  # noqa: E402")

    result = lint_imports(root)

    assert result.returncode == 1
    assert "Layers: every import points down BROKEN" in result.stdout
    assert "mixtral_cli.base is not allowed to import mixtral_cli.engine" in result.stdout
    assert "mixtral_cli.base.units -> mixtral_cli.engine.model" in result.stdout


def test_a_type_only_import_that_closes_a_cycle_fails(tmp_path):
    root = package_copy(tmp_path)
    # engine.model imports engine.options; this makes options import model back, for type checking only.
    add_line(
        root / "mixtral_cli" / "engine" / "options.py",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .model import Engine",
    )

    result = lint_imports(root)

    assert result.returncode == 1
    assert "No import cycles among modules BROKEN" in result.stdout
    assert "No cycles are allowed in mixtral_cli.engine" in result.stdout


def test_llama_cpp_imported_outside_the_engine_fails_naming_the_module(tmp_path):
    root = package_copy(tmp_path)
    add_line(root / "mixtral_cli" / "answer" / "gbnf.py", "import llama_cpp  # noqa: E402")

    result = lint_imports(root)

    assert result.returncode == 1
    assert "mixtral_cli.answer is not allowed to import llama_cpp" in result.stdout
    assert "mixtral_cli.answer.gbnf -> llama_cpp" in result.stdout
