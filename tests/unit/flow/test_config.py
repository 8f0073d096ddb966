"""Flow YAML: load, save, environment substitution and errors that point at file and line."""

from __future__ import annotations

import os

import pytest

from meshflow import ConfigError, Flow


def write(tmp_path: object, text: str, name: str = "flow.yml") -> str:
    path = os.path.join(str(tmp_path), name)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def test_load_builds_deployments_with_all_options(tmp_path: object) -> None:
    path = write(
        tmp_path,
        """
name: shop
with:
  port: 23456
executors:
  - name: enc
    uses: executors:Append
    uses_with: {suffix: "!"}
    replicas: 2
  - name: index
    uses: executors:MemoryIndex
    shards: 3
    polling: {/index: ANY, /search: ALL}
    needs: [enc]
    timeout: 2.5
""",
    )
    f = Flow.load_config(path)
    assert f.name == "shop" and f.port == 23456
    enc, index = f.deployments
    assert (enc.uses, dict(enc.uses_with), enc.replicas) == ("executors:Append", {"suffix": "!"}, 2)
    assert index.shards == 3 and index.needs == ("enc",) and index.timeout == 2.5
    assert dict(index.polling) == {"/index": "ANY", "/search": "ALL", "*": "ANY"}


def test_where_sync_methods_run_reaches_each_replicas_command_line(tmp_path: object) -> None:
    from meshflow.spec.launch import ExecutorLaunch

    path = write(
        tmp_path,
        """
executors:
  - name: fetch
    uses: executors:Who
    sync_workers: 4
    sync_calls: thread
  - name: rank
    uses: executors:Who
""",
    )
    fetch, rank = Flow.load_config(path).deployments
    argv = ExecutorLaunch.of(fetch, 0, 0, uses="executors:Who", port=1).to_argv()
    assert argv[argv.index("--sync-workers") + 1] == "4"
    assert argv[argv.index("--sync-calls") + 1] == "thread"
    plain = ExecutorLaunch.of(rank, 0, 0, uses="executors:Who", port=1).to_argv()
    assert "--sync-workers" not in plain and "--sync-calls" not in plain  # the defaults


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("sync_calls: inline", "sync_calls is 'inline'; use one of 'auto', 'thread'"),
        ("sync_workers: 0", "sync_workers must be a whole number >= 1"),
        ("sync_workers: two", "sync_workers must be a whole number >= 1"),
    ],
)
def test_bad_sync_options_name_the_executor(tmp_path: object, line: str, message: str) -> None:
    path = write(tmp_path, f"executors:\n  - uses: executors:Who\n    {line}\n")
    with pytest.raises(ConfigError, match=rf"executors\[0\]: .*{message}"):
        Flow.load_config(path)


def test_save_then_load_round_trips(tmp_path: object) -> None:
    f = (
        Flow(name="rt", port=34567)
        .add(uses="executors:Append", name="a", uses_with={"suffix": "s"})
        .add(uses="executors:Tag", name="b", needs="gateway", polling="ALL", shards=2)
        .add(uses="executors:Tag", name="c", needs=["a", "b"])
    )
    path = os.path.join(str(tmp_path), "out.yml")
    f.save_config(path)
    g = Flow.load_config(path)
    assert [d.to_dict() for d in g.deployments] == [d.to_dict() for d in f.deployments]
    assert (g.name, g.port) == ("rt", 34567)


def test_save_keeps_limits_cors_static_and_the_workspace(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meshflow import GraphQLLimits

    web = os.path.join(str(tmp_path), "web")
    os.makedirs(web)
    monkeypatch.chdir(str(tmp_path))
    f = Flow(
        name="rt",
        workspace="data",
        graphql_limits=GraphQLLimits(max_depth=3, refusal_burst=5),
        cors=["https://shop.example"],
        static={"/ui": web},
    ).add(uses="executors:Append")
    saved = os.path.join(str(tmp_path), "conf", "flow.yml")
    os.makedirs(os.path.dirname(saved))
    f.save_config(saved)
    monkeypatch.chdir("/")  # loaded from anywhere: paths are relative to the file
    g = Flow.load_config(saved)
    assert g.graphql_limits == GraphQLLimits(max_depth=3, refusal_burst=5)
    assert tuple(g.cors) == ("https://shop.example",)
    assert os.path.realpath(g.static["/ui"]) == os.path.realpath(web)
    assert os.path.realpath(g.workspace) == os.path.realpath(os.path.join(str(tmp_path), "data"))


def test_a_yaml_workspace_is_relative_to_the_file(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "with: {workspace: ws}\nexecutors:\n  - uses: executors:Append\n")
    monkeypatch.chdir("/")
    assert Flow.load_config(path).workspace == os.path.join(str(tmp_path), "ws")
    default = write(tmp_path, "executors:\n  - uses: executors:Append\n", "default.yml")
    assert Flow.load_config(default).workspace == os.path.join(str(tmp_path), "workspace")


def test_mesh_policies_load_from_yaml_and_round_trip(tmp_path: object) -> None:
    from meshflow import CircuitBreaker, HealthCheck, OutlierDetection, RetryPolicy

    path = write(
        tmp_path,
        """
with: {mesh: envoy}
executors:
  - uses: executors:Append
    name: enc
    lb: round_robin
    retries: {attempts: 2, per_try_timeout: 1.5, retry_on: [reset, unavailable]}
    health_check: {interval: 0.5}
    outlier_detection: {consecutive_failures: 5}
    circuit_breaker: {max_requests: 10}
""",
    )
    f = Flow.load_config(path)
    [dep] = f.deployments
    assert dep.lb == "round_robin"
    assert dep.retries == RetryPolicy(
        attempts=2, per_try_timeout=1.5, retry_on=("reset", "unavailable")
    )
    assert dep.health_check == HealthCheck(interval=0.5)
    assert dep.outlier_detection == OutlierDetection(consecutive_failures=5)
    assert dep.circuit_breaker == CircuitBreaker(max_requests=10)
    out = os.path.join(str(tmp_path), "again.yml")
    f.save_config(out)
    assert Flow.load_config(out).deployments == f.deployments


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("retries", "{attempts: 0}", "attempts must be 1 to 10"),
        ("retries", "{retry_on: [sometimes]}", "retry_on must name"),
        ("health_check", "{interval: -1}", "interval must be a positive number"),
        ("circuit_breaker", "{max_request: 3}", "unknown field"),
        ("lb", "fastest", "lb must be one of"),
    ],
)
def test_bad_mesh_policy_is_a_clear_error(
    tmp_path: object, option: str, value: str, message: str
) -> None:
    path = write(tmp_path, f"executors:\n  - uses: executors:Append\n    {option}: {value}\n")
    with pytest.raises(ConfigError, match=message):
        Flow.load_config(path)


