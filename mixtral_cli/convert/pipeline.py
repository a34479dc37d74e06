"""`mixtral quantize`: a Hugging Face folder, a PEFT LoRA adapter or a GGUF in, a GGUF of the asked type out.

F32, F16, BF16 and Q8_0 come straight from the converter, and are the types an adapter can have. Every
other type goes through a lossless intermediate GGUF (the checkpoint's own precision) and llama.cpp's
quantizer, which owns the k-quant and i-quant mixes. Whatever the path, the output appears under its name
only when complete.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..base.atomic import atomic_path, check_writable, leftovers, scratch_path
from ..base.errors import (
    CheckpointError,
    DiskSpaceError,
    LowBitsError,
    MixtralError,
    OutputExistsError,
    QuantizationTypeError,
)
from ..base.progress import Progress
from ..gguf_format.header import GGUFInfo, inspect_gguf, is_gguf
from ..gguf_format.quant_types import DEFAULT_TYPE, QUANT_TYPES, QuantType, quant_type
from .checkpoint import Checkpoint, open_checkpoint
from .gguf_file import rewrite_legacy_layout
from .hf_to_gguf import write_gguf
from .peft import is_adapter_folder

# Headroom kept free beyond the estimate, so the machine is not left with a full disk.
_DISK_MARGIN = 256 * 2**20
# Measured on 2 shared cores (a 555 MB bf16 checkpoint): the converter streams about 120 MB/s whatever the
# core count; llama.cpp's quantizer reads about 13 MB/s of 16-bit GGUF per thread.
_STREAM_BYTES_PER_S = 120e6
_QUANTIZE_BYTES_PER_S_PER_THREAD = 13e6


class _NoProgress:
    def stage(self, description: str, total: int, *, unit: str = "bytes") -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


@dataclass(frozen=True)
class QuantizeResult:
    source: Path
    output: Path
    quant: QuantType
    n_params: int
    source_bytes: int
    output_bytes: int
    seconds: float
    notices: tuple[str, ...] = field(default=())

    @property
    def bits_per_weight(self) -> float:
        return self.output_bytes * 8 / self.n_params


def quantize_model(
    source: Path,
    *,
    type_name: str | None = None,
    output: Path | None = None,
    force: bool = False,
    threads: int | None = None,
    name: str | None = None,
    progress: Progress | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Convert or requantize ``source`` into a GGUF of ``type_name`` (default Q4_K_M).

    ``name`` sets ``general.name`` of a converted checkpoint (default: its folder's name).
    """
    started = time.perf_counter()
    progress = progress or _NoProgress()
    notices: list[str] = []

    def notice(text: str) -> None:
        notices.append(text)
        if on_notice:
            on_notice(text)

    source = source.expanduser()
    if source.is_file() and is_gguf(source):
        info = inspect_gguf(source)
        quant = choose_quant_type(type_name, info=info, force=force)
        target = _target(source, output, quant, force=force)
        _check_disk(target, _estimate_bytes(info.n_params, quant) + (info.nbytes if info.legacy_experts else 0))
        _quantize_gguf(info, target, quant, threads=threads, progress=progress, notice=notice)
        n_params, source_bytes = info.n_params, info.nbytes
    elif source.is_dir() and is_adapter_folder(source):
        quant = choose_adapter_type(type_name)
        target = _target(source, output, quant, force=force)
        n_params, source_bytes = _convert_adapter(source, target, quant, name=name, progress=progress)
    elif source.is_dir() or not source.exists():
        checkpoint = open_checkpoint(source)
        quant = choose_quant_type(type_name, info=None, force=force)
        target = _target(source, output, quant, force=force)
        n_params = sum(_n_elements(t.shape) for t in checkpoint.tensors.values())
        intermediate = 0 if quant.direct else checkpoint.nbytes
        _check_disk(target, _estimate_bytes(n_params, quant) + intermediate)
        _convert_checkpoint(checkpoint, target, quant, threads=threads, name=name, progress=progress)
        source_bytes = checkpoint.nbytes
    else:
        raise CheckpointError(
            f"{source} is neither a model folder nor a GGUF file.",
            path=source,
            hint="Give a Hugging Face model folder (with config.json) or a .gguf file.",
        )
    return QuantizeResult(
        source=source,
        output=target,
        quant=quant,
        n_params=n_params,
        source_bytes=source_bytes,
        output_bytes=target.stat().st_size,
        seconds=time.perf_counter() - started,
        notices=tuple(notices),
    )


def choose_quant_type(type_name: str | None, *, info: GGUFInfo | None, force: bool) -> QuantType:
    """The type to write, refused when llama.cpp cannot make it or it is too coarse without ``force``."""
    if type_name is None and info is not None and not info.legacy_experts:
        raise QuantizationTypeError(
            f"{info.path} is already a GGUF in the current layout.", hint="Pass --type to requantize it."
        )
    if type_name is None and info is not None:
        # An old-layout file is only rewritten: same tensor types, new layout.
        return next((t for t in QUANT_TYPES.values() if t.file_type == info.file_type), quant_type("F16"))
    quant = quant_type(type_name or DEFAULT_TYPE)
    if quant.needs_imatrix:
        raise QuantizationTypeError(
            f"{quant.name} needs an importance matrix, which mixtral does not compute.",
            hint="Choose Q2_K, or a type of 3 bits per weight or more such as Q3_K_M.",
        )
    if quant.low_bits and not force:
        raise LowBitsError(
            f"{quant.name} stores {quant.bits_per_weight:.2f} bits per weight, below the {3} that keeps a "
            "mixture of experts usable.",
            hint="Pass --force to quantize anyway, or choose Q3_K_M or above.",
        )
    return quant


