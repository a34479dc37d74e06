"""`mixtral complete` end to end: in this process with piped stdin, and in child processes for real
pipes and signals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from mixtral_cli.engine.model import Engine
from mixtral_cli.engine.options import EngineOptions
from mixtral_cli.family.prompt_ids import Message
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .helpers import run_mixtral, with_default_signals
from .reference import llama_cpp_greedy

pytestmark = pytest.mark.usefixtures("demo_model")


def complete(*args, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_mixtral("complete", *args, input=stdin)


@pytest.fixture(scope="module")
def base_model(convert):
    return convert(TinyMixtralSpec(), "Q8_0")


def test_raw_greedy_output_is_llama_cpps_own(base_model):
    # --repack: llama.cpp's default layout, which llama-cpp-python loads; on the CPU, as it loads it.
    result = complete(
        "-m", base_model, "--repack", "-ngl", "0", "--raw", "--temperature", "0", "-n", "32", "The mixture of experts"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == llama_cpp_greedy(base_model, "The mixture of experts", 32, n_ctx=32768) + "\n"


def test_pipe_output_is_the_text_and_a_newline_without_ansi():
    result = complete("-m", "tiny", "--temperature", "0", "-n", "16", "Hello")

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and result.stdout.count("\n") >= 1
    assert "\x1b" not in result.stdout


def test_stdin_is_the_prompt_when_piped():
    piped = complete("-m", "tiny", "--temperature", "0", "-n", "16", stdin="Hello there\n")
    argument = complete("-m", "tiny", "--temperature", "0", "-n", "16", "Hello there")

    assert (piped.returncode, argument.returncode) == (0, 0), piped.stderr + argument.stderr
    assert piped.stdout == argument.stdout


def test_dash_reads_stdin():
    dash = complete("-m", "tiny", "--temperature", "0", "-n", "16", "-", stdin="Hello there")
    argument = complete("-m", "tiny", "--temperature", "0", "-n", "16", "Hello there")
    assert (dash.returncode, argument.returncode) == (0, 0), dash.stderr + argument.stderr
    assert dash.stdout == argument.stdout


def test_stdin_then_argument_after_a_blank_line(demo_model):
    both = complete("-m", "tiny", "--json", "-n", "4", "Summarize this.", stdin="Some text.\n")
    with Engine(demo_model, EngineOptions(ctx_size=512)) as engine:
        expected = engine.chat_ids([Message("user", "Some text.\n\nSummarize this.")])
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout)["prompt_tokens"] == len(expected)


def test_json_has_text_counts_stop_reason_and_timings():
    result = complete("-m", "tiny", "--json", "--temperature", "0", "-n", "12", "Hello")
    plain = complete("-m", "tiny", "--temperature", "0", "-n", "12", "Hello")
    assert (result.returncode, plain.returncode) == (0, 0), result.stderr + plain.stderr
    data = json.loads(result.stdout)

    assert data["text"] + "\n" == plain.stdout
    assert data["model"] == "Tiny-Mixtral-Instruct (random weights)"
    assert data["prompt_tokens"] > 0 and 0 < data["completion_tokens"] <= 12
    assert data["stop_reason"] in {"length", "eos"}
    timings = data["timings"]
    layout, placement = timings.pop("layout"), timings.pop("placement")
    assert set(timings) == {
        "load_s",
        "prompt_eval_s",
        "decode_s",
        "prompt_tokens_per_second",
        "decode_tokens_per_second",
    }
    assert all(value > 0 for value in timings.values())
    assert layout in {"repacked", "plain", "hand-over"}
    layers = sum(device["layers"] for device in placement["devices"].values())
    assert layers == 2 and placement["n_gpu_layers"] <= 3  # what ran: the demo model's 2 layers, somewhere


def test_model_card_request_with_a_list_of_prompts(tmp_path):
    request = {
        "input_data": {
            "input_string": ["My favourite condiment is", "The capital of France is"],
            "parameters": {"max_new_tokens": 10, "do_sample": False, "return_full_text": False},
        }
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    result = complete("-m", "tiny", "--request", tmp_path / "request.json")

    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [list(a) for a in answers] == [["0"], ["0"]]
    for prompt, answer in zip(request["input_data"]["input_string"], answers, strict=True):
        greedy = complete("-m", "tiny", "--temperature", "0", "-n", "10", prompt)
        assert greedy.returncode == 0, greedy.stderr
        assert answer["0"] + "\n" == greedy.stdout


def test_model_card_request_with_a_conversation_and_parameters_beside():
    request = {
        "input_data": {
            "input_string": [
                {"role": "user", "content": "I am going to Paris, what should I see?"},
                {"role": "assistant", "content": "The Eiffel Tower."},
                {"role": "user", "content": "What is so great about it?"},
            ]
        },
        "parameters": {
            "temperature": 0.6,
            "top_p": 0.9,
            "do_sample": False,
            "max_new_tokens": 8,
            "return_full_text": True,
        },
    }
    result = complete("-m", "tiny", "--request", "-", stdin=json.dumps(request))

    assert result.returncode == 0, result.stderr
    (answer,) = json.loads(result.stdout)
    assert answer["0"].startswith("I am going to Paris, what should I see?\n\nThe Eiffel Tower.\n\n")


@pytest.mark.parametrize(
    ("request_text", "message"),
    [("{not json", "not valid JSON"), ('{"input_data": {}}', "input_string"), ('{"input": 1}', "input_data")],
)
def test_bad_request_is_one_clear_line(request_text, message):
    result = complete("-m", "tiny", "--request", "-", stdin=request_text)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_missing_model_says_how_to_get_one(tmp_path):
    result = complete("-m", tmp_path / "none.gguf", "Hello")

    assert result.returncode == 1
    assert "mixtral quantize" in result.stderr and "-m tiny" in result.stderr


def test_no_model_at_all_says_how_to_get_one():
    assert "MIXTRAL_MODEL" not in os.environ
    result = complete("Hello")
    assert result.returncode == 1
    assert "No model given" in result.stderr


def test_mixtral_model_variable_chooses_the_model(monkeypatch):
    monkeypatch.setenv("MIXTRAL_MODEL", "tiny")
    result = complete("-n", "4", "Hello")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "option", [["--temperature", "-1"], ["--top-p", "1.5"], ["--max-tokens", "0"], ["--min-p", "2"]]
)
def test_invalid_sampling_values_are_usage_errors(option):
    result = complete("-m", "tiny", *option, "Hello")
    assert result.returncode == 2
    assert option[0] in result.stderr


def test_prompt_longer_than_the_context_is_refused_with_both_counts():
    result = complete("-m", "tiny", "--ctx-size", "256", "word " * 400)

    assert result.returncode == 1
    counts = re.search(r"The prompt is (\d+) tokens but the context holds (\d+)", result.stderr)
    assert counts and int(counts[1]) > int(counts[2]) == 256
    assert result.stdout == ""


def test_no_prompt_is_an_error():
    result = complete("-m", "tiny")
    assert result.returncode == 1
    assert "No prompt" in result.stderr


def test_system_prompt_needs_the_chat_format():
    result = complete("-m", "tiny", "--raw", "--system", "Be brief.", "Hello")
    assert result.returncode == 1
    assert "--system" in result.stderr


def test_ctrl_c_keeps_what_was_printed_and_exits_130():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mixtral_cli",
            "complete",
            "-m",
            "tiny",
            "--raw",
            "--temperature",
            "0",
            "-n",
            "100000",
            "-c",
            "32768",
            "Once",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=with_default_signals,
    )
    first = os.read(process.stdout.fileno(), 16)
    process.send_signal(signal.SIGINT)
    rest, stderr = process.communicate(timeout=60)

    assert process.returncode == 130
    assert first and (first + rest).endswith(b"\n")
    assert b"Interrupted" in stderr and b"Traceback" not in stderr


def test_closed_pipe_ends_quietly():
    command = f"set -o pipefail; {sys.executable} -m mixtral_cli complete -m tiny --raw -n 2000 Once | head -c 5"
    result = subprocess.run(["bash", "-c", command], capture_output=True, stdin=subprocess.DEVNULL)

    assert result.returncode == 1  # mixtral's own status under pipefail: click ends on EPIPE with 1
    assert len(result.stdout) == 5  # bytes, as head counts them
    assert result.stderr == b""
