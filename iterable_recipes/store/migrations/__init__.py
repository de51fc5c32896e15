"""Alembic migrations of the app database (run by iterable_recipes.store.migrate)."""
