"""The HTTP surface of `hotline serve`: the JSON API (one blueprint per resource),
the operators' dashboard, /metrics and the Twilio Voice webhooks.
"""
