"""Tests for the interop adapters; run with .venv/bin/python -m pytest -q interop/tests."""
