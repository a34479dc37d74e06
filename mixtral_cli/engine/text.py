"""Token bytes -> printable text: whole UTF-8 characters only, and never any part of a stop string."""

from __future__ import annotations

import codecs


class TextStream:
    """Feed it each token's bytes; it returns the text that is safe to print now.

    A character split across tokens is held until complete. Text that could be the start of a stop
    string is held until it is known not to be. The text ends where the earliest occurrence of any stop
    string begins, so nothing of any of them is shown. The work per token is bounded by the longest stop
    string, not by the length of the output.
    """

    def __init__(self, *, stop: tuple[str, ...] = (), strip_leading_space: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._held = ""
        self._strip_leading_space = strip_leading_space
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Text ready to show after ``data``; sets ``stopped`` when a stop string has appeared."""
        return self._release(self._decoder.decode(data))

    def flush(self) -> str:
        """At the end of generation: everything still held (nothing is a stop string any more)."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return "" if self.stopped else self._strip(text)

    def _release(self, text: str) -> str:
        if self.stopped or not text:
            return ""
        text = self._strip(self._held + text)
        self._held = ""
        # The earliest occurrence of any stop string ends the text, whichever string it is.
        found = [index for index in map(text.find, self._stop) if index >= 0]
        if found:
            self.stopped = True
            return text[: min(found)]
        keep = self._longest_stop_prefix_suffix(text)
        if keep:
            self._held, text = text[-keep:], text[:-keep]
        return text

    def _strip(self, text: str) -> str:
        # The answer's first token carries SentencePiece's word-start space; the answer itself does not.
        if self._strip_leading_space and text:
            self._strip_leading_space = False
            if text.startswith(" "):
                return text[1:]
        return text

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        longest = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
