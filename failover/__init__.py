"""Routing decisions across trunks: which trunk, retries, the drill, notifications."""
