"""What `mixtral pull` will do, decided before anything downloads: the repo and files for a name, the
quantization, the disk each folder needs, and what fits this machine (pull.py runs the plan).

A catalog name is looked up in its GGUF repos in order, and the first that has the quantization is chosen
(every shard of a split model); when none has it, the pull stops and says what each has. A safetensors
checkpoint is planned for conversion only when asked: ``--convert``, or an ORG/NAME that holds one. An
ORG/NAME holding a PEFT LoRA adapter is planned once the base model it names is known to fit.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import AdapterError, DiskSpaceError, QuantizationNotFoundError
from ..base.system import gpu_memory, physical_cores, total_memory
from ..base.units import format_bytes
from ..convert.peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_adapter_config
from ..convert.pipeline import choose_adapter_type, choose_quant_type, estimate_seconds
from ..family.catalog import CATALOG, CatalogModel, GGUFRepo, ModelRef, catalog_model_of_repo, gguf_repo
from ..gguf_format.naming import check_shards, quantizations
from ..gguf_format.quant_types import DEFAULT_TYPE, QUANT_TYPES, quant_type
from .hub import (
    HubError,
    RemoteFile,
    RemoteRepo,
    cache_dir,
    cached_file,
    check_access,
    download,
    list_repo,
)
from .measured_loss import MeasuredLoss, measured_losses
from .store import ModelStore, StoreEntry

_CONVERSION_FILES = ("config.json", "tokenizer.model", "tokenizer_config.json", "model.safetensors.index.json")
_CANDIDATES = ("Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0")
_MEMORY_SHARE = 0.9  # of RAM or GPU memory a model may take; the rest is the system's


@dataclass(frozen=True)
class Candidate:
    quant: str
    size: int
    kv_bytes: int
    gpu_bytes_cpu_moe: int  # what the GPU holds when every expert stays in host memory
    measured: MeasuredLoss | None = None  # `mixtral eval`'s numbers for it, where it was measured here


@dataclass(frozen=True)
class PullPlan:
    name: str
    remote: RemoteRepo
    kind: str  # "gguf", "safetensors" or "adapter"
    quant: str
    files: tuple[RemoteFile, ...]
    missing_bytes: int  # not in the Hub cache yet
    disk: tuple[tuple[Path, int, int], ...]  # (folder, bytes needed, bytes free)
    candidates: tuple[Candidate, ...]
    ram: int | None
    gpu: int | None
    rewrite: bool = False  # a GGUF in the old layout, rewritten into the store after download
    work_seconds: float = 0.0  # converting or rewriting after the download, estimated
    pulled: StoreEntry | None = None  # already in the store from this very revision: nothing to do
    workers: int = 0  # bytes the --rpc workers' devices have free
    instruct: bool | None = None  # as the catalog entry says; None: not pulled by a catalog name
    base_model: str | None = None  # an adapter's, as its adapter_config.json names it

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def recommendation(self) -> str | None:
        """The largest quantization that fits this machine, on the GPU when there is one."""
        room = (self.gpu if self.gpu else self.ram or 0) + self.workers
        if not room:
            return None
        fitting = [c for c in self.candidates if c.size + c.kv_bytes <= room * _MEMORY_SHARE]
        return max(fitting, key=lambda c: c.size).quant if fitting else None


def with_workers(plan: PullPlan, endpoints: Sequence[str]) -> PullPlan:
    """The plan with the free memory of these workers' devices counted beside this machine's."""
    from ..engine.rpc import add_workers

    return dataclasses.replace(plan, workers=sum(d.free for d in add_workers(endpoints)))


@dataclass(frozen=True)
class RepoOffer:
    """The GGUFs one repo has, by quantization; or why it could not be listed."""

    repo: GGUFRepo
    remote: RemoteRepo | None
    quants: dict[str, tuple[RemoteFile, ...]] = field(default_factory=dict)
    error: str | None = None

    @property
    def summary(self) -> str:
        if self.error:
            return f"{self.repo.repo} could not be listed ({self.error.rstrip('.')})"
        return f"{self.repo.repo} has {', '.join(sorted(self.quants)) or 'no GGUF'}"


def list_offer(repo: GGUFRepo, revision: str | None = None) -> RepoOffer:
    try:
        remote = list_repo(repo.repo, revision)
    except HubError as exc:
        return RepoOffer(repo, None, error=exc.message)
    return _offer(repo, remote)


def _offer(repo: GGUFRepo, remote: RemoteRepo) -> RepoOffer:
    found = quantizations(remote.paths, repo.naming)
    return RepoOffer(repo, remote, {quant: tuple(remote.described(paths)) for quant, paths in found.items()})


def plan_pull(ref: ModelRef, *, revision: str | None = None, force: bool = False, convert: bool = False) -> PullPlan:
    """Find the files for ``ref`` and check the disk; raises before anything is downloaded."""
    if ref.quant:
        quant_type(ref.quant)  # an unknown spelling is refused before the Hub is asked
    catalog = ref.catalog
    if catalog and not convert:
        quant = ref.quant or DEFAULT_TYPE
        offers = [list_offer(repo, revision) for repo in catalog.gguf_repos]
        found = next((offer for offer in offers if quant in offer.quants), None)
        if found is None:
            raise _not_offered(catalog, quant, offers)
        return _gguf_plan(ref, found, catalog)
    remote = list_repo(catalog.repo if catalog else ref.source, revision)
    if ADAPTER_CONFIG in remote.paths:
        return _adapter_plan(ref, remote)
    offer = _offer(gguf_repo(remote.repo), remote)
    if offer.quants and not convert:
        return _gguf_plan(ref, offer, catalog)
    return _safetensors_plan(ref, remote, catalog, force=force)


def _not_offered(catalog: CatalogModel, quant: str, offers: list[RepoOffer]) -> QuantizationNotFoundError:
    return QuantizationNotFoundError(
        f"No GGUF of {catalog.name} in {quant}: {'; '.join(offer.summary for offer in offers)}.",
        hint=f"Pull one of those with {catalog.name}:QUANT, or add --convert to download the "
        f"{format_bytes(catalog.checkpoint_bytes, digits=0)} checkpoint {catalog.repo} and quantize it to {quant}.",
    )


def _gguf_plan(ref: ModelRef, offer: RepoOffer, catalog: CatalogModel | None) -> PullPlan:
    assert offer.remote is not None
    quants = offer.quants
    quant = ref.quant or (next(iter(quants)) if len(quants) == 1 else DEFAULT_TYPE)
    if quant not in quants:
        raise QuantizationNotFoundError(
            f"{offer.repo.repo} has no {quant} GGUF.", hint=f"It has {', '.join(sorted(quants))}: pull one with :TYPE."
        )
    files = quants[quant]
    check_shards(offer.repo.repo, quant, [f.path for f in files])
    sizes = {q: sum(f.size for f in fs) for q, fs in quants.items() if q in _CANDIDATES or q == quant}
    candidates = _candidates(sizes, catalog, ref.source)
    rewrite = offer.repo.legacy_layout
    return _plan(
        ref,
        offer.remote,
        "gguf",
        quant,
        files,
        candidates,
        store_bytes=sizes[quant] if rewrite else 0,
        work_seconds=estimate_seconds(sizes[quant], None, threads=physical_cores()) if rewrite else 0.0,
        rewrite=rewrite,
    )


def checkpoint_files(remote: RemoteRepo) -> list[str]:
    """What converting needs of a safetensors repo (not Mistral's own ``consolidated`` copy); empty if none."""
    weights = [f for f in remote.paths if f.endswith(".safetensors") and not f.startswith("consolidated")]
    if not weights or "config.json" not in remote.paths:
        return []
    return [*(f for f in _CONVERSION_FILES if f in remote.paths), *sorted(weights)]


def _safetensors_plan(ref: ModelRef, remote: RemoteRepo, catalog: CatalogModel | None, *, force: bool) -> PullPlan:
    quant = choose_quant_type(ref.quant or DEFAULT_TYPE, info=None, force=force)
    paths = checkpoint_files(remote)
    if not paths:
        raise HubError(f"{remote.repo} has no safetensors checkpoint (config.json and *.safetensors) to convert.")
    files = tuple(remote.described(paths))
    checkpoint_bytes = sum(f.size for f in files if f.path.endswith(".safetensors"))
    n_params = checkpoint_bytes // 2  # bf16
    estimates = {q: int(n_params * QUANT_TYPES[q].bits_per_weight / 8) for q in {*_CANDIDATES, quant.name}}
    candidates = _candidates(estimates, catalog, ref.source)
    # Conversion writes a lossless intermediate beside the output, then the output.
    return _plan(
        ref,
        remote,
        "safetensors",
        quant.name,
        files,
        candidates,
        store_bytes=checkpoint_bytes + estimates[quant.name],
        work_seconds=estimate_seconds(checkpoint_bytes, quant, threads=physical_cores()),
    )


def _adapter_plan(ref: ModelRef, remote: RemoteRepo) -> PullPlan:
    """A PEFT LoRA repo: its config is fetched first (a few hundred bytes) to check the base it names."""
    quant = choose_adapter_type(ref.quant)
    if ADAPTER_WEIGHTS not in remote.paths:
        raise HubError(f"{remote.repo} has an {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}.")
    (config,) = remote.described([ADAPTER_CONFIG])
    folder = download(remote, config).parent
    base = read_adapter_config(folder).get("base_model_name_or_path")
    # Converting needs the base's shape: the catalog knows the official models', a config.json tells any other.
    if (not base or catalog_model_of_repo(str(base)) is None) and "config.json" not in remote.paths:
        known = ", ".join(m.repo for m in CATALOG.values())
        raise AdapterError(
            f"{remote.repo} adapts {base or 'a model it does not name'}, which is none of {known}.",
            path=folder,
            hint="mixtral runs adapters of the Mixtral models it knows, or of one whose config.json is in the repo.",
        )
    files = tuple(remote.described([p for p in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, "config.json") if p in remote.paths]))
    size = sum(f.size for f in files if f.path == ADAPTER_WEIGHTS)
    plan = _plan(
        ref,
        remote,
        "adapter",
        quant.name,
        files,
        (),
        store_bytes=size,
        work_seconds=estimate_seconds(size, quant, threads=physical_cores()),
    )
    return dataclasses.replace(plan, base_model=str(base) if base else None)


