"""`mixtral pull` of catalog names against Hub repos laid out as the real ones are (olah on loopback)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mixtral_cli.base.units import format_bytes
from mixtral_cli.convert.pipeline import quantize_model
from mixtral_cli.gguf_format.header import inspect_gguf
from mixtral_cli.gguf_format.naming import DASH_NAMING, DOT_NAMING
from mixtral_cli.sources.tiny_model import TinyMixtralSpec

from .helpers import run_mixtral_process, split_gguf, write_legacy_layout
from .hub_server import GatedHub, LocalHub, folder_files, online_env

BARTOWSKI = "bartowski/Mixtral-8x22B-v0.1-GGUF"
MAZIYAR = "MaziyarPanahi/Mixtral-8x22B-v0.1-GGUF"
THEBLOKE = "TheBloke/Mixtral-8x7B-Instruct-v0.1-GGUF"
OFFICIAL_INSTRUCT = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def _split_as(source: Path, name: str, folder: Path) -> dict[str, bytes]:
    """``source`` split into shards named ``NAME-0000i-of-0000n.gguf``."""
    folder.mkdir()
    named = shutil.copy(source, folder / f"{name}.gguf")
    return {p.name: p.read_bytes() for p in split_gguf(Path(named), folder, max_tensors=12)}


@pytest.fixture(scope="module")
def hub(tmp_path_factory, build_checkpoint, convert):
    """bartowski (dash-named split Q4_K_M), MaziyarPanahi (dot-named splits spelled Q6 and fp16) for 8x22b;
    TheBloke's old-layout single file for 8x7b-instruct, whose bartowski repo is missing; the checkpoints."""
    work = tmp_path_factory.mktemp("repos")
    f16 = convert(TinyMixtralSpec(), "F16")
    q4, q6 = (quantize_model(f16, type_name=t, output=work / f"tiny-{t}.gguf").output for t in ("Q4_K_M", "Q6_K"))
    server = LocalHub(tmp_path_factory.mktemp("hub"))
    server.add_repo(BARTOWSKI, _split_as(q4, "Mixtral-8x22B-v0.1-Q4_K_M", work / "b"))
    server.add_repo(
        MAZIYAR,
        {
            **_split_as(q6, "Mixtral-8x22B-v0.1.Q6", work / "m6"),
            **_split_as(f16, "Mixtral-8x22B-v0.1.fp16", work / "m16"),
        },
    )
    legacy = write_legacy_layout(convert(TinyMixtralSpec(), "Q8_0"), work / "legacy.gguf")
    server.add_repo(THEBLOKE, {"mixtral-8x7b-instruct-v0.1.Q8_0.gguf": legacy.read_bytes(), "README.md": b"legacy"})
    checkpoint = folder_files(build_checkpoint(TinyMixtralSpec()))
    for repo in (OFFICIAL_INSTRUCT, "mistralai/Mixtral-8x22B-v0.1"):
        server.add_repo(repo, checkpoint)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def online(hub, isolated_home):
    return online_env(hub)


def run(*args, env):
    return run_mixtral_process(*args, env=env, stdin=subprocess.DEVNULL)


def cached_files(home: Path) -> set[str]:
    return {p.name for p in (home / "hf" / "hub").rglob("snapshots/*/*")}


@pytest.mark.parametrize(
    ("naming", "name", "quant"),
    [
        (DOT_NAMING, "mixtral-8x7b-instruct-v0.1.Q4_K_M.gguf", "Q4_K_M"),
        (DOT_NAMING, "Mixtral-8x22B-Instruct-v0.1.Q4_K_M-00001-of-00002.gguf", "Q4_K_M"),
        (DOT_NAMING, "Mixtral-8x22B-Instruct-v0.1.Q6-00001-of-00004.gguf", "Q6_K"),
        (DOT_NAMING, "Mixtral-8x22B-Instruct-v0.1.fp16-00001-of-00007.gguf", "F16"),
        (DASH_NAMING, "Mixtral-8x22B-v0.1-Q4_K_M-00001-of-00005.gguf", "Q4_K_M"),
        (DASH_NAMING, "Mixtral-8x22B-v0.1-IQ3_XS.gguf", "IQ3_XS"),
        (DOT_NAMING, "Mixtral-8x22B-v0.1-Q4_K_M-00001-of-00005.gguf", None),
        (DASH_NAMING, "Mixtral-8x22B-v0.1.imatrix", None),
    ],
)
def test_file_names_are_read_by_each_publishers_convention(naming, name, quant):
    assert naming.quantization_of(name) == quant


def test_a_quantization_comes_from_the_first_repo_that_has_it(online, isolated_home):
    pulled = run("pull", "8x22b:Q4_K_M", env=online)

    assert pulled.returncode == 0, pulled.stderr
    assert f"from {BARTOWSKI}" in pulled.stdout
    shards = cached_files(isolated_home)
    assert len(shards) > 1 and all(n.startswith("Mixtral-8x22B-v0.1-Q4_K_M-000") for n in shards)
    assert run("complete", "-m", "8x22b:q4_k_m", "-n", "2", "Hi", env=online).returncode == 0


