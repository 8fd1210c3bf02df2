"""The FAQ the voice bot answers from, as the company writes it (config/faq.yaml).

    language: en
    entries:
      - id: shipping-status            # unique; tickets and call records name it
        category: logistics
        priority: P3                   # P1 (most urgent) .. P4, for tickets
        questions: ["Where is my order?", ...]
        answer: "The tracking number is in the dispatch email ..."

Answers are read aloud, so they are plain sentences. The file is read and
checked by the application (ivr.settings.load_yaml gives line numbers); this
module holds the model and what the search derives from it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Priority = Literal["P1", "P2", "P3", "P4"]

CODE_PATTERN = re.compile(r"\b([A-Za-z])(\d{2,3})\b")
"""Alarm or error codes written in the FAQ, such as E01 or F105."""


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=80)
    category: str = Field(min_length=1)
    priority: Priority = "P3"
    questions: list[str] = Field(min_length=1)
    answer: str = Field(min_length=1)

    @field_validator("questions")
    @classmethod
    def _no_blank_questions(cls, value: list[str]) -> list[str]:
        if any(not q.strip() for q in value):
            raise ValueError("a question is empty")
        return value

    def codes(self) -> set[str]:
        """The alarm codes this entry mentions, lower case with two or more digits (e01)."""
        return {f"{m[1].lower()}{m[2]}" for text in (*self.questions, self.answer)
                for m in CODE_PATTERN.finditer(text)}


class Faq(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    language: str = "en"
    entries: list[Entry] = Field(min_length=2)

    @model_validator(mode="after")
    def _unique_ids(self) -> Faq:
        seen: set[str] = set()
        for entry in self.entries:
            if entry.id in seen:
                raise ValueError(f"entry id {entry.id!r} is used twice")
            seen.add(entry.id)
        return self

    def entry(self, entry_id: str) -> Entry:
        """The entry called `entry_id`; KeyError if there is none."""
        for entry in self.entries:
            if entry.id == entry_id:
                return entry
        raise KeyError(entry_id)

    def digest(self) -> str:
        """A hash of the content: the search index is rebuilt when it changes."""
        text = json.dumps(self.model_dump(), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def code_prefixes(self) -> set[str]:
        """The letters codes start with (e for E01), so spoken codes can be recognised."""
        return {code[0] for entry in self.entries for code in entry.codes()}

    def vocabulary(self) -> set[str]:
        """Every lower-case word of the questions and answers."""
        words: set[str] = set()
        for entry in self.entries:
            for text in (*entry.questions, entry.answer):
                words.update(re.findall(r"[a-z0-9]+", text.lower()))
        return words
