"""`mixtral eval`: its statistics against llama-perplexity's own, its routing against transformers' router, and
the pairs and texts it refuses."""

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

from mixtral_cli.engine.options import EngineOptions
from mixtral_cli.engine.scoring import Scorer
from mixtral_cli.quality.run import EvalSide, default_text, evaluate
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .helpers import run_mixtral, with_default_signals
from .llama_tools import llama_tool
from .lora_reference import peft_adapter

MINI = TinyMixtralSpec(hidden_size=512, intermediate_size=1024, num_layers=4)
CTX, CHUNKS = 128, 8  # 8 x 63 = 504 positions: llama-perplexity prints its statistics from 100 on


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, build_checkpoint, convert):
    """(spec, type) -> a GGUF of that type, converted directly or through llama.cpp's quantizer."""
    made: dict[tuple[TinyMixtralSpec, str], Path] = {}

    def make(spec: TinyMixtralSpec, type_name: str) -> Path:
        if type_name in ("F32", "F16", "Q8_0"):
            return convert(spec, type_name)
        if (spec, type_name) not in made:
            output = tmp_path_factory.mktemp("quantized") / f"model-{type_name}.gguf"
            done = run_mixtral("quantize", build_checkpoint(spec), "--type", type_name, "-o", output, "--force")
            assert done.returncode == 0, done.stderr
            made[spec, type_name] = output
        return made[spec, type_name]

    return make


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(default_text(), encoding="utf-8")
    return path


def _ours(model: Path, reference: Path, text: str, *, n_ctx: int = CTX, chunks: int | None = CHUNKS):
    options = EngineOptions(threads=2)
    return evaluate(
        EvalSide(model, options), EvalSide(reference, options), text, text_name="text", n_ctx=n_ctx, max_chunks=chunks
    )


def _llama_perplexity(model: Path, reference: Path, text_file: Path, work: Path) -> dict[str, float]:
    """llama-perplexity's two passes, as its README says: the reference's log-probabilities, then the model's KLD."""
    base = work / "reference-logits.bin"
    common = ["-f", text_file, "-c", CTX, "-b", CTX, "--chunks", CHUNKS, "-t", 2]
    _run_llama_perplexity("-m", reference, "--kl-divergence-base", base, *common)
    patterns = {
        "ppl": r"Mean PPL\(Q\)\s*:\s*([\d.]+)",
        "ppl_reference": r"Mean PPL\(base\)\s*:\s*([\d.]+)",
        "kld": r"Mean    KLD:\s*([-\d.]+)",
        "kld_median": r"Median  KLD:\s*([-\d.]+)",
        "kld_p99": r"99\.0%   KLD:\s*([-\d.]+)",
        "p_diff_rms": r"RMS Δp    :\s*([-\d.]+)",
        "same_top": r"Same top p:\s*([-\d.]+)",
    }
    # llama.cpp's logger is a thread it never joins (common/log.cpp: "logs may be lost ... before the program
    # exits"): the report at the very end is sometimes cut. The pass is deterministic, so it is run again.
    for _ in range(3):
        printed = _run_llama_perplexity("-m", model, "--kl-divergence-base", base, "--kl-divergence", *common)
        found = {name: re.search(pattern, printed) for name, pattern in patterns.items()}
        if all(found.values()):
            return {name: float(match.group(1)) for name, match in found.items()}
    raise AssertionError(f"llama-perplexity printed no statistics:\n{printed[-3000:]}")


