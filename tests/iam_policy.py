"""A tiny IAM policy evaluator, enough to test deploy/iam (moto has no policy simulator).

It follows IAM's order for one identity policy: an explicit Deny wins, else any Allow whose
Action, Resource and Condition all match, else the implicit deny. Actions match case-insensitively
and resources case-sensitively, both with IAM's ``*`` and ``?`` wildcards. Conditions support the
operators deploy/iam uses; a key missing from the request context fails its condition, as in IAM.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import Any

_OPERATORS = {
    "StringEquals": lambda value, pattern: value == pattern,
    "StringLike": lambda value, pattern: _wildcard(pattern).fullmatch(value) is not None,
    "ArnLike": lambda value, pattern: _wildcard(pattern).fullmatch(value) is not None,
}


def _wildcard(pattern: str, *, ignore_case: bool = False) -> re.Pattern:
    # fnmatch's [] classes are not IAM syntax: escape them before translating * and ?.
    escaped = pattern.replace("[", "[[]")
    return re.compile(fnmatch.translate(escaped), re.IGNORECASE if ignore_case else 0)


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _matches(statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]) -> bool:
    if not any(_wildcard(a, ignore_case=True).fullmatch(action) for a in _as_list(statement["Action"])):
        return False
    if not any(_wildcard(r).fullmatch(resource) for r in _as_list(statement["Resource"])):
        return False
    for operator, tests in statement.get("Condition", {}).items():
        compare = _OPERATORS[operator]
        for key, patterns in tests.items():
            if key not in context or not any(compare(context[key], p) for p in _as_list(patterns)):
                return False
    return True


def allowed(policy: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str] | None = None) -> bool:
    """Whether ``policy`` allows ``action`` on ``resource`` given the request ``context`` keys."""
    hits = [s["Effect"] for s in policy["Statement"] if _matches(s, action, resource, context or {})]
    return "Deny" not in hits and "Allow" in hits
