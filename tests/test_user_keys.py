"""One rule turns any user id into its stored form, wherever it arrives from."""

import pandas as pd

from reranker.lake import hash_user_id, user_key
from reranker.settings import Settings


def test_user_key_hashes_with_a_salt_and_passes_stored_keys_through():
    hashed = user_key("user-1", "salt")
    assert len(hashed) == 16 and hashed != user_key("user-1", "other-salt")
    assert user_key(f"userkey:{hashed}", "salt") == hashed  # landed by the stage: not hashed twice
    assert user_key("user-1", None) == "user-1" and user_key("userkey:abc", None) == "abc"


def test_series_form_matches_and_keeps_missing_ids_missing():
    key = user_key("user-2", "salt")
    out = hash_user_id(pd.Series(["user-1", None, f"userkey:{key}"]), "salt")
    assert out.iloc[0] == user_key("user-1", "salt") and pd.isna(out.iloc[1]) and out.iloc[2] == key


def test_only_a_key_passes_as_stored_when_hashing():
    """`userkey:alice@example.com` in a log is not a stored key: it is hashed like any other id, never kept raw."""
    hashed = user_key("userkey:alice@example.com", "salt")
    assert hashed != "alice@example.com" and len(hashed) == 16
    assert user_key("userkey:ABCDEF0123456789", "salt") != "ABCDEF0123456789"


def test_settings_follow_the_hashing_switch(tmp_path):
    opt_out = tmp_path / "opt-out.txt"
    opt_out.write_text("user-1\n\nuser-2\n")
    on = Settings(user_id_salt="s", opt_out_file=opt_out)
    off = Settings(hash_user_ids=False, opt_out_file=opt_out)
    assert on.user_key("user-1") == user_key("user-1", "s") and off.user_key("user-1") == "user-1"
    assert on.opted_out_users() == {user_key("user-1", "s"), user_key("user-2", "s")}
    assert off.opted_out_users() == {"user-1", "user-2"}
