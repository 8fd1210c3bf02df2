"""Call quality as operators read it: a rating for an estimated MOS.

Each leg's figures are `trunks.voip.rtcp_session.LegQuality.as_dict()`, kept in the call
record; its MOS is the ITU-T G.107 E-model estimate of `trunks.voip.rtcp`. The bands are
G.107 Annex B's guide to user satisfaction (Table B.1, the categories of ITU-T G.109),
turned into MOS by G.107's own R-to-MOS formula (R 70 is MOS 3.60, R 60 is 3.10):

    MOS >= 3.6   R above 70: at most "some users dissatisfied"       good
    MOS 3.1-3.6  R 60-70: "many users dissatisfied"                  poor
    MOS < 3.1    R below 60: "nearly all users dissatisfied" or worse  bad

For G.711 played without loss concealment, as here, about 1.3 % of packets lost at
random makes a call poor and about 2.2 % makes it bad.
"""

from __future__ import annotations

import enum

MOS_POOR = 3.6
"""Below this estimated MOS (G.107 R 70) a call is poor."""
MOS_BAD = 3.1
"""Below this estimated MOS (G.107 R 60) a call is bad."""


class Rating(enum.StrEnum):
    GOOD = "good"
    POOR = "poor"
    BAD = "bad"
    UNKNOWN = "unknown"
    """Nothing to rate: no audio measured, or no measured calls yet."""


def rate(mos: float | None) -> Rating:
    """The band an estimated MOS falls in (see the module docstring)."""
    if mos is None:
        return Rating.UNKNOWN
    if mos < MOS_BAD:
        return Rating.BAD
    return Rating.POOR if mos < MOS_POOR else Rating.GOOD


__all__ = ["MOS_BAD", "MOS_POOR", "Rating", "rate"]
