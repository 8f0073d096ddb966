"""Ports for the servers tests start."""

from __future__ import annotations

import random
import socket

FIRST = 20000


def ephemeral_start() -> int:
    """The first port of the range the OS hands out to outgoing connections and bind(0)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_tcp_port() -> int:
    """A loopback port the OS says is free, below its ephemeral range when it can: a port
    that bind(0) handed out may be taken by any outgoing connection before the test's server
    binds it (seen in CI: 'gateway cannot listen on 127.0.0.1:42695'); ports below the range
    are never given to a connection."""
    end = ephemeral_start()
    if end - FIRST > 1000:
        rng = random.Random()
        for _ in range(200):
            port = rng.randrange(FIRST, end)
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
