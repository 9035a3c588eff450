"""Tests of reasoning-trace, one module per library module."""
