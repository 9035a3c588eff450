"""``python -m reasoning_trace`` runs the ``rtrace`` command line.

Tests: ``tests/test_cli_integrity.py`` (its ``rtrace`` helper runs this when no ``rtrace`` is
installed), ``tests/test_faults.py``.
"""

from .cli import main

main()
