"""`mixtral pull`: a Hub name in, a model in the store out, with a plan (pull_plan.py) shown before anything
downloads.

The planned files are downloaded as they are. A GGUF in the old one-tensor-per-expert layout, which llama.cpp
no longer loads, is rewritten once into the store right after download; a safetensors checkpoint or a PEFT
LoRA adapter is converted into the store.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..base.errors import GGUFError
from ..base.progress import Progress
from ..convert.pipeline import quantize_model
from ..family.catalog import ModelRef
from ..gguf_format.header import inspect_gguf
from .hub import delete_cached, download
from .pull_plan import PullPlan, source_plan
from .store import ModelStore, StoreEntry


def fetch_source(ref: ModelRef, *, revision: str | None = None, on_notice: Callable[[str], None] | None = None) -> Path:
    """What `mixtral quantize` converts from a Hub name: the checkpoint's or adapter's folder, or a GGUF's first
    file."""
    plan = source_plan(ref, revision=revision)
    paths = [download(plan.remote, file, on_notice=on_notice) for file in plan.files]
    return paths[0] if plan.kind == "gguf" else paths[0].parent


def run_pull(
    plan: PullPlan,
    *,
    store: ModelStore,
    progress: Progress | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> StoreEntry:
    """Download (resuming, checking what was not checked yet), convert or rewrite when needed, and record it."""
    if plan.pulled:
        return plan.pulled
    paths = [download(plan.remote, file, progress=progress, on_notice=on_notice) for file in plan.files]
    if plan.kind in ("safetensors", "adapter"):
        converted = _write_into_store(plan, paths[0].parent, plan.quant, store, progress, on_notice)
        files, kind = (converted,), "converted" if plan.kind == "safetensors" else "adapter"
    elif inspect_gguf(paths[0]).legacy_experts:
        files, kind = (_rewrite_into_store(plan, paths, store, progress, on_notice),), "rewritten"
    else:
        files, kind = tuple(paths), "gguf"
    entry = StoreEntry(
        name=plan.name,
        repo=plan.remote.repo,
        revision=plan.remote.commit,
        quant=plan.quant,
        kind=kind,
        files=tuple(str(f) for f in files),
        size=sum(f.stat().st_size for f in files),
        tokenizer=None if kind == "adapter" else inspect_gguf(files[0]).tokenizer_version,
        instruct=plan.instruct,
        base_model=plan.base_model,
    )
    store.add(entry)
    return entry


def _rewrite_into_store(
    plan: PullPlan,
    paths: list[Path],
    store: ModelStore,
    progress: Progress | None,
    on_notice: Callable[[str], None] | None,
) -> Path:
    """Stack the experts of an old-layout download into the store, then drop the download nothing can load."""
    if len(paths) > 1:
        raise GGUFError(
            f"{plan.remote.repo}'s {plan.quant} GGUF is split and in the one-tensor-per-expert layout.",
            path=paths[0],
            hint="mixtral rewrites that layout from single files only: pull another quantization or repo.",
        )
    rewritten = _write_into_store(plan, paths[0], None, store, progress, on_notice)
    delete_cached(paths[0])
    if on_notice:
        on_notice(f"Removed the old-layout download from the Hub cache; the model is {rewritten}.")
    return rewritten


def _write_into_store(
    plan: PullPlan,
    source: Path,
    type_name: str | None,
    store: ModelStore,
    progress: Progress | None,
    on_notice: Callable[[str], None] | None,
) -> Path:
    result = quantize_model(
        source,
        type_name=type_name,
        output=store.converted_path(plan.name),
        force=True,
        name=plan.remote.repo.rsplit("/", 1)[-1],
        progress=progress,
        on_notice=on_notice,
    )
    return result.output
