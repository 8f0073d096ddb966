"""Identities inside a Flow cannot be forged: executors believe only the gateway's voucher,
executors cannot reach each other, and no file of the Flow holds the CA's or the gateway's
signing key."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import yaml
from authkeys import AUDIENCE, ISSUER, SCOPES, Keys

from meshflow import DocumentArray, Flow, JWTAuth
from meshflow.identity import Identity
from meshflow.mesh.local_envoy import EnvoyMesh
from meshflow.proto.v1 import data_request_pb2
from meshflow.voucher import Signer
from meshflow.wire import EXECUTOR_PROCESS


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys.generate()


@pytest.fixture(scope="module")
def vouched(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    """Two executors behind a gateway that checks tokens, over the Envoy mesh."""
    folder = str(tmp_path_factory.mktemp("vouch"))
    paths = keys.write(folder)
    flow = Flow(
        name="vouched",
        mesh="envoy",
        workspace=os.path.join(folder, "ws"),
        log_dir=os.path.join(folder, "logs"),
        auth=JWTAuth(issuer=ISSUER, audience=AUDIENCE, jwks_file=paths["jwks"], scopes=SCOPES),
    )
    flow.add(uses="executors:Guarded", name="first").add(uses="executors:Guarded", name="second")
    with flow:
        yield flow


def _replica(flow: Flow, name: str) -> dict[str, Any]:
    [dep] = [d for d in flow.describe()["deployments"] if d["name"] == name]
    replica: dict[str, Any] = dep["replicas"][0]
    return replica


def _call_socket(flow: Flow, request: data_request_pb2.DataRequest) -> data_request_pb2.DataRequest:
    """Call executor ``first`` on its unix socket, as a process of the Flow's user could."""
    address = _replica(flow, "first")["executor"]["address"]
    with grpc.insecure_channel(address) as channel:
        raw = channel.unary_unary(EXECUTOR_PROCESS)(request.SerializeToString(), timeout=10)
    return data_request_pb2.DataRequest.FromString(raw)


def _search(request_id: str = "r1") -> data_request_pb2.DataRequest:
    request = data_request_pb2.DataRequest(
        header=data_request_pb2.Header(endpoint="/search", request_id=request_id)
    )
    request.docs.add(id="d1")
    return request


def test_a_valid_gateway_call_carries_the_identity(vouched: Flow, keys: Keys) -> None:
    vouched.token = keys.token(scope="search:read", sub="carol", tenant="acme")
    answer = vouched.client.send("/search", DocumentArray.empty(1))[0]
    for name in ("first", "second"):
        assert answer.results[name]["subject"] == "carol"
        assert answer.results[name]["tenant"] == "acme"


def test_a_forged_voucher_on_an_executor_socket_is_refused(vouched: Flow) -> None:
    request = _search()
    forged = Signer.generate().sign("r1", Identity("root", frozenset({"meshflow:admin"})))
    request.header.voucher.CopyFrom(forged)
    with pytest.raises(grpc.RpcError) as refused:
        _call_socket(vouched, request)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "not signed by the gateway" in str(refused.value.details())


def test_a_request_without_voucher_on_an_executor_socket_is_refused(vouched: Flow) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        _call_socket(vouched, _search())
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_old_unsigned_identity_field_is_ignored(vouched: Flow) -> None:
    # What worked before: header field 6 (Auth) written by hand. It is reserved now, so the
    # executor sees no identity and, in a Flow with auth, refuses the request.
    auth = data_request_pb2.Auth(subject="root", scopes=["meshflow:admin"])
    field6 = b"\x0a" + _varint(len(auth.SerializeToString()) + 2)
    field6 += b"\x32" + _varint(len(auth.SerializeToString())) + auth.SerializeToString()
    address = _replica(vouched, "first")["executor"]["address"]
    with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(EXECUTOR_PROCESS)(_search().SerializeToString() + field6, timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _varint(n: int) -> bytes:
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])


