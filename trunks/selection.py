"""Choosing trunks for a call: overrides, then health, then priority, then weight."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from trunks.config import TrunkConfig
from trunks.health import USABLE_STATES, TrunkState
from trunks.overrides import Override, OverrideAction

_STATE_RANK = {TrunkState.UP: 0, TrunkState.SUSPECT: 1, TrunkState.UNKNOWN: 2}


@dataclass(frozen=True)
class CallNeeds:
    """What a call asks of its trunk."""

    exclude: frozenset[str] = field(default_factory=frozenset)
    """Trunks already tried for this call."""
    only: frozenset[str] | None = None
    """Restrict the choice to these trunks (a drill through one trunk, say)."""


def select_trunks(trunks: Sequence[TrunkConfig], states: Mapping[str, TrunkState],
                  overrides: Mapping[str, Override], needs: CallNeeds | None = None,
                  rng: random.Random | None = None) -> list[TrunkConfig]:
    """Return the usable trunks for a call, best first.

    Drained, DOWN and RECOVERING trunks are left out, as are those `needs`
    excludes. Forced trunks come first; then UP before SUSPECT before UNKNOWN;
    then lower priority numbers; trunks that tie are shuffled by weight, so
    traffic is shared in proportion to the weights. A forced trunk that is not
    usable stays out: forcing expresses a preference, not a way around health.
    """
    needs = needs or CallNeeds()
    rng = rng or random.Random()
    candidates = [
        t for t in trunks
        if t.name not in needs.exclude
        and (needs.only is None or t.name in needs.only)
        and states.get(t.name, TrunkState.UNKNOWN) in USABLE_STATES
        and _action(overrides, t.name) is not OverrideAction.DRAIN
    ]
    # A weighted shuffle (Efraimidis-Spirakis keys) breaks ties between equals.
    keys = {t.name: rng.random() ** (1.0 / t.weight) for t in candidates}
    return sorted(candidates, key=lambda t: (
        _action(overrides, t.name) is not OverrideAction.FORCE,
        _STATE_RANK[states.get(t.name, TrunkState.UNKNOWN)],
        t.priority,
        -keys[t.name],
    ))


def _action(overrides: Mapping[str, Override], name: str) -> OverrideAction | None:
    override = overrides.get(name)
    return None if override is None else override.action