def test_env_substitution_keeps_yaml_types(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MF_PORT", "45678")
    monkeypatch.setenv("MF_SUFFIX", "yes")
    path = write(
        tmp_path,
        """
with: {port: "${{ ENV.MF_PORT }}"}
executors:
  - uses: executors:Append
    uses_with: {suffix: "say-${{ ENV.MF_SUFFIX }}"}
""",
    )
    f = Flow.load_config(path)
    assert f.port == 45678
    assert f.deployments[0].uses_with == {"suffix": "say-yes"}


def test_missing_env_variable_names_file_line_and_key(tmp_path: object) -> None:
    path = write(
        tmp_path, "executors:\n  - uses: executors:Append\n    name: ${{ ENV.MF_NOPE_X }}\n"
    )
    with pytest.raises(ConfigError) as info:
        Flow.load_config(path)
    assert str(info.value).startswith(f"{path}:3: executors[0].name:")
    assert "MF_NOPE_X is not set" in str(info.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path: object) -> None:
    path = write(tmp_path, "executors:\n  - uses: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: invalid YAML"):
        Flow.load_config(path)


def test_unknown_key_names_its_line(tmp_path: object) -> None:
    path = write(tmp_path, "executors:\n  - uses: executors:Append\n    replica: 2\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3: executors\[0\].replica: unknown key"):
        Flow.load_config(path)


def test_bad_value_names_the_executor(tmp_path: object) -> None:
    path = write(tmp_path, "executors:\n  - uses: executors:Append\n    shards: 0\n")
    with pytest.raises(ConfigError, match=r"executors\[0\]: .*shards must be"):
        Flow.load_config(path)


def test_cycle_in_yaml_is_refused(tmp_path: object) -> None:
    path = write(
        tmp_path,
        """
executors:
  - {name: a, uses: executors:Append, needs: b}
  - {name: b, uses: executors:Append, needs: a}
""",
    )
    with pytest.raises(ConfigError, match="cycle"):
        Flow.load_config(path)


def test_executor_yaml_and_file_paths_are_relative_to_the_flow_file(tmp_path: object) -> None:
    write(
        tmp_path,
        "from meshflow import Executor, requests\n\n"
        "class Local(Executor):\n"
        "    @requests\n"
        "    def run(self, docs, **kwargs):\n"
        "        pass\n",
        name="local_exec.py",
    )
    write(tmp_path, "uses: local_exec.py:Local\nwith: {}\n", name="exec.yml")
    path = write(tmp_path, "executors:\n  - uses: exec.yml\n  - uses: local_exec.py:Local\n")
    f = Flow.load_config(path)
    assert all(d.executor_class.__name__ == "Local" for d in f.deployments)


def test_class_defined_in_a_script_cannot_be_saved(tmp_path: object) -> None:
    from meshflow import Executor

    class Inline(Executor):
        pass

    f = Flow().add(uses=Inline)
    with pytest.raises(ConfigError, match="defined in a script"):
        f.save_config(os.path.join(str(tmp_path), "x.yml"))


def test_a_yaml_manifest_of_persisted_queries_is_relative_to_the_file(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from meshflow.spec.persisted import sha256_hex

    body = "{ __typename }"
    os.makedirs(os.path.join(str(tmp_path), "ops"))
    manifest = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [{"id": sha256_hex(body), "body": body, "name": "T", "type": "query"}],
    }
    write(tmp_path, json.dumps(manifest), name="ops/pq.json")
    path = write(
        tmp_path,
        "with:\n  persisted_queries: {mode: safelist, manifest: ops/pq.json}\n"
        "executors:\n  - uses: executors:Append\n",
    )
    monkeypatch.chdir("/")
    f = Flow.load_config(path)
    assert f.persisted_queries.manifest == os.path.join(str(tmp_path), "ops", "pq.json")
    bad = write(tmp_path, "with:\n  persisted_queries: {mode: safelist, manifest: nope.json}\n")
    with pytest.raises(ConfigError, match=r"flow\.yml:\d+: with: persisted query manifest"):
        Flow.load_config(bad)
