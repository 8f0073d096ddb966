"""A fixed port is refused only when something listens on it."""

from __future__ import annotations

import socket

import pytest

from meshflow import ConfigError
from meshflow.flow.flow import _check_port_free


def _port_left_in_time_wait() -> int:
    """A port whose server closed a connection first and stopped: the kernel keeps the
    connection in TIME_WAIT for a minute, as after a Flow on a fixed port served a client."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            served, _ = listener.accept()
            served.close()  # the server closes first: its side goes to TIME_WAIT
            client.recv(1)
    return port


def test_a_port_in_time_wait_after_the_last_flow_is_free() -> None:
    port = _port_left_in_time_wait()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the check did: refused for a minute
    _check_port_free("127.0.0.1", port, "graphql_port")


def test_a_port_someone_listens_on_is_refused() -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port={port}: the port is already in use"):
            _check_port_free("127.0.0.1", port)
