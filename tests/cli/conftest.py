"""Fixtures of the CLI tests: the fresh app database of tests/integration.py."""

from tests.integration import app_database  # noqa: F401