def _candidates(sizes: dict[str, int], catalog: CatalogModel | None, source: str) -> tuple[Candidate, ...]:
    """Each quantization's memory needs, smallest first, with what `mixtral eval` measured of it here."""
    measured = measured_losses(ModelStore())
    return tuple(
        _candidate(quant, size, catalog, measured.get(f"{source}:{quant}"))
        for quant, size in sorted(sizes.items(), key=lambda item: item[1])
    )


def _candidate(quant: str, size: int, catalog: CatalogModel | None, measured: MeasuredLoss | None) -> Candidate:
    if catalog is None:
        return Candidate(quant, size, 0, 0, measured)
    shape = catalog.shape
    kv = 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * shape.context_length * 2  # K and V, f16
    # Top-2 of 8 experts: the idle 6/8 of the experts is total - active, so all experts are 8/6 of that;
    # what is not an expert (attention, embeddings, norms, routers) stays on the GPU under --cpu-moe.
    total, active = shape.parameter_count(), shape.parameter_count(active=True)
    shared = 1 - (total - active) / total * 8 / 6
    return Candidate(quant, size, kv, int(size * max(shared, 0.03)) + kv, measured)


def _plan(
    ref: ModelRef,
    remote: RemoteRepo,
    kind: str,
    quant: str,
    files: tuple[RemoteFile, ...],
    candidates: tuple[Candidate, ...],
    *,
    store_bytes: int,
    work_seconds: float,
    rewrite: bool = False,
) -> PullPlan:
    name = f"{ref.source}:{quant}"
    store = ModelStore()
    pulled = _already_pulled(store.get(name), remote)
    missing_files = [f for f in files if cached_file(remote, f.path) is None] if pulled is None else []
    if missing_files:
        check_access(remote, missing_files[0].path)  # a gated repo says so now, not after the plan
    missing = sum(f.size for f in missing_files)
    needs: dict[Path, int] = {}
    for folder, amount in ((cache_dir(), missing), (store.home, 0 if pulled else store_bytes)):
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
    return PullPlan(
        name,
        remote,
        kind,
        quant,
        files,
        missing,
        disk,
        candidates,
        total_memory(),
        gpu_memory(),
        rewrite=rewrite,
        work_seconds=0.0 if pulled else work_seconds,
        pulled=pulled,
        instruct=ref.catalog.instruct if ref.catalog else None,
    )