def test_a_voucher_of_another_request_is_refused(vouched: Flow) -> None:
    # The gateway's key is nowhere to be read; a voucher for r1 cannot be moved to r2 either.
    request = _search("r2")
    request.header.voucher.CopyFrom(Signer.generate().sign("r1", Identity("root")))
    with pytest.raises(grpc.RpcError) as refused:
        _call_socket(vouched, request)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _tls_hello(listener: str, cert: str, key: str) -> bytes:
    """The first TLS record of a sidecar's mTLS listener (a unix socket) after the client's
    HTTP/2 preface, or b"" when it refuses ``cert``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    context.load_cert_chain(cert, key)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(5)
        raw.connect(listener)
        try:
            with context.wrap_socket(raw) as tls:
                tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04" + bytes(5))
                return tls.recv(1024)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return b""


def test_an_executor_cannot_reach_another_executors_sidecar(vouched: Flow) -> None:
    first, second = _replica(vouched, "first"), _replica(vouched, "second")
    pki = os.path.join(os.path.dirname(first["sidecar"]["config"]), "pki")
    # What executor 'second' could present: its own workload's certificate of the Flow's CA.
    assert _tls_hello(first["sidecar"]["listener"], f"{pki}/second.crt", f"{pki}/second.key") == (
        b""
    )
    # The gateway's certificate is let in (the refusal above is about the identity).
    answer = _tls_hello(second["sidecar"]["listener"], f"{pki}/gateway.crt", f"{pki}/gateway.key")
    assert answer[3:4] == b"\x04"


def test_each_sidecar_config_names_only_its_own_key(vouched: Flow) -> None:
    status = vouched.describe()
    owners = {status["gateway"]["sidecar"]["config"]: "gateway"}
    for dep in status["deployments"]:
        for r in dep["replicas"]:
            owners[r["sidecar"]["config"]] = dep["name"]
    for path, owner in owners.items():
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        keys = {
            line.split("filename:")[1].strip()
            for line in text.splitlines()
            if "filename:" in line and line.strip().endswith(".key")
        }
        assert {os.path.basename(k) for k in keys} == {f"{owner}.key"}
        yaml.safe_load(text)


def _files(*roots: str) -> Iterator[str]:
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in names:
                yield os.path.join(folder, name)


def test_no_file_holds_the_ca_key_or_the_signing_key(vouched: Flow) -> None:
    runtime = vouched._runtime  # the Flow's own process holds both keys
    assert runtime is not None and isinstance(runtime.mesh, EnvoyMesh)
    assert runtime.mesh.ca is not None
    ca_key = runtime.mesh.ca._ca_key.private_numbers().private_value.to_bytes(32, "big")
    signing = runtime._signing_key
    assert signing is not None
    from cryptography.hazmat.primitives import serialization

    ca_pem = runtime.mesh.ca._ca_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    assert runtime.mesh.ca.ca_key_path is None
    for path in _files(vouched.workspace, runtime.run_dir, str(vouched.log_dir)):
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            data = fh.read()
        assert ca_pem not in data and ca_key not in data, path
        assert signing not in data and signing.split(b"\n")[1] not in data, path
    gateway_pid = vouched.describe()["gateway"]["pid"]
    with open(f"/proc/{gateway_pid}/cmdline", "rb") as fh:
        assert b"PRIVATE KEY" not in fh.read()
    with open(f"/proc/{gateway_pid}/environ", "rb") as fh:
        assert b"PRIVATE KEY" not in fh.read()


def test_executors_get_only_the_public_key(vouched: Flow) -> None:
    runtime = vouched._runtime
    assert runtime is not None
    for replica in runtime.replicas:
        command = replica.executor.command
        path = command[command.index("--gateway-key-file") + 1]
        with open(path, "rb") as fh:
            assert fh.read().startswith(b"-----BEGIN PUBLIC KEY-----")
        assert replica.executor.stdin is None
        assert "--signing-key-file" not in command


def test_the_gateway_process_is_not_dumpable() -> None:
    probe = (
        "import ctypes\n"
        "from meshflow.cli.run import _not_dumpable\n"
        "_not_dumpable()\n"
        "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0))\n"  # PR_GET_DUMPABLE
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "0"


def test_a_restarted_gateway_gets_its_signing_key_again(vouched: Flow, keys: Keys) -> None:
    import signal
    import time

    before = vouched.describe()["gateway"]["pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = vouched.describe()["gateway"]
        if status["pid"] != before and status["serving"]:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the gateway did not come back")
    vouched.token = keys.token(scope="search:read", sub="dora")
    answer = vouched.client.send("/search", DocumentArray.empty(1), timeout=30)[0]
    assert answer.results["first"]["subject"] == "dora"