def _run_llama_perplexity(*args: str | Path | int) -> str:
    done = subprocess.run([llama_tool("llama-perplexity"), *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout + done.stderr


def _close(ours: float, theirs: float, decimals: int) -> bool:
    """Within 1% of llama-perplexity's figure, or of what its printed precision can tell apart."""
    return abs(ours - theirs) <= max(0.01 * abs(theirs), 0.6 * 10**-decimals)


@pytest.mark.parametrize("spec", [TinyMixtralSpec(), MINI], ids=["tiny", "mini"])
@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K_M"])
def test_statistics_equal_llama_perplexity_kl_divergence(spec, type_name, quantized, text_file, tmp_path):
    model, reference = quantized(spec, type_name), quantized(spec, "F32")
    theirs = _llama_perplexity(model, reference, text_file, tmp_path)
    losses = _ours(model, reference, text_file.read_text()).losses
    ours = {
        "ppl": (losses.ppl.value, 6),
        "ppl_reference": (losses.ppl_reference.value, 6),
        "kld": (losses.kld.value, 6),
        "kld_median": (losses.kld_median, 6),
        "kld_p99": (losses.kld_p99, 6),
        "p_diff_rms": (100 * losses.p_diff_rms.value, 3),
        "same_top": (100 * losses.same_top.value, 3),
    }
    differing = {
        name: (value, theirs[name])
        for name, (value, decimals) in ours.items()
        if not _close(value, theirs[name], decimals)
    }
    assert not differing, differing


def test_a_model_against_itself_loses_nothing(quantized):
    model = quantized(TinyMixtralSpec(), "Q4_K_M")
    report = _ours(model, model, default_text(), chunks=3)
    assert report.losses.kld.value == pytest.approx(0, abs=1e-9)
    assert report.losses.kld_max == pytest.approx(0, abs=1e-6)
    assert report.losses.same_top.value == 1
    assert report.losses.ppl_ratio.value == pytest.approx(1, abs=1e-9)
    assert all(layer.same_set == 1 and layer.same_first == 1 for layer in report.routing.layers)


def test_loss_grows_as_the_bits_shrink(quantized):
    reference = quantized(MINI, "F32")
    reports = {
        name: _ours(quantized(MINI, name), reference, default_text(), chunks=4)
        for name in ("F16", "Q8_0", "Q4_K_M", "Q2_K")
    }
    kld = [reports[name].losses.kld.value for name in ("F16", "Q8_0", "Q4_K_M", "Q2_K")]
    routing = [reports[name].routing.same_set for name in ("F16", "Q8_0", "Q4_K_M", "Q2_K")]
    assert kld == sorted(kld) and kld[0] < kld[-1] / 100, kld
    assert routing == sorted(routing, reverse=True), routing


def test_routing_is_transformers_router_top_2(tiny_checkpoint, convert):
    import torch
    from transformers import MixtralForCausalLM

    options = EngineOptions(ctx_size=64, batch_size=64, threads=2)
    with Scorer(convert(TinyMixtralSpec(), "F32"), options) as scorer:
        ids = scorer.tokenize(default_text())[:64]
        experts = scorer.score(ids).experts
    model = MixtralForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    with torch.no_grad():
        router_logits = model(torch.tensor([ids]), output_router_logits=True).router_logits
    assert experts.shape == (len(router_logits), 32, 2)
    for layer, logits in enumerate(router_logits):
        expected = torch.topk(logits.reshape(-1, logits.shape[-1])[32:], 2).indices.numpy()
        assert (expected == experts[layer]).mean() >= 0.98, (layer, expected, experts[layer])


def test_the_report_names_the_most_divergent_layer_first(quantized, text_file, mixtral):
    model, reference = quantized(MINI, "Q2_K"), quantized(MINI, "F32")
    result = mixtral("eval", model, "--against", reference, text_file, "-c", CTX, "--chunks", 2)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.match(r"  routing diverges most in layer \d+: same experts [\d.]+%", lines[2]), lines
    assert "disk: 0 B written" in result.stdout


def test_json_has_every_layer_and_the_memory(quantized, mixtral):
    model, reference = quantized(TinyMixtralSpec(), "Q8_0"), quantized(TinyMixtralSpec(), "F32")
    result = mixtral("eval", model, "-a", reference, "-c", CTX, "--chunks", 2, "--json")
    report = json.loads(result.stdout)
    assert len(report["routing"]["layers"]) == TinyMixtralSpec().num_layers
    assert report["losses"]["positions"] == 2 * (CTX - CTX // 2 - 1)
    assert report["peak_memory"] > report["held_bytes"] > 0
    assert report["disk_bytes"] == 0


def test_an_adapter_on_either_side_is_applied(quantized, tiny_checkpoint, mixtral, tmp_path):
    model, adapter = quantized(TinyMixtralSpec(), "Q8_0"), tmp_path / "adapter.gguf"
    folder = peft_adapter(tiny_checkpoint, tmp_path / "adapter", targets=("q_proj", "v_proj"), r=4, alpha=8, seed=3)
    assert mixtral("quantize", folder, "-o", adapter).exit_code == 0

    def kld(*args: str | Path) -> float:
        result = mixtral("eval", model, "-a", model, *args, "-c", CTX, "--chunks", 2, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)["losses"]["kld"]["value"]

    assert kld("--lora", adapter) > 1e-4
    assert kld("--against-lora", adapter) > 1e-4
    assert kld("--lora", adapter, "--against-lora", adapter) == pytest.approx(0, abs=1e-9)


def test_ctrl_c_prints_what_was_measured(quantized, tmp_path):
    model, reference = quantized(TinyMixtralSpec(), "Q8_0"), quantized(TinyMixtralSpec(), "F32")
    long_text = tmp_path / "long.txt"
    long_text.write_text(default_text() * 10, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "eval", str(model), "-a", str(reference), str(long_text), "-c", "32"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=with_default_signals,
    )
    assert "Scoring" in process.stderr.readline()
    while _cpu_seconds(process.pid) < 4:  # loading takes about one: chunks are scored by then, however busy the machine
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert re.search(r"\d+ of \d+ chunks of 32, [1-9]\d* positions scored \(interrupted", out), out
    assert "KLD mean" in out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime and stime, fields 14 and 15


@pytest.mark.parametrize(
    "text, message",
    [("", "stdin is empty."), ("Hello there.", "stdin is 4 tokens, less than one chunk of the 128-token context.")],
    ids=["empty", "shorter-than-a-chunk"],
)
def test_a_text_too_short_to_score_is_one_line(text, message, quantized, mixtral):
    model = quantized(TinyMixtralSpec(), "Q8_0")
    result = mixtral("eval", model, "-a", model, "-", "-c", CTX, input=text)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"Error: {message}"


def test_a_text_not_utf8_is_refused_with_the_offset(quantized, mixtral, tmp_path):
    model, text = quantized(TinyMixtralSpec(), "Q8_0"), tmp_path / "latin1.txt"
    text.write_bytes("Déjà vu".encode("latin-1"))
    result = mixtral("eval", model, "-a", model, text)
    assert result.exit_code == 1
    assert "is not UTF-8 text (byte 1 is invalid)" in result.stderr


def test_a_context_past_the_trained_length_is_refused(quantized, mixtral):
    model = quantized(TinyMixtralSpec(), "Q8_0")
    result = mixtral("eval", model, "-a", model, "-c", 65536)
    assert result.exit_code == 1
    assert "more than the 32768 tokens this model was trained on" in result.stderr


def test_another_vocabulary_is_refused_in_one_line(quantized, mixtral):
    model, reference = quantized(TinyMixtralSpec(tokenizer="v3"), "Q8_0"), quantized(TinyMixtralSpec(), "F32")
    result = mixtral("eval", model, "-a", reference)
    assert result.exit_code == 1
    assert "has a 32768-token vocabulary and tiny-F32.gguf a 32000-token one" in result.stderr.splitlines()[0]


def test_another_architecture_is_refused_in_one_line(quantized, mixtral, tmp_path):
    import gguf

    other = tmp_path / "qwen.gguf"
    writer = gguf.GGUFWriter(other, "qwen2moe")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = mixtral("eval", quantized(TinyMixtralSpec(), "Q8_0"), "-a", other)
    assert result.exit_code == 1
    assert "is a llama model and qwen.gguf a qwen2moe one" in result.stderr.splitlines()[0]


def test_other_layer_counts_compare_tokens_but_not_routing(quantized):
    report = _ours(quantized(MINI, "Q8_0"), quantized(TinyMixtralSpec(), "F32"), default_text(), chunks=1)
    assert report.losses.positions == CTX - CTX // 2 - 1
    assert report.routing is None
    assert report.routing_note == "routing not compared: tiny-Q8_0.gguf has 4 layers, tiny-F32.gguf 2"
