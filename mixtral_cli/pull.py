"""`mixtral pull`: a Hub name in, a model in the store out, with a plan shown before anything downloads.

A GGUF repo that has the asked quantization is downloaded as is (every shard of a split model). Any other
source is a safetensors checkpoint: only the files conversion needs are downloaded, then `mixtral
quantize` writes the GGUF into the store.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .catalog import CatalogModel, ModelRef
from .convert.gguf_file import inspect_gguf
from .engine.hardware import gpu_memory, total_memory
from .errors import DiskSpaceError, QuantizationTypeError
from .hub import HubError, RemoteFile, RemoteRepo, cache_dir, cached_file, describe_files, download, list_repo
from .quant_types import DEFAULT_TYPE, QUANT_TYPES
from .quantize import Progress, choose_quant_type, quantize_model
from .store import ModelStore, StoreEntry

_QUANT_IN_NAME = re.compile(r"(?<![A-Za-z0-9])(IQ\d_[A-Za-z]+|Q\d_K_[SMLsml]|Q\d_K|Q\d_\d|BF16|F16|F32)(?![A-Za-z0-9])")
_SHARD = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
_CONVERSION_FILES = ("config.json", "tokenizer.model", "tokenizer_config.json", "model.safetensors.index.json")
_CANDIDATES = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
_MEMORY_SHARE = 0.9  # of RAM or GPU memory a model may take; the rest is the system's


@dataclass(frozen=True)
class Candidate:
    quant: str
    size: int
    kv_bytes: int
    gpu_bytes_cpu_moe: int  # what the GPU holds when every expert stays in host memory


@dataclass(frozen=True)
class PullPlan:
    name: str
    remote: RemoteRepo
    kind: str  # "gguf" or "safetensors"
    quant: str
    files: tuple[RemoteFile, ...]
    missing_bytes: int  # not in the Hub cache yet
    disk: tuple[tuple[Path, int, int], ...]  # (folder, bytes needed, bytes free)
    candidates: tuple[Candidate, ...]
    ram: int | None
    gpu: int | None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def recommendation(self) -> str | None:
        """The largest quantization that fits this machine, on the GPU when there is one."""
        room = self.gpu if self.gpu else self.ram
        if not room:
            return None
        fitting = [c for c in self.candidates if c.size + c.kv_bytes <= room * _MEMORY_SHARE]
        return max(fitting, key=lambda c: c.size).quant if fitting else None


def plan_pull(ref: ModelRef, *, revision: str | None = None, force: bool = False) -> PullPlan:
    """Find the files for ``ref`` and check the disk; raises before anything is downloaded."""
    catalog = ref.catalog
    for gguf_repo in catalog.gguf_repos if catalog else ():
        try:
            remote = list_repo(gguf_repo, revision)
        except HubError:
            continue  # a missing mirror is not fatal: the official checkpoint can be converted instead
        if (ref.quant or DEFAULT_TYPE) in gguf_quants(remote.files):
            return _gguf_plan(ref, remote, catalog)
    remote = list_repo(catalog.repo if catalog else ref.source, revision)
    if gguf_quants(remote.files):
        return _gguf_plan(ref, remote, catalog)
    return _safetensors_plan(ref, remote, catalog, force=force)


def gguf_quants(files: tuple[str, ...]) -> dict[str, list[str]]:
    """Quantization tag -> its GGUF files (all shards, in order)."""
    quants: dict[str, list[str]] = {}
    for path in files:
        if not path.endswith(".gguf"):
            continue
        match = _QUANT_IN_NAME.search(path.rsplit("/", 1)[-1])
        if match:
            quants.setdefault(match[1].upper(), []).append(path)
    return {quant: sorted(paths) for quant, paths in quants.items()}


def _gguf_plan(ref: ModelRef, remote: RemoteRepo, catalog: CatalogModel | None) -> PullPlan:
    quants = gguf_quants(remote.files)
    quant = ref.quant or (next(iter(quants)) if len(quants) == 1 else DEFAULT_TYPE)
    if quant not in quants:
        raise QuantizationTypeError(
            f"{remote.repo} has no {quant} GGUF.", hint=f"It has {', '.join(sorted(quants))}: pull one with :TYPE."
        )
    paths = quants[quant]
    shards = [_SHARD.search(p) for p in paths]
    if any(shards) and len(paths) != int(shards[0][2]):
        raise HubError(f"{remote.repo} has {len(paths)} of the {int(shards[0][2])} shards of its {quant} GGUF.")
    # One HEAD request per file: the asked quantization's files and the other candidates' sizes.
    described = {q: describe_files(remote, p) for q, p in quants.items() if q in _CANDIDATES or q == quant}
    files = tuple(described[quant])
    sizes = {q: sum(f.size for f in fs) for q, fs in described.items()}
    candidates = tuple(_candidate(q, size, catalog) for q, size in sorted(sizes.items(), key=lambda item: item[1]))
    return _plan(ref, remote, "gguf", quant, files, candidates, conversion_bytes=0)


def _safetensors_plan(ref: ModelRef, remote: RemoteRepo, catalog: CatalogModel | None, *, force: bool) -> PullPlan:
    quant = choose_quant_type(ref.quant or DEFAULT_TYPE, info=None, force=force).name
    weights = [f for f in remote.files if f.endswith(".safetensors") and not f.startswith("consolidated")]
    if not weights or "config.json" not in remote.files:
        raise HubError(f"{remote.repo} has neither GGUF files nor a safetensors checkpoint to convert.")
    files = tuple(describe_files(remote, [*(f for f in _CONVERSION_FILES if f in remote.files), *sorted(weights)]))
    checkpoint_bytes = sum(f.size for f in files if f.path.endswith(".safetensors"))
    n_params = checkpoint_bytes // 2  # bf16
    estimates = {q: int(n_params * QUANT_TYPES[q].bits_per_weight / 8) for q in {*_CANDIDATES, quant}}
    candidates = tuple(_candidate(q, size, catalog) for q, size in sorted(estimates.items(), key=lambda i: i[1]))
    # Conversion writes a lossless intermediate beside the output, then the output.
    return _plan(
        ref, remote, "safetensors", quant, files, candidates, conversion_bytes=checkpoint_bytes + estimates[quant]
    )


def _candidate(quant: str, size: int, catalog: CatalogModel | None) -> Candidate:
    if catalog is None:
        return Candidate(quant, size, 0, 0)
    shape = catalog.shape
    kv = 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * shape.context * 2  # K and V, f16
    # Top-2 of 8 experts: the idle 6/8 of the experts is total - active, so all experts are 8/6 of that;
    # what is not an expert (attention, embeddings, norms, routers) stays on the GPU under --cpu-moe.
    shared = 1 - (shape.total_params - shape.active_params) / shape.total_params * 8 / 6
    return Candidate(quant, size, kv, int(size * max(shared, 0.03)) + kv)


def _plan(
    ref: ModelRef,
    remote: RemoteRepo,
    kind: str,
    quant: str,
    files: tuple[RemoteFile, ...],
    candidates: tuple[Candidate, ...],
    *,
    conversion_bytes: int,
) -> PullPlan:
    missing = sum(f.size for f in files if cached_file(remote, f.path) is None)
    needs: dict[Path, int] = {}
    for folder, amount in ((cache_dir(), missing), (ModelStore().home, conversion_bytes)):
        folder = _existing(folder)
        needs[folder] = needs.get(folder, 0) + amount
    # Folders on one filesystem share its free space.
    by_device: dict[int, tuple[Path, int]] = {}
    for folder, amount in needs.items():
        device = folder.stat().st_dev
        first, total = by_device.get(device, (folder, 0))
        by_device[device] = (first, total + amount)
    disk = tuple((folder, amount, shutil.disk_usage(folder).free) for folder, amount in by_device.values())
    for folder, amount, free in disk:
        if amount > free:
            raise DiskSpaceError(directory=folder, needed=amount, free=free)
    name = f"{ref.source}:{quant}"
    return PullPlan(name, remote, kind, quant, files, missing, disk, candidates, total_memory(), gpu_memory())


def _existing(folder: Path) -> Path:
    while not folder.exists():
        folder = folder.parent
    return folder


def fetch_source(ref: ModelRef, *, revision: str | None = None, on_notice: Callable[[str], None] | None = None) -> Path:
    """What `mixtral quantize` converts from a Hub name: the checkpoint's folder, or a GGUF's first file."""
    catalog = ref.catalog
    remote = list_repo(catalog.repo if catalog else ref.source, revision)
    if gguf_quants(remote.files):
        plan = _gguf_plan(ref, remote, catalog)
    else:
        plan = _safetensors_plan(ModelRef(ref.source, None), remote, catalog, force=True)
    paths = [download(remote, file, on_notice=on_notice) for file in plan.files]
    return paths[0] if plan.kind == "gguf" else paths[0].parent


def run_pull(
    plan: PullPlan,
    *,
    store: ModelStore,
    progress: Progress | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> StoreEntry:
    """Download (resuming and checking every file), convert when needed, and record the model."""
    paths = [download(plan.remote, file, on_notice=on_notice) for file in plan.files]
    if plan.kind == "gguf":
        info = inspect_gguf(paths[0])
        if info.legacy_experts and on_notice:
            on_notice(
                f"{paths[0].name} keeps one tensor per expert, which loads about 30x slower; "
                f"`mixtral quantize` can rewrite it."
            )
        files, tokenizer = tuple(str(p) for p in paths), info.tokenizer_version
    else:
        output = store.converted_path(plan.name)
        result = quantize_model(
            paths[0].parent,
            type_name=plan.quant,
            output=output,
            force=True,
            name=plan.remote.repo.rsplit("/", 1)[-1],
            progress=progress,
            on_notice=on_notice,
        )
        files, tokenizer = (str(result.output),), inspect_gguf(result.output).tokenizer_version
    entry = StoreEntry(
        name=plan.name,
        repo=plan.remote.repo,
        revision=plan.remote.commit,
        quant=plan.quant,
        kind="converted" if plan.kind == "safetensors" else "gguf",
        files=files,
        size=sum(Path(f).stat().st_size for f in files),
        tokenizer=tokenizer,
    )
    store.add(entry)
    return entry
