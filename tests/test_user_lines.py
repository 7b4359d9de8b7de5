"""A user's lines removed from the JSON-lines logs (served lists, landing zone, quarantine): all or nothing, whatever
the lines hold."""

import json

from reranker.lake import STORED_KEY_PREFIX, plan_user_lines


def test_lines_with_line_separators_and_raw_ids_are_planned_then_committed(tmp_path):
    served = tmp_path / "served" / "served-1.jsonl"
    served.parent.mkdir()
    mine = {"user_id": "k1", "query": "boots\u2028for\u2029rain", "items": []}
    theirs = {"user_id": "k2", "query": "tent", "items": []}
    served.write_text(json.dumps(mine, ensure_ascii=False) + "\n" + json.dumps(theirs) + "\n")
    landing = tmp_path / "served" / "events-1.jsonl"
    landing.write_text(json.dumps({"user_id": STORED_KEY_PREFIX + "k1"}) + "\n" + json.dumps(theirs) + "\n")
    old_quarantine = tmp_path / "served" / "rows.jsonl"  # an older release kept unparseable lines' raw text
    old_quarantine.write_text(json.dumps({"_raw": '{"user_id": "alice@example.com", "broken'}) + "\n"
                              + json.dumps({"_raw": '{"user_id": "bob"'}) + "\n")  # fmt: skip
    before = {p: p.read_bytes() for p in (served, landing, old_quarantine)}

    plans = plan_user_lines(tmp_path / "served", "k1", "alice@example.com")
    assert {p.path for p in plans} == {served, landing, old_quarantine}
    assert {p: p.read_bytes() for p in before} == before  # planned: nothing changed yet
    for plan in plans:
        plan.commit()
    assert served.read_text().splitlines() == [json.dumps(theirs)]
    assert "k1" not in landing.read_text() and "alice@example.com" not in old_quarantine.read_text()
    assert "bob" in old_quarantine.read_text()
    assert not list(tmp_path.rglob("*.tmp"))