@pytest.mark.parametrize(("asked", "pulled_as", "prefix"), [("q6", "Q6_K", ".Q6-"), ("F16", "F16", ".fp16-")])
def test_a_quantization_only_in_the_second_repo_is_pulled_from_there(asked, pulled_as, prefix, online, isolated_home):
    pulled = run("pull", f"8x22b:{asked}", env=online)

    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip().endswith(f"8x22b:{pulled_as}")
    assert f"from {MAZIYAR}" in pulled.stdout
    assert all(n.startswith(f"Mixtral-8x22B-v0.1{prefix}") for n in cached_files(isolated_home))


def test_a_quantization_in_no_repo_stops_and_says_what_each_has(online, hub, isolated_home):
    downloads_before = hub.requests_for("/resolve/")
    result = run("pull", "8x22b:Q5_K_M", env=online)

    assert result.returncode == 1
    assert f"{BARTOWSKI} has Q4_K_M" in result.stderr and f"{MAZIYAR} has F16, Q6_K" in result.stderr
    assert "--convert" in result.stderr and "Traceback" not in result.stderr
    assert hub.requests_for("/resolve/") == downloads_before
    assert cached_files(isolated_home) == set()


def test_convert_plans_the_checkpoint_with_disk_and_time(online, isolated_home):
    result = run("pull", "8x22b:Q5_K_M", "--convert", "--dry-run", env=online)

    assert result.returncode == 0, result.stderr
    assert "from mistralai/Mixtral-8x22B-v0.1" in result.stdout and "convert to Q5_K_M" in result.stdout
    assert "disk:" in result.stdout and "time: about" in result.stdout
    assert cached_files(isolated_home) == set()


def test_a_legacy_gguf_plan_counts_the_rewrite(online):
    result = run("pull", "8x7b-instruct:Q8_0", "--dry-run", env=online)

    assert result.returncode == 0, result.stderr
    assert f"from {THEBLOKE}" in result.stdout and "rewrite the old one-tensor-per-expert layout" in result.stdout
    assert "time: about" in result.stdout


def test_a_legacy_gguf_is_rewritten_once_into_the_store_and_loads_without_a_notice(online, isolated_home):
    pulled = run("pull", "8x7b-instruct:Q8_0", env=online)

    assert pulled.returncode == 0, pulled.stderr
    entry = json.loads((isolated_home / "mixtral" / "models.json").read_text())["models"]["8x7b-instruct:Q8_0"]
    rewritten = Path(entry["files"][0])
    assert entry["kind"] == "rewritten" and rewritten.parent == isolated_home / "mixtral" / "models"
    assert not inspect_gguf(rewritten).legacy_experts
    assert cached_files(isolated_home) == set()  # the old-layout download is gone
    answered = run("complete", "-m", "8x7b-instruct:Q8_0", "-n", "2", "Hi", env=online)
    assert answered.returncode == 0 and answered.stderr == "", answered.stderr
    again = run("pull", "8x7b-instruct:Q8_0", env=online)
    assert again.returncode == 0 and "already in the store" in again.stdout


def test_a_cached_file_is_hashed_once_with_progress(online, hub, isolated_home):
    first = run("pull", "8x22b:Q4_K_M", env=online)
    downloads = hub.requests_for("/resolve/")
    again = run("pull", "8x22b:Q4_K_M", env=online)

    assert first.returncode == 0 and again.returncode == 0, again.stderr
    assert "Checking Mixtral-8x22B-v0.1-Q4_K_M-00001-of-" in first.stderr
    assert "Checking" not in again.stderr
    assert hub.requests_for("/resolve/") == downloads


@pytest.mark.parametrize(("token", "says"), [(None, "hf auth login"), ("hf_test", "has not accepted its terms")])
def test_a_gated_repo_names_the_page_where_its_terms_are_accepted(token, says, online, hub, isolated_home):
    with GatedHub(hub.endpoint, OFFICIAL_INSTRUCT) as gated:
        env = {**online, "HF_ENDPOINT": gated.endpoint, **({"HF_TOKEN": token} if token else {})}
        result = run("pull", "8x7b-instruct:Q8_0", "--convert", env=env)

    assert result.returncode == 1
    assert f"{gated.endpoint}/{OFFICIAL_INSTRUCT}" in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr and cached_files(isolated_home) == set()


def test_list_shows_each_models_quantizations_with_the_hubs_sizes(online, hub):
    listed = run("pull", "--list", env=online)

    assert listed.returncode == 0, listed.stderr
    rows = {tuple(line.split("\t")[:4]) for line in listed.stdout.splitlines()}
    maziyar_q6 = hub.mirrors / "models" / MAZIYAR
    q6_bytes = sum(int(p.read_text().split("size ")[1]) for p in maziyar_q6.glob("Mixtral-8x22B-v0.1.Q6-*.gguf"))
    assert ("8x22b", "Q6_K", format_bytes(q6_bytes), MAZIYAR) in rows
    assert ("8x22b", "Q4_K_M") in {row[:2] for row in rows} and ("8x7b-instruct", "Q8_0") in {r[:2] for r in rows}
    assert ("8x22b-instruct", "-") in {row[:2] for row in rows}  # a repo the server lacks is a row, not a failure


def test_a_legacy_gguf_given_with_m_is_refused_with_the_command_that_fixes_it(mixtral, convert, tmp_path):
    legacy = write_legacy_layout(convert(TinyMixtralSpec(), "F16"), tmp_path / "old.gguf")

    result = mixtral("prompt", "-m", legacy, "Hi")
    assert result.exit_code == 1
    assert "no longer loads" in result.stderr and f"mixtral quantize {legacy}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "30x" not in result.stderr
