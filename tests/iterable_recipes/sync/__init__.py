"""Tests of the warehouse side of the Snowflake -> Iterable sync (fakesnow)."""
