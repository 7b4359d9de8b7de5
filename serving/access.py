"""The stage's front door, as ASGI middleware around every route (BentoML's own /metrics included): API keys with
scopes, a rate limit per key, a cap on the request body.

- `/livez`, `/readyz`, `/healthz` and the API docs (`/docs`, `/openapi.json`, BentoML's index page) are open.
- `POST /rerank` and `POST /pipeline` need the `rerank` scope, `POST /interactions` `interactions`, `GET /metrics` `metrics`; every other
  route `admin` (which also grants the others). Per-model access is checked by the /rerank route (the model id is
  in the body).
- 401 without a valid key (`Authorization: Bearer rrk_…`), 403 for a key without the scope, 429 over the key's rate
  (a token bucket per key and worker: `rate_per_second` of the key, else RERANKER_RATE_PER_KEY), 413 for a body over
  RERANKER_MAX_BODY_BYTES (by its Content-Length, or counted as it arrives). Each answers a JSON body naming the
  field at fault, as the routes' own errors do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from reranker.access import ApiKey, KeyRing, KeyStore, Scope

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]

OPEN_PATHS = {"/livez", "/readyz", "/healthz", "/docs", "/openapi.json", "/docs.json", "/",
              "/docs/oauth2-redirect"}  # fmt: skip
OPEN_PREFIXES = ("/static_content/",)
ROUTE_SCOPES = {
    "/rerank": Scope.rerank,
    "/pipeline": Scope.rerank,
    "/interactions": Scope.interactions,
    "/metrics": Scope.metrics,
}


def required_scope(path: str) -> Scope | None:
    """The scope a path needs; None for the open ones."""
    if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
        return None
    return ROUTE_SCOPES.get(path, Scope.admin)


class TokenBucket:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 10.0)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


async def _answer(
    send: Send, status: int, field: str, message: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = json.dumps({"detail": {"field": field, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


class StageAccess:
    """See the module docstring. Settings are read here: the middleware is built in each worker at start."""

    def __init__(self, app: ASGIApp, keys_path: Path | None = None, enabled: bool | None = None,
                 rate_per_key: float | None = None, max_body_bytes: int | None = None) -> None:  # fmt: skip
        if keys_path is None or enabled is None or rate_per_key is None or max_body_bytes is None:
            from reranker.settings import Settings

            settings = Settings()
            keys_path = keys_path or settings.layout.keys
            enabled = settings.auth if enabled is None else enabled
            rate_per_key = rate_per_key or settings.rate_per_key
            max_body_bytes = max_body_bytes or settings.max_body_bytes
        self.app = app
        self.enabled = enabled
        self.keys = KeyRing(KeyStore(keys_path))
        self.rate_per_key = rate_per_key
        self.max_body_bytes = max_body_bytes
        self._buckets: dict[str, TokenBucket] = {}
        self._checked = 0.0

    def _key(self, scope: Message) -> ApiKey | None:
        now = time.monotonic()
        if now - self._checked > 1.0:  # a created or revoked key is seen within a second
            self.keys.refresh()
            self._checked = now
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                kind, _, token = value.decode("latin-1").partition(" ")
                return self.keys.verify(token.strip()) if kind.lower() == "bearer" else None
        return None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = required_scope(scope["path"])
        if needed is not None and self.enabled:
            key = self._key(scope)
            if key is None:
                await _answer(send, 401, "authorization", "a valid API key is required: Authorization: Bearer "
                              "rrk_... (create one with `reranker keys create`)",
                              [(b"www-authenticate", b"Bearer")])  # fmt: skip
                return
            if not key.allows(needed):
                await _answer(
                    send, 403, "authorization", f"key {key.key_id} lacks the {needed.value!r} scope", []
                )
                return
            bucket = self._buckets.get(key.key_id)
            if bucket is None:
                bucket = self._buckets[key.key_id] = TokenBucket(key.rate_per_second or self.rate_per_key)
            if not bucket.take():
                await _answer(send, 429, "authorization", f"key {key.key_id} is over its rate of "
                              f"{bucket.rate:g} requests a second", [(b"retry-after", b"1")])  # fmt: skip
                return
            scope.setdefault("state", {})["api_key"] = key
        if scope["method"] in ("POST", "PUT", "PATCH"):
            bounded = await self._bounded(scope, receive, send)
            if bounded is None:
                return
            receive = bounded
        await self.app(scope, receive, send)

    async def _bounded(self, scope: Message, receive: Receive, send: Send) -> Receive | None:
        """The body within the cap: by its declared length, else read here (up to the cap) and handed on."""
        too_big = f"the request body is over {self.max_body_bytes} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _answer(send, 400, "content-length", "not a number", [])
                    return None
                if declared > self.max_body_bytes:
                    await _answer(send, 413, "body", too_big, [])
                    return None
                return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _answer(send, 413, "body", too_big, [])
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


def api_key_of(scope: Message) -> ApiKey | None:
    """The key the middleware admitted this request with (None when authentication is off)."""
    state = scope.get("state")
    return state.get("api_key") if isinstance(state, dict) else None
