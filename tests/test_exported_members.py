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


def test_fleet_mode_is_exported_but_loaded_on_first_use() -> None:
    """``Fleet`` and friends are public names, imported only when first used."""
    import subprocess
    import sys

    code = (
        "import sys, reasoning_trace as r\n"
        "assert 'reasoning_trace.fleet' not in sys.modules\n"
        "assert r.Fleet.__module__ == 'reasoning_trace.fleet'\n"
        "assert r.replicate.__module__ == 'reasoning_trace.replicate'\n"
        "assert r.JetStreamStore.__module__ == 'reasoning_trace.jetstream_store'\n"
        "try:\n    r.nothing_here\nexcept AttributeError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "has no attribute 'nothing_here'" in done.stdout
