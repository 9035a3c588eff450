"""Benchmarks of reasoning-trace; each compares against a baseline run in the same script."""
