"""`mixtral pull` and the model store, against a real Hub server on loopback (olah)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .helpers import files_of_one_mebibyte_at_most, on_a_small_disk, run_mixtral_process, split_gguf
from .hub_server import LocalHub, folder_files


@pytest.fixture(scope="module")
def hub(tmp_path_factory, build_checkpoint, convert):
    server = LocalHub(tmp_path_factory.mktemp("hub"))
    files = folder_files(build_checkpoint(TinyMixtralSpec(shards=2)))
    files["consolidated.safetensors"] = b"Mistral's own copy of the weights, never to be downloaded" * 100
    server.add_repo("test/tiny", files)
    q8, f16 = convert(TinyMixtralSpec(), "Q8_0"), convert(TinyMixtralSpec(), "F16")
    server.add_repo("test/tiny-gguf", {"tiny.Q8_0.gguf": q8.read_bytes(), "tiny.F16.gguf": f16.read_bytes()})
    shards = split_gguf(q8, tmp_path_factory.mktemp("split"), max_tensors=12)
    server.add_repo("test/tiny-split", {p.name: p.read_bytes() for p in shards})
    server.start()
    yield server
    server.kill()


@pytest.fixture
def online(hub, isolated_home):
    """The environment of a user whose Hub is the local server."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    return {**env, "HF_ENDPOINT": hub.endpoint, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def mixtral(*args, env, **kwargs):
    return run_mixtral_process(*args, env=env, stdin=__import__("subprocess").DEVNULL, **kwargs)


def cached_files(home: Path) -> set[str]:
    return {p.name for p in (home / "hf" / "hub").rglob("snapshots/*/*")}


def test_safetensors_repo_is_downloaded_converted_and_runs(online, isolated_home):
    pulled = mixtral("pull", "test/tiny:Q8_0", env=online)

    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip().endswith("test/tiny:Q8_0")
    assert "convert to Q8_0" in pulled.stdout
    assert "consolidated.safetensors" not in cached_files(isolated_home)
    answered = mixtral("complete", "-m", "test/tiny:Q8_0", "--raw", "-n", "4", "Hello", env=online)
    assert answered.returncode == 0, answered.stderr
    listed = mixtral("models", "list", env=online)
    assert listed.returncode == 0, listed.stderr
    assert "test/tiny:Q8_0" in listed.stdout


def test_gguf_repo_gives_only_the_asked_quantization(online, isolated_home):
    pulled = mixtral("pull", "test/tiny-gguf:q8_0", env=online)

    assert pulled.returncode == 0, pulled.stderr
    assert cached_files(isolated_home) == {"tiny.Q8_0.gguf"}
    assert mixtral("complete", "-m", "test/tiny-gguf:Q8_0", "-n", "4", "Hi", env=online).returncode == 0


def test_split_gguf_is_downloaded_whole_and_loads_from_its_first_shard(online, isolated_home):
    pulled = mixtral("pull", "test/tiny-split:Q8_0", env=online)

    assert pulled.returncode == 0, pulled.stderr
    shards = sorted(cached_files(isolated_home))
    assert len(shards) > 1 and all("-of-" in name for name in shards)
    assert mixtral("complete", "-m", "test/tiny-split:Q8_0", "-n", "4", "Hi", env=online).returncode == 0


def test_dry_run_prints_the_plan_and_downloads_nothing(online, isolated_home):
    result = mixtral("pull", "test/tiny-gguf:F16", "--dry-run", env=online)

    assert result.returncode == 0, result.stderr
    assert "tiny.F16.gguf" in result.stdout and "disk:" in result.stdout and "memory:" in result.stdout
    assert cached_files(isolated_home) == set()
    assert not (isolated_home / "mixtral" / "models.json").exists()


def test_dry_run_shows_the_loss_eval_measured_here_and_none_elsewhere(online, isolated_home, convert):
    assert mixtral("pull", "test/tiny-gguf:Q8_0", env=online).returncode == 0
    reference = convert(TinyMixtralSpec(), "F32")
    evaluated = mixtral("eval", "test/tiny-gguf:Q8_0", "-a", reference, "-c", "128", "--chunks", "2", env=online)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "kept for `mixtral pull --list` as test/tiny-gguf:Q8_0's measured loss" in evaluated.stdout

    plan = mixtral("pull", "test/tiny-gguf:F16", "--dry-run", env=online).stdout.splitlines()
    q8, f16 = (next(line for line in plan if line.strip().startswith(quant)) for quant in ("Q8_0 ", "F16 "))
    assert re.search(r"; measured here vs tiny-F32\.gguf: KLD 0\.\d{4}, same top \d+\.\d\d%, PPL ×[\d.]+, routing", q8)
    assert "measured" not in f16


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("test/nothing-here:Q4_K_M", "no Hub repo test/nothing-here"),
        ("test/tiny-gguf:Q5_K_M", "has no Q5_K_M GGUF"),
        ("not a name", "neither a Mixtral name nor a Hub repo id"),
    ],
)
def test_bad_names_are_one_line_and_leave_the_store_alone(ref, message, online, isolated_home):
    result = mixtral("pull", ref, env=online)

    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (isolated_home / "mixtral" / "models.json").exists()


def test_missing_quantization_lists_what_the_repo_has(online):
    result = mixtral("pull", "test/tiny-gguf:Q5_K_M", env=online)
    assert result.returncode == 1
    assert "F16, Q8_0" in result.stderr


