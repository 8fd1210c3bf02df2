"""Alerts to people: SMS and voice calls through Twilio, and a signed JSON webhook.

Modules: `alerts` (which events become alerts: trunk changes, drill results),
`alert` (what is sent, and phone numbers masked), `notifier` (the queue, dedupe, rate
limits and retries), `claims` (which node sends an alert: claims in Redis that a node
that dies mid-send loses), `twilio` (the client for SMS and voice calls), `webhook` (the
signed JSON body) and `errors`::

    NotifyError
     +-- DeliveryFailed    one message could not be delivered to one recipient
"""
