"""Whether a model is Instruct (chat format by default) or base (plain completion), from its data.

Mistral's Instruct checkpoints carry a chat template in tokenizer_config.json, which converters copy
into the GGUF as ``tokenizer.chat_template``; the base checkpoints carry none. The catalog knows for the
models it names, whatever the GGUF repo wrote into the file. The model's name decides nothing.
"""

from __future__ import annotations

CHAT_TEMPLATE_KEY = "tokenizer.chat_template"


def instruct_from_data(*, chat_template: bool, pulled_as: tuple[str, bool] | None) -> tuple[bool, str]:
    """Whether a model is Instruct, and what says so: the catalog entry it was pulled by, else its template."""
    if pulled_as is not None:
        name, instruct = pulled_as
        return instruct, f"pulled as {name}"
    return (True, "it has a chat template") if chat_template else (False, "it has no chat template")


def describe(instruct: bool, source: str) -> str:
    """For reports: the format commands use by default, and why."""
    kind = "Instruct: chat format" if instruct else "base: plain completion"
    return f"{kind} ({source})"
