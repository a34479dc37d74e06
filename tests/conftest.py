"""Shared fixtures: an isolated, offline home for every test, and tiny Mixtrals that llama.cpp really runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from mixtral_cli.convert.checkpoint import open_checkpoint
from mixtral_cli.convert.hf_to_gguf import write_gguf
from mixtral_cli.gguf_format.quant_types import quant_type
from mixtral_cli.sources.demo import demo_model_path, ensure_demo_model
from mixtral_cli.sources.tiny_model import TinyMixtralSpec, build_tiny_mixtral

from .helpers import run_mixtral


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
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Path:
    """A fresh, offline home for every test.

    Tests that use the demo model (``-m tiny``) ask for ``demo_model``, often for the whole module with
    ``pytestmark = pytest.mark.usefixtures("demo_model")``; it is linked in so `-m tiny` needs no
    rebuild. Other tests never wait for it to be built.
    """
    demo = request.getfixturevalue("demo_model") if "demo_model" in request.fixturenames else None
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("MIXTRAL_HOME", str(home / "mixtral"))
    if demo is not None:
        linked = demo_model_path()
        linked.parent.mkdir(parents=True)
        linked.symlink_to(demo)
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
def mixtral():
    """Run the CLI in this process, as the console script would (``input``: piped stdin), and capture it."""

    def run(*args: str | os.PathLike[str], input: str | bytes = "") -> Result:
        done = run_mixtral(*args, input=input)
        return Result(done.returncode, done.stdout, done.stderr)

    return run
