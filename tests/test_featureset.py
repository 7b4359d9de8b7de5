"""The declared feature set: every shipped declaration is valid; bad declarations and catalogs that do not fit get
errors that name the file, the line and what to do; `reranker features check|init` say so with exit codes."""

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from reranker.cli import app
from reranker.featureset import (
    FeatureSetError,
    check_catalog,
    infer_feature_set,
    load_feature_set,
    parse_feature_set,
)

SHIPPED = sorted((Path(__file__).resolve().parent.parent / "feature_repo" / "featuresets").glob("*.yaml"))
GOOD = """name: shop
documents:
  brand: {kind: categorical}
  price: {kind: numeric}
  tags: {kind: multi_categorical}
request:
  in_stock: {kind: boolean}
affinities: [brand, tags]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(FeatureSetError) as err:
        parse_feature_set(text, "fs.yaml")
    return err.value.problems


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_declaration_is_valid(path):
    fs = load_feature_set(path)
    assert fs.name and len(fs.version) == 12


def test_a_valid_declaration_and_its_version():
    fs = parse_feature_set(GOOD)
    assert fs.overridable() == {"in_stock", "price"} and fs.version == parse_feature_set(GOOD).version
    assert parse_feature_set(GOOD.replace("price: {kind: numeric}", "price: {kind: numeric, buckets: [5]}")).version \
        != fs.version  # fmt: skip


def test_a_duplicate_name_is_refused_at_its_line():
    text = GOOD.replace("  price: {kind: numeric}\n", "  price: {kind: numeric}\n  price: {kind: boolean}\n")
    assert problems(text) == ["fs.yaml:5: duplicate name 'price' (first on line 4)"]
    across = GOOD.replace("  in_stock: {kind: boolean}", "  price: {kind: boolean}")
    assert any(
        p.startswith("fs.yaml:") and "duplicate name (also declared in documents)" in p
        for p in problems(across)
    )


def test_a_wrong_kind_is_refused_at_its_line_with_the_choices():
    (problem,) = problems(GOOD.replace("price: {kind: numeric}", "price: {kind: money}"))
    assert (
        problem.startswith("fs.yaml:4: documents.price.kind:")
        and "'numeric'" in problem
        and "'text'" in problem
    )


def test_references_to_unknown_or_unfit_attributes_are_refused():
    got = problems(
        GOOD.replace("affinities: [brand, tags]", "affinities: [brand, colour]\nquery: {text: [brand]}")
    )
    assert any("affinities: 'colour' is not a declared document attribute" in p and p.startswith("fs.yaml:8")
               for p in got)  # fmt: skip
    assert any("query.text: 'brand' must be a declared text attribute" in p for p in got)
    assert any("unknown interaction types ['view']" in p
               for p in problems(GOOD + "engagement: {kinds: [click, view]}\n"))  # fmt: skip
    assert any(
        "reserved" in p
        for p in problems(GOOD.replace("brand: {kind: categorical}", "score: {kind: numeric}"))
    )
    assert any("names are letters" in p for p in problems(GOOD.replace("  brand:", "  9brand:").replace(
        "[brand, tags]", "[tags]")))  # fmt: skip


def test_broken_yaml_and_unknown_keys_say_where():
    assert problems("name: x\ndocuments: [unclosed\n")[0].startswith("fs.yaml:3:")
    (problem,) = problems(GOOD.replace("  price: {kind: numeric}", "  price: {kind: numeric, unit: eur}"))
    assert problem.startswith("fs.yaml:4: documents.price.unit: Extra inputs are not permitted")


def test_a_catalog_missing_a_declared_column_or_of_the_wrong_kind():
    fs = parse_feature_set(GOOD, "fs.yaml")
    catalog = pd.DataFrame({"document_id": ["a", "b"], "brand": ["x", "y"], "price": ["cheap", "dear"],
                            "colour": ["red", "blue"]})  # fmt: skip
    check = check_catalog(fs, catalog)
    assert not check.ok
    assert any(
        e.startswith("fs.yaml:5: documents.tags: the catalog has no column 'tags'") for e in check.errors
    )
    assert any(e.startswith("fs.yaml:4: documents.price: declared numeric, but 100%") for e in check.errors)
    assert any(
        "catalog columns not declared, so not used by the model: ['colour']" in w for w in check.warnings
    )


def test_a_starting_declaration_is_inferred_from_the_catalogs_columns():
    catalog = pd.DataFrame({"document_id": ["a", "b", "c"], "brand": ["x", "y", "x"], "price": [1.0, 2.5, 3.0],
                            "genres": ["a|b", "b", "c|a"], "in stock": [True, False, True],
                            "released": pd.to_datetime(["2020-01-01"] * 3),
                            "blurb": ["a long description of the product " * 3] * 3})  # fmt: skip
    fs = infer_feature_set(catalog, "inferred")
    kinds = {n: a.kind.value for n, a in fs.documents.items()}
    assert kinds == {"brand": "categorical", "price": "numeric", "genres": "multi_categorical",
                     "in_stock": "boolean", "released": "timestamp", "blurb": "text"}  # fmt: skip
    assert fs.documents["in_stock"].column == "in stock" and fs.query and fs.query.text == ["blurb"]
    assert check_catalog(parse_feature_set(fs.to_yaml()), catalog).ok


def test_features_check_and_init_on_the_command_line(tmp_path):
    runner = CliRunner()
    catalog = tmp_path / "catalog.csv"
    pd.DataFrame({"document_id": ["a", "b"], "brand": ["x", "y"], "price": [1.0, 2.0]}).to_csv(
        catalog, index=False
    )
    out = tmp_path / "fs.yaml"
    done = runner.invoke(app, ["features", "init", "--catalog", str(catalog), "--out", str(out)])
    assert done.exit_code == 0 and "brand: categorical" in done.output
    assert (
        runner.invoke(app, ["features", "init", "--catalog", str(catalog), "--out", str(out)]).exit_code == 2
    )
    ok = runner.invoke(
        app, ["features", "check", str(out), "--catalog", str(catalog), "--data-dir", str(tmp_path)]
    )
    assert ok.exit_code == 0, ok.output
    out.write_text(out.read_text().replace("kind: numeric", "kind: money"))
    bad = runner.invoke(app, ["features", "check", str(out), "--data-dir", str(tmp_path)])
    assert bad.exit_code == 1 and f"{out}:" in bad.output and "money" in bad.output
    missing = runner.invoke(
        app, ["features", "check", str(tmp_path / "nope.yaml"), "--data-dir", str(tmp_path)]
    )
    assert missing.exit_code == 1 and "features init" in missing.output


def test_request_fields_and_context_are_inferred_from_what_the_logs_carry():
    catalog = pd.DataFrame({"document_id": ["a", "b"], "brand": ["x", "y"], "price": [1.0, 2.0]})
    requests = pd.DataFrame({"in_stock": [1.0, 0.0, None], "discount": [0.1, 0.3, 0.0], "price": [1.5, None, 2.0],
                             "weird key!": [1.0, 2.0, 3.0]})  # fmt: skip
    contexts = pd.DataFrame({"device": ["mobile", "desktop", None], "slot": [1, 2, 3]})
    fs = infer_feature_set(catalog, "logs", requests, contexts)
    assert {n: r.kind.value for n, r in fs.request.items()} == {"in_stock": "boolean", "discount": "numeric"}
    assert {n: c.kind.value for n, c in fs.context.items()} == {"device": "categorical", "slot": "numeric"}
    assert fs.overridable() == {
        "in_stock",
        "discount",
        "price",
    }  # price: the catalog's attribute, overridable
