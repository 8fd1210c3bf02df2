"""Ticket ids that a caller can hear, note down and key in: eight digits, "4729-1830".

An id is derived from the ticket's uid (a random UUID) rather than drawn on
its own, so that a ticket whose id turns out to be taken is renamed the same
way every time: a spool replayed twice after a crash renames a colliding
ticket to the same new id, where its uid shows it is already stored.
"""

from __future__ import annotations

import hashlib
import re
import uuid

ID_DIGITS = 8
"""Digits in a ticket id: 90 million ids, short enough to read back over the phone."""
ID_GROUP = 4
"""Digits per group in the written and spoken forms."""
_FIRST = 10 ** (ID_DIGITS - 1)
_SPAN = 9 * _FIRST
_SEPARATORS = re.compile(r"[\s\-.]")


def new_uid() -> str:
    """A new ticket uid: globally unique, never shown to callers."""
    return uuid.uuid4().hex


def ticket_id(uid: str, attempt: int = 0) -> str:
    """The id for `uid`; `attempt` counts the ids already found taken.

    Ids never start with 0, so helpdesks and spreadsheets that read them as
    numbers keep every digit.
    """
    digest = hashlib.sha256(f"{uid}:{attempt}".encode()).digest()
    number = _FIRST + int.from_bytes(digest[:8], "big") % _SPAN
    text = str(number)
    return f"{text[:ID_GROUP]}-{text[ID_GROUP:]}"


def parse_ticket_id(text: str) -> str:
    """The canonical form of an id typed or read back, e.g. "4729 1830" -> "4729-1830"."""
    digits = _SEPARATORS.sub("", text)
    if len(digits) != ID_DIGITS or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"{text!r} is not a ticket id: expected {ID_DIGITS} digits "
                         "such as 4729-1830")
    return f"{digits[:ID_GROUP]}-{digits[ID_GROUP:]}"


def spoken_ticket_id(ticket_id: str) -> str:
    """The id as text for the synthesizer: digit by digit with a pause between
    groups, "4 7 2 9, 1 8 3 0", so it is never read as a large number."""
    groups = parse_ticket_id(ticket_id).split("-")
    return ", ".join(" ".join(group) for group in groups)