def test_a_corrupt_file_in_the_cache_is_detected_and_replaced(online, isolated_home):
    assert mixtral("pull", "test/tiny-gguf:Q8_0", env=online).returncode == 0
    (blob,) = [p for p in (isolated_home / "hf" / "hub").rglob("blobs/*")]
    good = blob.read_bytes()
    blob.write_bytes(b"\0" * len(good))

    again = mixtral("pull", "test/tiny-gguf:Q8_0", env=online)
    assert again.returncode == 0, again.stderr
    assert "does not match the Hub's sha256" in again.stderr
    (replaced,) = [p for p in (isolated_home / "hf" / "hub").rglob("blobs/*")]
    assert replaced.read_bytes() == good


def test_a_short_disk_is_refused_with_the_numbers(online, isolated_home, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    argv = [sys.executable, "-m", "mixtral_cli", "pull", "test/tiny-gguf:F16"]
    result = subprocess.run(
        on_a_small_disk(small, "1M", argv),
        env={**online, "HF_HOME": str(small)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "free but this needs" in result.stderr
    assert not (isolated_home / "mixtral" / "models.json").exists()


def test_models_show_rm_and_default_round_trip(online, isolated_home):
    assert mixtral("pull", "test/tiny-gguf:Q8_0", env=online).returncode == 0

    shown = mixtral("models", "show", "test/tiny-gguf:Q8_0", env=online)
    assert shown.returncode == 0, shown.stderr
    assert "experts: 8" in shown.stdout and "quantization: Q8_0" in shown.stdout and "tokenizer: v1" in shown.stdout

    assert mixtral("models", "default", "test/tiny-gguf:Q8_0", env=online).returncode == 0
    assert json.loads((isolated_home / "mixtral" / "models.json").read_text())["default"] == "test/tiny-gguf:Q8_0"
    without_model = mixtral("complete", "-n", "2", "Hi", env=online)
    assert without_model.returncode == 0, without_model.stderr

    refused = mixtral("models", "rm", "test/tiny-gguf:Q8_0", env=online)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    removed = mixtral("models", "rm", "test/tiny-gguf:Q8_0", "--yes", env=online)
    assert removed.returncode == 0, removed.stderr
    assert cached_files(isolated_home) == set()
    assert mixtral("models", "list", env=online).stdout == ""
    missing = mixtral("models", "show", "test/tiny-gguf:Q8_0", env=online)
    assert missing.returncode == 1 and "No model" in missing.stderr


def test_a_pull_cut_off_by_the_server_resumes_without_fetching_finished_files(online, hub, isolated_home, tmp_path):
    import subprocess
    import sys
    import time

    from mixtral_cli.sources.tiny_model import build_tiny_mixtral

    spec = TinyMixtralSpec(hidden_size=512, intermediate_size=2048, num_layers=4, shards=3, seed=11)
    hub.add_repo("test/big", folder_files(build_tiny_mixtral(tmp_path / "big", spec)))
    blobs = isolated_home / "hf" / "hub" / "models--test--big" / "blobs"
    process = subprocess.Popen(
        [sys.executable, "-m", "mixtral_cli", "pull", "test/big:Q8_0"],
        env=online,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until the first shard is complete and a later one is on its way, then take the server away.
        deadline = time.monotonic() + 120
        while not _one_blob_done_and_one_on_its_way(blobs):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.005)
        hub.kill()
        _, stderr = process.communicate(timeout=180)
    finally:
        hub.start()
    assert process.returncode == 1
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr

    again = mixtral("pull", "test/big:Q8_0", env=online)
    assert again.returncode == 0, again.stderr
    assert hub.requests_for("model-00001-of-00003.safetensors") == 1


def test_a_disk_that_refuses_a_download_is_named_not_the_hub(online, isolated_home):
    result = mixtral("pull", "test/tiny-gguf:Q8_0", env=online, preexec_fn=files_of_one_mebibyte_at_most)

    assert result.returncode == 1
    assert f"Cannot write {isolated_home / 'hf' / 'hub'}: File too large." in result.stderr
    assert "Cannot reach the Hub" not in result.stderr and "Traceback" not in result.stderr


def test_quantize_takes_a_hub_name_as_source(online, tmp_path):
    result = mixtral("quantize", "test/tiny", "--type", "Q8_0", env=online, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == tmp_path / "tiny-Q8_0.gguf"
    shown = mixtral("prompt", "-m", tmp_path / "tiny-Q8_0.gguf", "Hi", env=online)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "<s> [INST] Hi [/INST]\n"


def _one_blob_done_and_one_on_its_way(blobs: Path) -> bool:
    sizes = {}
    for path in blobs.glob("*") if blobs.exists() else ():
        try:
            sizes[path.name] = path.stat().st_size
        except FileNotFoundError:  # huggingface_hub renames files as it goes
            continue
    done = [
        n for n, size in sizes.items() if size > 2**20 and not n.endswith(".incomplete") and not n.startswith("tmp")
    ]
    return bool(done) and any(n.endswith(".incomplete") for n in sizes)


def test_the_plan_counts_the_workers_memory(online, tmp_path):
    from .workers import Worker

    worker = Worker(tmp_path, "--no-cache")
    try:
        result = mixtral("pull", "test/tiny-gguf:F16", "--dry-run", "--rpc", worker.endpoint, env=online)
    finally:
        worker.stop()

    assert result.returncode == 0, result.stderr
    assert "GiB on the --rpc workers" in result.stdout
