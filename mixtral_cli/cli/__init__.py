"""The `mixtral` command: a Typer app whose commands stay thin, and the one place errors are printed."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Annotated

import typer

from .. import __version__
from . import batch, chat, complete, completion, devices, models, prompt, pull, quantize, serve, summarize, tiny, worker
from . import eval as eval_command

app = typer.Typer(
    name="mixtral",
    help="Run Mistral AI's Mixtral mixture-of-experts models on your own machine.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("chat")(chat.chat)
app.command("complete")(complete.complete)
app.command("prompt")(prompt.prompt)
app.command("pull")(pull.pull)
app.add_typer(models.app, name="models")
app.command("quantize")(quantize.quantize)
app.command("eval")(eval_command.eval_)
app.command("summarize")(summarize.summarize)
app.command("batch")(batch.batch)
app.command("tiny")(tiny.tiny)
app.command("devices")(devices.devices)
app.command("worker")(worker.worker)
app.command("serve")(serve.serve)
app.command("completion")(completion.completion)

_debug = False
INTERRUPTED = 130


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"mixtral {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback when something fails.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    global _debug
    _debug = _debug or debug


def main(argv: list[str] | None = None) -> None:
    """Run the app; our errors become one message on stderr and an exit code, never a traceback."""
    from ..base.errors import MixtralError, OutputStreamError
    from ..ui.console import guard_stdout, silence_stdout
    from .arguments import check_arguments

    global _debug
    _debug = os.environ.get("MIXTRAL_DEBUG", "") not in ("", "0")
    if "_MIXTRAL_COMPLETE" in os.environ:
        # The scripts in completions/ call back with this set; typer's shells are registered only on demand.
        from typer.completion import completion_init

        completion_init()
    command = typer.main.get_command(app)
    try:
        argv = check_arguments(sys.argv[1:] if argv is None else argv)
        guard_stdout()
        with _ending_signals_raise():
            code = command.main(args=argv, prog_name="mixtral", standalone_mode=False)
    except OutputStreamError as exc:
        silence_stdout()
        if not exc.closed_pipe:
            _report(exc, exc.message, exc.hint)
        code = exc.exit_code
    except Terminated as exc:
        # The cleanup ran on the way out, as for Ctrl-C; the terminal may be gone (SIGHUP).
        with contextlib.suppress(OSError, ValueError):
            from ..ui.console import print_notice

            print_notice(f"Stopped by {signal.Signals(exc.signum).name}.")
        code = 128 + exc.signum
    except MixtralError as exc:
        _report(exc, exc.message, exc.hint)
        code = exc.exit_code
    except OSError as exc:
        unusable = _unusable_path(exc)
        if unusable is None:
            raise
        _report(exc, unusable.message, unusable.hint)
        code = unusable.exit_code
    except typer.Abort as exc:
        _report(exc, "Aborted.", None)
        code = 1
    except typer.TyperException as exc:
        # Usage errors from typer's own click: they print themselves, usage line included.
        exc.show()
        code = exc.exit_code
    if code == INTERRUPTED:
        # typer turns Ctrl-C into this exit code, silently; the cleanup has already run.
        from ..ui.console import print_notice

        print_notice("Interrupted.")
    sys.exit(code if isinstance(code, int) else 0)


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised wherever the command is, so that every ``finally`` and cleanup runs as it
    does for Ctrl-C: no half-written files, no quantizer left running. Not an Exception: nothing that
    handles errors (or Ctrl-C, as the chat does) may carry on after it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# How often a signal that came during an import looks again whether the import has ended.
_IMPORT_RETRY_S = 0.01


@contextlib.contextmanager
def _ending_signals_raise() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt, SIGTERM and SIGHUP raise Terminated once (more of them during the
    cleanup are ignored, so that it ends), wherever the command is, except inside an import: there the
    exception waits until the import is done, as extension modules' set-up code may swallow it (Cython's
    memoryview registration, run by the first ``np.random``, is ``try: ... except: pass``) and the command
    would go on as if no Ctrl-C had come. One that this process was started ignoring (nohup) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread (a command run from another thread, in tests)
        return
    waiting: list[BaseException] = []

    def raise_outside_imports(exc: BaseException, frame: FrameType | None) -> None:
        if not _importing(frame):
            waiting.clear()
            raise exc
        if not waiting or isinstance(exc, Terminated):  # an ending signal outranks Ctrl-C
            waiting[:] = [exc]
        signal.setitimer(signal.ITIMER_REAL, _IMPORT_RETRY_S)

    def on_interrupt(signum: int, frame: FrameType | None) -> None:
        raise_outside_imports(KeyboardInterrupt(), frame)

    def on_ending(signum: int, frame: FrameType | None) -> None:
        for ending in _ENDING_SIGNALS:
            signal.signal(ending, signal.SIG_IGN)
        raise_outside_imports(Terminated(signum), frame)

    def on_retry(signum: int, frame: FrameType | None) -> None:
        if waiting:
            raise_outside_imports(waiting[0], frame)

    handlers = {signal.SIGINT: on_interrupt, signal.SIGALRM: on_retry}
    handlers |= {ending: on_ending for ending in _ENDING_SIGNALS}
    previous = {signum: signal.getsignal(signum) for signum in handlers}
    for signum, old in previous.items():
        if old in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, handlers[signum])
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, old in previous.items():
            signal.signal(signum, old)


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` runs inside Python's import machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib."):
            return True
        frame = frame.f_back
    return False


def _unusable_path(exc: OSError):  # noqa: ANN202 - UnusablePathError | None
    """A name the user gave that the filesystem refuses (too long, a folder not to be entered), wherever it was
    looked up: one sentence, not a traceback. Any other OSError is a bug to show."""
    import errno

    from ..base.errors import UnusablePathError

    if exc.filename is None or exc.errno not in (errno.ENAMETOOLONG, errno.EACCES, errno.EPERM):
        return None
    return UnusablePathError(os.fsdecode(exc.filename), exc.strerror or str(exc))


def _report(exc: BaseException, message: str, hint: str | None) -> None:
    from ..ui.console import print_error

    if _debug:
        import traceback

        traceback.print_exception(exc)
    print_error(message, hint)
