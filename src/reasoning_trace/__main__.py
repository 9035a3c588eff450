"""``python -m reasoning_trace`` runs the ``rtrace`` command line."""

from .cli import main

main()
