"""`mixtral chat`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ..engine.options import (
    DEFAULT_MAX_TOKENS,
    DEFAULT_MIN_P,
    DEFAULT_REPEAT_PENALTY,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    DEFAULT_TOP_P,
)
from .options import (
    BatchSizeOption,
    CpuMoeOption,
    CtxSizeOption,
    FlashAttnOption,
    GpuLayersOption,
    MaxTokensOption,
    MinPOption,
    ModelOption,
    NCpuMoeOption,
    RepeatPenaltyOption,
    SeedOption,
    StopOption,
    SystemOption,
    TemperatureOption,
    ThreadsOption,
    TopKOption,
    TopPOption,
    VerboseOption,
    engine_options,
    sampling_options,
)


class ContextPolicyChoice(str, Enum):
    drop = "drop"
    error = "error"


def chat(
    model: ModelOption = None,
    system: SystemOption = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", "-r", show_default=False, help="Continue a saved chat (a JSON file).")
    ] = None,
    list_chats: Annotated[bool, typer.Option("--list", help="List the saved chats and exit.")] = False,
    context_policy: Annotated[
        ContextPolicyChoice,
        typer.Option(help="When the history outgrows the context: drop the oldest exchanges, or refuse."),
    ] = ContextPolicyChoice.drop,
    temperature: TemperatureOption = DEFAULT_TEMPERATURE,
    top_p: TopPOption = DEFAULT_TOP_P,
    top_k: TopKOption = DEFAULT_TOP_K,
    min_p: MinPOption = DEFAULT_MIN_P,
    repeat_penalty: RepeatPenaltyOption = DEFAULT_REPEAT_PENALTY,
    max_tokens: MaxTokensOption = DEFAULT_MAX_TOKENS,
    seed: SeedOption = None,
    stop: StopOption = None,
    ctx_size: CtxSizeOption = None,
    batch_size: BatchSizeOption = 512,
    threads: ThreadsOption = None,
    n_gpu_layers: GpuLayersOption = None,
    cpu_moe: CpuMoeOption = False,
    n_cpu_moe: NCpuMoeOption = 0,
    flash_attn: FlashAttnOption = True,
    verbose: VerboseOption = False,
) -> None:
    """Chat with a model: multi-turn, streamed as Markdown, saved as you go.

    Type /help in the chat for its commands. With stdin not a terminal, each line is one user turn and
    the answers go to stdout, so chats can be scripted. Every chat is autosaved after each turn;
    --list shows them and --resume continues one.

    \b
    Examples:
        mixtral chat -m tiny
        mixtral chat -m model.gguf --system "Answer in French." --temperature 0.7
        printf 'Hello\\nTell me more\\n' | mixtral chat -m tiny
    """
    from ..chat.session import ChatSession, ContextPolicy
    from ..chat.transcript import Transcript
    from ..engine.model import Engine
    from ..errors import ModelNotFoundError
    from ..models import resolve_model
    from ..paths import mixtral_home
    from ..ui.console import print_notice
    from ..ui.repl import run_repl

    if list_chats:
        _print_saved_chats()
        return
    options = engine_options(
        ctx_size=ctx_size,
        batch_size=batch_size,
        threads=threads,
        n_gpu_layers=n_gpu_layers,
        cpu_moe=cpu_moe,
        n_cpu_moe=n_cpu_moe,
        flash_attn=flash_attn,
        verbose=verbose,
    )
    if resume is not None:
        transcript = Transcript.load(resume)
        if system:
            transcript.system = system
    else:
        sampling = sampling_options(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            max_tokens=max_tokens,
            seed=seed,
            stop=stop,
        )
        transcript = Transcript(model="", system=system, sampling=sampling)
    spec = model or transcript.model or None
    if spec is None:
        raise ModelNotFoundError("No model given.", hint="Pass -m MODEL (-m tiny for the built-in demo).")
    transcript.model = spec

    def load_engine(name: str) -> Engine:
        return Engine(resolve_model(name), options, on_notice=print_notice)

    session = ChatSession(
        load_engine(spec), transcript, policy=ContextPolicy(context_policy.value), autosave_path=resume
    )
    try:
        run_repl(session, history_file=mixtral_home() / "chat_history", load_engine=load_engine)
    finally:
        session.engine.close()


def _print_saved_chats() -> None:
    """A table on a terminal; one tab-separated line per chat on a pipe, for scripts."""
    from rich.table import Table

    from ..chat.session import list_saved_chats
    from ..ui.console import stdout_console

    chats = list_saved_chats()
    console = stdout_console()
    rows = [(str(c.path), c.created, c.model, str(c.messages), c.first_question.replace("\n", " ")[:60]) for c in chats]
    if not console.is_terminal:
        for row in rows:
            typer.echo("\t".join(row))
        return
    if not rows:
        console.print("No saved chats yet.")
        return
    table = Table("file", "started", "model", "messages", "first question", box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    console.print(table)
