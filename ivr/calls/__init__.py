"""Calls from the trunks: the SIP call handler that answers each call and runs
the flow on it, and what happens to a caller whose call was cut off.
"""
