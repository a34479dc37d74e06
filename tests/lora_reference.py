"""LoRA adapters for the tests, and their references: made by peft and merged by peft, or written here in the
per-expert layout of transformers 4 and merged by hand into the checkpoint's weights."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixtral_cli.convert.safetensors import read_index, write_file

SAVED_PREFIX = "base_model.model."


def peft_adapter(checkpoint: Path, folder: Path, *, targets: Sequence[str], r: int, alpha: float, seed: int) -> Path:
    """An adapter made by peft itself on transformers' model, random A and B (as after some training)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import MixtralForCausalLM

    torch.manual_seed(seed)
    model = MixtralForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def peft_merged_logits(checkpoint: Path, adapter: Path, ids: list[int]) -> np.ndarray:
    """transformers' logits with peft's own merge of ``adapter`` into the weights."""
    import torch
    from peft import PeftModel
    from transformers import MixtralForCausalLM

    model = MixtralForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.eval()
    with torch.no_grad():
        return merged(torch.tensor([ids])).logits[0].numpy()


@dataclass
class HandAdapter:
    """A LoRA in the per-expert layout (``block_sparse_moe.experts.N.w1``), as peft saves it for transformers 4."""

    r: int
    alpha: float
    rank_pattern: dict[str, int] = field(default_factory=dict)
    alpha_pattern: dict[str, float] = field(default_factory=dict)
    rslora: bool = False
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # module -> (A, B)
    embeddings: set[str] = field(default_factory=set)  # modules whose A is (r, vocab) and B (hidden, r)

    def scaling(self, module: str, rank: int) -> float:
        alpha = next((v for k, v in self.alpha_pattern.items() if module == k or module.endswith("." + k)), self.alpha)
        return alpha / math.sqrt(rank) if self.rslora else alpha / rank

    def rank(self, module: str) -> int:
        return next((v for k, v in self.rank_pattern.items() if module == k or module.endswith("." + k)), self.r)

    def add(self, module: str, in_features: int, out_features: int, rng: np.random.Generator) -> None:
        rank = self.rank(module)
        a = rng.normal(0, in_features**-0.5, size=(rank, in_features)).astype(np.float32)
        b = rng.normal(0, rank**-0.5, size=(out_features, rank)).astype(np.float32)
        self.pairs[module] = a, b

    def add_embedding(self, module: str, vocab: int, hidden: int, rng: np.random.Generator) -> None:
        """peft's LoRA of an nn.Embedding: rows looked up in A, then through B."""
        rank = self.rank(module)
        a = rng.normal(0, 1.0, size=(rank, vocab)).astype(np.float32)
        b = rng.normal(0, rank**-0.5, size=(hidden, rank)).astype(np.float32)
        self.pairs[module] = a, b
        self.embeddings.add(module)

    def delta(self, module: str) -> np.ndarray:
        """What the adapter adds to the module's weight, as peft merges it."""
        a, b = self.pairs[module]
        delta = self.scaling(module, a.shape[0]) * (b @ a)
        return delta.T if module in self.embeddings else delta  # an embedding's weight is (vocab, hidden)

    def save(self, folder: Path, *, base: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for module, (a, b) in self.pairs.items():
            names = (
                ("lora_embedding_A", "lora_embedding_B")
                if module in self.embeddings
                else ("lora_A.weight", "lora_B.weight")
            )
            tensors[f"{SAVED_PREFIX}{module}.{names[0]}"] = ("F32", a)
            tensors[f"{SAVED_PREFIX}{module}.{names[1]}"] = ("F32", b)
        write_file(folder / "adapter_model.safetensors", tensors, metadata={"format": "pt"})
        config = {
            "peft_type": "LORA",
            "base_model_name_or_path": str(base),
            "r": self.r,
            "lora_alpha": self.alpha,
            "rank_pattern": self.rank_pattern,
            "alpha_pattern": self.alpha_pattern,
            "use_rslora": self.rslora,
            "use_dora": False,
            "bias": "none",
            "target_modules": sorted({m.rsplit(".", 1)[-1] for m in self.pairs}),
            "modules_to_save": None,
        }
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
        return folder


def merged_by_hand(checkpoint: Path, adapters: Sequence[tuple[HandAdapter, float]], folder: Path) -> Path:
    """A copy of ``checkpoint`` in F32 with ``scale * scaling * B @ A`` of every adapter added to its weight."""
    shutil.copytree(checkpoint, folder, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))
    weights = {}
    for file in sorted(checkpoint.glob("*.safetensors")):
        weights.update({name: ref.read_f32().astype(np.float32) for name, ref in read_index(file).items()})
    for adapter, scale in adapters:
        for module in adapter.pairs:
            weights[f"{module}.weight"] += scale * adapter.delta(module)
    write_file(folder / "model.safetensors", {name: ("F32", w) for name, w in weights.items()})
    return folder
