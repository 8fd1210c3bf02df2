"""The normaliser: what a recognizer writes, made searchable."""

from __future__ import annotations

import pytest

from kb.text import Normaliser, content_words, spoken_number

VOCABULARY = {"stainless", "invoice", "antifreeze", "into", "the", "welder"}


@pytest.fixture
def normalise() -> Normaliser:
    return Normaliser(VOCABULARY, {"e"})


@pytest.mark.parametrize(("said", "expected"), [
    ("the screen says e zero one", "the screen says e01"),
    ("it shows E01!", "it shows e01"),
    ("e oh five again", "e05 again"),
    ("e nine", "e09"),
    ("e twelve", "e12"),
    ("e forty two", "e42"),
    ("alarm forty two", "alarm e42"),
    ("error code 7", "error code e07"),
])
def test_spoken_codes_are_written_as_the_faq_writes_them(normalise: Normaliser, said: str,
                                                          expected: str) -> None:
    assert normalise(said) == expected


def test_hesitations_go_everywhere_openers_only_at_the_start(normalise: Normaliser) -> None:
    assert normalise("Um, yeah so hi, the uh welder, well, stopped") == \
        "the welder well stopped"


def test_words_split_by_the_recognizer_are_joined_when_the_faq_knows_them(
        normalise: Normaliser) -> None:
    assert normalise("one millimeter stain less sheet") == "one millimeter stainless sheet"
    assert normalise("my in voice") == "my invoice"
    assert normalise("put it in to the box") == "put it in to the box"  # "into" is too short


def test_letters_that_are_not_code_prefixes_are_left_alone() -> None:
    normalise = Normaliser(VOCABULARY, {"f"})
    assert normalise("e zero one and f zero three") == "e zero one and f03"
    assert normalise("error two") == "error f02"  # one code letter: "error" announces a code


def test_code_words_need_a_single_code_letter() -> None:
    assert Normaliser(VOCABULARY, {"e", "f"})("alarm two") == "alarm two"
    assert Normaliser(VOCABULARY, set())("e zero one") == "e zero one"


def test_spoken_numbers() -> None:
    assert spoken_number(["zero", "one", "and"]) == ("01", 2)
    assert spoken_number(["twenty", "three"]) == ("23", 2)
    assert spoken_number(["oh", "five"], allow_leading_oh=False) == ("", 0)
    assert spoken_number(["1", "2", "3", "4"]) == ("123", 3)


def test_content_words_drop_stop_words() -> None:
    assert content_words("where is my order") == ["order"]
