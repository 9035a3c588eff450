"""The public surface is explicit and guarded."""

import reasoning_trace


def test_all_is_sorted_and_complete() -> None:
    """``__all__`` is sorted and names every public class and function the package exposes."""
    names = reasoning_trace.__all__
    assert names == sorted(names)
    public = {
        name
        for name, value in vars(reasoning_trace).items()
        if not name.startswith("_") and (isinstance(value, type) or callable(value))
    }
    assert public <= set(names), public - set(names)


def test_seed_helpers_are_importable() -> None:
    """The seed's private helpers exist because existing tests monkeypatch them."""
    assert callable(reasoning_trace._resolve_trace_dir)
    assert callable(reasoning_trace._file_for)
