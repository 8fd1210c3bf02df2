"""Routing decisions across trunks: retries, escalation, drills (issue 5)."""
