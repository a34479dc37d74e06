"""Fitting a model to the GPUs: the plan on made-up machines (the GPU lane checks it against llama.cpp)."""

from __future__ import annotations

import pytest

from mixtral_cli.base.errors import PlacementError
from mixtral_cli.engine.devices import Device, DeviceKind
from mixtral_cli.engine.fit import plan_for
from mixtral_cli.engine.options import EngineOptions, kv_bytes_per_token
from mixtral_cli.engine.placement import Budget

MIB = 2**20
GIB = 2**30
N_LAYER = 8


def device(name: str, kind: DeviceKind, free_mib: int) -> Device:
    return Device(name, name.lower(), kind, free_mib * MIB, free_mib * MIB, handle=0)


CPU = device("CPU", DeviceKind.CPU, 64 * 1024)


def tensors(n_layer: int = N_LAYER, *, expert_mib: int = 30) -> dict[str, int]:
    """A Mixtral-shaped tensor table: per layer 4 MiB of attention and norms and three expert tensors."""
    table = {"token_embd.weight": 16 * MIB, "output_norm.weight": 4096, "output.weight": 16 * MIB}
    for i in range(n_layer):
        table |= {f"blk.{i}.attn_q.weight": 2 * MIB, f"blk.{i}.attn_k.weight": MIB, f"blk.{i}.attn_v.weight": MIB}
        table |= {f"blk.{i}.ffn_{kind}_exps.weight": expert_mib * MIB for kind in ("gate", "up", "down")}
    return table


def budget(**changes) -> Budget:
    return Budget(
        **{"kv_bytes_per_layer": MIB, "compute_bytes": {}, "largest_tensor": {}, "margin": 64 * MIB, **changes}
    )


def plan(options: EngineOptions, *gpus: Device, table: dict[str, int] | None = None, **budget_changes):
    return plan_for(
        options, [CPU, *gpus], n_layer=N_LAYER, tensor_bytes=table or tensors(), budget=budget(**budget_changes)
    )


def gpu_needs(result, name: str = "GPU0"):
    return next(n for n in result.needs if n.device.name == name)


def test_a_model_that_fits_goes_wholly_on_the_gpu():
    result = plan(EngineOptions(), device("GPU0", DeviceKind.GPU, 2048))

    assert result.fitted
    assert set(result.placement.layer_devices()) == {"GPU0"}
    assert not result.placement.experts_on_host


def test_a_model_bigger_than_the_gpu_keeps_the_experts_of_the_fewest_first_layers_on_the_host():
    # 8 layers of 94 MiB + 16 MiB output, 1 MiB KV each: 776 MiB; the GPU has 500 MiB less a 64 MiB margin.
    result = plan(EngineOptions(), device("GPU0", DeviceKind.GPU, 500))

    assert set(result.placement.layer_devices()) == {"GPU0"}
    k = len(result.placement.experts_on_host)
    assert result.placement.experts_on_host == frozenset(range(k))
    assert 0 < k < N_LAYER and gpu_needs(result).fits


def test_one_fewer_expert_layer_on_the_host_is_refused_with_the_option_that_fits():
    fitted = plan(EngineOptions(), device("GPU0", DeviceKind.GPU, 500))
    k = len(fitted.placement.experts_on_host)

    refusal = r"GPU0 would need .* and has 500.0 MiB free, less a 64.0 MiB margin\."
    with pytest.raises(PlacementError, match=refusal) as raised:
        plan(EngineOptions(n_cpu_moe=k - 1), device("GPU0", DeviceKind.GPU, 500))

    assert raised.value.hint.startswith(f"--n-cpu-moe {k} fits")


def test_every_layer_on_a_gpu_too_small_is_refused_before_loading():
    with pytest.raises(PlacementError, match="GPU0 would need"):
        plan(EngineOptions(n_gpu_layers=99), device("GPU0", DeviceKind.GPU, 300))


