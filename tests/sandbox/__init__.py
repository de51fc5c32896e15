"""Tests of the local stand-ins."""
