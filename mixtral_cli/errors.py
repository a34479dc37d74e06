"""The errors a user can cause, each carrying one sentence and the next step.

The CLI prints ``message`` and ``hint`` on stderr and exits non-zero; everything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from pathlib import Path


class MixtralError(Exception):
    """Root of every error a user can cause; ``hint`` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class CheckpointError(MixtralError, ValueError):
    """A Hugging Face model folder is missing files, corrupt, or not a Mixtral."""

    def __init__(self, message: str, *, path: Path, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class UnsupportedArchitectureError(CheckpointError):
    """The checkpoint or GGUF holds a model other than Mixtral."""

    def __init__(self, architecture: str, *, path: Path) -> None:
        super().__init__(
            f"{path} holds a {architecture} model, not Mixtral.",
            path=path,
            hint="mixtral converts and runs Mixtral checkpoints (MixtralForCausalLM) only.",
        )
        self.architecture = architecture


class GGUFError(MixtralError, ValueError):
    """A file that should be GGUF is missing, truncated or not GGUF."""

    def __init__(self, message: str, *, path: Path, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class QuantizationTypeError(MixtralError, ValueError):
    """An unknown quantization type, or one this tool cannot produce."""


class LowBitsError(MixtralError):
    """A quantization below 3 bits per weight was asked for without --force."""


class OutputExistsError(MixtralError, FileExistsError):
    """The output file exists and --force was not given."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} already exists.",
            hint="Pass --force to overwrite it, or choose another --output.",
        )
        self.path = path


class DiskSpaceError(MixtralError, OSError):
    """Too little free disk for the files a command would write."""

    def __init__(self, *, directory: Path, needed: int, free: int) -> None:
        super().__init__(
            f"{directory} has {_gib(free)} free but this needs {_gib(needed)}.",
            hint="Free some space or write elsewhere with --output.",
        )
        self.directory = directory
        self.needed = needed
        self.free = free


class InvalidShapeError(MixtralError, ValueError):
    """A model shape that cannot exist (heads that do not divide the hidden size, ...)."""


class LlamaCppError(MixtralError, RuntimeError):
    """llama.cpp refused or failed an operation."""


def _gib(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


class ModelNotFoundError(MixtralError, LookupError):
    """No model by that name or path."""


class ContextOverflowError(MixtralError):
    """A prompt that does not fit the context window."""

    def __init__(self, *, prompt_tokens: int, n_ctx: int, hint: str | None = None) -> None:
        super().__init__(
            f"The prompt is {prompt_tokens} tokens but the context holds {n_ctx}.",
            hint=hint or "Shorten the prompt, or raise --ctx-size if the model and memory allow.",
        )
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx


class OutputShapeError(MixtralError, ValueError):
    """A --json-schema, --grammar or --choice that cannot constrain an answer; a usage error."""

    exit_code = 2


class AnswerCutError(MixtralError):
    """A constrained answer ended by --max-tokens or the context before it was complete."""

    exit_code = 3
