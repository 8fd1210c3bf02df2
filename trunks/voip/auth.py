"""Digest authentication (RFC 2617 with MD5, as carriers use it in SIP) for the UAC side.

A carrier challenges an INVITE or a REGISTER with 401 (WWW-Authenticate) or 407
(Proxy-Authenticate); `digest_authorization` reads the challenge and returns the
header that answers it. Outgoing calls and registrations answer a challenge once.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from trunks.voip.message import Message

_PARAM = re.compile(r'(\w+)="?([^",]*)"?')


def digest_authorization(response: Message, method: str, uri: str, username: str,
                         password: str) -> tuple[str, str] | None:
    """The (Proxy-)Authorization header answering a 401/407 challenge (RFC 2617, MD5);
    None if the response carries no Digest challenge."""
    name = "Proxy-Authenticate" if response.status_code == 407 else "WWW-Authenticate"
    challenge = response.value(name)
    if challenge is None or not challenge.lower().startswith("digest"):
        return None
    params = dict(_PARAM.findall(challenge[6:]))
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    ha1, ha2 = _md5(f"{username}:{realm}:{password}"), _md5(f"{method}:{uri}")
    fields = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
              'algorithm=MD5']
    if "auth" in params.get("qop", "").split(","):
        cnonce, nc = secrets.token_hex(8), "00000001"
        digest = _md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += [f'response="{digest}"', "qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        fields.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    header = "Proxy-Authorization" if response.status_code == 407 else "Authorization"
    return header, "Digest " + ", ".join(fields)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
