"""The GPU path, run for real: llama.cpp's Vulkan backend on a GPU device (in CI, Mesa's lavapipe).

These tests run only in the GPU lane (`scripts/gpu-lane.sh`: pytest -m gpu, with GGML_VK_VISIBLE_DEVICES=0
and a Vulkan build); the main run deselects them. Without a GPU visible they fail, never pass.
lavapipe does not enforce its reported 2 GiB, so a fit is checked against the plan and llama.cpp's own
buffer-size log, not by waiting for an out-of-memory error.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .helpers import placement_from_log, run_mixtral_process

pytestmark = pytest.mark.gpu

MIB = 2**20
# Bigger than lavapipe's "2 GiB" device, every tensor under its 128 MiB storage-buffer limit: 3.7 GB in F16.
BIGGER_THAN_THE_GPU = TinyMixtralSpec(
    hidden_size=1024, intermediate_size=3584, num_layers=20, num_experts=8, num_heads=8, num_kv_heads=2, shards=20
)
# Expert tensors of 8 x 1024 x 8704 in F16, 136 MiB each: over lavapipe's largest buffer, as 8x7B's are on
# many cards (264 MB each at Q4_K).
EXPERTS_OVER_THE_BUFFER_LIMIT = TinyMixtralSpec(
    hidden_size=1024, intermediate_size=8704, num_layers=2, num_experts=8, num_heads=8, num_kv_heads=2, shards=8
)


def gpu_env(devices: str = "0") -> dict[str, str]:
    return {**os.environ, "GGML_VK_VISIBLE_DEVICES": devices}


def mixtral(*args: str | Path, devices: str = "0", **kwargs):
    return run_mixtral_process(*args, env=gpu_env(devices), timeout=1200, **kwargs)


@pytest.fixture(scope="session", autouse=True)
def vulkan_device() -> dict:
    """The lane's GPU; without one every test here fails (a skipped lane would look green)."""
    result = mixtral("devices", "--json")
    assert result.returncode == 0, result.stderr
    gpus = [d for d in json.loads(result.stdout)["devices"] if d["kind"] == "gpu"]
    assert gpus, "no GPU visible: the GPU lane needs a Vulkan build and GGML_VK_VISIBLE_DEVICES (scripts/gpu-lane.sh)"
    return gpus[0]


@pytest.fixture(scope="session")
def big_model(convert) -> Path:
    return convert(BIGGER_THAN_THE_GPU, "F16")


@pytest.fixture(scope="session")
def wide_experts_model(convert) -> Path:
    return convert(EXPERTS_OVER_THE_BUFFER_LIMIT, "F16")


def plan_of(model: Path, *args: str, devices: str = "0") -> dict:
    result = mixtral("devices", "-m", model, "--json", *args, devices=devices)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["placement"]


def verbose_run(model: Path, *args: str, devices: str = "0") -> str:
    result = mixtral("complete", "-m", model, "-n", "2", "--raw", "--verbose", *args, "Once upon", devices=devices)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def buffer_sizes(log: str, kind: str = "model") -> dict[str, float]:
    """llama.cpp's "<buffer> model buffer size = X MiB" lines (or KV, compute), in bytes per buffer name."""
    sizes: dict[str, float] = {}
    for name, mib in re.findall(rf"(\S+) {kind} buffer size = +([\d.]+) MiB", log):
        sizes[name] = sizes.get(name, 0) + float(mib) * MIB
    return sizes


def gpu_share(plan: dict, name: str) -> dict:
    return next(d for d in plan["devices"] if d["name"] == name)


def assert_close(planned: float, actual: float) -> None:
    # llama.cpp pads each tensor to its buffer's alignment; the GGUF table pads to the file's.
    assert abs(planned - actual) <= max(0.02 * actual, 1 * MIB), (planned, actual)


def test_the_fitted_plan_is_the_placement_llama_cpp_makes(big_model):
    log = verbose_run(big_model)

    planned = re.search(r"Placement: (layers [^;.]*)", log).group(1)
    assert planned == placement_from_log(log)


def test_a_model_bigger_than_the_gpu_runs_with_the_experts_of_some_layers_in_host_memory(big_model, vulkan_device):
    plan = plan_of(big_model)
    log = verbose_run(big_model)

    assert plan["fitted"] and 0 < len(plan["experts_on_host"]) < BIGGER_THAN_THE_GPU.num_layers
    assert set(plan["layer_devices"]) == {"Vulkan0"}
    vulkan = gpu_share(plan, "Vulkan0")
    assert_close(vulkan["weight_bytes"], buffer_sizes(log)["Vulkan0"])
    assert_close(vulkan["compute_bytes"], buffer_sizes(log, "compute")["Vulkan0"])
    assert vulkan["needed_bytes"] <= vulkan_device["free_bytes"] - vulkan["margin_bytes"]
    assert f"experts of {len(plan['experts_on_host'])} GPU layers in host memory" in log


def test_the_kv_cache_the_plan_counts_is_what_llama_cpp_allocates(big_model):
    plan = plan_of(big_model, "-c", "2048")
    log = verbose_run(big_model, "-c", "2048")

    assert_close(gpu_share(plan, "Vulkan0")["kv_bytes"], buffer_sizes(log, "KV")["Vulkan0"])


def test_a_model_bigger_than_the_gpu_is_split_over_two_devices_each_fitted(big_model):
    plan = plan_of(big_model, devices="0,0")
    log = verbose_run(big_model, devices="0,0")

    assert {"Vulkan0", "Vulkan1"} <= set(plan["layer_devices"])
    actual = buffer_sizes(log)
    for name in ("Vulkan0", "Vulkan1"):
        share = gpu_share(plan, name)
        assert share["fits"]
        assert_close(share["weight_bytes"], actual[name])
    assert re.search(r"Placement: (layers [^;.]*)", log).group(1) == placement_from_log(log)