def _already_pulled(entry: StoreEntry | None, remote: RemoteRepo) -> StoreEntry | None:
    """A converted or rewritten model of this revision that is still there: its source is gone or not needed."""
    if entry is None or entry.kind == "gguf" or (entry.repo, entry.revision) != (remote.repo, remote.commit):
        return None
    return entry if all(Path(f).exists() for f in entry.files) else None


def _existing(folder: Path) -> Path:
    while not folder.exists():
        folder = folder.parent
    return folder


def source_plan(ref: ModelRef, *, revision: str | None = None) -> PullPlan:
    """The files `mixtral quantize` converts from a Hub name: an adapter's, a GGUF's or a checkpoint's."""
    catalog = ref.catalog
    remote = list_repo(catalog.repo if catalog else ref.source, revision)
    offer = _offer(gguf_repo(remote.repo), remote)
    if ADAPTER_CONFIG in remote.paths:
        return _adapter_plan(ModelRef(ref.source, None), remote)
    if offer.quants:
        return _gguf_plan(ref, offer, catalog)
    return _safetensors_plan(ModelRef(ref.source, None), remote, catalog, force=True)


@dataclass(frozen=True)
class Available:
    """One line of `mixtral pull --list`: a GGUF to pull, or the checkpoint to convert (quant "convert")."""

    model: str
    quant: str
    size: int | None
    repo: str
    note: str = ""
    measured: MeasuredLoss | None = None  # `mixtral eval`'s numbers for it, where it was measured here


def available_models() -> list[Available]:
    """Every catalog model's GGUFs and checkpoint, with the sizes the Hub reports."""
    rows, measured = [], measured_losses(ModelStore())
    for model in CATALOG.values():
        for offer in (list_offer(repo) for repo in model.gguf_repos):
            if offer.error:
                rows.append(Available(model.name, "-", None, offer.repo.repo, offer.error))
            note = "old layout: rewritten after download" if offer.repo.legacy_layout else ""
            for quant, files in sorted(offer.quants.items(), key=lambda item: sum(f.size for f in item[1])):
                size, loss = sum(f.size for f in files), measured.get(f"{model.name}:{quant}")
                rows.append(Available(model.name, quant, size, offer.repo.repo, note, measured=loss))
        try:
            remote = list_repo(model.repo)
        except HubError as exc:
            rows.append(Available(model.name, "convert", None, model.repo, exc.message))
            continue
        size = sum(f.size for f in remote.described(checkpoint_files(remote)))
        rows.append(Available(model.name, "convert", size, model.repo, "safetensors: --convert, any type"))
    return rows
