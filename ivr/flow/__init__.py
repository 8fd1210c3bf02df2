"""The call flow: what a caller hears and where the call goes next.

`model` is `ivr.yaml` validated; `runner.FlowRunner` walks it on a channel;
`voicebot` holds the FAQ conversation of a voicebot node; `oncall` says whom a
forward rings.
"""
