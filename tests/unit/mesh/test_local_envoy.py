"""Where a local Flow's sidecars listen (no process started)."""

from __future__ import annotations

import os

from meshflow import Flow
from meshflow.mesh.local_envoy import MAX_SOCKET_PATH, EnvoyMesh, HostEnvoyMesh


def _mesh(cls: type[EnvoyMesh], run_dir: str) -> EnvoyMesh:
    return cls(Flow().add(uses="meshflow.executor:Executor", name="a").spec, run_dir, run_dir)


def test_each_join_gets_a_socket_of_its_own_named_by_its_label() -> None:
    for cls in (EnvoyMesh, HostEnvoyMesh):
        mesh = _mesh(cls, "/tmp/meshflow-abcdefgh")
        first, again = mesh._listen_socket("a-s0-r1"), mesh._listen_socket("a-s0-r1")
        assert first == "/tmp/meshflow-abcdefgh/a-s0-r1.1.mtls.sock"
        assert again == "/tmp/meshflow-abcdefgh/a-s0-r1.2.mtls.sock"  # the old one may drain


def test_a_label_too_long_for_a_socket_path_is_left_out() -> None:
    run_dir = "/tmp/" + "d" * 30
    mesh = _mesh(EnvoyMesh, run_dir)
    label = "n" * 63 + "-s10-r12"
    path = mesh._listen_socket(label)
    assert path == os.path.join(run_dir, "mtls-1.sock")
    assert len(os.fsencode(path)) <= MAX_SOCKET_PATH
    assert mesh._listen_socket("a-s0-r0") == os.path.join(run_dir, "a-s0-r0.2.mtls.sock")
