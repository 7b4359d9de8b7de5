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
    from reranker.lake import Rewrite, plan_user_lines, plan_user_rows

    conf = settings(data_dir)
    layout = conf.layout
    key = conf.user_key(user_id)
    store = open_store(layout.feast) if (layout.feast / "feature_store.yaml").exists() else None
    if store is not None:
        try:
            check_user_deletion(store)  # before anything is deleted: never half a user
        except FeatureStoreError as exc:
            fail(str(exc))
    # plan every rewrite first (new files written beside the old ones): a failure here changes nothing
    plans: dict[str, list[Rewrite]] = {}
    try:
        plans["lake_events"] = plan_user_rows(layout.interactions, key)
        plans["feature_table_rows"] = plan_user_rows(layout.feature_tables, key)
        plans["quarantined_rows"] = plan_user_lines(layout.quarantine, key, user_id)
        plans["served_list_log"] = plan_user_lines(layout.served, key, user_id)
        plans["landing_zone"] = plan_user_lines(layout.landing, key, user_id)
    except Exception as exc:
        for planned in plans.values():
            for rewrite in planned:
                rewrite.abandon()
        fail(f"nothing deleted: planning the deletion failed ({type(exc).__name__}: {exc})")
    removed = {where: sum(r.removed for r in planned) for where, planned in plans.items()}
    # personalization stops first, then the files are replaced (each an atomic rename)
    removed["online_rows"] = delete_online_user(store, key) if store is not None else 0
    for planned in plans.values():
        for rewrite in planned:
            rewrite.commit()
    emit({"user_key": key, "removed": removed}, as_json)
    if not as_json:
        table(f"removed user {key}", [{"where": k, "rows": v} for k, v in removed.items()])
