"""Who is on call: the people of `config/oncall.yaml`, their rotation and cover.

The rotation hands over every `every_days` days at `handover` local time,
counting from `start` (the first person of `order` is on duty from then).
`cover` entries put someone else on duty for a stretch (a holiday swap, say).
A forward rings the person on duty first, then escalates through the rest of
the rotation in order, starting with whoever is on duty next.

Phone numbers are digits (with an optional leading +) and come only from this
file: nothing a caller says or presses chooses the number the server dials.
"""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ivr.settings import check_timezone, load_yaml
from trunks.validators import phone_number


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""
    """For logs and records; defaults to the person's key."""
    phone: str

    _digits = field_validator("phone", mode="before")(phone_number)


class Rotation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    order: list[str] = Field(min_length=1)
    start: datetime.date
    """The day the first person of `order` takes over, at `handover`."""
    handover: datetime.time = datetime.time(9, 0)
    every_days: int = Field(7, ge=1)


class Cover(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    person: str
    start: datetime.datetime
    """Local time (the roster's time zone) the cover begins."""
    end: datetime.datetime

    @model_validator(mode="after")
    def _ordered(self) -> Cover:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class OnCall(BaseModel):
    """The whole of ``oncall.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str
    people: dict[str, Person] = Field(min_length=1)
    rotation: Rotation
    cover: list[Cover] = []

    _zone = field_validator("timezone")(check_timezone)

    @model_validator(mode="after")
    def _known_people(self) -> OnCall:
        problems = [f"rotation.order: no person {key!r} in people"
                    for key in self.rotation.order if key not in self.people]
        problems += [f"cover[{i}].person: no person {c.person!r} in people"
                     for i, c in enumerate(self.cover) if c.person not in self.people]
        if len(set(self.rotation.order)) != len(self.rotation.order):
            problems.append("rotation.order: a person appears more than once")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def name(self, key: str) -> str:
        return self.people[key].name or key

    def on_duty(self, moment: datetime.datetime) -> str:
        """The key of the person on duty at `moment` (any time zone)."""
        local = moment.astimezone(zoneinfo.ZoneInfo(self.timezone)).replace(tzinfo=None)
        for cover in self.cover:
            if cover.start <= local < cover.end:
                return cover.person
        return self.rotation.order[self._turn(local) % len(self.rotation.order)]

    def roster(self, moment: datetime.datetime) -> list[str]:
        """Everyone to ring at `moment`, in order: the person on duty, then the rest of
        the rotation from whoever is on duty next."""
        first = self.on_duty(moment)
        order = self.rotation.order
        local = moment.astimezone(zoneinfo.ZoneInfo(self.timezone)).replace(tzinfo=None)
        turn = self._turn(local)
        after = [order[(turn + i) % len(order)] for i in range(1, len(order) + 1)]
        return [first, *(key for key in after if key != first)]

    def _turn(self, local: datetime.datetime) -> int:
        """How many handovers have happened between the rotation's start and `local`."""
        rotation = self.rotation
        first = datetime.datetime.combine(rotation.start, rotation.handover)
        return (local - first) // datetime.timedelta(days=rotation.every_days)


def load_oncall(path: Path, environ: Mapping[str, str] | None = None) -> OnCall:
    """Load and check the on-call roster."""
    return load_yaml(path, OnCall, environ)


__all__ = ["Cover", "OnCall", "Person", "Rotation", "load_oncall"]
