"""The SentencePiece vocabulary of a checkpoint, as GGUF's ``tokenizer.ggml.*`` keys want it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..base.errors import CheckpointError


@dataclass(frozen=True)
class SentencePieceVocab:
    tokens: list[bytes]
    scores: list[float]
    token_types: list[int]
    bos_id: int
    eos_id: int
    unk_id: int


def read_sentencepiece_vocab(model_file: Path, *, vocab_size: int) -> SentencePieceVocab:
    """Pieces, scores and token types, padded to the model's ``vocab_size`` as llama.cpp expects."""
    import gguf
    from sentencepiece import SentencePieceProcessor

    processor = SentencePieceProcessor()
    try:
        processor.LoadFromFile(str(model_file))
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(
            f"{model_file} is not a SentencePiece model.", path=model_file.parent, hint="Download it again."
        ) from exc
    n_pieces = processor.GetPieceSize()
    if n_pieces > vocab_size:
        raise CheckpointError(
            f"{model_file} has {n_pieces} pieces but config.json says vocab_size {vocab_size}.",
            path=model_file.parent,
        )
    tokens, scores, token_types = [], [], []
    for i in range(n_pieces):
        tokens.append(processor.IdToPiece(i).encode("utf-8"))
        scores.append(processor.GetScore(i))
        if processor.IsUnknown(i):
            token_types.append(gguf.TokenType.UNKNOWN)
        elif processor.IsControl(i):
            token_types.append(gguf.TokenType.CONTROL)
        elif processor.IsUnused(i):
            token_types.append(gguf.TokenType.UNUSED)
        elif processor.IsByte(i):
            token_types.append(gguf.TokenType.BYTE)
        else:
            token_types.append(gguf.TokenType.NORMAL)
    # Embedding rows past the tokenizer's pieces get placeholder tokens nobody can type.
    for i in range(n_pieces, vocab_size):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        token_types.append(gguf.TokenType.UNUSED)
    return SentencePieceVocab(
        tokens=tokens,
        scores=scores,
        token_types=[int(t) for t in token_types],
        bos_id=processor.bos_id(),
        eos_id=processor.eos_id(),
        unk_id=processor.unk_id(),
    )