def test_tensors_bigger_than_the_device_takes_stay_on_the_host_as_llama_cpp_keeps_them(wide_experts_model):
    plan = plan_of(wide_experts_model)
    log = verbose_run(wide_experts_model)

    assert not plan["experts_on_host"]  # every layer and its experts are assigned to the GPU ...
    vulkan = gpu_share(plan, "Vulkan0")
    experts = 3 * EXPERTS_OVER_THE_BUFFER_LIMIT.num_layers * 8 * 1024 * 8704 * 2
    assert vulkan["weight_bytes"] < experts / 4  # ... yet the expert tensors stay on the host
    assert_close(vulkan["weight_bytes"], buffer_sizes(log)["Vulkan0"])


def test_every_layer_on_the_gpu_is_refused_before_loading_with_the_option_that_fits(big_model):
    plan = plan_of(big_model)
    result = mixtral("complete", "-m", big_model, "--n-gpu-layers", "99", "--verbose", "-n", "1", "Hi")

    assert result.returncode == 1
    assert "Vulkan0 would need" in result.stderr
    assert f"--n-cpu-moe {max(plan['experts_on_host']) + 1} fits" in result.stderr
    assert "model buffer size" not in result.stderr  # nothing was loaded
    assert "Traceback" not in result.stderr


def test_too_few_experts_on_the_host_is_refused(big_model):
    result = mixtral("devices", "-m", big_model, "--n-cpu-moe", "1")

    assert result.returncode == 1
    assert "Vulkan0 would need" in result.stderr and "--n-cpu-moe" in result.stderr


def test_logits_on_the_gpu_match_the_cpus_within_tolerance(demo_model):
    gpu = _last_logits(demo_model, "--n-gpu-layers", "99")
    cpu = _last_logits(demo_model, "--n-gpu-layers", "0")

    assert np.corrcoef(gpu, cpu)[0, 1] > 0.999
    assert np.abs(gpu - cpu).max() < 0.25
    assert gpu.argmax() == cpu.argmax()


def _last_logits(model: Path, *args: str) -> np.ndarray:
    """The logits after a prompt, from a child process with the GPU visible."""
    script = (
        "import sys, numpy as np, llama_cpp\n"
        "from mixtral_cli.engine.model import Engine\n"
        "from mixtral_cli.cli.options import engine_options_from\n"
        "options = engine_options_from(n_gpu_layers=int(sys.argv[2]), ctx_size=256)\n"
        "with Engine(__import__('pathlib').Path(sys.argv[1]), options) as engine:\n"
        "    engine.time_evaluation(engine.raw_ids('The quick brown fox jumps over the lazy'), one_by_one=False)\n"
        "    logits = llama_cpp.llama_get_logits_ith(engine._ctx, -1)\n"
        "    np.save(sys.stdout.buffer, np.ctypeslib.as_array(logits, shape=(engine.info.n_vocab,)).copy())\n"
    )
    import io
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script, str(model), args[-1]], capture_output=True, env=gpu_env(), timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return np.load(io.BytesIO(done.stdout))


def test_chat_runs_on_the_gpu(demo_model):
    result = mixtral("chat", "-m", demo_model, "--verbose", "-n", "8", "--temperature", "0", input="Hello\n/stats\n")

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Placement: layers 0-1 on Vulkan0" in result.stderr and buffer_sizes(result.stderr)["Vulkan0"] > 0
    assert re.search(r"prompt: \d+ tokens evaluated", result.stderr)


def test_summarize_runs_on_the_gpu(demo_model, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("Mixtral keeps eight experts per layer and runs two of them for each token. " * 20)
    result = mixtral("summarize", "-m", demo_model, "--json", "--verbose", str(text), "--max-words", "20")

    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["summary"]
    assert "Placement: layers 0-1 on Vulkan0" in result.stderr


def test_structured_output_runs_on_the_gpu(demo_model, tmp_path):
    # Enums: an answer of a few tokens, which random weights cannot drag past the token budget.
    schema = {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}}, "required": ["colour"]}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    args = ("complete", "-m", demo_model, "--json-schema", tmp_path / "schema.json", "-n", "64", "--verbose", "Which?")
    result = mixtral(*args)

    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["colour"] in {"red", "green", "blue"}
    assert "Placement: layers 0-1 on Vulkan0" in result.stderr


def test_a_q8_0_k_cache_takes_the_bytes_the_plan_shows_and_runs(demo_model):
    f16 = gpu_share(plan_of(demo_model, "-c", "1024"), "Vulkan0")["kv_bytes"]
    q8_0 = gpu_share(plan_of(demo_model, "-c", "1024", "--cache-type-k", "q8_0"), "Vulkan0")["kv_bytes"]
    log = verbose_run(demo_model, "-c", "1024", "--cache-type-k", "q8_0")

    assert q8_0 == pytest.approx(f16 * (34 / 32 + 2) / 4)  # K's half of the cache at 34 bytes per 32 values
    assert_close(q8_0, buffer_sizes(log, "KV")["Vulkan0"])


def test_a_quantized_v_cache_runs_with_flash_attention_or_is_one_line_without(demo_model, vulkan_device):
    result = mixtral("complete", "-m", demo_model, "--cache-type-v", "q8_0", "-n", "2", "Hi")

    if "llvmpipe" in vulkan_device["description"]:
        # llvmpipe runs without flash attention (Mesa 22.3 crashes with it), and llama.cpp needs it for this.
        assert result.returncode == 2
        assert "--cache-type-v q8_0 needs flash attention" in result.stderr and "llvmpipe" in result.stderr
        assert "Traceback" not in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-3000:]
