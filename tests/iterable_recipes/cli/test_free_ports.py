"""Ports for servers started later are distinct, free, and outside the range outgoing connections use."""

from __future__ import annotations

import socket
from pathlib import Path

from iterable_recipes.cli.local_stack import free_ports


def test_the_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(port < low for port in ports)
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing holds it once chosen
