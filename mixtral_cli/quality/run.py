"""`mixtral eval`'s run: both models over the same text in chunks of the context, in lockstep.

Each chunk is scored by the reference, then by the model, and compared at once: neither model's logits
outlive their chunk, nothing is written to disk, and what the statistics keep grows by 8 bytes a position
(llama-perplexity's two passes write the reference's log-probabilities of every position to a file first).
Both models are loaded at once; on GPUs the fit of each is made with what the other left free.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from ..base.errors import EvalTextError, IncomparableModelsError
from ..base.progress import Progress
from ..base.system import peak_memory
from ..engine.options import EngineOptions
from ..gguf_format.header import read_header
from . import DEFAULT_CTX
from .statistics import BYTES_PER_POSITION, LossSummary, LossTally, RoutingSummary, RoutingTally

DEFAULT_TEXT = "eval-text.txt"  # in mixtral_cli/data: written for mixtral, public domain (CC0)
BUILT_IN = "built-in text"


@dataclass(frozen=True)
class EvalSide:
    """One model of the pair: its file, and how to load it (adapters included)."""

    path: Path
    options: EngineOptions = EngineOptions()


@dataclass(frozen=True)
class EvalReport:
    model: Path
    reference: Path
    model_loras: tuple[str, ...]
    reference_loras: tuple[str, ...]
    text: str  # a file's path, "stdin" or BUILT_IN
    n_ctx: int
    tokens: int
    chunks: int  # scored
    chunks_total: int
    losses: LossSummary | None
    routing: RoutingSummary | None
    routing_note: str | None  # why routing was not compared, where it was not
    peak_memory: int  # of the process: both models' resident pages, the contexts, the statistics
    held_bytes: int  # the most the statistics held: two chunks' logits, and 8 bytes a position scored
    disk_bytes: int  # written: none
    seconds: float
    interrupted: bool  # by Ctrl-C: the numbers are those of the chunks scored before it


def default_text() -> str:
    return resources.files("mixtral_cli.data").joinpath(DEFAULT_TEXT).read_text(encoding="utf-8")


def evaluate(
    model: EvalSide,
    reference: EvalSide,
    text: str,
    *,
    text_name: str,
    n_ctx: int = DEFAULT_CTX,
    max_chunks: int | None = None,
    progress: Progress | None = None,
    on_notice: Callable[[str], None] | None = None,
) -> EvalReport:
    """Score ``text`` with both models, chunk by chunk; Ctrl-C ends it early with what was measured."""
    from ..engine.scoring import Scorer

    started = time.perf_counter()
    routing_note = check_pair(model.path, reference.path)
    if not text:
        raise EvalTextError(
            f"{text_name} is empty.", hint="Give a text of a few thousand words, or none for the built-in one."
        )
    with Scorer(reference.path, _for_scoring(reference.options, n_ctx), on_notice=on_notice) as ref_scorer:
        ids = ref_scorer.tokenize(text)
        n_chunks = len(ids) // n_ctx
        if n_chunks < 1:
            raise EvalTextError(
                f"{text_name} is {len(ids)} tokens, less than one chunk of the {n_ctx}-token context.",
                hint=f"Give a longer text, or a --ctx-size of {max(16, len(ids) // 2)} or less.",
            )
        n_chunks = min(n_chunks, max_chunks or n_chunks)
        with Scorer(model.path, _for_scoring(model.options, n_ctx), on_notice=on_notice) as model_scorer:
            if model_scorer.vocabulary_digest() != ref_scorer.vocabulary_digest():
                raise IncomparableModelsError(
                    f"{model.path.name} and {reference.path.name} have vocabularies of {ref_scorer.n_vocab} "
                    "tokens whose texts differ: the same ids are different words.",
                    model=model.path,
                    reference=reference.path,
                )
            losses, routing = LossTally(), RoutingTally() if routing_note is None else None
            done, interrupted = 0, False
            if progress:
                progress.stage(f"Scoring {n_chunks} chunks", n_chunks, unit="chunks")
            try:
                for chunk in range(n_chunks):
                    _score_chunk(ids[chunk * n_ctx : (chunk + 1) * n_ctx], ref_scorer, model_scorer, losses, routing)
                    done += 1
                    if progress:
                        progress.advance(1)
            except KeyboardInterrupt:
                interrupted = True
        n_vocab = ref_scorer.n_vocab
    scored_per_chunk = n_ctx - n_ctx // 2 - 1
    return EvalReport(
        model=model.path,
        reference=reference.path,
        model_loras=tuple(str(spec) for spec in model.options.loras),
        reference_loras=tuple(str(spec) for spec in reference.options.loras),
        text=text_name,
        n_ctx=n_ctx,
        tokens=len(ids),
        chunks=done,
        chunks_total=n_chunks,
        losses=losses.summary(),
        routing=routing.summary() if routing else None,
        routing_note=routing_note,
        peak_memory=peak_memory(),
        held_bytes=2 * scored_per_chunk * n_vocab * 4 + losses.count * BYTES_PER_POSITION,
        disk_bytes=0,
        seconds=time.perf_counter() - started,
        interrupted=interrupted,
    )


def _for_scoring(options: EngineOptions, n_ctx: int) -> EngineOptions:
    """One sequence of ``n_ctx`` tokens; the file's weight layout unless asked (it evaluates prompts faster)."""
    return replace(
        options,
        ctx_size=n_ctx,
        sequences=1,
        batch_size=min(options.batch_size, n_ctx),
        repack=False if options.repack is None else options.repack,
    )


def _score_chunk(ids: list[int], reference, model, losses: LossTally, routing: RoutingTally | None) -> None:  # noqa: ANN001
    import numpy as np

    ref_scores = reference.score(ids)
    model_scores = model.score(ids)
    targets = np.asarray(ids[len(ids) // 2 + 1 :])
    losses.add(ref_scores.logits, model_scores.logits, targets)
    if routing is not None and ref_scores.experts is not None and model_scores.experts is not None:
        routing.add(ref_scores.experts, model_scores.experts)


def check_pair(model: Path, reference: Path) -> str | None:
    """Refuse, from their headers, two models that cannot be compared; returns why their routing cannot
    be compared, where it cannot (other layer or expert counts), else None."""
    theirs, ours = read_header(reference).metadata, read_header(model).metadata
    arch, ref_arch = ours.get("general.architecture"), theirs.get("general.architecture")
    if arch != ref_arch:
        raise IncomparableModelsError(
            f"{model.name} is a {arch} model and {reference.name} a {ref_arch} one: they cannot be compared.",
            model=model,
            reference=reference,
        )
    n_vocab, ref_vocab = ours.get("tokenizer.ggml.tokens"), theirs.get("tokenizer.ggml.tokens")
    if n_vocab != ref_vocab:
        raise IncomparableModelsError(
            f"{model.name} has a {n_vocab}-token vocabulary and {reference.name} a {ref_vocab}-token one: "
            "their probabilities are over different tokens.",
            model=model,
            reference=reference,
        )
    for key, what in (("block_count", "layers"), ("expert_count", "experts"), ("expert_used_count", "experts used")):
        mine, its = ours.get(f"{arch}.{key}"), theirs.get(f"{arch}.{key}")
        if mine != its:
            return f"routing not compared: {model.name} has {mine} {what}, {reference.name} {its}"
    return None
