"""`mixtral models`: the store's list, details, removal and default."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..sources.store import StoreEntry

app = typer.Typer(help="List, show, remove and choose the default of pulled models.", no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """List the pulled models (tab-separated on a pipe)."""
    from ..base.units import format_bytes
    from ..sources.store import ModelStore
    from ..ui.table import print_rows

    store = ModelStore()
    default = store.default()
    rows = [
        (("* " if e.name == default else "") + e.name, e.repo, e.quant, format_bytes(e.size), e.kind, e.created)
        for e in store.entries()
    ]
    print_rows(
        ("name", "repo", "quant", "size", "kind", "pulled"),
        rows,
        empty="No models yet: `mixtral pull 8x7b-instruct` fetches one.",
    )


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="A name from `mixtral models list`.")]) -> None:
    """Show a model's GGUF metadata and files."""
    from ..family.instruct import CHAT_TEMPLATE_KEY, describe, instruct_from_data
    from ..gguf_format.header import inspect_gguf
    from ..gguf_format.quant_types import QUANT_TYPES
    from ..sources.store import ModelStore

    entry = ModelStore().require(name)
    if entry.kind == "adapter":
        typer.echo(_adapter_lines(entry))
        return
    info = inspect_gguf(entry.path)
    meta = info.metadata
    file_type = next((q.name for q in QUANT_TYPES.values() if q.file_type == info.file_type), str(info.file_type))
    pulled_as = (entry.name, entry.instruct) if entry.instruct is not None else None
    instruct = instruct_from_data(chat_template=CHAT_TEMPLATE_KEY in meta, pulled_as=pulled_as)
    lines = [
        f"name: {entry.name}",
        f"source: {entry.repo} @ {entry.revision}",
        f"architecture: {info.architecture} (Mixtral), {meta.get('llama.block_count')} layers",
        f"experts: {info.expert_count}, used per token: {meta.get('llama.expert_used_count')}",
        f"context: {meta.get('llama.context_length')} tokens",
        f"quantization: {file_type}",
        f"tokenizer: {info.tokenizer_version}",
        f"prompt: {describe(*instruct)}",
        f"parameters: {info.n_params / 1e9:.2f}B",
        "files:",
        *(f"  {f}" for f in entry.files),
    ]
    typer.echo("\n".join(lines))


def _adapter_lines(entry: StoreEntry) -> str:
    from ..family.catalog import catalog_model_of_repo

    known = catalog_model_of_repo(entry.base_model) if entry.base_model else None
    base = f"{entry.base_model} ({f'`{known.name}` in the catalog' if known else 'not in the catalog'})"
    return "\n".join(
        [
            f"name: {entry.name}",
            f"source: {entry.repo} @ {entry.revision}",
            f"LoRA adapter of: {base if entry.base_model else 'a model it does not name'}",
            f"type: {entry.quant}",
            f"apply with: --lora {entry.name}",
            "files:",
            *(f"  {f}" for f in entry.files),
        ]
    )


@app.command("rm")
def remove(
    name: Annotated[str, typer.Argument(help="A name from `mixtral models list`.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Remove a model and the files only it uses."""
    from ..base.errors import MixtralError
    from ..sources.store import ModelStore

    store = ModelStore()
    store.require(name)
    if not yes:
        if not sys.stdin.isatty():
            raise MixtralError(f"Not removing {name} without confirmation.", hint="Pass --yes.")
        typer.confirm(f"Remove {name} and its files?", abort=True)
    removed = store.remove(name)
    typer.echo(f"Removed {name} ({len(removed)} files deleted).")


@app.command("default")
def default(name: Annotated[str, typer.Argument(help="A name from `mixtral models list`.")]) -> None:
    """Make a model the default for commands run without -m."""
    from ..sources.store import ModelStore

    ModelStore().set_default(name)
    typer.echo(f"{name} is the default model.")