def test_no_layers_on_a_nearly_full_gpu_is_not_refused():
    result = plan(EngineOptions(n_gpu_layers=0), device("GPU0", DeviceKind.GPU, 32), compute_bytes={"GPU0": 64 * MIB})

    assert set(result.placement.layer_devices()) == {"CPU"}
    assert gpu_needs(result).needed == 0 and gpu_needs(result).fits


def test_when_even_all_experts_on_the_host_do_not_fit_fewer_layers_go_to_the_gpu():
    # Without experts a layer is 5 MiB: 9 layers with the output are 61 MiB; 100 MiB less 64 leaves 36.
    result = plan(EngineOptions(), device("GPU0", DeviceKind.GPU, 100))

    names = result.placement.layer_devices()
    assert "CPU" in names and names[-1] == "GPU0"
    assert result.placement.experts_on_host == frozenset(i for i, d in enumerate(names[:-1]) if d == "GPU0")
    assert gpu_needs(result).fits


def test_a_gpu_with_no_room_gets_no_layers():
    result = plan(EngineOptions(), device("GPU0", DeviceKind.GPU, 64))

    assert set(result.placement.layer_devices()) == {"CPU"}


def test_the_margin_counts_against_the_gpu():
    small = plan(EngineOptions(), device("GPU0", DeviceKind.GPU, 800), margin=0)
    large = plan(EngineOptions(), device("GPU0", DeviceKind.GPU, 800), margin=300 * MIB)

    assert not small.placement.experts_on_host
    assert large.placement.experts_on_host
    assert gpu_needs(large).needed <= 500 * MIB


def test_the_compute_buffer_counts_against_the_gpu():
    result = plan(EngineOptions(), device("GPU0", DeviceKind.GPU, 800), compute_bytes={"GPU0": 300 * MIB})

    assert result.placement.experts_on_host
    assert gpu_needs(result).compute_bytes == 300 * MIB and gpu_needs(result).fits


def test_tensors_bigger_than_the_device_takes_stay_on_the_host():
    result = plan(EngineOptions(), device("GPU0", DeviceKind.GPU, 2048), largest_tensor={"GPU0": 20 * MIB})

    assert not result.placement.experts_on_host  # llama.cpp's choice, not the plan's
    cpu, gpu = result.needs
    assert gpu.weight_bytes == N_LAYER * 4 * MIB + 16 * MIB + 4096
    assert cpu.weight_bytes == 16 * MIB + N_LAYER * 3 * 30 * MIB


def test_two_gpus_are_each_fitted_and_both_used():
    gpus = device("GPU0", DeviceKind.GPU, 400), device("GPU1", DeviceKind.GPU, 400)
    result = plan(EngineOptions(), *gpus)

    assert {"GPU0", "GPU1"} <= set(result.placement.layer_devices())
    assert gpu_needs(result, "GPU0").fits and gpu_needs(result, "GPU1").fits
    assert len(result.placement.experts_on_host) < N_LAYER


def test_workers_keep_their_experts():
    worker, gpu = device("RPC0", DeviceKind.RPC, 4096), device("GPU0", DeviceKind.GPU, 300)
    result = plan(EngineOptions(), worker, gpu)

    names = result.placement.layer_devices()
    on_worker = {i for i, d in enumerate(names[:-1]) if d == "RPC0"}
    assert on_worker and not on_worker & result.placement.experts_on_host
    assert gpu_needs(result).fits


def test_a_q8_0_cache_takes_about_half_the_bytes_of_f16():
    f16 = kv_bytes_per_token(n_layer=32, n_embd_kv=1024, type_k="f16", type_v="f16")
    q8_k = kv_bytes_per_token(n_layer=32, n_embd_kv=1024, type_k="q8_0", type_v="f16")

    assert f16 == 32 * 1024 * 4
    assert q8_k == 32 * 1024 * (2 + 34 / 32)


def test_a_quantized_v_cache_without_flash_attention_is_one_line(mixtral, demo_model):
    result = mixtral("complete", "-m", "tiny", "--cache-type-v", "q8_0", "--no-flash-attn", "Hi")

    assert result.exit_code == 2
    assert "--cache-type-v q8_0 needs flash attention" in result.stderr
    assert "Traceback" not in result.stderr