# llama.cpp's own convert_lora_to_gguf.py writes F16 unless asked otherwise.
DEFAULT_ADAPTER_TYPE = "F16"


def choose_adapter_type(type_name: str | None) -> QuantType:
    """The type of a LoRA adapter's tensors: one the converter writes itself (F32, F16, BF16 or Q8_0)."""
    quant = quant_type(type_name or DEFAULT_ADAPTER_TYPE)
    if not quant.direct:
        direct = ", ".join(t.name for t in QUANT_TYPES.values() if t.direct)
        raise QuantizationTypeError(
            f"A LoRA adapter is written as {direct}, not {quant.name}.",
            hint="Its matrices are small: F16 (the default) costs little; Q8_0 halves that.",
        )
    return quant


def estimate_seconds(source_bytes: int, quant: QuantType | None, *, threads: int) -> float:
    """About how long converting ``source_bytes`` to ``quant`` takes; None: the layout is only rewritten."""
    seconds = source_bytes / _STREAM_BYTES_PER_S
    if quant is not None and not quant.direct:
        seconds += source_bytes / (_QUANTIZE_BYTES_PER_S_PER_THREAD * threads)
    return seconds


def default_output(source: Path, quant: QuantType) -> Path:
    """``NAME-TYPE.gguf`` beside the source folder or file."""
    stem = source.resolve().name if source.is_dir() else source.stem
    return source.resolve().parent / f"{stem}-{quant.name}.gguf"


def _target(source: Path, output: Path | None, quant: QuantType, *, force: bool) -> Path:
    target = (output or default_output(source, quant)).expanduser()
    if target.is_dir():
        target = target / default_output(source, quant).name
    if target.exists() and target.resolve() == source.resolve():
        raise MixtralError(f"{target} is the source itself.", hint="Choose another --output.")
    if target.exists() and not force:
        raise OutputExistsError(target)
    check_writable(target)
    return target


def _estimate_bytes(n_params: int, quant: QuantType) -> int:
    return int(n_params * quant.bits_per_weight / 8)


def _check_disk(target: Path, needed: int) -> None:
    # What killed runs left is removed before writing; its space counts as free.
    free = shutil.disk_usage(target.parent).free + sum(path.stat().st_size for path in leftovers(target))
    if needed + _DISK_MARGIN > free:
        raise DiskSpaceError(directory=target.parent, needed=needed + _DISK_MARGIN, free=free)


def _n_elements(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


def _convert_checkpoint(
    checkpoint: Checkpoint, target: Path, quant: QuantType, *, threads: int | None, name: str | None, progress: Progress
) -> None:
    if quant.direct:
        progress.stage(f"Converting to {quant.name}", checkpoint.nbytes)
        with atomic_path(target) as partial:
            write_gguf(checkpoint, partial, quant, name=name, on_progress=progress.advance)
        return
    # Lossless: the intermediate keeps the checkpoint's own precision.
    dtypes = {t.dtype for t in checkpoint.tensors.values()}
    lossless = quant_type(dtypes.pop() if len(dtypes) == 1 else "F32")
    progress.stage(f"Converting to {lossless.name}", checkpoint.nbytes)
    with scratch_path(target) as intermediate:
        write_gguf(checkpoint, intermediate, lossless, name=name, on_progress=progress.advance)
        _llama_quantize(intermediate, target, quant, threads=threads, progress=progress)


def _convert_adapter(
    source: Path, target: Path, quant: QuantType, *, name: str | None, progress: Progress
) -> tuple[int, int]:
    """Write the PEFT adapter in ``source`` as a GGUF adapter; returns its parameters and the source's bytes."""
    from .lora_to_gguf import plan_adapter, write_adapter_gguf
    from .peft import base_shape, open_adapter

    adapter = open_adapter(source)
    plan = plan_adapter(adapter, base_shape(adapter), quant)
    _check_disk(target, plan.nbytes)
    progress.stage(f"Converting adapter to {quant.name}", plan.nbytes)
    with atomic_path(target) as partial:
        write_adapter_gguf(plan, partial, name=name or source.resolve().name, on_progress=progress.advance)
    return plan.n_params, adapter.nbytes


def _quantize_gguf(
    info: GGUFInfo,
    target: Path,
    quant: QuantType,
    *,
    threads: int | None,
    progress: Progress,
    notice: Callable[[str], None],
) -> None:
    source = info.path
    if info.legacy_experts:
        notice(f"{source.name} keeps one tensor per expert, a layout llama.cpp no longer loads; stacking them.")
    if info.file_type not in (0, 1, 32, quant.file_type):
        notice(f"{source.name} is already quantized; requantizing loses more than quantizing from 16 bits.")
    if info.legacy_experts and quant.file_type == info.file_type:
        progress.stage("Stacking experts", info.nbytes)
        with atomic_path(target) as partial:
            rewrite_legacy_layout(source, partial, on_progress=progress.advance)
        return
    with scratch_path(target) as scratch:
        if info.legacy_experts:
            progress.stage("Stacking experts", info.nbytes)
            rewrite_legacy_layout(source, scratch, on_progress=progress.advance)
            source = scratch
        _llama_quantize(source, target, quant, threads=threads, progress=progress)


def _llama_quantize(source: Path, target: Path, quant: QuantType, *, threads: int | None, progress: Progress) -> None:
    from ..engine.quantizer import llama_quantize

    with atomic_path(target) as partial:
        llama_quantize(
            source,
            partial,
            file_type=quant.file_type,
            threads=threads,
            on_stage=lambda description, total: progress.stage(description, total, unit="tensors"),
            on_tensor=lambda: progress.advance(1),
        )
