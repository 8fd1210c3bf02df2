"""Rating call quality: the bands of ITU-T G.107 Annex B."""

from __future__ import annotations

import pytest

from ivr.quality import MOS_BAD, MOS_POOR, Rating, rate
from trunks.voip.rtcp import estimate_mos, mos_from_r


def test_the_bands_are_g107_user_satisfaction_in_mos() -> None:
    assert mos_from_r(70) == pytest.approx(MOS_POOR, abs=0.005)  # "many users dissatisfied"
    assert mos_from_r(60) == pytest.approx(MOS_BAD, abs=0.005)  # "nearly all ..."
    assert [rate(m) for m in (4.4, MOS_POOR, 3.59, MOS_BAD, 3.09, 1.0, None)] == [
        Rating.GOOD, Rating.GOOD, Rating.POOR, Rating.POOR, Rating.BAD, Rating.BAD,
        Rating.UNKNOWN]
    # what that means for G.711 without concealment, 60 ms of playout delay on a LAN
    assert rate(estimate_mos(0.0, 60)) is Rating.GOOD
    assert rate(estimate_mos(1.5, 60)) is Rating.POOR
    assert rate(estimate_mos(2.5, 60)) is Rating.BAD

