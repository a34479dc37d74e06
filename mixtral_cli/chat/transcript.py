"""A conversation on disk: JSON that restores it exactly, Markdown for people, written atomically."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from ..answer.shapes import AnswerKind, OutputShape
from ..base.atomic import atomic_path
from ..base.errors import InputError, LimitError, OutputPathError, TranscriptError
from ..base.textinput import MAX_TEXT_BYTES, opened_input, read_bounded
from ..engine.options import SamplingOptions
from ..family.prompt_ids import Message

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
    shape: OutputShape | None = None  # the shape every answer takes (/set schema), told to the model each turn

    def to_json(self) -> str:
        data = {
            "version": FORMAT_VERSION,
            "model": self.model,
            "created": self.created,
            "system": self.system,
            "sampling": self.sampling.settings(),
            "messages": [asdict(turn) for turn in self.turns],
            "shape": None if self.shape is None else {**asdict(self.shape), "kind": self.shape.kind.value},
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
        """The chat saved in ``path``; every field is checked here, so a wrong one is named now, not later."""
        path = path.expanduser()
        try:
            with opened_input(path) as f:
                data = json.loads(read_bounded(str(path), f, limit=MAX_TEXT_BYTES).decode("utf-8"))
        except (LimitError, InputError):
            raise  # ValueErrors too, but with their own message
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
        turns = [_turn(path, number, message) for number, message in enumerate(messages, 1)]
        return cls(
            model=_text(path, data, "model", "its model") or "",
            system=_text(path, data, "system", "its system prompt"),
            sampling=_sampling(path, data.get("sampling")),
            turns=turns,
            created=_text(path, data, "created", "its start time") or now(),
            shape=_shape(path, data.get("shape")),
        )


def _not_a_chat(path: Path, reason: str) -> TranscriptError:
    return TranscriptError(f"{path} is not a saved chat: {reason}.", hint="`mixtral chat --list` shows saved chats.")


def _text(path: Path, data: dict, key: str, what: str) -> str | None:
    value = data.get(key)
    if value is not None and not _is_text(value):
        raise _not_a_chat(path, f"{what} ({key}) is {_json_type(value)}, not text")
    return value


def _is_text(value: object) -> bool:
    """A string that UTF-8 can hold: JSON's \\ud800 escapes decode to lone surrogates, which it cannot."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_type(value: object) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _turn(path: Path, number: int, message: object) -> Turn:
    if not (isinstance(message, dict) and _is_text(message.get("content"))):
        raise _not_a_chat(path, f"message {number} has no text content")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise _not_a_chat(path, f"message {number}'s role is {role!r}, not user or assistant")
    timestamp = _text(path, message, "timestamp", f"message {number}'s time") or now()
    interrupted = message.get("interrupted", False)
    if not isinstance(interrupted, bool):
        raise _not_a_chat(path, f"message {number}'s interrupted is {_json_type(interrupted)}, not true/false")
    return Turn(role, message["content"], timestamp, interrupted)


def _shape(path: Path, saved: object) -> OutputShape | None:
    """The answer shape a chat was saved with (``/set schema``), so that it resumes under the same one."""
    if saved is None:
        return None
    fields_ok = isinstance(saved, dict) and _is_text(saved.get("grammar"))
    instruction = saved.get("instruction") if isinstance(saved, dict) else None
    kinds = {kind.value: kind for kind in AnswerKind}
    if not fields_ok or saved.get("kind") not in kinds or not (instruction is None or _is_text(instruction)):
        raise _not_a_chat(path, "its answer shape (shape) is not a grammar, kind and instruction")
    return OutputShape(saved["grammar"], kinds[saved["kind"]], instruction)


def _sampling(path: Path, saved: object) -> SamplingOptions:
    """The saved settings; one of a wrong type is refused by name rather than sent to llama.cpp."""
    if saved is None:
        return SamplingOptions()
    if not isinstance(saved, dict):
        raise _not_a_chat(path, "its sampling settings are not an object")
    values: dict[str, object] = {}
    for name, value in saved.items():
        known = SamplingOptions.__dataclass_fields__.get(name)
        if known is None or known.metadata.get("per_answer"):
            continue  # a setting of a later version, or no setting at all
        if name == "stop":
            if not (isinstance(value, list) and all(_is_text(v) for v in value)):
                raise _not_a_chat(path, "its stop strings are not a list of text")
            value = tuple(value)
        elif not _fits_type(value, str(known.type)):
            raise _not_a_chat(path, f"its setting {name} is {_brief(value)}, not {_expected(known.type)}")
        values[name] = value
    return replace(SamplingOptions(), **values)


def _fits_type(value: object, annotation: str) -> bool:
    """Whether a JSON value fits a field annotated ``float``, ``int``, ``str``, each perhaps ``| None``."""
    if value is None or isinstance(value, bool):
        return value is None and "None" in annotation
    if annotation.startswith("str"):
        return _is_text(value)
    return isinstance(value, int) or (isinstance(value, float) and annotation.startswith("float"))


def _brief(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:39] + "…"


def _expected(annotation: object) -> str:
    return "text" if str(annotation).startswith("str") else "a number"
