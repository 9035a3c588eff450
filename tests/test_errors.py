"""The exception tree drawn in ``errors.py``'s docstring is the one the classes make."""

from __future__ import annotations

import re

from reasoning_trace import errors

#: A line of the drawing: the tree's prefix, the class, and its other bases in parentheses.
LINE = re.compile(r"^(?P<prefix>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)(?: \((?P<mixins>[A-Za-z, ]+)\))?")


def drawn() -> dict[str, tuple[str | None, set[str]]]:
    """Each class in the drawing -> (the class it hangs from, the other bases it names)."""
    doc = errors.__doc__ or ""
    body = doc.split("::", 1)[1].split("\n\n")[1]
    parents: list[str] = []  # the class at each depth so far
    found: dict[str, tuple[str | None, set[str]]] = {}
    for text in body.splitlines():
        m = LINE.match(text.strip("\n")[4:])  # the drawing is indented by four spaces
        assert m, text
        depth = len(m["prefix"]) // 4
        del parents[depth:]
        mixins = {x.strip() for x in (m["mixins"] or "").split(",") if x.strip()}
        found[m["name"]] = (parents[-1] if parents else None, mixins)
        parents.append(m["name"])
    return found


def test_every_error_class_is_drawn_where_it_is() -> None:
    """Every exception class of ``errors`` appears in the drawing under its base class, with
    the built-in exception it also is (``UsageError (ValueError)``)."""
    tree = drawn()
    mine = [c for c in vars(errors).values() if getattr(c, "__module__", "") == errors.__name__]
    classes = {c.__name__: c for c in mine if isinstance(c, type) and issubclass(c, Exception)}
    assert set(classes) == set(tree)
    for name, (parent, mixins) in tree.items():
        bases = {b.__name__ for b in classes[name].__bases__}
        assert bases == ({parent} if parent else {"Exception"}) | mixins, name


def test_a_usage_error_is_a_value_error() -> None:
    """One ``UsageError``: a ``ReasoningTraceError`` and a ``ValueError`` both."""
    assert issubclass(errors.UsageError, errors.ReasoningTraceError)
    assert issubclass(errors.UsageError, ValueError)
