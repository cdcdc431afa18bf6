"""A small IAM policy evaluator for tests: moto stores policies but enforces none.

It follows the documented evaluation logic for one identity-based policy
document (IAM User Guide, "Policy evaluation logic" and "IAM JSON policy
elements: Condition operators"): an explicit Deny wins, else any Allow whose
Action, Resource and every Condition match, else the implicit deny. Actions
match case-insensitively, resources case-sensitively, both with `*` and `?`
wildcards. Conditions: the String*, Arn* and Bool operators, `...IfExists`,
`Null`, and the `ForAnyValue:` / `ForAllValues:` set qualifiers; the keys of
one operator are ANDed, the values of one key ORed (negated operators: NORed).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping

Context = Mapping[str, str | list[str]]


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, text: str, *, case: bool) -> bool:
    regex = fnmatch.translate(pattern.replace("[", "[[]"))  # IAM has no character classes
    return re.match(regex, text, 0 if case else re.IGNORECASE) is not None


def _matches_one(operator: str, expected: str, actual: str) -> bool:
    if operator in ("StringEquals", "ArnEquals"):
        return actual == expected
    if operator == "StringEqualsIgnoreCase":
        return actual.lower() == expected.lower()
    if operator in ("StringLike", "ArnLike"):
        return _wildcard(expected, actual, case=True)
    if operator == "Bool":
        return actual.lower() == str(expected).lower()
    raise NotImplementedError(f"condition operator {operator}")


_NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike", "ArnNotLike": "ArnLike"}


def _condition_holds(operator: str, key: str, expected, context: Context) -> bool:
    qualifier, _, operator = operator.rpartition(":")
    if operator == "Null":  # "true": the key must be absent
        return (key not in context) == (str(_listed(expected)[0]).lower() == "true")
    if_exists = operator.endswith("IfExists")
    operator = operator.removesuffix("IfExists")
    if key not in context:  # a negated operator holds for a missing key, as AWS evaluates it
        return if_exists or qualifier == "ForAllValues" or operator in _NEGATED
    positive = _NEGATED.get(operator, operator)
    expected_values = [str(value) for value in _listed(expected)]
    actual_values = _listed(context[key])

    def one(actual: str) -> bool:
        hit = any(_matches_one(positive, value, actual) for value in expected_values)
        return not hit if operator in _NEGATED else hit

    if qualifier == "ForAllValues":
        return all(one(actual) for actual in actual_values)
    if qualifier == "ForAnyValue" or len(actual_values) > 1:
        return any(one(actual) for actual in actual_values)
    return one(actual_values[0])


def statement_applies(statement: dict, action: str, resource: str, context: Context) -> bool:
    if "Action" in statement:
        if not any(_wildcard(pattern, action, case=False) for pattern in _listed(statement["Action"])):
            return False
    elif any(_wildcard(pattern, action, case=False) for pattern in _listed(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_wildcard(pattern, resource, case=True) for pattern in _listed(statement["Resource"])):
            return False
    elif any(_wildcard(pattern, resource, case=True) for pattern in _listed(statement["NotResource"])):
        return False
    return all(
        _condition_holds(operator, key, expected, context)
        for operator, keys in statement.get("Condition", {}).items()
        for key, expected in keys.items()
    )


def decision(policy: dict, action: str, resource: str, context: Context | None = None) -> str:
    """'Allow', 'Deny' (explicit) or 'ImplicitDeny' for one request."""
    applying = [s for s in _listed(policy["Statement"]) if statement_applies(s, action, resource, context or {})]
    if any(s["Effect"] == "Deny" for s in applying):
        return "Deny"
    return "Allow" if applying else "ImplicitDeny"


def allowed(policy: dict, action: str, resource: str, context: Context | None = None) -> bool:
    return decision(policy, action, resource, context) == "Allow"
