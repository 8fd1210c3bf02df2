"""Channels: how a flow reaches a caller, whatever carries the call.

`base.Channel` is what a flow does with a call (play, listen, ring, bridge, hang up);
`sip.SipChannel` does it over RTP for a call through a trunk, `twilio.TwilioChannel`
as TwiML documents for a call hosted at Twilio.
"""
