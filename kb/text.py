"""Turn what a speech recognizer heard into text the FAQ search can match.

Recognizers write what callers say: "um the screen says e zero one", "stain
less steel". The normaliser lower-cases, drops punctuation and hesitations,
writes spoken alarm codes the way the FAQ does (e01), and joins a word the
recognizer split in two when the joined word is in the FAQ's vocabulary.
It knows nothing about any particular FAQ beyond what it is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


HESITATIONS = _words("um umm uh uhh erm er hmm mm ah eh")
"""Dropped wherever they are."""

OPENERS = _words("yeah yes yep hi hello hey okay ok so well like oh right")
"""Dropped only at the start of a turn, where they carry no meaning."""

STOP_WORDS = _words("""
a an the i im id ive my our we us you your is are was were be been it its this that there
theres to of in on for and or but with do does did can could should would will what whats
which how when where who why if at by from as me so just some any get got have has had not
no dont cant wont isnt arent didnt doesnt about up out into than then them they their he him
his she her one""")
"""Words too common to count as evidence for an entry (BM25, token matching)."""

UNITS = {"zero": 0, "oh": 0, "nought": 0, "one": 1, "two": 2, "three": 3, "four": 4,
         "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
         "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
        "eighty": 80, "ninety": 90}
CODE_WORDS = frozenset({"alarm", "error", "code", "fault"})
"""Words that announce a code: "alarm forty two" is alarm e42 when codes start with e."""

MAX_CODE_DIGITS = 3
MIN_JOINED_LENGTH = 6
"""Shorter joins ("in" + "to") are too often two real words."""


class Normaliser:
    """Normalises caller turns against one FAQ's vocabulary and code letters."""

    def __init__(self, vocabulary: Iterable[str], code_prefixes: Iterable[str]) -> None:
        self.vocabulary = frozenset(vocabulary)
        self.code_prefixes = frozenset(code_prefixes)

    def __call__(self, text: str) -> str:
        words = re.sub(r"[^a-z0-9' ]+", " ", text.lower()).replace("'", "").split()
        words = [w for w in words if w not in HESITATIONS]
        while words and words[0] in OPENERS:
            words.pop(0)
        return " ".join(self._join_split_words(self._codes(words)))

    def _codes(self, words: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(words):
            word = words[i]
            written = re.fullmatch(r"([a-z])(\d{1,3})", word)
            if written and written[1] in self.code_prefixes:
                out.append(_code(written[1], written[2]))
                i += 1
                continue
            if word in self.code_prefixes or (word in CODE_WORDS and len(self.code_prefixes) == 1):
                digits, used = spoken_number(words[i + 1:],
                                             allow_leading_oh=word in self.code_prefixes)
                if digits:
                    prefix = word if word in self.code_prefixes else next(iter(self.code_prefixes))
                    if word in CODE_WORDS:
                        out.append(word)
                    out.append(_code(prefix, digits))
                    i += 1 + used
                    continue
            out.append(word)
            i += 1
        return out

    def _join_split_words(self, words: list[str]) -> list[str]:
        out: list[str] = []
        i = 0
        while i < len(words):
            if i + 1 < len(words):
                joined = words[i] + words[i + 1]
                if len(joined) >= MIN_JOINED_LENGTH and joined in self.vocabulary:
                    out.append(joined)
                    i += 2
                    continue
            out.append(words[i])
            i += 1
        return out


def content_words(normalised: str) -> list[str]:
    """The words of a normalised text that are evidence (stop words removed)."""
    return [w for w in normalised.split() if w not in STOP_WORDS]


def spoken_number(words: list[str], allow_leading_oh: bool = True) -> tuple[str, int]:
    """Read digits spoken at the start of `words`: ("01", 2) for "zero one".

    Digits may be said one by one ("four two"), as a number ("forty two",
    "twelve") or written ("42"). Returns the digits and how many words they took.
    """
    digits, i = "", 0
    while i < len(words) and len(digits) < MAX_CODE_DIGITS:
        word = words[i]
        if word.isdigit():
            digits += word
        elif word in TENS:
            value = TENS[word]
            if i + 1 < len(words) and UNITS.get(words[i + 1], 0) > 0:
                value += UNITS[words[i + 1]]
                i += 1
            digits += str(value)
        elif word in TEENS:
            digits += str(TEENS[word])
        elif word in UNITS and (word != "oh" or digits or allow_leading_oh):
            digits += str(UNITS[word])
        else:
            break
        i += 1
    return digits[:MAX_CODE_DIGITS], i


def _code(prefix: str, digits: str) -> str:
    return f"{prefix}{int(digits):02d}"
