"""The model store: one manifest in MIXTRAL_HOME naming every pulled model and where its files are.

A model pulled as GGUF keeps its files in the Hub cache (never copied); a converted one lives in
MIXTRAL_HOME/models. The manifest is rewritten atomically on every change, under a lock held from the
read to the rename, so writers at once (two pulls) each keep the other's entries.
"""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path

from ..base.atomic import atomic_path, check_writable, locked
from ..base.errors import ModelNotFoundError, StoreError
from ..base.paths import mixtral_home


@dataclass(frozen=True)
class StoreEntry:
    name: str  # as pulled: 8x7b-instruct:Q4_K_M, ORG/NAME:QUANT
    repo: str
    revision: str
    quant: str
    # "gguf" (files from the Hub cache); "converted" or "rewritten" (a file of the store's own); "adapter" (a
    # LoRA adapter converted into the store, for --lora)
    kind: str
    files: tuple[str, ...]  # absolute paths; the first is what llama.cpp loads
    size: int
    tokenizer: str | None = None
    instruct: bool | None = None  # as the catalog entry it was pulled by says; None: as the file says
    base_model: str | None = None  # an adapter's, as it names it
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def path(self) -> Path:
        return Path(self.files[0])


# Each field of a manifest entry, and the JSON types it may have.
_ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "repo": (str,),
    "revision": (str,),
    "quant": (str,),
    "kind": (str,),
    "size": (int,),
    "tokenizer": (str, type(None)),
    "instruct": (bool, type(None)),
    "base_model": (str, type(None)),
    "created": (str,),
}


_DEFAULTED = {f.name for f in fields(StoreEntry) if f.default is not MISSING or f.default_factory is not MISSING}


def _parsed_manifest(data: object) -> dict:
    """The manifest's default and entries, every field checked; ValueError names the first that is wrong."""
    if not isinstance(data, dict):
        raise ValueError("it is not a JSON object")
    default, models = data.get("default"), data.get("models", {})
    if default is not None and not isinstance(default, str):
        raise ValueError("its default is not a model name")
    if not isinstance(models, dict):
        raise ValueError("its models are not an object of names")
    return {"default": default, "models": {name: _parsed_entry(name, entry) for name, entry in models.items()}}


def _parsed_entry(name: str, entry: object) -> StoreEntry:
    if not isinstance(entry, dict):
        raise ValueError(f"model {name!r} is not an object")
    files = entry.get("files")
    if not (isinstance(files, list) and files and all(isinstance(f, str) and f for f in files)):
        raise ValueError(f"model {name!r} names no files")
    values: dict[str, object] = {"files": tuple(files)}
    for key, types in _ENTRY_FIELDS.items():
        if key not in entry and key in _DEFAULTED:
            continue
        value = entry.get(key)
        # JSON's true is a Python int as well: a size must be a number, not true/false.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"model {name!r} has no valid {key}")
        values[key] = value
    return StoreEntry(**values)  # type: ignore[arg-type]


class ModelStore:
    def __init__(self, home: Path | None = None) -> None:
        self.home = home or mixtral_home()
        self.manifest = self.home / "models.json"
        self.models_dir = self.home / "models"

    def _read(self) -> dict:
        if not self.manifest.exists():
            return {"default": None, "models": {}}
        try:
            data = json.loads(self.manifest.read_text(encoding="utf-8"))
        except OSError as exc:
            raise self._corrupt(f"it cannot be read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise self._corrupt(f"byte {exc.start} is not UTF-8 text") from exc
        except json.JSONDecodeError as exc:
            raise self._corrupt(f"it is not JSON: {exc.msg} at line {exc.lineno}") from exc
        except RecursionError as exc:
            raise self._corrupt("it is nested too deeply") from exc
        try:
            return _parsed_manifest(data)
        except ValueError as exc:
            raise self._corrupt(str(exc)) from exc

    def _corrupt(self, reason: str) -> StoreError:
        return StoreError(
            f"The model store's manifest {self.manifest} is corrupt: {reason}.",
            hint="Move it away and pull the models again (their files are downloaded once, and stay in place).",
        )

    def _write(self, data: dict) -> None:
        check_writable(self.manifest)
        serial = {"default": data["default"], "models": {n: asdict(e) for n, e in data["models"].items()}}
        with atomic_path(self.manifest) as partial:
            partial.write_text(json.dumps(serial, indent=2) + "\n", encoding="utf-8")

    def entries(self) -> list[StoreEntry]:
        return sorted(self._read()["models"].values(), key=lambda e: e.name)

    def get(self, name: str) -> StoreEntry | None:
        """The entry by its name as pulled, however its quantization is spelled (q4_k_m, Q4_K_M)."""
        from ..family.catalog import canonical_name

        models = self._read()["models"]
        return models.get(name) or models.get(canonical_name(name))

    def require(self, name: str) -> StoreEntry:
        entry = self.get(name)
        if entry is None:
            raise ModelNotFoundError(f"No model {name!r} in the store.", hint="`mixtral models list` shows them.")
        return entry

    def pulled_as(self, path: Path) -> tuple[str, bool] | None:
        """The catalog name ``path`` was pulled by and whether that entry is Instruct; None if not known."""
        entries = self._entries_at(path)
        return next(((entry.name, entry.instruct) for entry in entries if entry.instruct is not None), None)

    def entry_at(self, path: Path) -> StoreEntry | None:
        """The stored model whose file ``path`` is, if any."""
        return next(iter(self._entries_at(path)), None)

    def _entries_at(self, path: Path) -> list[StoreEntry]:
        try:
            entries = self._read()["models"].values()
        except StoreError:
            return []  # a corrupt manifest is reported by the commands that use it, not by every load
        return [entry for entry in entries if Path(entry.files[0]).resolve() == path.resolve()]

    def add(self, entry: StoreEntry) -> None:
        with locked(self.manifest):
            data = self._read()
            data["models"][entry.name] = entry
            self._write(data)

    def remove(self, name: str) -> list[Path]:
        """Forget ``name`` and delete the files no other model uses; returns what was deleted.

        A Hub cache snapshot file links to a blob that other snapshots (other revisions, other stored
        models) may link to as well: files are compared by what they resolve to.
        """
        with locked(self.manifest):
            data = self._read()
            entry = self.require(name)
            del data["models"][entry.name]
            if data["default"] == entry.name:
                data["default"] = None
            others = [Path(f) for other in data["models"].values() for f in other.files]
            still_used = {*others, *(f.resolve() for f in others)}
            self._write(data)
            removed = []
            for file in map(Path, entry.files):
                if not file.exists():
                    continue
                target = file.resolve()
                if file not in still_used:
                    file.unlink()
                    removed.append(file)
                if target != file and target not in still_used:
                    target.unlink(missing_ok=True)
            return removed

    def default(self) -> str | None:
        return self._read()["default"]

    def set_default(self, name: str) -> None:
        with locked(self.manifest):
            data = self._read()
            data["default"] = self.require(name).name
            self._write(data)

    def converted_path(self, name: str) -> Path:
        return self.models_dir / (re.sub(r"[^A-Za-z0-9._-]+", "--", name) + ".gguf")
