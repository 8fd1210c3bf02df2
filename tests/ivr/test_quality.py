"""Rating call quality: the bands of ITU-T G.107 Annex B, and a trunk's recent legs
summed up."""

from __future__ import annotations

import pytest

from ivr.quality import MOS_BAD, MOS_POOR, Rating, TrunkQuality, rate, summarize
from trunks.voip.reception import estimate_mos, mos_from_r


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


def test_a_trunk_is_rated_by_its_median_leg_and_shows_its_worst() -> None:
    legs = [{"mos": 4.4, "received_loss_percent": 0.0, "sent_loss_percent": None, "at": 30.0},
            {"mos": 1.2, "received_loss_percent": 0.5, "sent_loss_percent": 12.5, "at": 20.0},
            {"mos": 4.2, "received_loss_percent": 0.2, "sent_loss_percent": 0.0, "at": 10.0}]
    assert summarize("carrier-a", legs) == TrunkQuality(
        "carrier-a", 3, 4.2, 1.2, 12.5, Rating.GOOD, 30.0), "one bad call does not flag it"
    worse = summarize("carrier-a", [*legs, {"mos": 2.0, "at": 40.0}, {"mos": 2.5, "at": 50.0}])
    assert (worse.median_mos, worse.rating, worse.last_at) == (2.5, Rating.BAD, 50.0)
    assert summarize("carrier-b", []).as_dict() == {
        "trunk": "carrier-b", "legs": 0, "median_mos": None, "worst_mos": None,
        "worst_loss_percent": None, "rating": "unknown", "last_at": None}
