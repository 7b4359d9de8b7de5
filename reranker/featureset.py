"""The feature set: the user's own declaration of what the model may learn from, one typed object.

A YAML file declares which catalog columns are document attributes and of which kind, which per-candidate request
fields and request context fields the model may use, which engagement windows to count, which user x attribute
affinities to learn, and which collaborative and query signals to compute. Everything else - Feast entities, views
and the feature service, the offline point-in-time tables, the online rows, the training matrix and the serving
input kernel - is generated from it (`feature_repo`), so there is one list of model inputs.

Errors name the file and line (`FeatureSetError`); `check_catalog` checks a declaration against a catalog.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

BUNDLED = (
    Path(__file__).resolve().parent.parent / "feature_repo" / "featuresets"
)  # the datasets' declarations
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")
RESERVED = frozenset({"document_id", "user_id", "query", "event_timestamp", "score", "content", "label",
                      "list_id", "position", "propensity"})  # fmt: skip


class DocumentKind(StrEnum):
    numeric = "numeric"
    boolean = "boolean"
    categorical = "categorical"
    multi_categorical = "multi_categorical"
    timestamp = "timestamp"
    text = "text"


class RequestKind(StrEnum):
    numeric = "numeric"
    boolean = "boolean"


class ContextKind(StrEnum):
    numeric = "numeric"
    boolean = "boolean"
    categorical = "categorical"
    hour_of_day = "hour_of_day"  # derived from the request time (UTC)
    day_of_week = "day_of_week"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DocumentAttribute(_Strict):
    """A catalog column the model may use."""

    kind: DocumentKind
    column: str | None = Field(default=None, description="The catalog column, when it is named differently.")
    max_values: int = Field(
        default=32, ge=1, le=256, description="Categorical: values kept; the rest are 'other'."
    )
    separator: str = Field(
        default="|", min_length=1, description="multi_categorical: between values in a string."
    )
    buckets: list[float] | None = Field(
        default=None,
        description="numeric: ascending bucket edges (affinities, explanations); default quintiles.",
    )
    description: str = ""

    @model_validator(mode="after")
    def _buckets_ascend(self) -> DocumentAttribute:
        if self.buckets is not None:
            if self.kind is not DocumentKind.numeric:
                raise ValueError("buckets are for numeric attributes")
            if (
                not self.buckets
                or any(b >= a for b, a in zip(self.buckets, self.buckets[1:], strict=False))
                or any(b != b for b in self.buckets)
            ):
                raise ValueError("buckets must be a non-empty list of strictly ascending numbers")
        return self

    def source(self, name: str) -> str:
        return self.column or name


class RequestField(_Strict):
    """A value the caller sends with each candidate (`candidates[].features`) and logs with impressions."""

    kind: RequestKind = RequestKind.numeric
    description: str = ""


class ContextField(_Strict):
    """A value of the whole request (`context`), logged with the served list; or derived from the request time."""

    kind: ContextKind
    values: list[str] | None = Field(
        default=None,
        description="categorical: the known values (others are 'other'); default: learned from logs.",
    )
    description: str = ""


class Engagement(_Strict):
    windows_days: list[int] = Field(default=[1, 7, 30], min_length=1, max_length=6)
    kinds: list[str] = Field(
        default=["click", "purchase"],
        description="Interaction types counted on their own (beside positives).",
    )
    rates: bool = Field(default=True, description="Smoothed rates per exposure (positive, and per kind).")

    @field_validator("windows_days")
    @classmethod
    def _windows(cls, value: list[int]) -> list[int]:
        if any(w < 1 or w > 365 for w in value) or len(set(value)) != len(value):
            raise ValueError("windows_days must be distinct whole days between 1 and 365")
        return sorted(value)

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, value: list[str]) -> list[str]:
        from reranker.contracts import InteractionType

        known = {t.value for t in InteractionType} - {"impression"}
        unknown = [k for k in value if k not in known]
        if unknown:
            raise ValueError(f"unknown interaction types {unknown}; known: {sorted(known)}")
        if len(set(value)) != len(value):
            raise ValueError("kinds must be distinct")
        return value


class UserSignals(_Strict):
    activity: bool = True
    window_days: int = Field(default=30, ge=1, le=365)
    segments: int = Field(default=6, ge=1, le=64, description="k-means user segments (explanations).")


class Collaborative(_Strict):
    covisitation: bool = Field(
        default=True, description="Item-item co-occurrence of a candidate with the user's recent positives."
    )
    factors: int = Field(
        default=16, ge=0, le=128, description="Latent factors (TruncatedSVD) per epoch; 0: none."
    )
    recent_positives: int = Field(default=50, ge=1, le=500)
    neighbors: int = Field(default=50, ge=1, le=500, description="Most similar documents kept per document.")
    epoch_days: int = Field(
        default=7, ge=1, le=365, description="Collaborative models are refitted this often."
    )
    max_epochs: int = Field(default=26, ge=1, le=200)


class QuerySignals(_Strict):
    text: list[str] = Field(
        default=[], description="Text attributes matched against the query (TF-IDF cosine)."
    )
    click_stats: bool = Field(
        default=True, description="Clicks and impressions of a document under the same query."
    )


class FeatureSet(_Strict):
    """The declaration. `version` is a digest of its content: a model records it, serving checks it."""

    name: str = Field(pattern=NAME.pattern)
    description: str = ""
    first_stage: bool = Field(
        default=True, description="The first-stage score, rank and gap to the top as inputs."
    )
    documents: dict[str, DocumentAttribute] = Field(default_factory=dict)
    request: dict[str, RequestField] = Field(default_factory=dict)
    context: dict[str, ContextField] = Field(default_factory=dict)
    engagement: Engagement | None = Field(default_factory=Engagement)
    user: UserSignals | None = Field(default_factory=UserSignals)
    affinities: list[str] = Field(default_factory=list)
    collaborative: Collaborative | None = Field(default_factory=Collaborative)
    query: QuerySignals | None = Field(default_factory=QuerySignals)
    _lines: dict[tuple[Any, ...], int] = PrivateAttr(default_factory=dict)
    _path: str = PrivateAttr(default="<feature set>")

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSet:
        problems: list[str] = []
        seen: dict[str, str] = {}
        for section in ("documents", "request", "context"):
            for name in getattr(self, section):
                if not NAME.match(name):
                    problems.append(
                        f"{section}.{name}: names are letters, digits and _ (not starting with a digit)"
                    )
                if name in RESERVED:
                    problems.append(f"{section}.{name}: {name!r} is reserved")
                if name in seen:
                    problems.append(f"{section}.{name}: duplicate name (also declared in {seen[name]})")
                seen.setdefault(name, section)
        for name in self.affinities:
            attr = self.documents.get(name)
            if attr is None:
                problems.append(f"affinities: {name!r} is not a declared document attribute")
            elif attr.kind not in (
                DocumentKind.categorical,
                DocumentKind.multi_categorical,
                DocumentKind.numeric,
            ):
                problems.append(f"affinities: {name!r} is {attr.kind.value}; affinities need a categorical, "
                                "multi_categorical or numeric attribute")  # fmt: skip
        if len(set(self.affinities)) != len(self.affinities):
            problems.append("affinities: duplicate name")
        for name in self.query.text if self.query else []:
            attr = self.documents.get(name)
            if attr is None or attr.kind is not DocumentKind.text:
                problems.append(f"query.text: {name!r} must be a declared text attribute")
        for name, ctx in self.context.items():
            if ctx.values is not None and ctx.kind is not ContextKind.categorical:
                problems.append(f"context.{name}: values are for categorical context fields")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def version(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def attributes(self, *kinds: DocumentKind) -> dict[str, DocumentAttribute]:
        return {n: a for n, a in self.documents.items() if not kinds or a.kind in kinds}

    def overridable(self) -> set[str]:
        """Names a candidate's `features` may carry: request fields, and numeric/boolean document attributes (a
        request value overrides the stored one)."""
        return set(self.request) | set(self.attributes(DocumentKind.numeric, DocumentKind.boolean))

    def line_of(self, *path: Any) -> int | None:
        """The YAML line of a key (1-based), when loaded from a file."""
        while path:
            if path in self._lines:
                return self._lines[path]
            path = path[:-1]
        return None

    def where(self, *path: Any) -> str:
        line = self.line_of(*path)
        return f"{self._path}:{line}" if line else self._path

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


class FeatureSetError(ValueError):
    """A declaration that cannot be used; `problems` are `file:line: message` strings."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _loader() -> Any:
    import yaml

    class UniqueKeys(yaml.SafeLoader):
        """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            keys: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in keys:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate name {key!r} (first on line {keys[key].start_mark.line + 1})",
                        key_node.start_mark,
                    )  # fmt: skip
                keys[key] = key_node
            return super().construct_mapping(node, deep=deep)

    return UniqueKeys


def _lines(node: Any, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Each key path of a composed YAML node -> its 1-based line."""
    import yaml

    out: dict[tuple[Any, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, key_node.value)
            out[sub] = key_node.start_mark.line + 1
            out.update(_lines(value_node, sub))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            out.update(_lines(item, (*path, i)))
    return out


def parse_feature_set(text: str, path: str = "<feature set>") -> FeatureSet:
    """Validate a YAML declaration; every problem is reported as `path:line: message`."""
    import yaml

    loader = _loader()
    try:
        data = yaml.load(text, Loader=loader)  # a SafeLoader subclass
        node = yaml.compose(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise FeatureSetError([f"{path}{at}: {problem}"]) from None
    if not isinstance(data, dict):
        raise FeatureSetError([f"{path}: a feature set is a YAML mapping (name:, documents:, ...)"])
    lines = _lines(node) if node is not None else {}
    try:
        fs = FeatureSet.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(err["loc"])
            where = loc
            while where and where not in lines:
                where = where[:-1]
            line = lines.get(where)
            label = ".".join(str(p) for p in loc) or "(top level)"
            message = err["msg"].removeprefix("Value error, ")
            given = err.get("input")
            if loc and isinstance(given, str | int | float) and not isinstance(given, bool):
                message += f" (got {given!r})"
            if not loc:  # the cross-field checks: one line per problem, at its key
                for part in message.split("\n"):
                    key = part.split(":")[0].split(".")
                    key_line = lines.get(tuple(key)) or lines.get((key[0],))
                    problems.append(f"{path}:{key_line}: {part}" if key_line else f"{path}: {part}")
                continue
            problems.append(f"{path}:{line}: {label}: {message}" if line else f"{path}: {label}: {message}")
        raise FeatureSetError(problems) from None
    fs._lines = lines
    fs._path = path
    return fs


def install_feature_set(source: Path, active: Path, copy_to: Path | None = None) -> str:
    """Copy a dataset's declaration beside its files and, when no feature set is active yet, make it the active one;
    says which it did."""
    text = source.read_text()
    if copy_to is not None:
        copy_to.parent.mkdir(parents=True, exist_ok=True)
        copy_to.write_text(text)
    if active.exists():
        return f"kept the active feature set {active} (this dataset's: {copy_to or source})"
    active.parent.mkdir(parents=True, exist_ok=True)
    active.write_text(text)
    return f"feature set: {active} (from {source.name}; edit it to declare your own features)"


def load_feature_set(path: Path) -> FeatureSet:
    if not path.exists():
        raise FeatureSetError(
            [f"{path}: no such file (write one with `reranker features init --catalog FILE`)"]
        )
    return parse_feature_set(path.read_text(), str(path))


# ---------------------------------------------------------------- a declaration against a catalog


class CatalogCheck(BaseModel):
    errors: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


BOOLEAN_TEXT = {"0", "1", "true", "false", "yes", "no", "t", "f", "y", "n"}


def _share_unparseable(values: Any, kind: DocumentKind) -> float:
    """The share of non-missing values that the kind cannot read."""
    import pandas as pd

    present = values.dropna()
    present = present[present.astype(str).str.strip() != ""]
    if present.empty:
        return 0.0
    if kind is DocumentKind.numeric:
        if pd.api.types.is_bool_dtype(present):
            return 0.0
        bad = pd.to_numeric(present, errors="coerce").isna()
    elif kind is DocumentKind.boolean:
        if pd.api.types.is_bool_dtype(present) or pd.api.types.is_numeric_dtype(present):
            bad = ~present.astype(float).isin([0.0, 1.0])
        else:
            bad = ~present.astype(str).str.strip().str.lower().isin(BOOLEAN_TEXT)
    elif kind is DocumentKind.timestamp:
        if pd.api.types.is_datetime64_any_dtype(present):
            return 0.0
        bad = pd.to_datetime(present, errors="coerce", utc=True, format="mixed").isna()
    else:
        return 0.0
    return float(bad.mean())


def check_catalog(fs: FeatureSet, catalog: Any) -> CatalogCheck:
    """Every declared attribute exists in the catalog and its values fit the declared kind; undeclared catalog
    columns are listed (the model does not see them)."""
    import pandas as pd

    out = CatalogCheck()
    if "document_id" not in catalog.columns:
        out.errors.append("the catalog has no document_id column")
    used: set[str] = {"document_id"}
    for name, attr in fs.documents.items():
        column = attr.source(name)
        used.add(column)
        where = fs.where("documents", name)
        if column not in catalog.columns:
            out.errors.append(f"{where}: documents.{name}: the catalog has no column {column!r} "
                              f"(columns: {sorted(map(str, catalog.columns))})")  # fmt: skip
            continue
        values = catalog[column]
        bad = _share_unparseable(values, attr.kind)
        if bad > 0.05:
            sample = values.dropna().astype(str).head(3).tolist()
            out.errors.append(f"{where}: documents.{name}: declared {attr.kind.value}, but {bad:.0%} of the "
                              f"catalog's values are not ({sample})")  # fmt: skip
        elif (
            attr.kind is DocumentKind.categorical
            and pd.api.types.is_float_dtype(values)
            and values.nunique() > 1000
        ):
            out.warnings.append(f"{where}: documents.{name}: categorical with {values.nunique():,} distinct numbers; "
                                "numeric may suit it better")  # fmt: skip
        if values.isna().all():
            out.warnings.append(f"{where}: documents.{name}: every value is missing")
    unused = sorted(str(c) for c in catalog.columns if c not in used)
    if unused:
        out.warnings.append(f"catalog columns not declared, so not used by the model: {unused} "
                            f"(declare them under documents: in {fs._path})")  # fmt: skip
    return out


def infer_feature_set(
    catalog: Any, name: str = "my_catalog", requests: Any = None, contexts: Any = None
) -> FeatureSet:
    """A starting declaration from a catalog's columns (kinds guessed from the values; review it), and, when logs
    are given, from the request features (`requests`) and contexts (`contexts`) they carry (frames, one column per
    logged key)."""
    import pandas as pd

    documents: dict[str, dict[str, Any]] = {}
    for column in catalog.columns:
        if column == "document_id":
            continue
        values = catalog[column].dropna()
        key = _identifier(column)
        spec: dict[str, Any] = {} if key == column else {"column": str(column)}
        if pd.api.types.is_bool_dtype(values):
            kind = "boolean"
        elif pd.api.types.is_datetime64_any_dtype(values):
            kind = "timestamp"
        elif pd.api.types.is_numeric_dtype(values):
            kind = "boolean" if set(values.unique()) <= {0, 1} and len(values) else "numeric"
        elif len(values) and values.map(lambda v: isinstance(v, list | tuple)).all():
            kind = "multi_categorical"
        else:
            text = values.astype(str)
            if _share_unparseable(text, DocumentKind.numeric) == 0.0 and len(text):
                kind = "numeric"
            elif len(text) and _share_unparseable(text, DocumentKind.timestamp) == 0.0:
                kind = "timestamp"
            elif len(text) and text.str.contains("|", regex=False).mean() > 0.2:
                kind = "multi_categorical"
            elif (text.str.len().mean() > 40 or text.nunique() > max(200, 0.5 * len(text))
                  or (text.str.contains(" ").mean() > 0.5 and text.nunique() > 0.5 * len(text))):  # fmt: skip
                kind = (
                    "text"  # long, mostly distinct, or several words each and mostly distinct: words to match
                )
            else:
                kind = "categorical"
        documents[key] = {"kind": kind, **spec}
    request: dict[str, dict[str, Any]] = {}
    if requests is not None:
        for column in requests.columns:
            key = _identifier(column)
            if key not in documents and key != column:
                continue  # only names a candidate can send as they are
            values = pd.to_numeric(requests[column], errors="coerce").dropna()
            if key not in documents and len(values):
                request[key] = {"kind": "boolean" if set(values.unique()) <= {0, 1} else "numeric"}
    context: dict[str, dict[str, Any]] = {}
    if contexts is not None:
        for column in contexts.columns:
            key = _identifier(column)
            if key != column or key in documents or key in request:
                continue
            numbers = pd.to_numeric(contexts[column], errors="coerce")
            context[key] = {"kind": "numeric" if numbers.notna().mean() > 0.95 else "categorical"}
    affinities = [n for n, s in documents.items() if s["kind"] in ("categorical", "multi_categorical")][:3]
    text = [n for n, s in documents.items() if s["kind"] == "text"]
    data = {"name": name, "documents": documents, "request": request, "context": context, "affinities": affinities,
            "query": {"text": text}}  # fmt: skip
    return FeatureSet.model_validate(data)


def _identifier(column: Any) -> str:
    key = re.sub(r"[^A-Za-z0-9_]", "_", str(column))[:48]
    if not key or key[0].isdigit():
        key = f"c_{key}"[:48]
    return f"{key}_attr" if key in RESERVED else key
