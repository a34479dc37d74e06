"""Work that would take hours: a summary whose plan runs to hundreds of model calls is said before the first
one, with the time it takes on this machine where that is measured, and starts only when the user agrees
on a terminal, or gave --yes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from mixtral_cli.answer.long_job import LONG_JOB_CALLS, LONG_JOB_SECONDS, long_job
from mixtral_cli.answer.summary_plan import SummaryPlan

from .helpers import with_default_signals

pytestmark = pytest.mark.usefixtures("demo_model")

# At --ctx-size 256 and --length short, this text is cut into about 600 parts: past LONG_JOB_CALLS.
SUMMARY_ARGS = ["summarize", "-m", "tiny", "-c", "256", "--length", "short"]


@pytest.fixture(scope="module")
def long_text(tmp_path_factory) -> Path:
    rng = random.Random(1)
    words = "the a model expert router token layer mixture of experts attention cache weight prompt answer".split()
    sentences = (" ".join(rng.choice(words) for _ in range(12)).capitalize() + "." for _ in range(1200 * 5))
    paragraphs = [" ".join(next(sentences) for _ in range(5)) for _ in range(1200)]
    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text("\n\n".join(paragraphs))
    return path


def test_a_long_summary_is_refused_without_yes_when_stdin_is_not_a_terminal(long_text):
    result = subprocess.run(
        [sys.executable, "-m", "mixtral_cli", *SUMMARY_ARGS, str(long_text)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 1, result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("Error:"))
    assert error.startswith("Error: This summary takes up to ") and "model calls" in error
    assert error.endswith("not started without --yes, as stdin is not a terminal.")
    assert "Give --yes to run it anyway" in result.stderr
    assert "Summarizing, level" not in result.stderr and result.stdout == ""


def test_a_long_summary_asks_on_a_terminal_and_no_is_not_started(long_text):
    child = pexpect.spawn(
        sys.executable,
        ["-m", "mixtral_cli", *SUMMARY_ARGS, str(long_text)],
        env={**os.environ, "TERM": "xterm", "COLUMNS": "200"},
        encoding="utf-8",
        timeout=120,
        preexec_fn=with_default_signals,
    )
    child.expect(r"This summary takes up to [\d,]+ model calls.*Go on\? \[y/N\]")
    child.sendline("n")
    child.expect("Not started.")
    child.expect(pexpect.EOF)
    child.close()

    assert child.exitstatus == 1
    assert "Summarizing, level" not in child.before


def test_yes_starts_a_long_summary_without_asking(long_text):
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", *SUMMARY_ARGS, "--yes", str(long_text)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=with_default_signals,
    )
    try:
        first = process.stderr.readline()  # stderr is no terminal: each stage is one plain line
    finally:
        process.kill()
        process.wait()

    assert first.startswith("Summarizing, level 1: ") and int(first.split()[-2]) > LONG_JOB_CALLS


@pytest.mark.parametrize(
    ("bound", "seconds", "said"),
    [
        ([LONG_JOB_CALLS + 1, 1], None, f"This summary takes up to {LONG_JOB_CALLS + 2:,} model calls."),
        ([10, 2, 1], 3 * 3600 + 125, "This summary takes up to 13 model calls, up to about 3 h 2 min on this machine."),
        (
            [10, 1],
            LONG_JOB_SECONDS + 60,
            "This summary takes up to 11 model calls, up to about 16 min on this machine.",
        ),
        ([10, 1], 60.0, None),
        ([LONG_JOB_CALLS], None, None),
    ],
)
def test_what_a_long_summary_costs_is_said_from_its_bound_and_measured_time(bound, seconds, said):
    assert long_job("This summary", SummaryPlan(bound=bound).max_model_calls, seconds) == said
