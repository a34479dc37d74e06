"""What every request to a model run here is held to, by the server's routes and a batch answered here alike:
the model it names (none, or one of the served model's names), and how many answers it asks for.

A request holds the one engine for as long as its answers take, so the number of answers one request may ask
for is bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..base.errors import InvalidRequestError, ModelNotFoundError

MAX_ANSWERS_PER_REQUEST = 32  # /score's prompts (each its own answer, one after another on the engine)


@dataclass(frozen=True)
class ServedModel:
    """The model that answers: the name it runs as (what /v1/models lists and every answer carries), and the other
    names a request's "model" may give for it (its file's name, its pulled name, ...)."""

    id: str
    aliases: frozenset[str] = frozenset()

    def serves(self, name: str) -> bool:
        return name == self.id or name in self.aliases

    def check_name(self, name: object) -> None:
        """A request may leave "model" out; one it names must be this model, by any of its names."""
        if name is None or isinstance(name, str) and self.serves(name):
            return
        if not isinstance(name, str):
            raise InvalidRequestError('"model" must be a string.', param="model")
        raise ModelNotFoundError(
            f"The model `{name}` does not exist on this server: it serves `{self.id}`.",
            hint="Ask for the served model, or start a server with the model you want.",
        )


def check_answer_count(count: int) -> None:
    """Refuse a request that asks for more answers than one request may."""
    if count > MAX_ANSWERS_PER_REQUEST:
        raise InvalidRequestError(
            f"This request asks for {count} answers; one request may ask for {MAX_ANSWERS_PER_REQUEST} at most.",
            hint="Split it into several requests.",
        )
