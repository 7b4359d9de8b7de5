"""API keys, signed request ids and the stage's front door (the middleware around every route), in process."""

from __future__ import annotations

import json

import pytest


def test_keys_are_hashed_at_rest_scoped_and_revocable(tmp_path):
    from reranker.access import KeyRing, KeyStore, Scope

    store = KeyStore(tmp_path / "keys.json")
    key, token = store.create("shop-frontend", [Scope.rerank], models=["reranker"])
    raw = (tmp_path / "keys.json").read_text()
    assert token.startswith("rrk_") and token.split("_", 2)[2] not in raw and key.secret_sha256 in raw
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    ring = KeyRing(store)
    ring.refresh()
    found = ring.verify(token)
    assert found is not None and found.allows(Scope.rerank) and not found.allows(Scope.interactions)
    assert found.allows_model("reranker") and not found.allows_model("other")
    assert ring.verify(token[:-1] + ("a" if token[-1] != "a" else "b")) is None
    assert ring.verify("Bearer nonsense") is None and ring.verify("rrk_" + "x" * 300) is None
    store.revoke(key.key_id)
    ring.refresh()
    assert ring.verify(token) is None


def test_signed_request_ids_name_their_user_and_age():
    from reranker.request_ids import RequestIds

    ids = RequestIds.from_salt("salt", max_age_seconds=86400)
    rid = ids.issue("alice", now=1_000_000)
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert ids.check(rid, "alice", now=1_000_100) is None
    assert "this user" in (ids.check(rid, "bob", now=1_000_100) or "")
    assert "older" in (ids.check(rid, "alice", now=1_000_000 + 2 * 86400) or "")
    assert ids.check("0" * 32, "alice", now=1_000_100) is not None
    assert RequestIds.from_salt("other").check(rid, "alice", now=1_000_100) is not None


def test_the_public_example_salt_is_refused_outside_dev_mode(tmp_path):
    from reranker.settings import PUBLIC_SALT, Settings, SettingsError

    with pytest.raises(SettingsError, match="public example salt"):
        Settings(data_dir=tmp_path, user_id_salt=PUBLIC_SALT).salt()
    assert Settings(data_dir=tmp_path, user_id_salt=PUBLIC_SALT, dev_mode=True).salt() == PUBLIC_SALT
    own = Settings(data_dir=tmp_path).salt()  # unset: the data dir's own random salt, kept
    assert len(own) == 64 and Settings(data_dir=tmp_path).salt() == own
    assert Settings(data_dir=tmp_path / "other").salt() != own


@pytest.fixture()
def front_door(tmp_path):
    from starlette.testclient import TestClient

    from reranker.access import KeyStore, Scope
    from serving.access import StageAccess, api_key_of

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        key = api_key_of(scope)
        payload = json.dumps({"path": scope["path"], "bytes": len(body), "key": key and key.key_id}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    store = KeyStore(tmp_path / "keys.json")
    tokens = {}
    for name, scopes, rate in (("admin", [Scope.admin], None), ("ranker", [Scope.rerank], None),
                               ("slow", [Scope.rerank], 2.0)):  # fmt: skip
        tokens[name] = store.create(name, scopes, rate_per_second=rate)[1]
    wrapped = StageAccess(app, keys_path=store.path, enabled=True, rate_per_key=1000, max_body_bytes=1000)
    return TestClient(wrapped), {k: {"authorization": f"Bearer {t}"} for k, t in tokens.items()}


def test_front_door_open_paths_scopes_and_statuses(front_door):
    client, auth = front_door
    for path in ("/livez", "/readyz", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200
    missing = client.post("/rerank", json={})
    assert missing.status_code == 401 and missing.json()["detail"]["field"] == "authorization"
    assert client.post("/rerank", json={}, headers={"authorization": "Basic abc"}).status_code == 401
    assert client.post("/rerank", json={}, headers=auth["ranker"]).json()["key"] is not None
    assert client.post("/interactions", json={}, headers=auth["ranker"]).status_code == 403
    assert client.get("/metrics", headers=auth["ranker"]).status_code == 403
    assert client.get("/metrics", headers=auth["admin"]).status_code == 200
    assert client.post("/anything/else", headers=auth["ranker"]).status_code == 403  # admin only


def test_front_door_caps_the_body_and_the_rate(front_door, monkeypatch):
    import serving.access

    client, auth = front_door
    big = client.post("/rerank", content=b"x" * 1001, headers=auth["admin"])
    assert big.status_code == 413 and big.json()["detail"]["field"] == "body"

    def chunks():
        yield b"x" * 600
        yield b"x" * 600

    streamed = client.post("/rerank", content=chunks(), headers=auth["admin"])  # no Content-Length
    assert streamed.status_code == 413
    fits = client.post("/rerank", content=b"x" * 1000, headers=auth["admin"])
    assert fits.status_code == 200 and fits.json()["bytes"] == 1000
    clock = [1000.0]  # the test holds the clock: no refill unless it moves
    monkeypatch.setattr(serving.access.time, "monotonic", lambda: clock[0])
    statuses = [client.post("/rerank", json={}, headers=auth["slow"]).status_code for _ in range(12)]
    assert statuses == [200] * 10 + [429] * 2  # a burst of 10
    clock[0] += 1.0  # one second: 2 more
    statuses = [client.post("/rerank", json={}, headers=auth["slow"]).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
