"""`mixtral pull` and `mixtral quantize` of PEFT adapter repos on a real Hub server (olah on loopback)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from .helpers import run_mixtral_process
from .hub_server import LocalHub, folder_files, online_env
from .test_lora import SPEC, attention_adapter

ADAPTER_REPO = "someone/tiny-samsum-lora"
FOREIGN_REPO = "someone/llama-lora"
OFFICIAL_INSTRUCT = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def _adapter_files(folder: Path, *, base: str, with_config: Path | None) -> dict[str, bytes]:
    files = folder_files(folder)
    config = json.loads(files["adapter_config.json"])
    files["adapter_config.json"] = json.dumps({**config, "base_model_name_or_path": base}).encode()
    if with_config is not None:
        files["config.json"] = (with_config / "config.json").read_bytes()
    return files


@pytest.fixture(scope="module")
def hub(tmp_path_factory, build_checkpoint):
    """An adapter of the official Instruct model (its config.json beside it: the tiny shape), and one of a
    model mixtral does not know, without a config.json."""
    checkpoint = build_checkpoint(SPEC)
    folder = attention_adapter(np.random.default_rng(12)).save(tmp_path_factory.mktemp("a") / "lora", base=checkpoint)
    server = LocalHub(tmp_path_factory.mktemp("hub"))
    server.add_repo(ADAPTER_REPO, _adapter_files(folder, base=OFFICIAL_INSTRUCT, with_config=checkpoint))
    server.add_repo(FOREIGN_REPO, _adapter_files(folder, base="meta-llama/Llama-2-7b-hf", with_config=None))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def online(hub, isolated_home):
    return online_env(hub)


def run(*args, env):
    return run_mixtral_process(*args, env=env, stdin=subprocess.DEVNULL)


def test_adapter_repo_is_pulled_converted_and_applied_by_name(online, convert):
    pulled = run("pull", ADAPTER_REPO, env=online)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.splitlines()[-1] == f"{ADAPTER_REPO}:F16"
    plan = " ".join(pulled.stdout.split())  # the plan wraps at the terminal's width
    assert f"download the LoRA adapter of {OFFICIAL_INSTRUCT} and convert it to a F16 GGUF adapter" in plan

    shown = run("models", "show", f"{ADAPTER_REPO}:F16", env=online)
    assert shown.returncode == 0, shown.stderr
    assert f"LoRA adapter of: {OFFICIAL_INSTRUCT} (`8x7b-instruct` in the catalog)" in shown.stdout

    model = convert(SPEC, "Q8_0")
    args = ("complete", "-m", model, "--raw", "-n", "4", "-c", "256", "--json", "--lora", f"{ADAPTER_REPO}:0.5")
    answered = run(*args, "Once", env=online)
    assert answered.returncode == 0, answered.stderr
    (lora,) = json.loads(answered.stdout)["loras"]
    assert (lora["scale"], lora["base_model"]) == (0.5, OFFICIAL_INSTRUCT)
    assert Path(lora["path"]).parent.name == "models"


def test_adapter_of_a_model_mixtral_does_not_know_is_refused_before_its_weights_download(online, isolated_home):
    result = run("pull", FOREIGN_REPO, env=online)

    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "meta-llama/Llama-2-7b-hf" in errors[0]
    assert not list((isolated_home / "hf").rglob("adapter_model.safetensors"))


def test_quantize_converts_an_adapter_repo_by_name(online, tmp_path):
    result = run_mixtral_process("quantize", ADAPTER_REPO, env=online, stdin=subprocess.DEVNULL, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "tiny-samsum-lora-F16.gguf"
