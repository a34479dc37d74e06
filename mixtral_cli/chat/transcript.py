"""A conversation on disk: JSON that restores it exactly, Markdown for people, written atomically."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import atomic_path
from ..engine.options import SamplingOptions
from ..errors import TranscriptError
from ..prompt import ROLES, Message

FORMAT_VERSION = 1


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Turn:
    """One message of the conversation, with what the model input does not need."""

    role: str
    content: str
    timestamp: str = field(default_factory=now)
    interrupted: bool = False

    @property
    def message(self) -> Message:
        return Message(self.role, self.content)  # type: ignore[arg-type]


@dataclass
class Transcript:
    model: str
    system: str | None = None
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    turns: list[Turn] = field(default_factory=list)
    created: str = field(default_factory=now)

    def to_json(self) -> str:
        data = {
            "version": FORMAT_VERSION,
            "model": self.model,
            "created": self.created,
            "system": self.system,
            "sampling": {**asdict(self.sampling), "stop": list(self.sampling.stop)},
            "messages": [asdict(turn) for turn in self.turns],
        }
        return json.dumps(data, ensure_ascii=False, indent=2) + "\n"

    def to_markdown(self) -> str:
        lines = [f"# Chat with {self.model}", "", f"Started {self.created}.", ""]
        if self.system:
            lines += ["**System:** " + self.system, ""]
        for turn in self.turns:
            who = "You" if turn.role == "user" else "Mixtral"
            suffix = " *(interrupted)*" if turn.interrupted else ""
            lines += [f"## {who}{suffix}", "", turn.content, ""]
        return "\n".join(lines)

    def save(self, path: Path) -> Path:
        """Write JSON, or Markdown when the name ends in .md; atomically."""
        path = path.expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_markdown() if path.suffix.lower() == ".md" else self.to_json()
        with atomic_path(path) as partial:
            partial.write_text(text, encoding="utf-8")
            # A crash right after the rename must not leave an empty file behind.
            with open(partial, "rb") as f:
                os.fsync(f.fileno())
        return path

    @classmethod
    def load(cls, path: Path) -> Transcript:
        path = path.expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TranscriptError(f"{path} does not exist.", hint="`mixtral chat --list` shows saved chats.") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TranscriptError(f"{path} is not a saved chat ({exc}).") from exc
        try:
            turns = [
                Turn(m["role"], m["content"], m.get("timestamp", now()), bool(m.get("interrupted", False)))
                for m in data["messages"]
            ]
            sampling = data.get("sampling") or {}
            transcript = cls(
                model=str(data.get("model", "")),
                system=data.get("system"),
                sampling=replace(
                    SamplingOptions(),
                    **{k: v for k, v in sampling.items() if k in SamplingOptions.__dataclass_fields__ and k != "stop"},
                    stop=tuple(sampling.get("stop") or ()),
                ),
                turns=turns,
                created=str(data.get("created", now())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TranscriptError(f"{path} is not a saved chat: {exc!r} is missing or wrong.") from exc
        if any(turn.role not in ROLES[1:] for turn in turns):
            raise TranscriptError(f"{path} holds a message whose role is neither user nor assistant.")
        return transcript
