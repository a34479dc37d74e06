"""`mixtral batch` on the demo model: OpenAI's batch format, the model cards' folder shape, resuming, --server."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixtral_cli.engine import calibration
from mixtral_cli.engine.layout import LayoutRates
from mixtral_cli.sources.demo import demo_model_path

from .helpers import run_mixtral
from .servers import Server

pytestmark = pytest.mark.usefixtures("demo_model")
# The plain weight layout: its kernels compute each row of a batch as they compute it alone (tests/test_batch.py).
ENGINE = ("-m", "tiny", "--threads", "1", "--ctx-size", "256", "--no-repack")


def request_line(custom_id: str, content: str, *, url: str = "/v1/chat/completions", **body) -> str:
    if url == "/v1/chat/completions":
        body = {"messages": [{"role": "user", "content": content}], **body}
    else:
        body = {"prompt": content, **body}
    body = {"max_tokens": 8, "temperature": 0, **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def write_input(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def contents(path: Path) -> dict[str, str]:
    answers = {}
    for record in records(path):
        choice = record["response"]["body"]["choices"][0]
        answers[record["custom_id"]] = choice["message"]["content"] if "message" in choice else choice["text"]
    return answers


def test_answers_come_in_input_order_with_the_served_routes_bodies(tmp_path):
    lines = [request_line(f"r{i}", f"Question {i}") for i in range(5)]
    lines.insert(2, request_line("text", "Once upon a time", url="/v1/completions"))
    result = run_mixtral("batch", write_input(tmp_path / "in.jsonl", lines), "-o", tmp_path / "out.jsonl", *ENGINE)

    assert result.returncode == 0, result.stderr
    out = records(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in out] == ["r0", "r1", "text", "r2", "r3", "r4"]
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in out)
    assert all(r["id"].startswith("batch_req_") and r["response"]["request_id"] for r in out)
    assert out[0]["response"]["body"]["object"] == "chat.completion"
    assert out[2]["response"]["body"]["object"] == "text_completion"
    assert out[0]["response"]["body"]["usage"]["completion_tokens"] == 8
    assert not (tmp_path / "out.errors.jsonl").exists()
    assert "6 requests answered: 48 tokens" in result.stderr


def test_greedy_answers_in_a_batch_equal_each_answered_alone(tmp_path):
    lines = [request_line(f"r{i}", f"Tell me about expert {i}", max_tokens=16) for i in range(6)]
    source = write_input(tmp_path / "in.jsonl", lines)
    together = run_mixtral("batch", source, "-o", tmp_path / "together.jsonl", *ENGINE, "--parallel", "6")
    alone = run_mixtral("batch", source, "-o", tmp_path / "alone.jsonl", *ENGINE, "--parallel", "1")

    assert together.returncode == 0 and alone.returncode == 0, together.stderr + alone.stderr
    assert contents(tmp_path / "together.jsonl") == contents(tmp_path / "alone.jsonl")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json at all", "is not JSON"),
        ('["a", "list"]', "is not a JSON object"),
        ('{"method": "POST", "url": "/v1/completions", "body": {"prompt": "x"}}', '"custom_id"'),
        ('{"custom_id": "g", "method": "GET", "url": "/v1/completions", "body": {"prompt": "x"}}', '"POST"'),
        ('{"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {}}', '"url" must be one of'),
        ('{"custom_id": "s", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "stream": true}}',
         '"stream": true'),
        ('{"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": {"prompt": 7}}', '"prompt"'),
        ('{"custom_id": "t", "method": "POST", "url": "/v1/completions", "body": {"prompt": "x", "temperature": -1}}',
         "temperature"),
    ],
)  # fmt: skip
def test_a_bad_line_is_an_error_line_and_the_others_are_answered(tmp_path, line, message):
    source = write_input(tmp_path / "in.jsonl", [request_line("good", "Hi"), line, request_line("after", "Hello")])
    result = run_mixtral("batch", source, "-o", tmp_path / "out.jsonl", *ENGINE)

    assert result.returncode == 0, result.stderr
    assert [r["custom_id"] for r in records(tmp_path / "out.jsonl")] == ["good", "after"]
    (error,) = records(tmp_path / "out.errors.jsonl")
    assert error["response"] is None and error["error"]["code"] == "invalid_request"
    assert message in error["error"]["message"]


def test_a_duplicate_custom_id_is_an_error_line(tmp_path):
    lines = [request_line("same", "Hi"), request_line("same", "Hello")]
    result = run_mixtral("batch", write_input(tmp_path / "in.jsonl", lines), "-o", tmp_path / "out.jsonl", *ENGINE)

    assert result.returncode == 0, result.stderr
    assert len(records(tmp_path / "out.jsonl")) == 1
    assert "used by an earlier line" in records(tmp_path / "out.errors.jsonl")[0]["error"]["message"]


def test_errors_go_where_errors_says(tmp_path):
    lines = [request_line("good", "Hi"), "{"]
    errors = tmp_path / "elsewhere" / "failed.jsonl"
    source = write_input(tmp_path / "in.jsonl", lines)
    result = run_mixtral("batch", source, "-o", tmp_path / "out.jsonl", "--errors", errors, *ENGINE)

    assert result.returncode == 0, result.stderr
    assert len(records(errors)) == 1
    assert not (tmp_path / "out.errors.jsonl").exists()


def test_a_run_stopped_midway_resumes_without_answering_anything_twice(tmp_path):
    lines = [request_line(f"r{i}", f"Question {i}", max_tokens=40) for i in range(16)]
    source, output = write_input(tmp_path / "in.jsonl", lines), tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.journal"
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "batch", str(source), "-o", str(output), *ENGINE, "--parallel", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 3):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)
    first = {r["custom_id"]: r for r in records(journal)}

    assert process.returncode != 0
    assert not output.exists()  # never half written
    assert 3 <= len(first) < len(lines)
    result = run_mixtral("batch", source, "-o", output, *ENGINE, "--parallel", "2")
    assert result.returncode == 0, result.stderr
    final = records(output)
    assert [r["custom_id"] for r in final] == [f"r{i}" for i in range(16)]
    for record in final:  # what the first run answered is kept as it was, not answered again
        if record["custom_id"] in first:
            assert record == first[record["custom_id"]]
    assert f"{len(first)} answered earlier, skipped" in result.stderr
    assert not journal.exists()


def test_a_journal_cut_midway_through_a_line_loses_only_that_line(tmp_path):
    lines = [request_line(f"r{i}", f"Question {i}") for i in range(3)]
    source, output = write_input(tmp_path / "in.jsonl", lines), tmp_path / "out.jsonl"
    assert run_mixtral("batch", source, "-o", output, *ENGINE).returncode == 0
    answered = output.read_text().splitlines()
    output.unlink()
    (tmp_path / "out.jsonl.journal").write_text(answered[0] + "\n" + answered[1][: len(answered[1]) // 2])

    result = run_mixtral("batch", source, "-o", output, *ENGINE)

    assert result.returncode == 0, result.stderr
    assert output.read_text().splitlines()[0] == answered[0]
    assert [r["custom_id"] for r in records(output)] == ["r0", "r1", "r2"]
    assert "1 answered earlier, skipped" in result.stderr


def test_a_changed_line_is_answered_again(tmp_path):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, [request_line("r0", "First question")])
    assert run_mixtral("batch", source, "-o", output, *ENGINE).returncode == 0
    write_input(source, [request_line("r0", "Another question")])

    result = run_mixtral("batch", source, "-o", output, *ENGINE)

    assert result.returncode == 0, result.stderr
    assert "skipped" not in result.stderr
    assert len(records(output)) == 1


def test_more_than_500_requests_need_yes_when_stdin_is_not_a_terminal(tmp_path):
    lines = [request_line(f"r{i}", "Hi") for i in range(501)]
    result = run_mixtral("batch", write_input(tmp_path / "in.jsonl", lines), "-o", tmp_path / "out.jsonl", *ENGINE)

    assert result.returncode == 1
    assert "501 model calls" in result.stderr and "--yes" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_the_model_calls_counted_are_the_answers_asked_for(tmp_path):
    lines = [request_line(f"r{i}", "Hi", n=4) for i in range(126)]  # 126 lines, 504 answers
    result = run_mixtral("batch", write_input(tmp_path / "in.jsonl", lines), "-o", tmp_path / "out.jsonl", *ENGINE)

    assert result.returncode == 1
    assert "504 model calls" in result.stderr and "--yes" in result.stderr


def test_a_batch_sent_to_a_server_gets_the_same_answers(demo_model, tmp_path):
    lines = [request_line(f"r{i}", f"Question {i}") for i in range(4)] + ["{"]
    source = write_input(tmp_path / "in.jsonl", lines)
    batch_here_and_on_a_server(demo_model, tmp_path, source, "tiny")

    assert contents(tmp_path / "there.jsonl") == contents(tmp_path / "here.jsonl")
    assert len(records(tmp_path / "there.errors.jsonl")) == 1


def test_a_folder_of_card_requests_gets_one_answer_file_each(tmp_path):
    inputs, outputs = tmp_path / "requests", tmp_path / "answers"
    inputs.mkdir()
    for name, prompts in (("a.json", ["Hi", "Hello"]), ("b.json", ["Once upon a time"])):
        body = {"input_data": {"input_string": prompts, "parameters": {"max_new_tokens": 6, "temperature": 0}}}
        (inputs / name).write_text(json.dumps(body))
    (inputs / "broken.json").write_text("{not json")

    result = run_mixtral("batch", inputs, "-o", outputs, *ENGINE)

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in outputs.iterdir()) == ["a.json", "b.json"]
    answers = json.loads((outputs / "a.json").read_text())
    assert len(answers) == 2 and all(set(answer) == {"0"} for answer in answers)  # the 8x7B cards' shape
    (error,) = records(tmp_path / "answers.errors.jsonl")
    assert error["file"] == "broken.json"
    again = run_mixtral("batch", inputs, "-o", outputs, *ENGINE)
    assert "2 answered earlier, skipped" in again.stderr


def test_an_output_that_cannot_be_written_is_refused_before_any_answer(tmp_path):
    (tmp_path / "a-file").write_text("")
    source = write_input(tmp_path / "in.jsonl", [request_line("r0", "Hi")])
    result = run_mixtral("batch", source, "-o", tmp_path / "a-file" / "out.jsonl", *ENGINE)

    assert result.returncode == 1
    assert "Cannot write" in result.stderr and "is not a folder" in result.stderr
    assert "Answering" not in result.stderr


# -- what `mixtral serve` holds a request to, held here too ---------------------------------------------------


def test_a_line_naming_another_model_or_asking_too_many_answers_is_an_error_line_as_serve_answers_it(tmp_path):
    lines = [
        request_line("unnamed", "Hi"),
        request_line("by-name", "Hi", model="tiny"),
        request_line("by-file", "Hi", model=demo_model_path().name),
        request_line("null", "Hi", model=None),
        request_line("other", "Hi", model="gpt-4o"),
        request_line("number", "Hi", model=7),
        request_line("list", "Hi", model=["tiny"]),
        request_line("object", "Hi", model={"id": "tiny"}),
        request_line("empty", "Hi", model=""),
        request_line("32", ["Hi"] * 4, url="/v1/completions", n=8, max_tokens=1),
        request_line("33", ["Hi"] * 3, url="/v1/completions", n=11, max_tokens=1),
    ]
    result = run_mixtral("batch", write_input(tmp_path / "in.jsonl", lines), "-o", tmp_path / "out.jsonl", *ENGINE)

    assert result.returncode == 0, result.stderr
    answered = records(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in answered] == ["unnamed", "by-name", "by-file", "null", "32"]
    assert len(answered[-1]["response"]["body"]["choices"]) == 32
    errors = {r["custom_id"]: r["error"] for r in records(tmp_path / "out.errors.jsonl")}
    assert {name: error["code"] for name, error in errors.items()} == {
        "other": "model_not_found",
        "number": "invalid_request",
        "list": "invalid_request",
        "object": "invalid_request",
        "empty": "model_not_found",
        "33": "invalid_request",
    }
    assert errors["other"]["message"] == "The model `gpt-4o` does not exist on this server: it serves `tiny`."
    assert errors["number"]["message"] == '"model" must be a string.'
    assert "asks for 33 answers; one request may ask for 32 at most" in errors["33"]["message"]
    assert "11 requests answered, 6 failed" in result.stderr


def test_a_card_request_of_more_answers_than_serve_takes_is_an_error(tmp_path):
    inputs, outputs = tmp_path / "requests", tmp_path / "answers"
    inputs.mkdir()
    for name, count in (("most.json", 32), ("over.json", 33)):
        body = {"input_data": {"input_string": ["Hi"] * count, "parameters": {"max_new_tokens": 1}}}
        (inputs / name).write_text(json.dumps(body))

    result = run_mixtral("batch", inputs, "-o", outputs, *ENGINE)

    assert result.returncode == 0, result.stderr
    assert [p.name for p in outputs.iterdir()] == ["most.json"]
    (error,) = records(tmp_path / "answers.errors.jsonl")
    assert error["file"] == "over.json" and error["error"]["code"] == "invalid_request"
    assert "asks for 33 answers" in error["error"]["message"]


def test_the_lines_a_server_refuses_read_as_the_lines_refused_here(demo_model, tmp_path):
    too_long = " ".join(["expert"] * 400)  # more tokens than a context of 256
    lines = [
        request_line("good", "Hi"),
        request_line("other-model", "Hi", model="gpt-4o"),
        request_line("model-number", "Hi", model=7),
        request_line("too-long", too_long),
        request_line("too-long-text", too_long, url="/v1/completions"),
        request_line("33-answers", ["Hi"] * 3, url="/v1/completions", n=11, max_tokens=1),
        request_line("bad-ids", [7, 10**9], url="/v1/completions"),
        request_line("unsupported", "Hi", url="/v1/completions", suffix="!"),
    ]
    source = write_input(tmp_path / "in.jsonl", lines)
    slow_rates(0.02)  # this machine's speed says nothing of the server's: no estimate, not asked (here: --yes)
    # The same -m as the server's: the served model's name is in a refusal's message.
    batch_here_and_on_a_server(demo_model, tmp_path, source, demo_model, "--yes")

    refused_here = {r["custom_id"]: r["error"] for r in records(tmp_path / "here.errors.jsonl")}
    refused_there = {r["custom_id"]: r["error"] for r in records(tmp_path / "there.errors.jsonl")}
    assert refused_there == refused_here
    assert {name: error["code"] for name, error in refused_there.items()} == {
        "other-model": "model_not_found",
        "model-number": "invalid_request",
        "too-long": "context_length_exceeded",
        "too-long-text": "context_length_exceeded",
        "33-answers": "invalid_request",
        "bad-ids": "invalid_request",
        "unsupported": "unsupported_parameter",
    }
    assert [r["custom_id"] for r in records(tmp_path / "there.jsonl")] == ["good"]


# -- a batch that would take long on this machine --------------------------------------------------------------


def batch_here_and_on_a_server(demo_model, tmp_path, source, model, *here_options) -> None:  # noqa: ANN001
    """``source`` answered by `mixtral batch` here (``-m model``, ENGINE's other options and ``here_options``) into
    here.jsonl, then by a server of the same engine options into there.jsonl; both runs succeed."""
    here = run_mixtral("batch", source, "-o", tmp_path / "here.jsonl", *ENGINE[2:], "-m", model, *here_options)
    server = Server(demo_model, tmp_path / "home", "--ctx-size", "256", "--no-repack")
    try:
        there = run_mixtral("batch", source, "-o", tmp_path / "there.jsonl", "--server", server.url)
    finally:
        server.stop()
    assert here.returncode == 0 and there.returncode == 0, here.stderr + there.stderr


def slow_rates(tokens_per_second: float) -> None:
    """This machine's measured rates for the demo model at --threads 1 (ENGINE's), kept where a calibration keeps
    them, in this test's own home."""
    key = calibration.cache_key(demo_model_path(), threads=1)
    calibration.store_rates(key, LayoutRates(*[tokens_per_second] * 4, repack_load_s=0.0))


