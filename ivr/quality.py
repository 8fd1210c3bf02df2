"""Call quality as operators read it: a rating for an estimated MOS, and a trunk's recent
call legs summed up (median and worst MOS, worst loss).

Each leg's figures are `trunks.voip.rtcp_session.LegQuality.as_dict()`, kept in the call
record; its MOS is the ITU-T G.107 E-model estimate of `trunks.voip.reception`. The bands are
G.107 Annex B's guide to user satisfaction (Table B.1, the categories of ITU-T G.109),
turned into MOS by G.107's own R-to-MOS formula (R 70 is MOS 3.60, R 60 is 3.10):

    MOS >= 3.6   R above 70: at most "some users dissatisfied"       good
    MOS 3.1-3.6  R 60-70: "many users dissatisfied"                  poor
    MOS < 3.1    R below 60: "nearly all users dissatisfied" or worse  bad

For G.711 played without loss concealment, as here, about 1.3 % of packets lost at
random makes a call poor and about 2.2 % makes it bad.

A trunk is rated by the median MOS of its recent legs, so one caller's bad mobile line
does not flag the carrier; the worst leg is shown beside it.
"""

from __future__ import annotations

import enum
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

MOS_POOR = 3.6
"""Below this estimated MOS (G.107 R 70) a call is poor."""
MOS_BAD = 3.1
"""Below this estimated MOS (G.107 R 60) a call is bad."""
RECENT_LEGS = 20
"""How many of a trunk's latest measured legs its summary covers, by default."""


class Rating(enum.StrEnum):
    GOOD = "good"
    POOR = "poor"
    BAD = "bad"
    UNKNOWN = "unknown"
    """Nothing to rate: no audio measured, or no measured calls yet."""


@dataclass(frozen=True)
class TrunkQuality:
    """How a trunk's latest measured call legs sounded, summed up."""

    trunk: str
    legs: int
    """How many legs the figures cover (at most the window asked for)."""
    median_mos: float | None
    worst_mos: float | None
    worst_loss_percent: float | None
    """The highest loss of any leg, either way (what we heard, or what the peer did)."""
    rating: Rating
    """Of the median MOS."""
    last_at: float | None
    """When the newest of these legs ended (Unix time)."""

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rating": self.rating.value}


def rate(mos: float | None) -> Rating:
    """The band an estimated MOS falls in (see the module docstring)."""
    if mos is None:
        return Rating.UNKNOWN
    if mos < MOS_BAD:
        return Rating.BAD
    return Rating.POOR if mos < MOS_POOR else Rating.GOOD


def summarize(trunk: str, legs: Sequence[Mapping[str, Any]]) -> TrunkQuality:
    """Sum up `legs` (each a leg's quality figures with ``at``, when it ended)."""
    scores = [float(leg["mos"]) for leg in legs if leg.get("mos") is not None]
    losses = [float(leg[key]) for leg in legs
              for key in ("received_loss_percent", "sent_loss_percent")
              if leg.get(key) is not None]
    ended = [float(leg["at"]) for leg in legs if leg.get("at") is not None]
    median = round(statistics.median(scores), 2) if scores else None
    return TrunkQuality(trunk, len(scores), median, min(scores) if scores else None,
                        max(losses) if losses else None, rate(median),
                        max(ended) if ended else None)


__all__ = ["MOS_BAD", "MOS_POOR", "RECENT_LEGS", "Rating", "TrunkQuality", "rate",
           "summarize"]
