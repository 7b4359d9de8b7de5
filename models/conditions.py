"""Conditions over candidates, in the seed's `structured_filter` form: a leaf `{field, operator, value}`, or
`{"AND": [...]}`, `{"OR": [...]}`, `{"NOT": {...}}` (lower case too; a list means AND), nested.

Operators: eq, ne, gt, gte, lt, lte, in, nin, exists, is_null, contains, starts_with, ends_with. Strings compare
case-insensitively unless `case_sensitive`; a multi-valued field (a list) matches eq / in / contains when any of its
values does. A missing field matches only `exists: false`, `is_null` and the negative operators (ne, nin).

Fields are read through a `FieldSource` (the pipeline's candidates, with their catalog attributes): `document_id`,
`content`, `score`, `features.<name>` and `metadata.<name>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "exists", "is_null", "contains", "starts_with",
             "ends_with")  # fmt: skip
MAX_DEPTH = 8
MAX_LEAVES = 64
MAX_LIST = 1_000


class ConditionError(ValueError):
    """A malformed condition; `path` says where in it (e.g. `AND[1].operator`)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class FieldSource(Protocol):
    def values(self, field: str) -> Sequence[Any]:
        """The field's value for every candidate (None where it has none)."""
        ...


@dataclass(frozen=True)
class Leaf:
    field: str
    operator: str
    value: Any = None
    case_sensitive: bool = False

    def fields(self) -> set[str]:
        return {self.field}

    def evaluate(self, source: FieldSource) -> list[bool]:
        test = _test(self.operator, self.value, self.case_sensitive)
        return [test(v) for v in source.values(self.field)]


@dataclass(frozen=True)
class Group:
    op: str  # AND | OR | NOT
    parts: tuple[Condition, ...]

    def fields(self) -> set[str]:
        return set().union(*(p.fields() for p in self.parts))

    def evaluate(self, source: FieldSource) -> list[bool]:
        results = [p.evaluate(source) for p in self.parts]
        if self.op == "NOT":
            return [not v for v in results[0]]
        combine = all if self.op == "AND" else any
        return [combine(column) for column in zip(*results, strict=True)]


Condition = Leaf | Group


def parse_condition(spec: Any, path: str = "", case_sensitive: bool = False) -> Condition:
    """The condition of a JSON value, checked (unknown operators, bad values and over-deep trees are refused)."""
    leaves = [0]

    def walk(node: Any, where: str, depth: int) -> Condition:
        if depth > MAX_DEPTH:
            raise ConditionError(where, f"conditions nest at most {MAX_DEPTH} deep")
        if isinstance(node, list):
            return Group("AND", tuple(walk(n, f"{where}[{i}]", depth + 1) for i, n in enumerate(node)))
        if not isinstance(node, dict):
            raise ConditionError(
                where, "a condition is an object {field, operator, value} or {AND|OR|NOT: ...}"
            )
        groups = [k for k in node if k.upper() in ("AND", "OR", "NOT")]
        if groups:
            if len(node) != 1:
                raise ConditionError(where, f"a group has one key, got {sorted(node)}")
            key = groups[0]
            op, inner = key.upper(), node[key]
            if op == "NOT":
                return Group("NOT", (walk(inner, f"{where}.{key}", depth + 1),))
            if not isinstance(inner, list) or not inner:
                raise ConditionError(f"{where}.{key}", f"{key} takes a non-empty list of conditions")
            return Group(op, tuple(walk(n, f"{where}.{key}[{i}]", depth + 1) for i, n in enumerate(inner)))
        leaves[0] += 1
        if leaves[0] > MAX_LEAVES:
            raise ConditionError(where, f"at most {MAX_LEAVES} conditions")
        extra = set(node) - {"field", "operator", "value", "case_sensitive"}
        if extra:
            raise ConditionError(
                where, f"unknown keys {sorted(extra)} (a condition has field, operator, value)"
            )
        field, operator = node.get("field"), node.get("operator", "eq")
        if not isinstance(field, str) or not field or len(field) > 256:
            raise ConditionError(f"{where}.field", "field: a non-empty name such as metadata.category")
        check_field(field, f"{where}.field")
        if operator not in OPERATORS:
            raise ConditionError(
                f"{where}.operator", f"unknown operator {str(operator)[:40]!r}: one of {OPERATORS}"
            )
        value = node.get("value", True if operator in ("exists", "is_null") else None)
        _check_value(operator, value, f"{where}.value")
        return Leaf(field, operator, value, bool(node.get("case_sensitive", case_sensitive)))

    return walk(spec, path, 0)