def said_minutes(stderr: str) -> int:
    match = re.search(r"up to about (?:(\d+) h )?(\d+) min on this machine", stderr)
    assert match, stderr
    return 60 * int(match[1] or 0) + int(match[2])


def test_a_batch_that_takes_long_at_this_machines_measured_rates_needs_yes(tmp_path):
    slow_rates(0.02)  # 3 answers of 8 tokens: 20 minutes at least
    lines = [request_line(f"r{i}", f"Question {i}") for i in range(3)]
    source, output = write_input(tmp_path / "in.jsonl", lines), tmp_path / "out.jsonl"

    refused = run_mixtral("batch", source, "-o", output, *ENGINE)

    assert refused.returncode == 1
    assert "This batch takes up to 3 model calls, up to about " in refused.stderr
    assert "not started without --yes, as stdin is not a terminal" in refused.stderr
    # The answers alone take 3 x 8 tokens / 0.02 per second; each prompt is a few tokens, far from the context.
    assert 20 <= said_minutes(refused.stderr) < 3 * (8 + 100) / 0.02 / 60
    assert not output.exists()
    started = run_mixtral("batch", source, "-o", output, *ENGINE, "--yes")
    assert started.returncode == 0, started.stderr
    assert len(records(output)) == 3


def test_an_answer_is_counted_up_to_the_context_at_most(tmp_path):
    slow_rates(1.0)
    # 35 answers of up to 100 000 tokens each would be 40 days; the context of 256 tokens ends each far sooner.
    lines = [request_line("n32", "Hi", max_tokens=100_000, n=32)]
    lines += [request_line(f"r{i}", "Hi", max_tokens=100_000) for i in range(3)]

    result = run_mixtral("batch", write_input(tmp_path / "in.jsonl", lines), "-o", tmp_path / "out.jsonl", *ENGINE)

    assert result.returncode == 1
    assert 35 * 200 / 60 <= said_minutes(result.stderr) <= 35 * 256 / 60 + 1


