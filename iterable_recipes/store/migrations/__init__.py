"""Alembic migrations of the app database (run by inbox.migrations_runner.migrate)."""
