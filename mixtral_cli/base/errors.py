"""The errors a user can cause, each carrying one sentence and the next step.

The CLI prints ``message`` and ``hint`` on stderr and exits non-zero; everything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from pathlib import Path

from .units import format_bytes


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


class LegacyLayoutError(GGUFError):
    """A GGUF in the one-tensor-per-expert layout of before April 2024, which llama.cpp no longer loads."""

    def __init__(self, path: Path, *, size: int) -> None:
        # One line, no hint: the fix is part of the sentence.
        super().__init__(
            f"llama.cpp no longer loads {path.name}'s layout (one tensor per expert): "
            f"`mixtral quantize {path}` rewrites it into a new file beside it ({format_bytes(size, digits=2)}).",
            path=path,
        )


class QuantizationTypeError(MixtralError, ValueError):
    """An unknown quantization type, or one this tool cannot produce."""


class QuantizationNotFoundError(MixtralError, LookupError):
    """No GGUF repo of the model has the asked quantization."""


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
            f"{directory} has {format_bytes(free, digits=2)} free but this needs {format_bytes(needed, digits=2)}.",
            hint="Free some space or write elsewhere with --output.",
        )
        self.directory = directory
        self.needed = needed
        self.free = free


class InvalidShapeError(MixtralError, ValueError):
    """A model shape that cannot exist (heads that do not divide the hidden size, ...)."""


class LlamaCppError(MixtralError, RuntimeError):
    """llama.cpp refused or failed an operation."""


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


INSTALL_RPC_COMMAND = "bash scripts/install-llama-cpp.sh"


class RpcUnavailableError(MixtralError, RuntimeError):
    """This llama.cpp build has no RPC backend, so workers can be neither served nor used."""

    def __init__(self) -> None:
        super().__init__(
            "This llama-cpp-python was built without llama.cpp's RPC backend.",
            hint=f"Rebuild it with RPC from a mixtral checkout: `{INSTALL_RPC_COMMAND}` (README: GPUs and workers).",
        )


class WorkerError(MixtralError, ConnectionError):
    """An RPC worker that cannot be used: unreachable, not a worker, another protocol version, no devices."""

    def __init__(self, message: str, *, endpoint: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.endpoint = endpoint


class WorkerOptionError(WorkerError):
    """A `mixtral worker` option that names no address or device of this machine: a usage error."""

    exit_code = 2


class PlacementError(MixtralError, ValueError):
    """A placement that cannot be made: a --tensor-split that does not match the devices, or one too big for a GPU."""


class GPUMemoryError(MixtralError, MemoryError):
    """A GPU allocation that failed although the plan fitted: another program took the memory, say."""


class OptionsError(MixtralError, ValueError):
    """Options that cannot go together (a quantized V cache without flash attention); a usage error."""

    exit_code = 2


class InputError(MixtralError, ValueError):
    """Input that cannot be read as text: empty, binary, not UTF-8, unreadable."""


class IncomparableModelsError(MixtralError, ValueError):
    """Two models `mixtral eval` cannot compare: another architecture or another vocabulary."""

    def __init__(self, message: str, *, model: Path, reference: Path, hint: str | None = None) -> None:
        super().__init__(
            message, hint=hint or "Compare two GGUFs of one model: quantizations of the same checkpoint, say."
        )
        self.model = model
        self.reference = reference


class EvalTextError(InputError):
    """A text `mixtral eval` cannot score: empty, or shorter than one chunk of the context."""


class SummaryContextError(MixtralError):
    """The context is too small to hold a part of the text beside the instruction and the answers."""

    def __init__(self, *, n_ctx: int, overhead: int, answer: int, needed: int) -> None:
        super().__init__(
            f"A {n_ctx}-token context is too small to summarize this in parts: the instruction takes {overhead} "
            f"tokens and the summary up to {answer}.",
            hint=f"Raise --ctx-size to {needed} or more, or ask for a shorter summary (--length short, --max-words).",
        )
        self.n_ctx = n_ctx
        self.overhead = overhead
        self.answer = answer
        self.needed = needed


class InvalidConversationError(MixtralError, ValueError):
    """A conversation the Instruct format cannot express."""


class ToolsNotSupportedError(MixtralError, ValueError):
    """Tools asked of a model that was not trained to call them (every one but Mixtral-8x22B-Instruct)."""


class InvalidToolsError(MixtralError, ValueError):
    """A tools list (or tool choice) that cannot be shown to the model or enforced while it answers; ``param``
    names the request's field at fault (tools, tool_choice, parallel_tool_calls)."""

    def __init__(self, message: str, *, hint: str | None = None, param: str = "tools") -> None:
        super().__init__(message, hint=hint)
        self.param = param


