"""Shared fixtures: an isolated, offline home for every test, and tiny Mixtrals that llama.cpp really runs."""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixtral_cli.cli import main
from mixtral_cli.convert.checkpoint import open_checkpoint
from mixtral_cli.convert.hf_to_gguf import write_gguf
from mixtral_cli.demo import demo_model_path, ensure_demo_model
from mixtral_cli.quant_types import quant_type
from mixtral_cli.tinymodel import TinyMixtralSpec, build_tiny_mixtral


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built-in demo model, built once for the whole session by the real pipeline."""
    home = tmp_path_factory.mktemp("demo-home")
    previous = os.environ.get("MIXTRAL_HOME")
    os.environ["MIXTRAL_HOME"] = str(home)
    try:
        return ensure_demo_model()
    finally:
        if previous is None:
            del os.environ["MIXTRAL_HOME"]
        else:
            os.environ["MIXTRAL_HOME"] = previous


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, demo_model: Path) -> Path:
    """A fresh, offline home for every test; the demo model is linked in so `-m tiny` needs no rebuild."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MIXTRAL_HOME", str(home / "mixtral"))
    linked = demo_model_path()
    linked.parent.mkdir(parents=True)
    linked.symlink_to(demo_model)
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("MIXTRAL_DEBUG", raising=False)
    monkeypatch.delenv("MIXTRAL_MODEL", raising=False)
    return home


@pytest.fixture(scope="session")
def build_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """Build (once per spec) a tiny checkpoint folder."""
    built: dict[TinyMixtralSpec, Path] = {}

    def build(spec: TinyMixtralSpec = TinyMixtralSpec()) -> Path:
        if spec not in built:
            built[spec] = build_tiny_mixtral(tmp_path_factory.mktemp("checkpoint"), spec)
        return built[spec]

    return build


@pytest.fixture(scope="session")
def convert(tmp_path_factory: pytest.TempPathFactory, build_checkpoint):
    """Convert (once per spec and type) a tiny checkpoint to a GGUF with the project's converter."""
    converted: dict[tuple[TinyMixtralSpec, str], Path] = {}

    def run(spec: TinyMixtralSpec = TinyMixtralSpec(), type_name: str = "F32") -> Path:
        if (spec, type_name) not in converted:
            output = tmp_path_factory.mktemp("gguf") / f"tiny-{type_name}.gguf"
            write_gguf(open_checkpoint(build_checkpoint(spec)), output, quant_type(type_name))
            converted[spec, type_name] = output
        return converted[spec, type_name]

    return run


@pytest.fixture(scope="session")
def tiny_checkpoint(build_checkpoint) -> Path:
    return build_checkpoint()


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def mixtral(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run the CLI in this process, as the console script would, and capture what it prints.

    ``input`` is stdin as a pipe would give it; without it stdin is an empty pipe, as under /dev/null.
    """

    def run(*args: str | os.PathLike[str], input: str = "") -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "stdin", io.StringIO(input))
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run
