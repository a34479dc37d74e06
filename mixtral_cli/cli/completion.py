"""`mixtral completion`."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

PROG_NAME = "mixtral"


class Shell(str, Enum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


def completion(shell: Annotated[Shell, typer.Argument(help="The shell to write the script for.")]) -> None:
    """Print the shell completion script for bash, zsh or fish.

    \b
    Examples:
        mixtral completion bash > ~/.local/share/bash-completion/completions/mixtral
        mixtral completion zsh > "${fpath[1]}/_mixtral"

        mixtral completion fish > ~/.config/fish/completions/mixtral.fish
    """
    from typer.completion import get_completion_script

    script = get_completion_script(
        prog_name=PROG_NAME, complete_var=f"_{PROG_NAME.upper()}_COMPLETE", shell=shell.value
    )
    typer.echo(script, nl=False)
