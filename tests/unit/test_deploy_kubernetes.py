"""Kubernetes export: manifests pass `kubernetes-validate --strict` (Kubernetes 1.37), Envoy
bootstraps pass `envoy --mode validate`, every shard's replicas are routed to, and the
certificates carry the local mesh's SPIFFE identities."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from cryptography import x509

from meshflow import ConfigError, Executor, Flow, JWTAuth
from meshflow.mesh.certs import spiffe_id

ENVOY = os.path.join(os.path.dirname(sys.executable), "envoy")
VALIDATE = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
SECRET = "KUBE_TEST_SECRET"


@pytest.fixture
def secret_env() -> Iterator[None]:
    os.environ[SECRET] = "s" * 40
    try:
        yield
    finally:
        os.environ.pop(SECRET, None)


def sample_flow() -> Flow:
    flow = Flow(
        name="kube_test",
        metrics=True,
        tracing=0.2,
        auth=JWTAuth(issuer="i", audience="a", secret_env=SECRET),
    )
    flow.add(uses="services.ranker:Ranker", name="left", needs="gateway", replicas=2)
    flow.add(uses="services.ranker:Ranker", name="right", needs="gateway", shards=2, replicas=3)
    flow.add(uses="services.ranker:Ranker", name="join", needs=["left", "right"])
    return flow


def manifests(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def validate(paths: list[str]) -> None:
    out = subprocess.run(
        [VALIDATE, "--strict", "-k", "1.37.0", *paths], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "passed" in out.stdout + out.stderr


def test_manifests_validate_route_everywhere_and_carry_the_mesh_identities(
    tmp_path: Any, secret_env: None
) -> None:
    out = str(tmp_path / "k8s")
    written = sample_flow().to_kubernetes_yaml(out, hpa=True, ingress_host="shop.example.test")
    [kustomization] = manifests(written[0])
    assert kustomization["namespace"] == "kube-test"
    files = sorted(kustomization["resources"])
    assert files == sorted(
        ["namespace.yaml", "left-s0.yaml", "right-s0.yaml", "right-s1.yaml", "join-s0.yaml",
         "gateway.yaml"]
    )  # fmt: skip
    secrets_file = os.path.join(out, "pki", "secrets.yaml")
    assert secrets_file in written and oct(os.stat(secrets_file).st_mode & 0o777) == "0o600"
    validate([os.path.join(out, f) for f in files] + [secrets_file])

    by_kind: dict[tuple[str, str], dict[str, Any]] = {}
    for f in files:
        for m in manifests(os.path.join(out, f)):
            assert m["kind"] == "Namespace" or m["metadata"]["namespace"] == "kube-test"
            assert m["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kube-test"
            by_kind[(m["kind"], m["metadata"]["name"])] = m

    replicas = {"left-s0": 2, "right-s0": 3, "right-s1": 3, "join-s0": 1}
    for name, count in replicas.items():
        deployment = by_kind[("Deployment", name)]
        assert deployment["spec"]["replicas"] == count
        pod = deployment["spec"]["template"]
        service = by_kind[("Service", name)]
        assert service["spec"]["clusterIP"] == "None"  # headless: every pod is seen
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        executor, envoy = pod["spec"]["containers"]
        assert executor["readinessProbe"]["exec"]["command"][:2] == ["meshflow", "ping"]
        assert executor["resources"]["limits"] and envoy["resources"]["requests"]
        assert ("PodDisruptionBudget", name) in by_kind
        assert by_kind[("HorizontalPodAutoscaler", name)]["spec"]["minReplicas"] == count
        assert "--tracing" in executor["args"]

    gateway = by_kind[("Deployment", "gateway")]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in gateway["containers"][0]["env"]}
    assert "value" not in env[SECRET]  # referenced, never embedded
    assert env[SECRET]["valueFrom"]["secretKeyRef"] == {"name": "kube-test-jwt", "key": SECRET}
    assert ("Ingress", "gateway") in by_kind

    bootstrap = yaml.safe_load(by_kind[("ConfigMap", "gateway-envoy")]["data"]["envoy.yaml"])
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    for dep, shard in [("left", 0), ("right", 0), ("right", 1), ("join", 0)]:
        cluster = clusters[f"{dep}.shard{shard}"]
        assert cluster["type"] == "STRICT_DNS"
        [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert address == {
            "address": f"{dep}-s{shard}.kube-test.svc.cluster.local",
            "port_value": 15000,
        }
        assert spiffe_id("kube_test", dep) in str(cluster["transport_socket"])

    # the certificates: each workload's SAN is its local-mesh SPIFFE id
    secrets = {m["metadata"]["name"]: m for m in manifests(secrets_file)}
    pki = str(tmp_path / "pki")
    for workload in ("gateway", "left", "right", "join"):
        data = secrets[f"meshflow-tls-{workload}"]["data"]
        cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
            spiffe_id("kube_test", workload)
        ]
        folder = os.path.join(pki, workload)
        os.makedirs(folder)
        for key, value in data.items():
            with open(os.path.join(folder, key), "wb") as fh:
                fh.write(base64.b64decode(value))

    # every Envoy bootstrap, with its pod's certificates in place
    checked = 0
    for (kind, name), m in by_kind.items():
        if kind != "ConfigMap":
            continue
        workload = "gateway" if name == "gateway-envoy" else name.split("-s")[0]
        text = m["data"]["envoy.yaml"].replace("/etc/meshflow/pki", os.path.join(pki, workload))
        text = text.replace("/run/meshflow/", str(tmp_path) + "/")
        local = str(tmp_path / f"{name}.yaml")
        with open(local, "w", encoding="utf-8") as fh:
            fh.write(text)
        done = subprocess.run(
            [ENVOY, "--mode", "validate", "-c", local], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, name + done.stdout + done.stderr
        checked += 1
    assert checked == 5


def test_cert_manager_certificates(tmp_path: Any, secret_env: None) -> None:
    out = str(tmp_path / "k8s")
    sample_flow().to_kubernetes_yaml(out, cert_manager=True, namespace="shop")
    docs = manifests(os.path.join(out, "certificates.yaml"))
    assert docs[0]["kind"] == "Issuer" and docs[0]["spec"]["ca"]["secretName"] == "kube-test-ca"
    uris = {d["spec"]["secretName"]: d["spec"]["uris"] for d in docs[1:]}
    assert uris["meshflow-tls-join"] == [spiffe_id("kube_test", "join")]
    assert all(d["metadata"]["namespace"] == "shop" for d in docs)


def test_bad_input_is_refused_with_advice(tmp_path: Any) -> None:
    class Local(Executor):
        pass

    with pytest.raises(ConfigError, match="Move it into a module"):
        Flow(name="x").add(uses=Local).to_kubernetes_yaml(str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="outside the build context"):
        Flow(name="x", static={"/ui": str(tmp_path)}).add(
            uses="services.ranker:Ranker"
        ).to_kubernetes_yaml(str(tmp_path / "b"))
    done = subprocess.run(
        [sys.executable, "-m", "meshflow", "export", "kubernetes", str(tmp_path / "none.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "needs OUTDIR" in done.stderr


def test_the_signing_key_is_mounted_into_the_gateway_alone(tmp_path: Any, secret_env: None) -> None:
    out = str(tmp_path / "k8s")
    written = sample_flow().to_kubernetes_yaml(out)
    secrets = {
        m["metadata"]["name"]: m for m in manifests(os.path.join(out, "pki", "secrets.yaml"))
    }
    assert "gateway.key" in secrets["kube-test-gateway-signing"]["data"]
    assert "gateway.pub" in secrets["kube-test-gateway-key"]["data"]
    mounted: dict[str, list[str]] = {}
    for path in written[1:]:
        if not path.endswith(".yaml"):  # the image's Dockerfile and its ignore file
            continue
        for m in manifests(path):
            if not isinstance(m, dict) or m.get("kind") != "Deployment":
                continue
            pod = m["spec"]["template"]["spec"]
            for volume in pod["volumes"]:
                secret = volume.get("secret", {}).get("secretName")
                if secret:
                    users = [
                        c["name"]
                        for c in pod["containers"]
                        if any(v["name"] == volume["name"] for v in c["volumeMounts"])
                    ]
                    mounted.setdefault(secret, []).extend(users)
    assert mounted["kube-test-gateway-signing"] == ["gateway"]
    assert set(mounted["kube-test-gateway-key"]) == {"executor"}
    assert "kube-test-ca" not in mounted


def test_stateful_executors_get_one_pod_per_shard_and_no_autoscaler(
    tmp_path: Any, secret_env: None
) -> None:
    replicated = Flow(name="x").add(
        uses="services.vector_indexer:VectorIndexer", name="index", shards=2, replicas=2
    )
    with pytest.raises(ConfigError, match="each Kubernetes pod has a workspace of its own"):
        replicated.to_kubernetes_yaml(str(tmp_path / "a"))
    flow = Flow(name="x").add(uses="services.vector_indexer:VectorIndexer", name="index", shards=2)
    flow.add(uses="services.ranker:Ranker", name="rank")
    out = str(tmp_path / "b")
    flow.to_kubernetes_yaml(out, hpa=True)
    kinds = {
        name: [d["kind"] for d in manifests(os.path.join(out, name))]
        for name in ("index-s0.yaml", "index-s1.yaml", "rank-s0.yaml")
    }
    assert "HorizontalPodAutoscaler" not in kinds["index-s0.yaml"] + kinds["index-s1.yaml"]
    assert "HorizontalPodAutoscaler" in kinds["rank-s0.yaml"]


def test_the_app_goes_to_kubernetes_with_its_web_page(tmp_path: Any) -> None:
    """The main job: shop-the-look's Flow (static files included) exports, and its gateway
    serves the page from the image."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = str(tmp_path / "k8s")
    done = subprocess.run(
        [
            *(sys.executable, "-m", "meshflow", "export", "kubernetes"),
            *(os.path.join(root, "services", "shop_the_look", "flow.yml"), out),
            *("--extras", "index,models", "--image", "registry.example/shop:1"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
        env={**os.environ, "SHOP_THE_LOOK_SECRET": "x" * 40},
    )
    assert done.returncode == 0, done.stderr
    [deployment] = [
        m for m in manifests(os.path.join(out, "gateway.yaml")) if m["kind"] == "Deployment"
    ]
    [gateway] = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "gateway"
    ]
    assert gateway["image"] == "registry.example/shop:1"
    static = gateway["args"][gateway["args"].index("--static") + 1]
    assert static == '{"/ui": "/app/services/shop_the_look/web"}'
    with open(os.path.join(out, "Dockerfile"), encoding="utf-8") as fh:
        dockerfile = fh.read()
    assert "COPY . /app" in dockerfile and "/src/meshflow[index,models]" in dockerfile
    validate([os.path.join(out, name) for name in os.listdir(out) if name.endswith(".yaml")])
