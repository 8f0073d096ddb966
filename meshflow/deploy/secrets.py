"""The certificates of a Kubernetes export: Secrets made from the Flow's CA (``OUTDIR/pki``,
kept out of the manifests' folder), or cert-manager Certificates; the gateway's signing key
pair as Secrets of their own."""

from __future__ import annotations

import base64
import os
from typing import Any

import yaml

from meshflow.deploy.common import HasSpec, PlainDumper
from meshflow.mesh.certs import FlowCA, spiffe_id, write_private
from meshflow.spec.flow import FlowSpec
from meshflow.voucher import Signer


def k8s_name(text: str) -> str:
    return text.lower().replace("_", "-").replace(".", "-")


def tls_secret(workload: str) -> str:
    return k8s_name(f"meshflow-tls-{workload}")


def certificates(flow: str, workloads: list[str], meta: Any) -> list[dict[str, Any]]:
    """cert-manager: a CA Issuer (the Flow's CA, from the Secret ``<flow>-ca``) and one
    Certificate per workload with its SPIFFE id as URI SAN."""
    issuer = k8s_name(f"{flow}-ca")
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "cert-manager.io/v1",
            "kind": "Issuer",
            "metadata": meta(issuer, "pki"),
            "spec": {"ca": {"secretName": issuer}},
        }
    ]
    for workload in workloads:
        out.append(
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": meta(tls_secret(workload), "pki"),
                "spec": {
                    "secretName": tls_secret(workload),
                    "uris": [spiffe_id(flow, workload)],
                    "commonName": f"{flow}/{workload}",
                    "duration": "8760h",
                    "renewBefore": "720h",
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                    "usages": ["server auth", "client auth"],
                    "issuerRef": {"name": issuer, "kind": "Issuer"},
                },
            }
        )
    return out


def signing_secret(flow: str) -> str:
    return k8s_name(f"{flow}-gateway-signing")


def gateway_key_secret(flow: str) -> str:
    return k8s_name(f"{flow}-gateway-key")


def signing_secrets(flow: str, pki_dir: str, meta: Any) -> list[dict[str, Any]]:
    """The gateway's signing key (kept in ``pki_dir`` across exports) as a Secret only the
    gateway mounts, and its public key as one the executors mount."""

    path = os.path.join(pki_dir, "gateway-signing.key")
    try:
        with open(path, "rb") as fh:
            signer = Signer.from_pem(fh.read())
    except FileNotFoundError:
        signer = Signer.generate()
        write_private(path, signer.private_pem, 0o600)

    def secret(name: str, key: str, data: bytes) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": meta(name, "pki"),
            "data": {key: base64.b64encode(data).decode()},
        }

    return [
        secret(signing_secret(flow), "gateway.key", signer.private_pem),
        secret(gateway_key_secret(flow), "gateway.pub", signer.public_pem),
    ]


def tls_secrets(flow: str, workloads: list[str], pki_dir: str, meta: Any) -> list[dict[str, Any]]:
    """Secrets of the Flow's CA (kept in ``pki_dir``): the CA itself (``<flow>-ca``, for a
    cert-manager Issuer), then one per workload."""

    def read(path: str) -> str:
        with open(path, "rb") as fh:
            return base64.b64encode(fh.read()).decode()

    ca = FlowCA(pki_dir, flow)
    out = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": meta(k8s_name(f"{flow}-ca"), "pki"),
            "data": {"tls.crt": read(ca.ca_cert_path), "tls.key": read(str(ca.ca_key_path))},
        }
    ]
    for workload in workloads:
        identity = ca.identity(workload)
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/tls",
                "metadata": meta(tls_secret(workload), "pki"),
                "data": {
                    "tls.crt": read(identity.cert),
                    "tls.key": read(identity.key),
                    "ca.crt": read(identity.ca),
                },
            }
        )
    return out


def write_secrets(flow: HasSpec | FlowSpec, out_dir: str, namespace: str | None = None) -> str:
    """The certificate Secrets of ``flow`` (from the CA in ``out_dir``), one file, 0600."""
    flow = flow if isinstance(flow, FlowSpec) else flow.spec
    ns = namespace or k8s_name(flow.name)
    workloads = ["gateway"] + [dep.name for dep in flow.deployments]

    def meta(name: str, component: str) -> dict[str, Any]:
        return {
            "name": name,
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/part-of": k8s_name(flow.name),
                "app.kubernetes.io/component": component,
            },
        }

    pki = os.path.join(out_dir, "ca")
    secrets = tls_secrets(flow.name, workloads, pki, meta)
    if flow.auth is not None:
        secrets += signing_secrets(flow.name, pki, meta)
    path = os.path.join(out_dir, "secrets.yaml")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# Certificates of the Flow's CA: apply, never commit.\n")
        yaml.dump_all(secrets, fh, Dumper=PlainDumper, sort_keys=False)
    return path
