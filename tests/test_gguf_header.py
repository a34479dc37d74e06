"""The GGUF header reader against headers that lie: every mutation loads or ends in one GGUFError."""

from __future__ import annotations

import random
import struct
import time
import tracemalloc
from pathlib import Path

import pytest

from mixtral_cli.base.errors import GGUFError, UnsupportedArchitectureError
from mixtral_cli.gguf_format.header import inspect_gguf

MUTATIONS = 400
U64_LIES = (0, 1, 2**31, 2**32 - 1, 2**32, 2**62, 2**63 - 1, 2**64 - 1)
U32_LIES = (0, 1, 7, 8, 9, 10, 12, 13, 99, 2**31, 2**32 - 1)


def _tiny_mixtral_header(path: Path) -> Path:
    """A small GGUF that inspect_gguf accepts as a Mixtral: every kind of field a header has, in few bytes."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_block_count(1)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_expert_count(8)
    writer.add_expert_used_count(2)
    writer.add_file_type(0)
    writer.add_name("tiny")
    writer.add_token_list(["<unk>", "<s>", "</s>", "▁a", "b"])
    writer.add_token_scores([0.0, 0.0, 0.0, -1.0, -2.0])
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_tensor("token_embd.weight", np.zeros((5, 8), dtype=np.float32))
    writer.add_tensor("blk.0.ffn_gate_exps.weight", np.zeros((2, 4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _mutations(data: bytes, rng: random.Random) -> list[bytes]:
    """Lengths, counts, types and offsets overwritten with lies, flipped bytes, and cut-off files."""
    mutated = []
    for i in range(MUTATIONS):
        buffer = bytearray(data)
        at = rng.randrange(4, len(data) - 8)
        kind = i % 4
        if kind == 0:
            buffer[at : at + 8] = struct.pack("<Q", rng.choice(U64_LIES))
        elif kind == 1:
            buffer[at : at + 4] = struct.pack("<I", rng.choice(U32_LIES))
        elif kind == 2:
            buffer[at] ^= 1 << rng.randrange(8)
        else:
            del buffer[at:]
        mutated.append(bytes(buffer))
    return mutated


@pytest.fixture(scope="module")
def valid_header(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = _tiny_mixtral_header(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    assert inspect_gguf(path).expert_count == 8
    return path.read_bytes()


def test_every_lying_header_loads_or_ends_in_one_gguf_error_quickly_in_bounded_memory(valid_header, tmp_path):
    path = tmp_path / "mutated.gguf"
    outcomes = {"loaded": 0, "refused": 0}
    for data in _mutations(valid_header, random.Random(10)):
        path.write_bytes(data)
        tracemalloc.start()
        started = time.perf_counter()
        try:
            inspect_gguf(path)
            outcomes["loaded"] += 1
        except (GGUFError, UnsupportedArchitectureError) as exc:
            assert "\n" not in exc.message
            outcomes["refused"] += 1
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        assert time.perf_counter() - started < 1.0
        assert peak < 2**20, f"{peak} bytes for a {len(data)}-byte file"
    assert outcomes["loaded"] and outcomes["refused"]  # the mutations reach both ends


def test_a_string_length_past_the_end_of_the_file_names_the_byte(valid_header, tmp_path):
    # The first key's length sits after magic, version and the two counts.
    data = bytearray(valid_header)
    data[24:32] = struct.pack("<Q", 2**63)
    (path := tmp_path / "lying.gguf").write_bytes(bytes(data))

    with pytest.raises(GGUFError, match="runs past the end of the file|cannot fit"):
        inspect_gguf(path)
