"""The project's extensions of pyVoIP 1.6.8, kept in this one package.

Everything that subclasses or works around pyVoIP lives here, so an upgrade of
the pinned version is checked in one place. Importing ``pyVoIP.SIP`` first fails
in 1.6.8 (a circular import through ``pyVoIP.VoIP``), so this package imports
``pyVoIP.VoIP`` before anything else.
"""

from __future__ import annotations

import pyVoIP.VoIP  # noqa: F401  - must precede pyVoIP.SIP, see above

from trunks.voip.message import (
    CSeq,
    Message,
    SipParseError,
    build_request,
    new_branch,
    new_call_id,
    new_tag,
    parse_message,
    sip_host,
)

__all__ = ["CSeq", "Message", "SipParseError", "build_request", "new_branch", "new_call_id",
           "new_tag", "parse_message", "sip_host"]
