"""Arguments as the OS hands them over, checked before typer parses them.

Python decodes argv and the environment with surrogate escapes: a byte that is not UTF-8 becomes a lone
surrogate, which fails much later, wherever the text is encoded again. Every argument is text to this tool
(paths included: they are written into prompts, JSON and llama.cpp's C strings), so one that is not UTF-8
is refused here, naming it and the offset of its first bad byte, as text on stdin or in a file is.
"""

from __future__ import annotations

import os

from ..base.errors import UsageError

# The environment variables typer reads in place of options.
OPTION_VARIABLES = ("MIXTRAL_MODEL", "MIXTRAL_RPC")


def check_arguments(argv: list[str]) -> list[str]:
    """``argv``, refused with a UsageError where an argument, or an option's variable, is not UTF-8."""
    for index, argument in enumerate(argv):
        if argument.startswith("--") and "=" in argument:
            option, value = argument.split("=", 1)
            _check_text(f"{option}'s value", value)
        else:
            _check_text(_argument_name(argv, index), argument)
    for name in OPTION_VARIABLES:
        if name in os.environ:
            _check_text(name, os.environ[name])
    return argv


def _argument_name(argv: list[str], index: int) -> str:
    previous = argv[index - 1] if index else ""
    if previous.startswith("-") and "=" not in previous and not argv[index].startswith("-"):
        return f"argument {index + 1} (after {previous})"
    return f"argument {index + 1}"


def _check_text(name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        offset = len(text[: exc.start].encode("utf-8", errors="surrogateescape"))
        raise UsageError(
            f"{name} is not UTF-8 text (byte {offset} is invalid).",
            hint="Give it as UTF-8 (iconv converts text; a symlink gives a file a UTF-8 name).",
        ) from exc