def test_without_ctx_size_the_models_own_context_bounds_each_answer(tmp_path):
    slow_rates(100.0)
    # 3 answers of up to 100 000 tokens: 50 minutes; each ends at the demo model's 32768 tokens: 16 minutes.
    lines = [request_line(f"r{i}", "Hi", max_tokens=100_000) for i in range(3)]
    source = write_input(tmp_path / "in.jsonl", lines)

    result = run_mixtral("batch", source, "-o", tmp_path / "out.jsonl", "-m", "tiny", "--threads", "1", "--no-repack")

    assert result.returncode == 1
    assert 15 <= said_minutes(result.stderr) <= 17


def test_a_folder_that_takes_long_at_this_machines_measured_rates_needs_yes(tmp_path):
    slow_rates(0.02)  # 2 x 2 answers of 8 tokens: 26 minutes at least
    inputs, outputs = tmp_path / "requests", tmp_path / "answers"
    inputs.mkdir()
    for name in ("a.json", "b.json"):
        body = {"input_data": {"input_string": ["Hi", "Hello"], "parameters": {"max_new_tokens": 8}}}
        (inputs / name).write_text(json.dumps(body))
    # A schema no grammar expresses: parsed, but no answer can be asked of it (it fails, and costs nothing).
    unshaped = {
        "input_data": {"input_string": ["Hi"], "parameters": {"max_new_tokens": 8, "json_schema": {"type": "x"}}}
    }
    (inputs / "c.json").write_text(json.dumps(unshaped))

    refused = run_mixtral("batch", inputs, "-o", outputs, *ENGINE)

    assert refused.returncode == 1
    assert "This batch takes up to 4 model calls, up to about " in refused.stderr  # c.json asks none
    assert 26 <= said_minutes(refused.stderr) < 4 * (8 + 100) / 0.02 / 60
    assert not any(outputs.iterdir())
    started = run_mixtral("batch", inputs, "-o", outputs, *ENGINE, "--yes")
    assert started.returncode == 0, started.stderr
    assert sorted(p.name for p in outputs.iterdir()) == ["a.json", "b.json"]
    (error,) = records(tmp_path / "answers.errors.jsonl")
    assert error["file"] == "c.json" and "cannot express this schema" in error["error"]["message"]
