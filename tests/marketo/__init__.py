"""Tests of the Marketo client, its stand-in and its spec check."""
