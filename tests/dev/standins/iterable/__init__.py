"""Tests of the Iterable stand-in, over real sockets."""
