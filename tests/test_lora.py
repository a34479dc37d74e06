"""PEFT LoRA adapters converted to GGUF and applied by llama.cpp at run time compute what the merged model
computes in transformers: peft's own adapters and merge, and per-expert adapters merged here by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mixtral_cli.base.errors import AdapterError
from mixtral_cli.convert.lora_to_gguf import plan_adapter, write_adapter_gguf
from mixtral_cli.convert.peft import base_shape, open_adapter
from mixtral_cli.engine.options import LoraSpec
from mixtral_cli.gguf_format.quant_types import quant_type
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .lora_reference import HandAdapter, merged_by_hand, peft_adapter, peft_merged_logits
from .reference import PROMPT, engine_logits, sentencepiece_ids, transformers_logits

# A shape no other test uses: 4 experts, 4 heads over 2 KV heads, an FFN that is no power of two.
SPEC = TinyMixtralSpec(
    hidden_size=128, intermediate_size=192, num_layers=2, num_experts=4, num_heads=4, num_kv_heads=2, seed=21
)
HIDDEN, FFN, Q_SIZE, KV_SIZE = 128, 192, 128, 64
ATTENTION = {
    "q_proj": (HIDDEN, Q_SIZE),
    "k_proj": (HIDDEN, KV_SIZE),
    "v_proj": (HIDDEN, KV_SIZE),
    "o_proj": (Q_SIZE, HIDDEN),
}
EXPERT = {"w1": (HIDDEN, FFN), "w2": (FFN, HIDDEN), "w3": (HIDDEN, FFN)}


@pytest.fixture(scope="module")
def checkpoint(build_checkpoint) -> Path:
    return build_checkpoint(SPEC)


@pytest.fixture(scope="module")
def base_model(convert) -> Path:
    return convert(SPEC, "F32")


@pytest.fixture(scope="module")
def ids(checkpoint) -> list[int]:
    return [1, *sentencepiece_ids(checkpoint, PROMPT)]


def converted(folder: Path, type_name: str = "F32") -> Path:
    adapter = open_adapter(folder)
    output = folder.with_suffix(f".{type_name}.gguf")
    write_adapter_gguf(plan_adapter(adapter, base_shape(adapter), quant_type(type_name)), output, name=folder.name)
    return output


def assert_matches(actual: np.ndarray, expected: np.ndarray) -> None:
    assert np.abs(actual - expected).max() <= 5e-3 * np.abs(expected).max()
    assert (actual.argmax(-1) == expected.argmax(-1)).all()


def attention_adapter(rng: np.random.Generator, *, projections=tuple(ATTENTION), r: int = 4, alpha: float = 2.0):
    # Gentle, as fine-tunes are: a LoRA that doubles K and V would measure llama.cpp's F16 KV cache instead.
    adapter = HandAdapter(r=r, alpha=alpha)
    for layer in range(SPEC.num_layers):
        for proj in projections:
            adapter.add(f"model.layers.{layer}.self_attn.{proj}", *ATTENTION[proj], rng)
    return adapter


def expert_adapter(rng: np.random.Generator, *, rslora: bool = False) -> HandAdapter:
    """Experts (not all of them), the router, per-module ranks and alphas: what the per-expert layout allows."""
    adapter = HandAdapter(
        r=6, alpha=9.0, rank_pattern={"experts.1.w2": 8, "gate": 4}, alpha_pattern={"w3": 3.0}, rslora=rslora
    )
    for layer in range(SPEC.num_layers):
        prefix = f"model.layers.{layer}.block_sparse_moe"
        adapter.add(f"{prefix}.gate", HIDDEN, SPEC.num_experts, rng)
        for expert in (0, 1, 3):
            for proj, features in EXPERT.items():
                adapter.add(f"{prefix}.experts.{expert}.{proj}", *features, rng)
    return adapter


@pytest.fixture(scope="module")
def peft_made(checkpoint, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("peft") / "adapter"
    targets = ("q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3")
    return peft_adapter(checkpoint, folder, targets=targets, r=6, alpha=10, seed=5)


def test_peft_adapter_applied_at_run_time_matches_peft_merged_into_transformers(peft_made, checkpoint, base_model, ids):
    expected = peft_merged_logits(checkpoint, peft_made, ids)
    actual = engine_logits(base_model, ids, [LoraSpec(converted(peft_made))])

    assert_matches(actual, expected)


def test_peft_router_adapter_matches_peft_merged_into_transformers(checkpoint, base_model, ids, tmp_path):
    # transformers 5's router (mlp.gate) is no nn.Linear, yet peft adapts it; llama.cpp adapts ffn_gate_inp.
    folder = peft_adapter(checkpoint, tmp_path / "adapter", targets=("gate",), r=4, alpha=3, seed=8)
    expected = peft_merged_logits(checkpoint, folder, ids)
    plain = transformers_logits(checkpoint, ids)

    assert np.abs(expected - plain).max() > 0.05 * np.abs(plain).max()
    assert_matches(engine_logits(base_model, ids, [LoraSpec(converted(folder))]), expected)


def test_peft_adapter_changes_the_logits(peft_made, checkpoint, ids):
    # Without this, a converter that dropped the adapter would pass the test above.
    plain, merged = transformers_logits(checkpoint, ids), peft_merged_logits(checkpoint, peft_made, ids)
    assert np.abs(merged - plain).max() > 0.1 * np.abs(plain).max()


def test_peft_fuses_experts_with_a_doubled_rank_for_gate_and_up(peft_made):
    config = json.loads((peft_made / "adapter_config.json").read_text())
    weights = open_adapter(peft_made).weights

    assert config["rank_pattern"] == {r".*\.gate_up_proj": 12} and config["alpha_pattern"] == {r".*\.gate_up_proj": 20}
    assert weights["model.layers.0.mlp.experts.base_layer"].a.shape == (12 * SPEC.num_experts, HIDDEN)
    assert weights["model.layers.0.mlp.experts"].a.shape == (6 * SPEC.num_experts, FFN)


@pytest.mark.parametrize("rslora", [False, True], ids=["lora", "rslora"])
def test_per_expert_adapter_matches_the_merge_by_hand(rslora, checkpoint, base_model, ids, tmp_path):
    adapter = expert_adapter(np.random.default_rng(1), rslora=rslora)
    folder = adapter.save(tmp_path / "adapter", base=checkpoint)
    expected = transformers_logits(merged_by_hand(checkpoint, [(adapter, 1.0)], tmp_path / "merged"), ids)
    plain = transformers_logits(checkpoint, ids)

    # llama.cpp applies expert LoRAs (build_lora_mm_id): an adapter it ignored would leave the base's logits.
    assert np.abs(expected - plain).max() > 0.05 * np.abs(plain).max()
    assert_matches(engine_logits(base_model, ids, [LoraSpec(converted(folder))]), expected)


def test_embedding_and_output_loras_match_the_merge_by_hand(checkpoint, base_model, ids, tmp_path):
    adapter = HandAdapter(r=4, alpha=2.0)
    rng = np.random.default_rng(7)
    adapter.add_embedding("model.embed_tokens", 32000, HIDDEN, rng)
    adapter.add("lm_head", HIDDEN, 32000, rng)
    folder = adapter.save(tmp_path / "adapter", base=checkpoint)
    expected = transformers_logits(merged_by_hand(checkpoint, [(adapter, 1.0)], tmp_path / "merged"), ids)
    plain = transformers_logits(checkpoint, ids)

    assert np.abs(expected - plain).max() > 0.05 * np.abs(plain).max()
    assert_matches(engine_logits(base_model, ids, [LoraSpec(converted(folder))]), expected)


@pytest.mark.parametrize("proj", ["q_proj", "k_proj"])
def test_lora_on_a_rope_projection_alone_matches_the_reference(proj, checkpoint, base_model, ids, tmp_path):
    # B's rows are Q's or K's rows: they need the converter's rope permutation, or the logits go astray.
    adapter = attention_adapter(np.random.default_rng(2), projections=(proj,), r=8, alpha=24.0)
    folder = adapter.save(tmp_path / "adapter", base=checkpoint)
    expected = transformers_logits(merged_by_hand(checkpoint, [(adapter, 1.0)], tmp_path / "merged"), ids)
    plain = transformers_logits(checkpoint, ids)

    assert np.abs(expected - plain).max() > 0.05 * np.abs(plain).max()
    assert_matches(engine_logits(base_model, ids, [LoraSpec(converted(folder))]), expected)


def test_two_adapters_apply_together_each_at_its_scale(checkpoint, base_model, ids, tmp_path):
    rng = np.random.default_rng(3)
    attention, experts = attention_adapter(rng), expert_adapter(rng)
    folders = [a.save(tmp_path / name, base=checkpoint) for a, name in ((attention, "a"), (experts, "b"))]
    merged = merged_by_hand(checkpoint, [(attention, 0.5), (experts, 1.5)], tmp_path / "merged")

    actual = engine_logits(
        base_model, ids, [LoraSpec(converted(folders[0]), 0.5), LoraSpec(converted(folders[1]), 1.5)]
    )
    assert_matches(actual, transformers_logits(merged, ids))


def test_scale_zero_is_exactly_the_base_model(peft_made, base_model, ids):
    assert np.array_equal(
        engine_logits(base_model, ids, [LoraSpec(converted(peft_made), 0.0)]), engine_logits(base_model, ids)
    )


@pytest.mark.parametrize(
    ("type_name", "tolerance", "argmax"), [("F16", 5e-3, 1.0), ("BF16", 3e-2, 0.95), ("Q8_0", 6e-2, 0.9)]
)
def test_smaller_adapter_types_stay_close(type_name, tolerance, argmax, checkpoint, base_model, ids, tmp_path):
    # Experts and router: the stacked 3-D matrices that llama.cpp multiplies per selected expert.
    adapter = expert_adapter(np.random.default_rng(6))
    folder = adapter.save(tmp_path / "adapter", base=checkpoint)
    expected = transformers_logits(merged_by_hand(checkpoint, [(adapter, 1.0)], tmp_path / "merged"), ids)
    actual = engine_logits(base_model, ids, [LoraSpec(converted(folder, type_name))])

    assert np.abs(actual - expected).max() <= tolerance * np.abs(expected).max()
    assert (actual.argmax(-1) == expected.argmax(-1)).mean() >= argmax


def test_q8_0_adapter_keeps_rank_wide_matrices_in_f16(peft_made):
    # A Q8_0 row is 32 values; a B of rank 6 has rows of 6.
    import gguf

    reader = gguf.GGUFReader(converted(peft_made, "Q8_0"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight.lora_a"] == "Q8_0"
    assert types["blk.0.attn_q.weight.lora_b"] == "F16"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"peft_type": "IA3"}, "IA3"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"bias": "all"}, "trained biases"),
        ({"init_lora_weights": "pissa"}, "pissa"),
    ],
)
def test_peft_variants_llama_cpp_cannot_apply_are_refused_by_name(change, named, checkpoint, tmp_path):
    folder = attention_adapter(np.random.default_rng(4)).save(tmp_path / "adapter", base=checkpoint)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, **change}))

    with pytest.raises(AdapterError, match=named):
        open_adapter(folder)


def _garble(folder: Path, fault: str) -> None:
    config_file, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if fault == "alpha_pattern":
        config = json.loads(config_file.read_text())
        config_file.write_text(json.dumps({**config, "alpha_pattern": {"q_proj[": 3}}))
    elif fault == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif fault == "not json":
        config_file.write_bytes(b"\xff\xfe{")
    elif fault == "a without b":
        from mixtral_cli.convert.safetensors import read_index, write_file

        kept = {n: (r.dtype, r.read_raw()) for n, r in read_index(weights).items() if "q_proj.lora_B" not in n}
        write_file(weights, kept)


@pytest.mark.parametrize("fault", ["alpha_pattern", "truncated", "not json", "a without b"])
def test_a_garbled_adapter_is_one_line(fault, checkpoint, tmp_path):
    folder = attention_adapter(np.random.default_rng(4)).save(tmp_path / "adapter", base=checkpoint)
    _garble(folder, fault)

    with pytest.raises(AdapterError) as caught:
        open_adapter(folder)
    assert str(folder) in str(caught.value) and "\n" not in str(caught.value)


def test_adapter_of_another_shape_is_refused_in_one_line(build_checkpoint, checkpoint, tmp_path):
    # Trained on SPEC, but its config.json says the default tiny shape (hidden size 256).
    folder = attention_adapter(np.random.default_rng(4)).save(tmp_path / "adapter", base=build_checkpoint())

    with pytest.raises(
        AdapterError, match="trained on another model: .*k_proj maps 128 to 64 .* maps 256 to 64"
    ) as caught:
        plan_adapter(open_adapter(folder), base_shape(open_adapter(folder)), quant_type("F16"))
    assert "\n" not in str(caught.value)


def test_adapter_of_an_unknown_base_asks_for_its_config(tmp_path, checkpoint):
    folder = attention_adapter(np.random.default_rng(4)).save(tmp_path / "adapter", base=checkpoint)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "someone/model"}))

    with pytest.raises(AdapterError, match="someone/model") as caught:
        base_shape(open_adapter(folder))
    assert "config.json" in caught.value.hint


def test_adapter_of_a_catalog_model_needs_no_config(tmp_path):
    folder = tmp_path / "adapter"
    adapter = HandAdapter(r=4, alpha=8)
    adapter.add("model.layers.31.self_attn.q_proj", 4096, 4096, np.random.default_rng(0))
    adapter.save(folder, base=Path("x"))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "mistralai/Mixtral-8x7B-Instruct-v0.1"})
    )

    shape = base_shape(open_adapter(folder))
    assert (shape.hidden_size, shape.num_layers, shape.head_dim, shape.num_experts) == (4096, 32, 128, 8)


# A 1 GB adapter of an 8x7B-shaped model: every expert projection of 10 layers at rank 64. Zeros, written as a
# sparse file, so that the test costs neither disk nor time to write it.
_BIG = {"layers": 10, "experts": 8, "rank": 64, "hidden": 4096, "ffn": 14336}

# The child's own peak (VmHWM): getrusage's ru_maxrss would count the pytest process it was forked from.
_MEASURE = """
import sys
from pathlib import Path
from mixtral_cli.convert.pipeline import quantize_model
quantize_model(Path(sys.argv[1]), type_name="F16", output=Path(sys.argv[2]))
status = Path("/proc/self/status").read_text()
print(int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024)
"""


def _big_adapter(folder: Path) -> int:
    folder.mkdir()
    b = _BIG
    header, offset = {}, 0
    for layer in range(b["layers"]):
        for expert in range(b["experts"]):
            for proj in ("w1", "w2", "w3"):
                in_f, out_f = (b["ffn"], b["hidden"]) if proj == "w2" else (b["hidden"], b["ffn"])
                module = f"base_model.model.model.layers.{layer}.block_sparse_moe.experts.{expert}.{proj}"
                for half, shape in (("lora_A", [b["rank"], in_f]), ("lora_B", [out_f, b["rank"]])):
                    nbytes = shape[0] * shape[1] * 4
                    header[f"{module}.{half}.weight"] = {
                        "dtype": "F32",
                        "shape": shape,
                        "data_offsets": [offset, offset + nbytes],
                    }
                    offset += nbytes
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(folder / "adapter_model.safetensors", "wb") as f:
        f.write(len(encoded).to_bytes(8, "little") + encoded)
        f.truncate(8 + len(encoded) + offset)
    config = {
        "peft_type": "LORA",
        "r": b["rank"],
        "lora_alpha": 16,
        "base_model_name_or_path": "mistralai/Mixtral-8x7B-v0.1",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return offset


def test_converting_a_1_gb_adapter_stays_within_bounded_memory(tmp_path):
    size = _big_adapter(tmp_path / "big")
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "big"), str(tmp_path / "big.gguf")],
        capture_output=True,
        text=True,
        check=True,
    )
    peak = int(done.stdout.split()[-1])

    assert size > 2**30
    assert (tmp_path / "big.gguf").stat().st_size > size // 2  # F16: every matrix was written
    # Measured: 90 MiB, most of it the interpreter, numpy and gguf; the converter holds one matrix at a time.
    assert peak < 256 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
