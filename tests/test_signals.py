"""Signals other than one Ctrl-C: SIGTERM and SIGHUP clean up as SIGINT does, at any point of a long
command, and llama.cpp's quantizer child never outlives the command, however it ends. Real processes, real
signals; each waits for a state on disk or in /proc, never for a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixtral_cli.chat.transcript import Transcript

from .helpers import with_default_signals
from .test_quantize import SLOW_SPEC, _children, _gone, _wait_for_partial

ENDING = [signal.SIGTERM, signal.SIGHUP, signal.SIGINT]


def start_quantize(source: Path, output: Path, **kwargs) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "quantize", source, "--type", "Q4_K_M", "--threads", "1", "-o", output],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=kwargs.pop("preexec_fn", with_default_signals),
        start_new_session=True,  # its own process group: a Ctrl-C is sent to the group, as a terminal does
        **kwargs,
    )


def wait_for_the_quantizer(process: subprocess.Popen[str]) -> list[int]:
    """The quantizer child's pid, as soon as the child process exists (it is still starting up then)."""
    deadline = time.monotonic() + 60
    while not (children := _children(process.pid)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    return children


def send(process: subprocess.Popen[str], signum: int) -> None:
    # Ctrl-C reaches the terminal's whole process group; SIGTERM and SIGHUP come to one process.
    if signum == signal.SIGINT:
        os.killpg(process.pid, signum)
    else:
        process.send_signal(signum)


@pytest.mark.parametrize("signum", ENDING, ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_the_quantizer_starts_ends_both_and_leaves_nothing(signum, convert, tmp_path):
    source, output = convert(SLOW_SPEC, "F16"), tmp_path / "out.gguf"
    process = start_quantize(source, output)
    quantizers = wait_for_the_quantizer(process)

    send(process, signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert all(_gone(pid, within_s=10) for pid in quantizers)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_a_signal_while_llama_quantizes_ends_both_and_leaves_nothing(signum, convert, tmp_path):
    source, output = convert(SLOW_SPEC, "F16"), tmp_path / "out.gguf"
    process = start_quantize(source, output)
    _wait_for_partial(output, process, n_bytes=2**20)
    quantizers = _children(process.pid)

    send(process, signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signum, stderr
    assert stderr.strip().splitlines()[-1] == f"Note: Stopped by {signal.Signals(signum).name}."
    assert all(_gone(pid, within_s=10) for pid in quantizers)
    assert list(tmp_path.iterdir()) == []


def test_the_quantizer_dies_with_a_killed_command(convert, tmp_path):
    source, output = convert(SLOW_SPEC, "F16"), tmp_path / "out.gguf"
    process = start_quantize(source, output)
    _wait_for_partial(output, process, n_bytes=2**20)
    quantizers = _children(process.pid)

    process.kill()  # no cleanup can run: the kernel ends the child (its parent-death signal)
    process.wait()

    assert quantizers and all(_gone(pid, within_s=10) for pid in quantizers)


def test_a_command_started_ignoring_hangups_keeps_ignoring_them(tiny_checkpoint, tmp_path):
    output = tmp_path / "out.gguf"

    def as_nohup_starts_it() -> None:
        with_default_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    process = start_quantize(tiny_checkpoint, output, preexec_fn=as_nohup_starts_it)
    wait_for_the_quantizer(process)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 0, stderr
    assert output.read_bytes()[:4] == b"GGUF"


@pytest.mark.usefixtures("demo_model")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_a_chat_answer_keeps_the_question_and_the_partial_answer(signum, isolated_home):
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "chat", "-m", "tiny", "-n", "20000", "-c", "32768", "--temperature", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=with_default_signals,
    )
    process.stdin.write(b"Write a very long story.\n")
    process.stdin.flush()
    assert process.stdout.read(1)  # the answer has begun

    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 128 + signum, stderr
    assert b"Traceback" not in stderr
    (saved,) = (isolated_home / "mixtral" / "chats").glob("*.json")
    turns = Transcript.load(saved).turns
    assert [t.role for t in turns] == ["user", "assistant"] and turns[1].content
    assert json.loads(saved.read_text())["messages"][0]["content"] == "Write a very long story."


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=lambda s: signal.Signals(s).name)
def test_a_signal_during_an_import_that_swallows_exceptions_still_ends_the_command(signum, tmp_path, monkeypatch):
    from mixtral_cli.cli import Terminated, _ending_signals_raise

    # As Cython's memoryview set-up does when the first `np.random` imports numpy's random modules.
    module = f"swallows_{signal.Signals(signum).name}"
    (tmp_path / f"{module}.py").write_text(
        f"import os\ntry:\n    os.kill(os.getpid(), {int(signum)})\n    sum(range(10))\nexcept:\n    pass\n"
    )
    monkeypatch.syspath_prepend(tmp_path)

    with pytest.raises(KeyboardInterrupt if signum == signal.SIGINT else Terminated), _ending_signals_raise():
        __import__(module)
        time.sleep(60)  # the signal ends this at once, as soon as the import is done
