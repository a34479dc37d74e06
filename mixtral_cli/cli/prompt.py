"""`mixtral prompt`."""

from __future__ import annotations

from typing import Annotated

import typer

from .options import MessagesOption, ModelOption, SystemOption, ToolsOption


def prompt(
    text: Annotated[str | None, typer.Argument(show_default=False, help="One user message.")] = None,
    model: ModelOption = None,
    messages: MessagesOption = None,
    tools: ToolsOption = None,
    system: SystemOption = None,
    ids: Annotated[bool, typer.Option("--ids", help="Print the token ids, space separated, on one line.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Compare with mistral-common's encoding and say where they differ.")
    ] = False,
) -> None:
    """Show exactly what the model would see for a conversation, special tokens included.

    \b
    Examples:
        mixtral prompt -m tiny "Hello, how are you?"
        mixtral prompt -m model.gguf --messages conversation.json --ids --check
        mixtral prompt -m 8x22b-instruct --messages round.json --tools tools.json --check
    """
    from ..engine.model import Engine
    from ..family.prompt_ids import Message, read_messages
    from ..family.tool_prompt import read_tools
    from ..sources.model_path import resolve_model
    from ..ui.console import print_notice

    if (text is None) == (messages is None):
        raise typer.BadParameter("give either a message or --messages FILE.", param_hint="--messages")
    conversation = read_messages(messages) if messages is not None else [Message("user", text or "")]
    offered = read_tools(tools) if tools is not None else ()
    if system:
        conversation = [Message("system", system), *conversation]
    # The vocabulary is all the ids need: no weights are read and no GPU memory is taken.
    model_file = resolve_model(model)
    with Engine(model_file.path, on_notice=print_notice, vocab_only=True, pulled_as=model_file.pulled_as) as engine:
        prompt_ids = engine.chat_ids(conversation, tools=offered)
        if ids:
            typer.echo(" ".join(map(str, prompt_ids)))
        else:
            typer.echo(b"".join(engine.piece(i, special=True) for i in prompt_ids).decode("utf-8", "replace"))
        if check:
            _report_check(engine, conversation, prompt_ids, offered)


def _report_check(engine, conversation, prompt_ids, tools) -> None:  # noqa: ANN001
    from ..family.reference_check import check_against_mistral_common
    from ..ui.console import stderr_console

    version = engine.info.prompt_format.value
    result = check_against_mistral_common(conversation, prompt_ids, engine.info.prompt_format, tools)
    if result.first_difference is None:
        stderr_console().print(f"[green]Matches[/] mistral-common's {version} encoding ({len(prompt_ids)} tokens).")
        return
    i = result.first_difference
    stderr_console().print(
        f"[red]Differs[/] from mistral-common's {version} encoding at token {i}: "
        f"ours {prompt_ids[i : i + 8]}, mistral-common {result.reference[i : i + 8]}."
    )
    raise typer.Exit(1)
