"""Token bytes to text: characters split across tokens, stop strings across token boundaries."""

from __future__ import annotations

import pytest

from mixtral_cli.engine.text import TextStream


def _run(stream: TextStream, pieces: list[bytes]) -> list[str]:
    out = [stream.feed(piece) for piece in pieces]
    out.append(stream.flush())
    return out


@pytest.mark.parametrize("text", ["é", "東", "🦙", "👩‍💻"])
def test_a_character_split_across_tokens_is_printed_whole_once(text):
    data = text.encode()
    pieces = [data[i : i + 1] for i in range(len(data))]
    out = _run(TextStream(), pieces)

    assert "".join(out) == text
    assert all(chunk in ("", text) or "\ufffd" not in chunk for chunk in out)
    assert not any("\ufffd" in chunk for chunk in out)


def test_stop_string_across_tokens_is_never_printed():
    stream = TextStream(stop=("</answer>",))
    out = _run(stream, [b"The result", b" is 4</an", b"swer> and more"])

    assert "".join(out) == "The result is 4"
    assert stream.stopped
    assert not any("<" in chunk for chunk in out)


def test_held_text_that_is_not_a_stop_string_comes_out():
    stream = TextStream(stop=("STOP",))
    out = _run(stream, [b"ST", b"ART and ST", b"OP"])

    assert "".join(out) == "START and "
    assert stream.stopped


def test_text_that_only_looked_like_a_stop_prefix_is_flushed_at_the_end():
    stream = TextStream(stop=("STOP",))
    assert "".join(_run(stream, [b"the end ST"])) == "the end ST"
    assert not stream.stopped


def test_answer_loses_exactly_one_leading_space():
    assert "".join(_run(TextStream(strip_leading_space=True), [b" ", b" Hi"])) == " Hi"
    assert "".join(_run(TextStream(strip_leading_space=False), [b" Hi"])) == " Hi"


@pytest.mark.parametrize("stop", [("User:", "\n\n"), ("\n\n", "User:")])
def test_the_earliest_stop_string_wins_whatever_its_place_in_the_list(stop):
    stream = TextStream(stop=stop)
    out = _run(stream, [b"Sure.", b"\n\nUser:", b" next"])

    assert "".join(out) == "Sure."
    assert stream.stopped


@pytest.mark.parametrize("stop", [("yz", "xyz"), ("xyz", "yz")])
def test_overlapping_stop_strings_cut_where_the_first_one_begins(stop):
    assert "".join(_run(TextStream(stop=stop), [b"Axyz tail"])) == "A"


@pytest.mark.parametrize("stop", [("User:", "\nUser:"), ("\nUser:", "User:")])
def test_a_stop_split_across_tokens_is_cut_at_its_start_when_another_lies_inside_it(stop):
    stream = TextStream(stop=stop)
    out = _run(stream, [b"Hi\n", b"User: no"])

    assert "".join(out) == "Hi"
    assert stream.stopped


@pytest.mark.parametrize("stop", [("User", "User:"), ("User:", "User")])
def test_a_stop_that_is_a_prefix_of_another_cuts_at_its_first_occurrence(stop):
    assert "".join(_run(TextStream(stop=stop), [b"a User b User: c"])) == "a "


def test_a_stop_that_is_a_prefix_of_another_stops_as_soon_as_it_is_complete():
    stream = TextStream(stop=("User:", "User"))
    out = [stream.feed(b"Hi Use"), stream.feed(b"r")]

    assert "".join(out) == "Hi "
    assert stream.stopped
