"""Bad input: each case gets a clear report, good rows are kept, nothing is duplicated, nothing partial."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from expectations.ingest import IngestError, ingest
from reranker.lake import read_interactions

GOOD = {"interaction_type": "click", "user_id": "u1", "document_id": "d1", "timestamp": "2026-01-01T10:00:00Z",
        "position": 0, "propensity": 0.5, "request_id": "r1"}  # fmt: skip


def rows(n: int, **override) -> list[dict]:
    return [{**GOOD, "event_id": f"e{i}", **override} for i in range(n)]


def write_jsonl(path: Path, records: list[dict], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return path


def run(path: Path, layout):
    return ingest(path, layout, salt="test-salt")


def quarantined(summary) -> list[dict]:
    return [json.loads(line) for line in Path(summary.quarantine_path).read_text().splitlines()]


def test_clean_file_lands_and_reingest_adds_nothing(tmp_path, layout):
    f = write_jsonl(tmp_path / "ok.jsonl", rows(50))
    first = run(f, layout)
    assert (first.added, first.quarantined, first.ok) == (50, 0, True)
    again = run(f, layout)
    assert (again.added, again.already_present) == (0, 50)
    lake = read_interactions(layout.interactions)
    assert len(lake) == 50 and lake["event_id"].is_unique
    assert not lake["user_id"].eq("u1").any(), "user ids are stored hashed"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"position": -1}, "expect_column_values_to_be_between(position"),
        ({"position": "abc"}, "parse: position is not an integer"),
        ({"propensity": 1.5}, "expect_column_values_to_be_between(propensity"),
        ({"propensity": "high"}, "parse: propensity is not a number"),
        ({"interaction_type": "teleport"}, "expect_column_values_to_be_in_set(interaction_type"),
        ({"timestamp": "2099-01-01T00:00:00Z"}, "expect_column_values_to_be_between(timestamp"),
        ({"timestamp": "yesterday-ish"}, "parse: timestamp is not a timestamp in range"),
        ({"user_id": None}, "expect_column_values_to_not_be_null(user_id)"),
    ],
)
def test_bad_rows_are_quarantined_with_the_expectation_named(tmp_path, layout, bad, reason):
    records = rows(5)
    records[2] = {**records[2], **bad}
    summary = run(write_jsonl(tmp_path / "mixed.jsonl", records), layout)
    assert summary.added == 4 and summary.quarantined == 1 and not summary.ok
    (row,) = quarantined(summary)
    assert row["_row"] == 3 and any(r.startswith(reason) for r in row["_reasons"]), row
    assert len(read_interactions(layout.interactions)) == 4


def test_missing_required_column_fails_every_row_with_a_table_reason(tmp_path, layout):
    records = [{k: v for k, v in r.items() if k != "document_id"} for r in rows(3)]
    summary = run(write_jsonl(tmp_path / "nocol.jsonl", records), layout)
    assert summary.added == 0 and summary.quarantined == 3
    assert any("expect_column_to_exist(document_id)" in r for r in summary.reasons)


def test_duplicate_event_ids_keep_the_first_copy(tmp_path, layout):
    records = [*rows(3), {**GOOD, "event_id": "e1", "document_id": "other"}]
    summary = run(write_jsonl(tmp_path / "dups.jsonl", records), layout)
    assert summary.added == 3 and summary.quarantined == 1
    (row,) = quarantined(summary)
    assert row["document_id"] == "other" and "expect_column_values_to_be_unique(event_id)" in row["_reasons"]


def test_empty_file_reports_nothing_read(tmp_path, layout):
    (tmp_path / "empty.jsonl").write_text("")
    summary = run(tmp_path / "empty.jsonl", layout)
    assert summary.rows_read == 0 and summary.added == 0 and not summary.ok


def test_truncated_jsonl_keeps_complete_lines(tmp_path, layout):
    f = write_jsonl(tmp_path / "cut.jsonl", rows(4), tail='{"event_id": "e9", "interac')
    summary = run(f, layout)
    assert summary.added == 4 and summary.quarantined == 1
    assert "malformed JSON" in quarantined(summary)[0]["_reasons"][0]


def test_truncated_csv_row_is_quarantined(tmp_path, layout):
    frame = pd.DataFrame(rows(4))
    text = frame.to_csv(index=False)
    (tmp_path / "cut.csv").write_text(text + "e9,click,u1")  # the last record stops mid-row
    summary = run(tmp_path / "cut.csv", layout)
    assert summary.added == 4 and summary.quarantined == 1


def test_truncated_parquet_is_refused_and_nothing_written(tmp_path, layout):
    pd.DataFrame(rows(100)).to_parquet(tmp_path / "full.parquet")
    data = (tmp_path / "full.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(IngestError, match="Parquet"):
        run(tmp_path / "cut.parquet", layout)
    assert read_interactions(layout.interactions).empty


def test_unsupported_format_and_missing_path_are_clear_errors(tmp_path, layout):
    (tmp_path / "x.xml").write_text("<a/>")
    with pytest.raises(IngestError, match="unsupported format"):
        run(tmp_path / "x.xml", layout)
    with pytest.raises(IngestError, match="no such file"):
        run(tmp_path / "absent.jsonl", layout)


def test_crash_while_staging_leaves_the_lake_untouched(tmp_path, layout, monkeypatch):
    import expectations.ingest as mod

    records = rows(10) + [{**r, "timestamp": "2026-01-02T10:00:00Z"} for r in rows(10)]
    for i, r in enumerate(records):
        r["event_id"] = f"e{i}"
    f = write_jsonl(tmp_path / "two_days.jsonl", records)
    calls = {"n": 0}
    real = mod.atomic_write_parquet

    def flaky(frame, path, schema=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(frame, path, schema)

    monkeypatch.setattr(mod, "atomic_write_parquet", flaky)
    with pytest.raises(OSError):
        run(f, layout)
    assert read_interactions(layout.interactions).empty
    assert not any(layout.staging.glob("*")), "staging is cleaned up"
    monkeypatch.setattr(mod, "atomic_write_parquet", real)
    assert run(f, layout).added == 20


def test_crash_between_partitions_is_completed_by_reingest_without_duplicates(tmp_path, layout, monkeypatch):
    import expectations.ingest as mod

    records = rows(10) + [{**r, "timestamp": "2026-01-02T10:00:00Z"} for r in rows(10)]
    for i, r in enumerate(records):
        r["event_id"] = f"e{i}"
    f = write_jsonl(tmp_path / "two_days.jsonl", records)
    real = mod.commit_partition

    def crash_on_second(root, date, staged, ingest_id):
        if date == "2026-01-02":
            raise KeyboardInterrupt
        return real(root, date, staged, ingest_id)

    monkeypatch.setattr(mod, "commit_partition", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(f, layout)
    lake = read_interactions(layout.interactions)
    assert len(lake) == 10  # the first partition whole, the second not at all
    assert not list(layout.interactions.rglob("*.tmp"))
    monkeypatch.setattr(mod, "commit_partition", real)
    summary = run(f, layout)
    assert (summary.added, summary.already_present) == (10, 10)
    assert len(read_interactions(layout.interactions)) == 20


def test_csv_and_parquet_inputs(tmp_path, layout):
    pd.DataFrame(rows(5)).to_csv(tmp_path / "a.csv", index=False)
    frame = pd.DataFrame(rows(5)).assign(event_id=[f"p{i}" for i in range(5)])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    frame.to_parquet(tmp_path / "b.parquet")
    assert run(tmp_path / "a.csv", layout).added == 5
    assert run(tmp_path / "b.parquet", layout).added == 5


def test_iso_timestamps_parse_whatever_freed_memory_holds():
    """pandas 2.x converts a float array with `unit=` through an uninitialized buffer; at NaN entries (here every
    ISO string, as a number) its garbage can overflow and raise FloatingPointError (pandas#58419). Freed huge
    floats put such garbage there: before the fix this failed on every try at 64 rows."""
    import numpy as np

    from expectations.ingest import parse_timestamps

    values = pd.Series(["2026-06-01T12:00:05Z"] * 999 + ["1780315205"])
    for n in (64, 65, 1000):
        for _ in range(20):
            dirty = np.full(n, 1e300)
            copy = dirty.copy()
            del dirty, copy
            got = parse_timestamps(values.tail(n).reset_index(drop=True))
            assert got.notna().all() and got.iloc[0] == pd.Timestamp("2026-06-01T12:00:05Z")
    assert got.iloc[-1] == pd.Timestamp(1780315205, unit="s", tz="UTC")


def test_a_file_of_garbage_is_quarantined_counted_and_keeps_no_raw_text(tmp_path, layout):
    f = tmp_path / "garbage.jsonl"
    f.write_text('not json at all, user alice@example.com\n{"broken": \n[1, 2]\n')
    summary = run(f, layout)
    assert (summary.rows_read, summary.quarantined, summary.added, summary.ok) == (3, 3, 0, False)
    text = Path(summary.quarantine_path).read_text()
    assert "alice@example.com" not in text and "_sha256" in text


def test_an_event_id_is_landed_once_across_dates_and_files(tmp_path, layout):
    first = write_jsonl(tmp_path / "a.jsonl", rows(3))
    assert run(first, layout).added == 3
    later = rows(3, timestamp="2026-01-05T10:00:00Z")  # the same event ids on another day (another partition)
    assert run(write_jsonl(tmp_path / "b.jsonl", later), layout).already_present == 3
    folder = tmp_path / "two"
    folder.mkdir()
    write_jsonl(folder / "x.jsonl", [{**r, "event_id": f"n{i}"} for i, r in enumerate(rows(4))])
    write_jsonl(folder / "y.jsonl", [{**r, "event_id": f"n{i}", "timestamp": "2026-01-03T10:00:00Z"}
                                     for i, r in enumerate(rows(2))])  # fmt: skip
    summary = run(folder, layout)
    assert (summary.added, summary.duplicates) == (4, 2)
    lake = read_interactions(layout.interactions)
    assert len(lake) == 7 and lake["event_id"].is_unique


def test_over_long_lines_and_fields_are_quarantined_without_reading_them_whole(tmp_path, layout, monkeypatch):
    import expectations.ingest as module

    monkeypatch.setattr(module, "MAX_LINE_BYTES", 1000)
    f = tmp_path / "long.jsonl"
    long_line = json.dumps({**GOOD, "event_id": "big", "query": "q" * 5000})
    f.write_text(json.dumps({**GOOD, "event_id": "ok"}) + "\n" + long_line + "\n"
                 + json.dumps({**GOOD, "event_id": "x" * 300}) + "\n")  # fmt: skip
    summary = run(f, layout)
    assert (summary.added, summary.quarantined) == (1, 2)
    reasons = " ".join(summary.reasons)
    assert "line over 1000 bytes" in reasons and "event_id is over 256 characters" in reasons


def test_a_second_ingest_waits_for_the_lock_or_says_it_is_busy(tmp_path, layout):
    import fcntl

    from expectations.ingest import IngestBusy

    f = write_jsonl(tmp_path / "ok.jsonl", rows(2))
    layout.lake.mkdir(parents=True, exist_ok=True)
    with (layout.lake / ".ingest.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(IngestBusy, match="another ingest"):
            ingest(f, layout, salt="test-salt", wait_seconds=0)
    assert run(f, layout).added == 2  # the lock released: the next one proceeds


def test_staging_left_by_a_killed_ingest_is_cleaned_by_the_next(tmp_path, layout):
    stale = layout.staging / "deadbeef-12345678" / "date=2026-01-01"
    stale.mkdir(parents=True)
    (stale / "chunk-00001.parquet").write_bytes(b"half written")
    run(write_jsonl(tmp_path / "ok.jsonl", rows(2)), layout)
    assert not layout.staging.exists() or not any(layout.staging.iterdir())


def test_data_docs_escape_what_the_log_carries(tmp_path, layout):
    records = rows(3)
    records[1] = {**records[1], "event_id": "<img src=x onerror=alert(1)>", "interaction_type": "<b>x</b>"}
    records[2] = {**records[2], "event_id": "<img src=x onerror=alert(1)>"}
    summary = run(write_jsonl(tmp_path / "xss.jsonl", records), layout)
    pages = "".join(p.read_text(errors="replace") for p in Path(summary.data_docs).parent.rglob("*.html"))
    assert "<img src=x onerror" not in pages and "<b>x</b>" not in pages
    assert "&lt;b&gt;x&lt;/b&gt;" in pages or "&amp;lt;b&amp;gt;" in pages  # shown, escaped


def test_data_docs_load_nothing_from_the_internet(tmp_path, layout):
    """Every script, stylesheet, font and image a page loads is a file of the site (readable with no network),
    and the index's table of validation runs has its data and the library that draws it."""
    summary = run(write_jsonl(tmp_path / "ok.jsonl", rows(5)), layout)
    index = Path(summary.data_docs)
    pages = list(index.parent.rglob("*.html"))
    assert len(pages) >= 2
    for page in pages:
        text = page.read_text()
        refs = re.findall(r'<(?:script|img|link)\b[^>]*?(?:src|href)="([^"]+)"', text)
        assert refs, page
        for ref in refs:
            assert not re.match(r"(?:https?:)?//", ref), f"{page.name} loads {ref}"
            assert (page.parent / ref.split("?")[0]).resolve().is_file(), f"{page.name}: {ref} missing"
        assert "integrity=" not in text
    index_text = index.read_text()
    assert "vendor/js/bootstrap-table.min.js" in index_text and "ok.jsonl rows 0-4" in index_text
    css = index.parent / "static/vendor/css/all.min.css"
    for font in re.findall(r"url\(([^)]+\.woff2)\)", css.read_text()):
        assert (css.parent / font).resolve().is_file(), font
