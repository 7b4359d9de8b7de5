"""`reranker users delete`: a user's data removed everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

from reranker.cli.output import DataDirOpt, JsonOpt, emit, fail, settings, table

group = typer.Typer(help="Privacy: remove a user's data.", no_args_is_help=True)


@group.command("delete")
def users_delete(
    user_id: Annotated[
        str, typer.Argument(help="The user id as your systems know it (hashed here with the salt).")
    ],
    data_dir: DataDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a user's events and features: lake, offline feature tables, online store, quarantine, logs."""
    from feature_repo.store import FeatureStoreError, check_user_deletion, delete_online_user, open_store
    from reranker.lake import delete_user_lines, delete_user_rows

    conf = settings(data_dir)
    layout = conf.layout
    key = conf.user_key(user_id)
    store = open_store(layout.feast) if (layout.feast / "feature_store.yaml").exists() else None
    if store is not None:
        try:
            check_user_deletion(store)  # before anything is deleted: never half a user
        except FeatureStoreError as exc:
            fail(str(exc))
    removed = {
        "lake_events": delete_user_rows(layout.interactions, key),
        "feature_table_rows": delete_user_rows(layout.feature_tables, key),
        "quarantined_rows": delete_user_lines(layout.quarantine, key),
        "served_list_log": delete_user_lines(layout.served, key),
        "landing_zone": delete_user_lines(layout.landing, key),
        "online_rows": 0,
    }
    if store is not None:
        removed["online_rows"] = delete_online_user(store, key)
    emit({"user_key": key, "removed": removed}, as_json)
    if not as_json:
        table(f"removed user {key}", [{"where": k, "rows": v} for k, v in removed.items()])
