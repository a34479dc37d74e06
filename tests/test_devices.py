"""`mixtral devices` and the placement rule: what llama.cpp sees, and where layers would go."""

from __future__ import annotations

import json

import pexpect
import pytest

from mixtral_cli.base.errors import PlacementError
from mixtral_cli.engine.devices import Device, DeviceKind
from mixtral_cli.engine.options import EngineOptions
from mixtral_cli.engine.placement import Budget, placement_needs, plan_placement

from .helpers import run_mixtral_process
from .workers import Worker

GIB = 2**30


def device(name: str, kind: DeviceKind, free_gib: float) -> Device:
    return Device(name, name.lower(), kind, int(free_gib * GIB), int(free_gib * GIB), handle=0)


CPU = device("CPU", DeviceKind.CPU, 60)


def test_devices_lists_the_cpu_with_its_memory_on_a_pipe(mixtral):
    result = mixtral("devices")

    assert result.exit_code == 0
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert all(len(row) == 5 for row in rows)
    (cpu,) = [row for row in rows if row[1] == "cpu"]  # and a row per GPU, where there are GPUs
    name, kind, _description, free, total = cpu
    assert name == "CPU"
    assert free.endswith("GiB") and total.endswith("GiB")


def test_devices_json_names_the_build_backends_and_memory(mixtral):
    result = mixtral("devices", "--json")

    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert {"CPU", "RPC"} <= set(document["backends"])
    (cpu,) = [d for d in document["devices"] if d["kind"] == "cpu"]
    assert cpu["name"] == "CPU" and 0 < cpu["free_bytes"] <= cpu["total_bytes"]
    assert document["placement"] is None


def test_devices_prints_a_table_on_a_terminal(isolated_home):
    import sys

    child = pexpect.spawn(sys.executable, ["-m", "mixtral_cli", "devices"], encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 0
    assert "device" in child.before and "free" in child.before and "CPU" in child.before
    assert "llama.cpp backends: " in child.before


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    served = Worker(tmp_path_factory.mktemp("worker"), "--no-cache")
    yield served
    served.stop()


def test_devices_with_rpc_lists_the_workers_devices(worker):
    result = run_mixtral_process("devices", "--rpc", worker.endpoint, "--json")

    assert result.returncode == 0, result.stderr
    workers = [d for d in json.loads(result.stdout)["devices"] if d["kind"] == "rpc"]
    assert [d["endpoint"] for d in workers] == [worker.endpoint]
    assert workers[0]["total_bytes"] > 0


def test_devices_with_a_model_shows_each_devices_share(worker, demo_model):
    result = run_mixtral_process("devices", "--rpc", worker.endpoint, "-m", demo_model, "-c", "1024", "--json")

    assert result.returncode == 0, result.stderr
    placement = json.loads(result.stdout)["placement"]
    shares = {d["name"]: d for d in placement["devices"]}
    local_gpus = {d["name"] for d in json.loads(result.stdout)["devices"] if d["kind"] == "gpu"}
    assert set(shares) == {"CPU", "RPC0"} | local_gpus
    assert sorted(sum((d["layers"] for d in shares.values()), [])) == [0, 1]
    assert shares["CPU"]["weight_bytes"] + shares["RPC0"]["weight_bytes"] <= demo_model.stat().st_size
    assert all(d["fits"] for d in shares.values())
    assert all(d["needed_bytes"] == d["weight_bytes"] + d["kv_bytes"] + d["compute_bytes"] for d in shares.values())


def test_devices_with_a_model_on_a_pipe_is_one_line_per_device(worker, demo_model):
    result = run_mixtral_process("devices", "--rpc", worker.endpoint, "-m", demo_model, "-c", "1024")

    assert result.returncode == 0, result.stderr
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert names[:2] == ["CPU", "RPC0"]  # the CPU, then llama.cpp's order: workers first, then local GPUs
    assert all(name.startswith(("Vulkan", "CUDA", "ROCm", "Metal")) for name in names[2:])


# The placement rule, on made-up machines.


def test_workers_and_this_machine_share_layers_by_free_memory():
    workers = [device("RPC0", DeviceKind.RPC, 60), device("RPC1", DeviceKind.RPC, 60)]
    placement = plan_placement(EngineOptions(), [CPU, *workers], n_layer=32)

    names = placement.layer_devices()
    assert names.count("CPU") == 11 and names.count("RPC0") == 11 and names.count("RPC1") == 11
    assert names[:11] == ["CPU"] * 11  # llama.cpp keeps the first layers on the CPU


def test_a_local_gpu_takes_every_layer_by_default():
    gpu = device("CUDA0", DeviceKind.GPU, 24)
    placement = plan_placement(EngineOptions(), [CPU, gpu], n_layer=32)

    assert set(placement.layer_devices()) == {"CUDA0"}


def test_cpu_moe_keeps_experts_of_local_gpu_layers_only():
    gpu, worker = device("CUDA0", DeviceKind.GPU, 24), device("RPC0", DeviceKind.RPC, 24)
    placement = plan_placement(EngineOptions(cpu_moe=True), [CPU, gpu, worker], n_layer=4)

    names = placement.layer_devices()
    # Workers first, as llama.cpp orders them; five layers with the output one, cut at 1/2.
    assert names == ["RPC0", "RPC0", "RPC0", "CUDA0", "CUDA0"]
    assert placement.experts_on_host == {3}
    assert placement.expert_patterns == (r"blk\.(3)\.ffn_(up|down|gate)_exps",)


def test_n_cpu_moe_counts_from_the_first_layer():
    gpu = device("CUDA0", DeviceKind.GPU, 24)
    placement = plan_placement(EngineOptions(n_cpu_moe=3), [CPU, gpu], n_layer=8)

    assert placement.experts_on_host == {0, 1, 2}


def test_tensor_split_must_name_every_device():
    workers = [device("RPC0", DeviceKind.RPC, 8), device("RPC1", DeviceKind.RPC, 8)]

    with pytest.raises(PlacementError, match="--tensor-split has 1 values for 2 devices"):
        plan_placement(EngineOptions(tensor_split=(1.0,)), [CPU, *workers], n_layer=8)


def test_needs_count_experts_kept_on_the_host_against_the_cpu():
    gpu = device("CUDA0", DeviceKind.GPU, 24)
    placement = plan_placement(EngineOptions(cpu_moe=True), [CPU, gpu], n_layer=2)
    tensor_bytes = {
        "token_embd.weight": 100,
        "blk.0.attn_q.weight": 10,
        "blk.0.ffn_up_exps.weight": 1000,
        "blk.1.attn_q.weight": 10,
        "blk.1.ffn_up_exps.weight": 1000,
        "output.weight": 100,
    }
    budget = Budget(kv_bytes_per_layer=7, compute_bytes={}, largest_tensor={}, margin=0)
    cpu_need, gpu_need = placement_needs(placement, [CPU, gpu], tensor_bytes=tensor_bytes, budget=budget)

    assert cpu_need.weight_bytes == 100 + 2000 and cpu_need.kv_bytes == 0
    assert gpu_need.weight_bytes == 10 + 10 + 100 and gpu_need.kv_bytes == 14
    assert gpu_need.output and gpu_need.experts_on_host == 2
