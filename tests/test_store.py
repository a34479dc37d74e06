"""The model store's manifest: writers at once keep every entry; removing a model keeps shared blobs."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from mixtral_cli.base.errors import OutputPathError
from mixtral_cli.sources.store import ModelStore, StoreEntry


def _entry(name: str, *files: Path) -> StoreEntry:
    return StoreEntry(
        name=name, repo="org/repo", revision="0" * 40, quant="Q4_K_M", kind="gguf", files=tuple(map(str, files)), size=1
    )


def test_writers_at_once_keep_every_entry(tmp_path):
    store = ModelStore(tmp_path / "home")
    writers, entries_each = 8, 5
    start = threading.Barrier(writers)

    def write(writer: int) -> None:
        start.wait()
        for i in range(entries_each):
            store.add(_entry(f"model-{writer}-{i}:Q4_K_M", tmp_path / "model.gguf"))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(store.entries()) == writers * entries_each
    assert sorted(p.name for p in store.home.iterdir()) == ["models.json"]  # and no lock file left


def _hub_cache_snapshots(cache: Path, *revisions: str) -> list[Path]:
    """One file in several revisions of a Hub cache repo: snapshot links to one blob, as huggingface_hub lays out."""
    blob = cache / "blobs" / ("b" * 64)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"GGUF" + bytes(64))
    snapshots = []
    for revision in revisions:
        snapshot = cache / "snapshots" / revision / "model-Q4_K_M.gguf"
        snapshot.parent.mkdir(parents=True)
        snapshot.symlink_to(Path("../..") / "blobs" / blob.name)
        snapshots.append(snapshot)
    return snapshots


def test_removing_a_model_keeps_the_blob_another_model_uses(tmp_path):
    store = ModelStore(tmp_path / "home")
    first, second = _hub_cache_snapshots(tmp_path / "hub" / "models--org--repo", "1" * 40, "2" * 40)
    store.add(_entry("org/repo:Q4_K_M", first))
    store.add(_entry("org/repo@2:Q4_K_M", second))

    store.remove("org/repo:Q4_K_M")

    assert second.read_bytes().startswith(b"GGUF")
    assert [e.name for e in store.entries()] == ["org/repo@2:Q4_K_M"]


def test_removing_the_last_model_of_a_blob_deletes_the_blob(tmp_path):
    store = ModelStore(tmp_path / "home")
    (snapshot,) = _hub_cache_snapshots(tmp_path / "hub" / "models--org--repo", "1" * 40)
    blob = snapshot.resolve()
    store.add(_entry("org/repo:Q4_K_M", snapshot))

    assert store.remove("org/repo:Q4_K_M") == [snapshot]
    assert not blob.exists() and not snapshot.is_symlink()


def test_a_home_that_cannot_be_written_is_named_with_the_reason(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    store = ModelStore(tmp_path / "a-file" / "home")

    with pytest.raises(OutputPathError, match=f"{tmp_path / 'a-file'} is not a folder"):
        store.add(_entry("org/repo:Q4_K_M", tmp_path / "model.gguf"))
