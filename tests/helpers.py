"""Running the CLI in a child process, and files the tests need."""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path


def with_default_signals() -> None:
    """A child's ``preexec_fn``: Ctrl-C and hang-ups work in it even when this suite runs where they are
    ignored (nohup, a background job), whose children would inherit SIG_IGN and Python keeps it then."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def run_mixtral(*args: str | os.PathLike[str], input: str | bytes = "") -> subprocess.CompletedProcess[str]:
    """Run the CLI in this process, as the console script would, with ``input`` as piped stdin.

    Without ``input`` stdin is an empty pipe, as under /dev/null. For commands that need no signal,
    terminal, real pipe or environment of their own: no interpreter to start.
    """
    from mixtral_cli.cli import main

    data = input.encode() if isinstance(input, str) else input
    stdin = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    argv = [str(a) for a in args]
    with (
        contextlib.redirect_stdout(io.StringIO()) as out,
        contextlib.redirect_stderr(io.StringIO()) as err,
        _replaced_stdin(stdin),
    ):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(["mixtral", *argv], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _replaced_stdin(stdin: io.TextIOWrapper) -> Iterator[None]:
    previous, sys.stdin = sys.stdin, stdin
    try:
        yield
    finally:
        sys.stdin = previous


def run_mixtral_process(*args: str | os.PathLike[str], **kwargs) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mixtral_cli`` in a child process: for real stdio, a fresh interpreter, or a child's env."""
    return subprocess.run(
        [sys.executable, "-m", "mixtral_cli", *map(str, args)], capture_output=True, text=True, **kwargs
    )


def on_a_small_disk(folder: Path, size: str, argv: list[str]) -> list[str]:
    """``argv`` run with a fresh tmpfs of ``size`` (e.g. "64k") mounted on ``folder``.

    The mount lives in a user and mount namespace of the child's own (``unshare``), so no root is needed
    and nothing outside sees it; writes past ``size`` fail with a real ENOSPC.
    """
    return _in_a_mount_namespace(
        'mount -t tmpfs -o "size=$1" tmpfs "$2" && shift 2 && exec "$@"', [size, str(folder)], argv
    )


def _in_a_mount_namespace(script: str, script_args: list[str], argv: list[str]) -> list[str]:
    """``argv`` run after ``script`` (sh, given ``script_args`` first) in a user and mount namespace of its own."""
    import pytest

    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this kernel refuses unprivileged user namespaces: {probe.stderr.decode().strip()}")
    return ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", *script_args, *argv]


def read_only(folder: Path, argv: list[str]) -> list[str]:
    """``argv`` run with ``folder`` mounted read-only (a bind mount in a user and mount namespace of the
    child's own): writes there fail with EROFS whatever the uid, root included, which permissions do not."""
    return _in_a_mount_namespace(
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"', [str(folder)], argv
    )


def without_reading_everything(argv: list[str]) -> list[str]:
    """``argv`` run without root's power to read any file (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so that a
    file's permissions hold for it as they do for a user; as a user, ``argv`` as it is."""
    if os.geteuid() != 0:
        return argv
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]


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


_STACKED = re.compile(r"^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$")


def write_legacy_layout(source: Path, output: Path) -> Path:
    """Split each stacked expert tensor into one tensor per expert, as GGUFs from before April 2024 have it."""
    import gguf
    import numpy as np

    from mixtral_cli.convert.gguf_file import copy_metadata

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(output, "llama")
    copy_metadata(reader, writer)
    for tensor in reader.tensors:
        match = _STACKED.match(tensor.name)
        data = np.asarray(tensor.data)
        if not match:
            writer.add_tensor(tensor.name, data, raw_dtype=tensor.tensor_type)
            continue
        for expert in range(data.shape[0]):
            name = f"blk.{match[1]}.ffn_{match[2]}.{expert}.weight"
            writer.add_tensor(name, np.ascontiguousarray(data[expert]), raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return output


def files_of_one_mebibyte_at_most() -> None:
    """For a child process (``preexec_fn``): a file size limit, so a write past 1 MiB fails as on a full
    disk (EFBIG where a full disk gives ENOSPC), with no root needed to make a small filesystem."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20))


def placement_from_log(log: str) -> str:
    """The engine's one-line placement ("layers 0-3 on CPU, 4-7 on RPC0, output on RPC0"), rebuilt from
    llama.cpp's own "layer N assigned to device X" log lines."""
    assigned = re.findall(r"layer +(\d+) assigned to device (\S+),", log)
    n_layer = len(assigned) - 1
    runs: list[tuple[list[int], str]] = []
    for index, device in assigned[:n_layer]:
        if runs and runs[-1][1] == device:
            runs[-1][0].append(int(index))
        else:
            runs.append(([int(index)], device))
    spans = [f"{ls[0]}-{ls[-1]} on {d}" if len(ls) > 1 else f"{ls[0]} on {d}" for ls, d in runs]
    return f"layers {', '.join(spans)}, output on {assigned[n_layer][1]}"
