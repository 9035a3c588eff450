"""Redaction: fields replaced by a marker before a record is written (SPEC section 1).

A rule is a field path under ``votes``, ``subject`` or ``reason`` (``subject.api_key``,
``votes.*.reason``: ``*`` matches one level) or a callable that receives the record's fields
and returns the concrete paths to redact. Each matched value becomes ``REDACTED`` and its path
is listed in the record's ``redacted``; the caller's objects are never mutated. A rule that
fails, or returns a path that is not in the record, refuses the record (``RedactionError``):
nothing unredacted is ever written.
Tests: ``tests/test_record.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .errors import RedactionError

__all__ = ["REDACTED", "Redactor", "apply_redaction", "check_redactors"]

REDACTED = "[redacted]"
#: A redaction rule: a field path (``subject.api_key``, ``votes.*.reason``) or a callable that
#: receives the record's fields and returns the concrete paths to redact.
Redactor = str | Callable[[Mapping[str, Any]], Iterable[str]]


_REDACTABLE = ("votes", "subject", "reason")


def _expand(fields: dict[str, Any], pattern: str) -> list[tuple[list[str], str]]:
    """Concrete (key path, dotted path) pairs matching ``pattern``; ``*`` matches one level."""
    parts = pattern.split(".")
    found: list[tuple[list[str], str]] = []

    def walk(node: Any, i: int, keys: list[str]) -> None:
        if i == len(parts):
            found.append((keys, ".".join(keys)))
            return
        if not isinstance(node, dict):
            return
        if parts[i] == "*":
            for key in node:
                walk(node[key], i + 1, [*keys, key])
        elif parts[i] in node:
            walk(node[parts[i]], i + 1, [*keys, parts[i]])

    walk(fields, 0, [])
    return found


def _copy_path(fields: dict[str, Any], keys: list[str]) -> None:
    """Replace the value at ``keys`` with the redaction marker, copying dicts on the way so
    the caller's objects are never mutated."""
    node = fields
    for key in keys[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    node[keys[-1]] = REDACTED


def check_redactors(rules: Sequence[Redactor]) -> tuple[Redactor, ...]:
    """Validate path rules once, when a log is opened."""
    for rule in rules:
        if isinstance(rule, str):
            head = rule.split(".", 1)[0]
            if head not in _REDACTABLE or not all(rule.split(".")):
                raise RedactionError(
                    rule, f"redaction paths must start with one of {', '.join(_REDACTABLE)}"
                )
        elif not callable(rule):
            raise RedactionError("", f"a redaction rule must be a str or callable, not {rule!r}")
    return tuple(rules)


def apply_redaction(fields: dict[str, Any], rules: Sequence[Redactor]) -> list[str]:
    """Apply ``rules`` to ``fields`` (copying what changes); return the redacted paths in the
    order they were redacted. Raises ``RedactionError`` as the module docstring says."""
    paths: list[str] = []
    for rule in rules:
        if isinstance(rule, str):
            matches = _expand(fields, rule)
        else:
            try:
                wanted = list(rule(fields))
            except Exception as exc:  # any failure of user code refuses the record (SPEC 1)
                raise RedactionError("", f"redaction rule {rule!r} failed: {exc!r}") from exc
            matches = []
            for path in wanted:
                if not isinstance(path, str) or path.split(".", 1)[0] not in _REDACTABLE:
                    raise RedactionError(str(path), "redaction rule returned an invalid path")
                hits = _expand(fields, path)
                if not hits:
                    raise RedactionError(path, "redaction rule returned a path not in the record")
                matches.extend(hits)
        for keys, dotted in matches:
            if dotted not in paths:
                _copy_path(fields, keys)
                paths.append(dotted)
    return paths
