"""Served request ids that prove what they are: an interaction must name a request the stage served to that user.

A request id is 32 hex characters, as before: the serving time (seconds, 8), a random nonce (8) and the first 16 of
HMAC-SHA256(secret, time . nonce . user key). The stage that served the list, any of its workers and any later
stage with the same secret can check, without a shared index, that an id was issued, for which user and when; an
id older than the retention of interactions is refused. The secret is derived from the user-id salt, which is
never public (see `reranker.settings`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestIds:
    secret: bytes
    max_age_seconds: float = 30 * 86400

    @classmethod
    def from_salt(cls, salt: str, max_age_seconds: float = 30 * 86400) -> RequestIds:
        return cls(hmac.new(salt.encode(), b"reranker request id", hashlib.sha256).digest(), max_age_seconds)

    def _sign(self, head: str, user_key: str) -> str:
        return hmac.new(self.secret, f"{head}.{user_key}".encode(), hashlib.sha256).hexdigest()[:16]

    def issue(self, user_key: str, now: float | None = None) -> str:
        head = f"{int(now if now is not None else time.time()) & 0xFFFFFFFF:08x}{secrets.token_hex(4)}"
        return head + self._sign(head, user_key)

    def check(self, request_id: str, user_key: str, now: float | None = None) -> str | None:
        """None when the id was issued to this user and is recent enough; otherwise why not."""
        if len(request_id) != 32:
            return "request_id was not issued by this stage"
        head, sig = request_id[:16], request_id[16:]
        if not hmac.compare_digest(sig, self._sign(head, user_key)):
            return "request_id was not served to this user"
        try:
            issued = int(head[:8], 16)
        except ValueError:
            return "request_id was not issued by this stage"
        age = (now if now is not None else time.time()) - issued
        if age > self.max_age_seconds:
            return f"request_id is older than {self.max_age_seconds / 86400:g} days"
        if age < -300:
            return "request_id is from the future"
        return None