def check_field(field: str, where: str) -> None:
    head = field.split(".", 1)[0]
    if field in ("document_id", "content", "score") or (head in ("features", "metadata") and "." in field):
        return
    raise ConditionError(where, f"unknown field {field[:80]!r}: document_id, content, score, features.<name> or "
                                "metadata.<name>")  # fmt: skip


def _check_value(operator: str, value: Any, where: str) -> None:
    if operator in ("in", "nin"):
        if not isinstance(value, list) or len(value) > MAX_LIST:
            raise ConditionError(where, f"{operator} takes a list of at most {MAX_LIST} values")
        if any(isinstance(v, dict | list) for v in value):
            raise ConditionError(where, f"{operator} takes a list of plain values")
    elif operator in ("exists", "is_null"):
        if not isinstance(value, bool):
            raise ConditionError(where, f"{operator} takes true or false")
    elif operator in ("gt", "gte", "lt", "lte"):
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ConditionError(where, f"{operator} takes a number (or a string to compare as text)")
    elif operator in ("contains", "starts_with", "ends_with"):
        if not isinstance(value, str | int | float) or (isinstance(value, bool) and operator != "contains"):
            raise ConditionError(where, f"{operator} takes a string")
    elif isinstance(value, dict | list):
        raise ConditionError(where, f"{operator} takes a plain value (a string, number, boolean or null)")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _norm(v: Any, case_sensitive: bool) -> Any:
    if isinstance(v, str):
        return v if case_sensitive else v.casefold()
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float):
        return float(v)
    return v


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(
        b, bool
    ):  # true matches 1.0 (a boolean attribute stored as a number)
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    if (isinstance(a, float) and isinstance(b, str)) or (isinstance(a, str) and isinstance(b, float)):
        try:
            return float(a) == float(b)
        except ValueError:
            return False
    return bool(a == b)


def _test(operator: str, value: Any, case_sensitive: bool) -> Callable[[Any], bool]:
    target = (
        [_norm(v, case_sensitive) for v in value] if isinstance(value, list) else _norm(value, case_sensitive)
    )

    def items(v: Any) -> list[Any]:
        if isinstance(v, list | tuple):
            return [_norm(x, case_sensitive) for x in v if not _missing(x)]
        return [_norm(v, case_sensitive)]

    def compare(v: Any) -> bool:
        if isinstance(v, list | tuple):
            return any(compare(x) for x in v)
        a: Any = _norm(v, case_sensitive)
        t: Any = target
        try:
            if isinstance(a, str) != isinstance(t, str):
                a_num, t_num = float(a), float(t)
            else:
                a_num, t_num = a, t
            return bool({"gt": a_num > t_num, "gte": a_num >= t_num, "lt": a_num < t_num,
                         "lte": a_num <= t_num}[operator])  # fmt: skip
        except (TypeError, ValueError):
            return False

    def check(v: Any) -> bool:
        missing = _missing(v) or (isinstance(v, list | tuple) and not v)
        if operator == "exists":
            return (not missing) == target
        if operator == "is_null":
            return missing == target
        if missing:
            return operator in ("ne", "nin")
        if operator == "eq":
            return any(_equal(x, target) for x in items(v))
        if operator == "ne":
            return not any(_equal(x, target) for x in items(v))
        if operator == "in":
            return any(_equal(x, t) for x in items(v) for t in target)
        if operator == "nin":
            return not any(_equal(x, t) for x in items(v) for t in target)
        if operator in ("gt", "gte", "lt", "lte"):
            return compare(v)
        text = str(target)
        strings = [x if isinstance(x, str) else str(x) for x in items(v)]
        if operator == "contains":
            return any(text == s or (text in s) for s in strings)
        if operator == "starts_with":
            return any(s.startswith(text) for s in strings)
        return any(s.endswith(text) for s in strings)

    return check