class InvalidRequestError(MixtralError, ValueError):
    """A request (a file or an HTTP body) that does not follow its schema; ``param`` names the field at fault,
    ``code`` says why in OpenAI's words (``unsupported_parameter``, ...) where it has them."""

    def __init__(
        self, message: str, *, hint: str | None = None, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.param = param
        self.code = code


class ChatError(MixtralError):
    """A chat command that cannot be carried out (nothing to undo, ...)."""


class TranscriptError(MixtralError, ValueError):
    """A transcript file that cannot be read back."""


class HubError(MixtralError, OSError):
    """The Hub refused, or could not be reached."""


class StoreError(MixtralError):
    """A manifest that cannot be read."""


class OutputPathError(MixtralError, OSError):
    """A file that cannot be written where it was asked for; the OS's reason is in the message."""

    def __init__(self, path: Path, reason: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"Cannot write {path}: {reason}.",
            hint=hint or "Choose a path that can be written, or fix the folder's permissions or free space.",
        )
        self.path = path
        self.reason = reason


class UnusablePathError(MixtralError, OSError):
    """A name the filesystem refuses to look up: too long, or in a folder the user may not enter."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"Cannot use {path}: {reason}.", hint="Give a shorter name, or one you may read.")
        self.path = path


class OutputStreamError(MixtralError, OSError):
    """stdout cannot take the output: closed, a full device, an encoding that cannot hold the text.

    ``closed_pipe``: the reader went away (``| head``), which ends the command without a word.
    """

    def __init__(self, message: str, *, hint: str | None = None, closed_pipe: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.closed_pipe = closed_pipe


class UsageError(MixtralError, ValueError):
    """An argument or option out of what it can mean; exit 2, as click's own usage errors."""

    exit_code = 2


class LimitError(MixtralError, ValueError):
    """An input or a number past what this machine or llama.cpp can take; the message names the bound."""


class OutputShapeError(MixtralError, ValueError):
    """A --json-schema, --grammar or --choice that cannot constrain an answer; a usage error."""

    exit_code = 2


class AnswerCutError(MixtralError):
    """A constrained answer ended by --max-tokens or the context before it was complete."""

    exit_code = 3


class AdapterError(MixtralError, ValueError):
    """A LoRA adapter that cannot be converted or applied: another model's, a PEFT variant, corrupt."""

    def __init__(self, message: str, *, path: Path, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class ServerBusyError(MixtralError):
    """A request waited for the served model longer than the server's --queue-timeout."""

    def __init__(self, *, retry_after: int) -> None:
        super().__init__(
            "The server is busy: this request waited too long for the model.",
            hint=f"Try again in {retry_after} s, or start the server with a longer --queue-timeout.",
        )
        self.retry_after = retry_after


class ServerStoppedError(MixtralError):
    """The server stopped (SIGINT or SIGTERM) before this request was answered."""

    def __init__(self) -> None:
        super().__init__("The server is stopping; this request was not completed.", hint="Send it again later.")


class ServerError(MixtralError, ConnectionError):
    """A `--server` that cannot be used: not there, not a mixtral server, of another version, or refusing the key."""

    def __init__(self, message: str, *, url: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.url = url


class ServerReportedError(MixtralError):
    """An error the server met while doing the work: its message, hint and exit code, as if it happened here,
    and OpenAI's ``code`` and ``type`` it answered with (``invalid_request_error``, ``server_error``)."""

    def __init__(
        self, message: str, *, hint: str | None, exit_code: int, code: str | None = None, type: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code
        self.code = code
        self.type = type


class MissingExtraError(MixtralError, ImportError):
    """A command that needs packages of an optional extra that is not installed."""

    def __init__(self, command: str, extra: str) -> None:
        super().__init__(
            f"`mixtral {command}` needs packages that are not installed.",
            hint=f'Install them with: pip install "mixtral-cli[{extra}]"',
        )
