"""What operators do and see, shared by the CLI and the HTTP API so both behave and audit
the same: trunk status and history, and drain/force/restore."""

from __future__ import annotations

import datetime
import time
from typing import Any

from ivr.settings import Settings
from trunks.errors import UnknownTrunk
from trunks.overrides import Override, OverrideAction, parse_duration
from trunks.store import TrunkStore


class BadRequest(ValueError):
    """Input an operator must correct; `str()` says what."""


class NotRunning(Exception):
    """No node's trunk monitor has reported lately."""

    def __str__(self) -> str:
        return ("the hotline server is not running: no node's trunk monitor has reported to "
                "Redis lately; start it with `hotline serve`")


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds")


def check_trunk(settings: Settings, name: str) -> None:
    """Raise UnknownTrunk unless `name` is a configured trunk."""
    if settings.trunk(name) is None:
        raise UnknownTrunk(name, [t.name for t in settings.trunks])


def new_override(settings: Settings, name: str, action: OverrideAction, reason: str,
                 expires: str | None, by: str, now: float | None = None) -> Override:
    """The override an operator asks for, checked: a known trunk, a reason for the audit
    log, a duration such as 30m for `expires`."""
    if not reason.strip():
        raise BadRequest("reason must not be empty: say why, for the audit log")
    try:
        lifetime = parse_duration(expires) if expires else None
    except ValueError as exc:
        raise BadRequest(f"expires: {exc}") from exc
    check_trunk(settings, name)
    now = time.time() if now is None else now
    return Override(name, action, reason.strip(), by, now,
                    None if lifetime is None else now + lifetime)


def status_rows(settings: Settings, store: TrunkStore) -> list[dict[str, Any]]:
    """Each trunk's health as each live node sees it, with its override; raise NotRunning
    when no node is live."""
    nodes = store.live_nodes()
    if not nodes:
        raise NotRunning()
    overrides = store.overrides(t.name for t in settings.trunks)
    rows = []
    for trunk in settings.trunks:
        override = overrides.get(trunk.name)
        for node in nodes:
            health = store.load_health(trunk.name, node)
            rows.append({
                "name": trunk.name, "node": node,
                "state": health.state.value if health else "unknown",
                "rtt_ms": health.rtt_smoothed_ms if health else None,
                "rtt_last_ms": health.rtt_last_ms if health else None,
                "rtt_p95_ms": health.rtt_p95_ms if health else None,
                "since": iso(health.since) if health else None,
                "since_ts": health.since if health else None,
                "last_error": health.last_error if health else None,
                "override": None if override is None else override_json(override),
                "priority": trunk.priority, "weight": trunk.weight, "mode": trunk.mode,
            })
    return rows


def override_json(override: Override) -> dict[str, Any]:
    return {"action": override.action.value, "reason": override.reason, "by": override.by,
            "at": iso(override.at), "expires_at": iso(override.expires_at)}


def history(store: TrunkStore, limit: int) -> list[dict[str, Any]]:
    """State transitions and operator actions, newest first."""
    entries: list[dict[str, Any]] = [
        {"at": iso(t.at), "at_ts": t.at, "trunk": t.trunk, "kind": "state",
         "what": f"{t.old.value} -> {t.new.value}", "by": None, "node": t.node,
         "detail": t.reason}
        for t in store.transitions(limit)]
    entries += [
        {"at": iso(a.at), "at_ts": a.at, "trunk": a.trunk, "kind": "operator",
         "what": a.action.value, "by": a.by, "node": None, "detail": a.reason,
         "expires_at": iso(a.expires_at)}
        for a in store.audit_log(limit)]
    return sorted(entries, key=lambda e: e["at_ts"], reverse=True)[:limit]
