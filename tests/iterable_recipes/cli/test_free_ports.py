"""Ports for servers started later are distinct, free, and outside the range outgoing connections use."""

from __future__ import annotations

import socket

from iterable_recipes.cli.local_stack import ephemeral_range_start, free_ports


def test_the_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    assert all(port < ephemeral_range_start() for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing holds it once chosen
