"""What a search's ``filter`` and a listing's match conditions select, as LangGraph's stores define them.

A filter maps value fields ("user.age" for a nested one) to what they must be: a plain value (equal; a dict compares field by field, a list
element by element) or operators, ``{"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"}`` (the four comparisons take
numbers; a missing field or one that is not a number matches none of them). A match condition is a namespace
prefix or suffix in which "*" stands for any one label.
"""

from __future__ import annotations

from typing import Any

from langgraph.store.base import MatchCondition

from lift_tool.errors import InputError

COMPARISONS = {"$gt": float.__gt__, "$gte": float.__ge__, "$lt": float.__lt__, "$lte": float.__le__}


def matches_filter(value: dict[str, Any], filter: dict[str, Any] | None) -> bool:
    """Whether ``value`` has every field as ``filter`` asks."""
    return not filter or all(_matches(_field(value, field), wanted) for field, wanted in filter.items())


def _field(value: dict[str, Any], name: str) -> Any:
    """A field of ``value``; a dotted name that is not a field itself names a nested one ("user.age")."""
    if name in value or "." not in name:
        return value.get(name)
    for part in name.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _matches(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        if any(str(name).startswith("$") for name in wanted):
            return all(_apply(actual, operator, operand) for operator, operand in wanted.items())
        return isinstance(actual, dict) and all(_matches(actual.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, (list, tuple)):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(wanted)
                and all(_matches(a, w) for a, w in zip(actual, wanted)))
    return _same(actual, wanted)


def _same(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, bool) or isinstance(wanted, bool):  # JSON's true is not the number 1
        return type(actual) is type(wanted) and actual == wanted
    return actual == wanted


def _apply(actual: Any, operator: str, operand: Any) -> bool:
    if operator == "$eq":
        return _matches(actual, operand)
    if operator == "$ne":
        return not _matches(actual, operand)
    if operator not in COMPARISONS:
        raise InputError(f"unknown filter operator {operator!r}: use $eq, $ne, $gt, $gte, $lt or $lte")
    number, bound = _number(actual), _number(operand)
    if bound is None:
        raise InputError(f"the filter operator {operator} needs a number, got {operand!r}")
    return number is not None and COMPARISONS[operator](number, bound)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def matches_namespace(namespace: tuple[str, ...], condition: MatchCondition) -> bool:
    """Whether ``namespace`` starts (or ends) with the condition's path, "*" matching any one label."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        part = namespace[: len(path)]
    elif condition.match_type == "suffix":
        part = namespace[len(namespace) - len(path):]
    else:
        raise InputError(f"unknown namespace match type {condition.match_type!r}: use prefix or suffix")
    return all(wanted == "*" or label == wanted for label, wanted in zip(part, path))


__all__ = ["matches_filter", "matches_namespace"]
