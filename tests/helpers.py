"""Running the CLI in a child process, and files the tests need."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_mixtral_process(*args: str | os.PathLike[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mixtral_cli`` in a child process: for exit codes, signals and real stdio."""
    return subprocess.run(
        [sys.executable, "-m", "mixtral_cli", *map(str, args)], capture_output=True, text=True, **kwargs
    )


def write_gguf_of_architecture(path: Path, architecture: str) -> Path:
    """A small valid GGUF of another model family."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, architecture)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def split_gguf(source: Path, folder: Path, *, max_tensors: int) -> list[Path]:
    """Write ``source`` as a split GGUF (``NAME-0000i-of-0000n.gguf``), as big models are published."""
    import gguf
    import numpy as np

    from mixtral_cli.convert.gguf_file import copy_metadata

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(folder / source.name, "llama", split_max_tensors=max_tensors)
    copy_metadata(reader, writer)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.asarray(tensor.data), raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return sorted(folder.glob(f"{source.stem}-*-of-*.gguf"))


def files_of_one_mebibyte_at_most() -> None:
    """For a child process (``preexec_fn``): a file size limit, so a write past 1 MiB fails as on a full
    disk (EFBIG where a full disk gives ENOSPC), with no root needed to make a small filesystem."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))
