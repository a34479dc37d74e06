"""A conversation on disk: JSON that restores it exactly, Markdown for people, written atomically."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import atomic_path
from ..engine.options import SamplingOptions
from ..errors import LimitError, OutputPathError, TranscriptError
from ..prompt import ROLES, Message
from ..textinput import MAX_TEXT_BYTES, read_bounded

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
        """Write JSON, or Markdown when the name ends in .md; atomically, so a failure leaves the old file."""
        path = path.expanduser()
        text = self.to_markdown() if path.suffix.lower() == ".md" else self.to_json()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as partial:
                partial.write_text(text, encoding="utf-8")
                # A crash right after the rename must not leave an empty file behind.
                with open(partial, "rb") as f:
                    os.fsync(f.fileno())
        except OSError as exc:
            # atomic_path names the OS's reason in an OutputPathError already; say it once, in the chat's words.
            reason = exc.reason if isinstance(exc, OutputPathError) else exc.strerror or str(exc)
            raise TranscriptError(
                f"Cannot save the chat to {path}: {reason}.",
                hint="The conversation is still here: /save FILE writes it elsewhere.",
            ) from exc
        return path

    @classmethod
    def load(cls, path: Path) -> Transcript:
        path = path.expanduser()
        try:
            with open(path, "rb") as f:
                data = json.loads(read_bounded(str(path), f, limit=MAX_TEXT_BYTES).decode("utf-8"))
        except LimitError:
            raise  # a ValueError too, but its own message
        except FileNotFoundError:
            raise TranscriptError(f"{path} does not exist.", hint="`mixtral chat --list` shows saved chats.") from None
        except OSError as exc:
            raise TranscriptError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
        except UnicodeDecodeError as exc:
            raise _not_a_chat(path, f"byte {exc.start} is not UTF-8 text") from exc
        except json.JSONDecodeError as exc:
            raise _not_a_chat(path, f"it is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
        except (RecursionError, ValueError):  # nested past the stack, or a number past 4300 digits
            raise _not_a_chat(path, "its JSON nests too deep or holds too long a number to read") from None
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list):
            raise _not_a_chat(path, "it holds no list of messages")
        turns = []
        for number, message in enumerate(messages, 1):
            if not (isinstance(message, dict) and isinstance(message.get("content"), str)):
                raise _not_a_chat(path, f"message {number} has no text content")
            if message.get("role") not in ROLES[1:]:
                raise _not_a_chat(path, f"message {number}'s role is {message.get('role')!r}, not user or assistant")
            timestamp = str(message.get("timestamp") or now())
            turns.append(Turn(message["role"], message["content"], timestamp, bool(message.get("interrupted"))))
        system = data.get("system")
        if system is not None and not isinstance(system, str):
            raise _not_a_chat(path, "its system prompt is not text")
        return cls(
            model=str(data.get("model") or ""),
            system=system,
            sampling=_sampling(path, data.get("sampling")),
            turns=turns,
            created=str(data.get("created") or now()),
        )


def _not_a_chat(path: Path, reason: str) -> TranscriptError:
    return TranscriptError(f"{path} is not a saved chat: {reason}.", hint="`mixtral chat --list` shows saved chats.")


def _sampling(path: Path, saved: object) -> SamplingOptions:
    """The saved settings; one of a wrong type is refused by name rather than sent to llama.cpp."""
    if saved is None:
        return SamplingOptions()
    if not isinstance(saved, dict):
        raise _not_a_chat(path, "its sampling settings are not an object")
    values: dict[str, object] = {}
    for name, value in saved.items():
        known = SamplingOptions.__dataclass_fields__.get(name)
        if known is None:
            continue  # a setting of a later version
        if name == "stop":
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise _not_a_chat(path, "its stop strings are not a list of text")
            value = tuple(value)
        elif not _fits_type(value, str(known.type)):
            raise _not_a_chat(path, f"its setting {name} is {value!r}, not a number")
        values[name] = value
    return replace(SamplingOptions(), **values)


def _fits_type(value: object, annotation: str) -> bool:
    """Whether a JSON value fits a field annotated ``float``, ``int`` or ``int | None``."""
    if value is None or isinstance(value, bool):
        return value is None and "None" in annotation
    return isinstance(value, int) or (isinstance(value, float) and annotation.startswith("float"))
