"""The deploy files against the tools that can run here: promtool, amtool, systemd-analyze,
a Kubernetes schema check, and the wiring between compose, Prometheus and Grafana files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from .daemon_util import ROOT
from .dashboard import DASHBOARD, metric_names
from .prometheus_stack import binary


def test_metric_names_reads_promql():
    assert metric_names(
        'histogram_quantile(0.99, sum by (probe, le) (rate(im_x_bucket{target=~"$t"}[5m])))'
    ) == {"im_x_bucket"}
    assert metric_names('time() - im_last{a="b"} > 300 and on (target) a:b:c') == {
        "im_last",
        "a:b:c",
    }


def test_promtool_checks_the_shipped_prometheus_config():
    result = subprocess.run(
        [binary("promtool"), "check", "config", str(ROOT / "deploy/prometheus/prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_provisioning_points_at_the_dashboard_folder():
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/im-prober.yml").read_text()
    )
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    path = provider["providers"][0]["options"]["path"]
    assert any(m.endswith(":" + path) or m.endswith(f":{path}:ro") for m in mounts)
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "im-prober"
    assert Path(path).name == "im-prober"


DEPLOY = ROOT / "deploy"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )


def test_amtool_accepts_the_alertmanager_config():
    result = run(binary("amtool"), "check-config", str(DEPLOY / "alertmanager/alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_pages_and_tickets_reach_their_receivers():
    rules = yaml.safe_load((DEPLOY / "prometheus/im-prober.rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 10
    for alert in alerts:
        severity = alert["labels"]["severity"]
        result = run(
            binary("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={DEPLOY / 'alertmanager/alertmanager.yml'}",
            f"alertname={alert['alert']}",
            f"severity={severity}",
            "target=t",
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == severity, alert["alert"]


def test_systemd_analyze_verifies_the_unit_without_a_warning(tmp_path):
    systemd_analyze = binary("systemd-analyze")
    unit = (DEPLOY / "systemd/im-prober.service").read_text()
    assert "DynamicUser=yes" in unit and "StateDirectory=im-prober" in unit
    assert "ProtectSystem=strict" in unit and "NoNewPrivileges=yes" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    # verify insists that ExecStart exists: point it at this checkout's command.
    command = Path(sys.executable).with_name("im-prober")
    copy = tmp_path / "im-prober.service"
    copy.write_text(unit.replace("/usr/local/bin/im-prober", str(command)))
    result = run(systemd_analyze, "verify", str(copy))
    # An unknown or misplaced key is only a warning (exit 0): any output is a failure.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stderr


def test_kubernetes_manifests_match_the_api_schemas():
    folder = DEPLOY / "kubernetes"
    names = yaml.safe_load((folder / "kustomization.yaml").read_text())["resources"]
    checked = [str(folder / n) for n in names if n != "servicemonitor.yaml"]
    result = run(
        str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "--quiet", *checked
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_deployment_is_a_single_writer():
    deployment = yaml.safe_load((DEPLOY / "kubernetes/deployment.yaml").read_text())
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["ledger"]["persistentVolumeClaim"]["claimName"] == "im-prober-ledger"
    assert mounts["ledger"] == "/var/lib/im-prober"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    service = yaml.safe_load((DEPLOY / "kubernetes/service.yaml").read_text())
    assert service["spec"]["publishNotReadyAddresses"] is True
    monitor = yaml.safe_load((DEPLOY / "kubernetes/servicemonitor.yaml").read_text())
    assert monitor["kind"] == "ServiceMonitor"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_the_shipped_configs_are_valid_and_agree(tmp_path):
    configmap = yaml.safe_load((DEPLOY / "kubernetes/configmap.yaml").read_text())
    in_cluster = yaml.safe_load(configmap["data"]["config.yaml"])
    in_compose = yaml.safe_load((DEPLOY / "im-prober/config.yaml").read_text())
    assert in_cluster == in_compose
    assert in_compose["ledger"]["path"].startswith("/var/lib/im-prober/")
    env = {**os.environ, "MATRIX_PASSWORD": "pw-one-canary", "MATRIX_PEER_PASSWORD": "pw-two-c"}
    result = run(
        sys.executable,
        "-m",
        "prober",
        "check-config",
        "-c",
        str(DEPLOY / "im-prober/config.yaml"),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "pw-one-canary" not in result.stdout


def test_compose_mounts_files_that_exist_and_wires_the_services():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"im-prober", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
    build = services["im-prober"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "im-prober"
    assert job["static_configs"][0]["targets"] == ["im-prober:9469"]
    alertmanagers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]
    mounted = {v.split(":")[1] for v in services["prometheus"]["volumes"]}
    for rule_file in prometheus["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounted
    datasource = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_the_dockerfile_runs_as_non_root_with_the_ledger_on_a_volume():
    text = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split()[0] for line in text.splitlines() if line and line[0].isupper()]
    assert instructions.count("FROM") == 2 and "python:3.11-slim" in text
    user = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user and not user[-1].split()[1].startswith(("0", "root"))
    assert 'VOLUME ["/var/lib/im-prober"]' in text
    assert "HEALTHCHECK" in instructions and "/healthz" in text
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source


# The fleet (issue 13): deploy/kubernetes-fleet (a kustomize overlay of deploy/kubernetes,
# with a CloudNativePG component) and deploy/docker-compose.fleet.yml.

FLEET = DEPLOY / "kubernetes-fleet"
FLEET_COMPOSE = DEPLOY / "docker-compose.fleet.yml"
# The Compose Specification's own JSON schema (compose-spec/compose-spec, schema/
# compose-spec.json, Apache-2.0; see tests/schemas/README.md): no compose binary runs here.
COMPOSE_SCHEMA = ROOT / "tests/schemas/compose-spec.json"
# The environment the fleet settings read, as agreed for issue 13, until prober.config names
# them itself (fleet_environment reads its ENV_* constants once they exist).
AGREED_FLEET_ENV = {
    "vantage": "IM_PROBER_VANTAGE",
    "shard_index": "IM_PROBER_SHARD_INDEX",
    "shard_count": "IM_PROBER_SHARD_COUNT",
}
POD_INDEX = "metadata.labels['apps.kubernetes.io/pod-index']"


def fleet_environment() -> dict[str, str]:
    """The variable names behind vantage, shard index and shard count: from prober.config's
    `ENV_*` constants where it defines them, else the agreed names."""
    import importlib
    import pkgutil

    import prober.config

    constants: dict[str, str] = {}
    modules = [prober.config] + [
        importlib.import_module(f"prober.config.{m.name}")
        for m in pkgutil.iter_modules(prober.config.__path__)
    ]
    for module in modules:
        for name, value in vars(module).items():
            if name.startswith("ENV_") and isinstance(value, str) and value.startswith("IM_"):
                constants[name] = value
    if not constants:
        return dict(AGREED_FLEET_ENV)

    def pick(*words: str) -> str:
        (value,) = {v for k, v in constants.items() if all(w in k for w in words)}
        return value

    return {
        "vantage": pick("VANTAGE"),
        "shard_index": pick("SHARD", "INDEX"),
        "shard_count": pick("SHARD", "COUNT"),
    }


def kubectl_kustomize(folder: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its kustomize) is not installed: the overlay is not built")
    result = run(kubectl, "kustomize", str(folder))
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def validate_kubernetes(documents: list[dict], tmp_path: Path) -> None:
    """kubernetes-validate --strict on the documents of the built-in API (the CRDs'
    kinds have no schema there); any warning fails too, so a misspelt apiVersion does."""
    custom = {"monitoring.coreos.com/v1", "postgresql.cnpg.io/v1"}
    builtin = [d for d in documents if d["apiVersion"] not in custom]
    assert builtin
    path = tmp_path / f"manifests-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump_all(builtin))
    result = run(
        str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "--quiet", str(path)
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout


def by_kind(documents: list[dict]) -> dict[tuple[str, str], dict]:
    found: dict[tuple[str, str], dict] = {}
    for d in documents:
        key = (d["kind"], d["metadata"]["name"])
        assert key not in found, f"{key} twice"
        found[key] = d
    return found


def with_cloudnativepg(tmp_path: Path) -> Path:
    """A copy of the base and the fleet overlay with the CloudNativePG component enabled as
    the overlay's comment says (uncommenting its `components:` line)."""
    shutil.copytree(DEPLOY / "kubernetes", tmp_path / "kubernetes")
    copy = shutil.copytree(FLEET, tmp_path / "kubernetes-fleet")
    text = (copy / "kustomization.yaml").read_text()
    assert text.count("\n# components: [cloudnativepg]\n") == 1
    (copy / "kustomization.yaml").write_text(
        text.replace("\n# components: [cloudnativepg]\n", "\ncomponents: [cloudnativepg]\n")
    )
    return copy


def fleet_config(documents: list[dict]) -> dict:
    configmap = by_kind(documents)[("ConfigMap", "im-prober-config")]
    return yaml.safe_load(configmap["data"]["config.yaml"])


def prober_container(statefulset: dict) -> dict:
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return container


def test_the_fleet_manifests_match_the_api_schemas(tmp_path):
    # As files (what a reader copies) and as kustomize builds them (what is applied).
    files = [
        d
        for name in ("statefulset.yaml", "pdb.yaml", "db-secret.example.yaml", "configmap.yaml")
        for d in yaml.safe_load_all((FLEET / name).read_text())
    ]
    validate_kubernetes(files, tmp_path)
    validate_kubernetes(kubectl_kustomize(FLEET), tmp_path)
    validate_kubernetes(kubectl_kustomize(with_cloudnativepg(tmp_path / "cnpg")), tmp_path)


def test_the_fleet_overlay_replaces_the_single_writer_with_a_statefulset():
    resources = by_kind(kubectl_kustomize(FLEET))
    assert set(resources) == {
        ("ConfigMap", "im-prober-config"),
        ("Secret", "im-prober-secrets"),
        ("Secret", "im-prober-db"),
        ("Service", "im-prober"),
        ("StatefulSet", "im-prober"),
        ("PodDisruptionBudget", "im-prober"),
        ("ServiceMonitor", "im-prober"),
    }, "no Deployment and no SQLite volume claim in a fleet"
    assert {r["metadata"].get("namespace") for r in resources.values()} == {"monitoring"}
    statefulset = resources[("StatefulSet", "im-prober")]
    spec = statefulset["spec"]
    assert spec["replicas"] == 3
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    # The headless Service gives every pod its address: Prometheus scrapes each vantage,
    # also while /readyz fails; exactly one Service selects the pods (no scrape twice).
    service = resources[("Service", spec["serviceName"])]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    services = [r for (kind, _), r in resources.items() if kind == "Service"]
    assert [s for s in services if s["spec"]["selector"].items() <= pod_labels.items()] == [service]
    monitor = resources[("ServiceMonitor", "im-prober")]
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    pdb = resources[("PodDisruptionBudget", "im-prober")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    # Probes, resources and the security context as the single prober's Deployment has.
    single = yaml.safe_load((DEPLOY / "kubernetes/deployment.yaml").read_text())
    (single_container,) = single["spec"]["template"]["spec"]["containers"]
    container = prober_container(statefulset)
    for key in ("livenessProbe", "readinessProbe", "resources", "securityContext", "ports"):
        assert container[key] == single_container[key], key
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    pod = spec["template"]["spec"]
    assert pod["securityContext"] == single["spec"]["template"]["spec"]["securityContext"]
    assert "persistentVolumeClaim" not in json.dumps(pod)


def test_the_statefulset_sets_the_environment_the_config_reads():
    resources = by_kind(kubectl_kustomize(FLEET))
    statefulset = resources[("StatefulSet", "im-prober")]
    env = {e["name"]: e for e in prober_container(statefulset)["env"]}
    names = fleet_environment()
    assert env[names["vantage"]]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env[names["shard_index"]]["valueFrom"] == {"fieldRef": {"fieldPath": POD_INDEX}}
    assert env[names["shard_count"]]["value"] == str(statefulset["spec"]["replicas"])
    # The password: the variable the config's ledger.password names, from the Secret.
    config = fleet_config(list(resources.values()))
    password_env = config["ledger"]["password"]["env"]
    secret_ref = env[password_env]["valueFrom"]["secretKeyRef"]
    assert secret_ref["key"] in resources[("Secret", secret_ref["name"])]["stringData"]
    assert set(env) == {*names.values(), password_env}, "a variable nothing reads"
    url = urlsplit(config["ledger"]["url"])
    assert url.scheme == "postgresql" and url.username and url.password is None
    assert "path" not in config["ledger"], "exactly one of path / url"
    single = yaml.safe_load((DEPLOY / "im-prober/config.yaml").read_text())
    assert config["targets"] == single["targets"] and config["web"] == single["web"]


# The parts of CloudNativePG's Cluster the example uses (its CRD, postgresql.cnpg.io/v1, is
# not among kubernetes-validate's schemas): misspelt or misplaced keys fail here.
CLUSTER_SHAPE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "postgresql.cnpg.io/v1"},
        "kind": {"const": "Cluster"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["instances", "storage", "bootstrap"],
            "additionalProperties": False,
            "properties": {
                "instances": {"type": "integer", "minimum": 1},
                "storage": {
                    "type": "object",
                    "required": ["size"],
                    "additionalProperties": False,
                    "properties": {"size": {"type": "string"}, "storageClass": {"type": "string"}},
                },
                "bootstrap": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "initdb": {
                            "type": "object",
                            "required": ["database", "owner"],
                            "additionalProperties": False,
                            "properties": {
                                "database": {"type": "string"},
                                "owner": {"type": "string"},
                            },
                        }
                    },
                },
                "resources": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"requests": {"type": "object"}, "limits": {"type": "object"}},
                },
            },
        },
    },
}


def test_the_cloudnativepg_example_feeds_the_operators_secret_to_the_probers(tmp_path):
    import jsonschema

    resources = by_kind(kubectl_kustomize(with_cloudnativepg(tmp_path)))
    clusters = [r for (kind, _), r in resources.items() if kind == "Cluster"]
    (cluster,) = clusters
    jsonschema.validate(cluster, CLUSTER_SHAPE)
    name = cluster["metadata"]["name"]
    assert cluster["metadata"]["namespace"] == "monitoring"
    # The operator makes <name>-app (the owner's password) and <name>-rw (the primary).
    assert ("Secret", "im-prober-db") not in resources, "the hand-made Secret is dropped"
    container = prober_container(resources[("StatefulSet", "im-prober")])
    config = fleet_config(list(resources.values()))
    password = next(e for e in container["env"] if e["name"] == config["ledger"]["password"]["env"])
    assert password["valueFrom"] == {"secretKeyRef": {"name": f"{name}-app", "key": "password"}}
    url = urlsplit(config["ledger"]["url"])
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert (url.hostname, url.username, url.path) == (
        f"{name}-rw",
        initdb["owner"],
        "/" + initdb["database"],
    )
    assert url.password is None
    # The rest of the StatefulSet is the plain overlay's.
    plain = prober_container(by_kind(kubectl_kustomize(FLEET))[("StatefulSet", "im-prober")])
    assert {e["name"] for e in container["env"]} == {e["name"] for e in plain["env"]}


def test_the_cluster_shape_check_can_fail():
    import jsonschema

    cluster = yaml.safe_load((FLEET / "cloudnativepg/cluster.yaml").read_text())
    jsonschema.validate(cluster, CLUSTER_SHAPE)
    cluster["spec"]["bootstrap"]["initdb"]["ownr"] = cluster["spec"]["bootstrap"]["initdb"].pop(
        "owner"
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, CLUSTER_SHAPE)


def compose_errors(document: dict) -> list[str]:
    import jsonschema

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_the_compose_files_match_the_compose_specification():
    for path in (DEPLOY / "docker-compose.yml", FLEET_COMPOSE):
        assert compose_errors(yaml.safe_load(path.read_text())) == [], path.name
    broken = yaml.safe_load(FLEET_COMPOSE.read_text())
    broken["services"]["postgres"]["helthcheck"] = broken["services"]["postgres"].pop("healthcheck")
    assert compose_errors(broken), "the schema check must catch a misspelt key"


def test_the_fleet_compose_runs_two_vantages_on_one_postgresql(tmp_path):
    compose = yaml.safe_load(FLEET_COMPOSE.read_text())
    services = compose["services"]
    probers = {n: s for n, s in services.items() if s.get("image") == "im-prober:local"}
    assert set(probers) == {"im-prober-a", "im-prober-b"}
    names = fleet_environment()
    assert {s["environment"][names["vantage"]] for s in probers.values()} == {"a", "b"}
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:") and "/" not in postgres["image"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
    (config_mount,) = {v for s in probers.values() for v in s["volumes"]}
    source, target = config_mount.split(":")[:2]
    assert target == "/etc/im-prober/config.yaml"
    config = yaml.safe_load((DEPLOY / source).read_text())
    # The ledger: the postgres service's database, user and password.
    url = urlsplit(config["ledger"]["url"])
    assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432)
    assert url.username == postgres["environment"]["POSTGRES_USER"] and url.password is None
    assert url.path == "/" + postgres["environment"]["POSTGRES_DB"]
    password_env = config["ledger"]["password"]["env"]
    for service in probers.values():
        assert service["environment"][password_env] == postgres["environment"]["POSTGRES_PASSWORD"]
        assert set(service["environment"]) - {names["vantage"], password_env} == {
            "MATRIX_PASSWORD",
            "MATRIX_PEER_PASSWORD",
        }, "the probers differ only in their vantage"
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "shard" not in config.get("fleet", {}), "both vantages probe every target"
    single = yaml.safe_load((DEPLOY / "im-prober/config.yaml").read_text())
    assert config["targets"] == single["targets"] and config["web"] == single["web"]
    port = int(config["web"]["listen_address"].rsplit(":", 1)[1])
    # Prometheus: its config laid out as mounted, checked by promtool, scraping both.
    mounted = tmp_path / "etc-prometheus"
    mounted.mkdir()
    for volume in services["prometheus"]["volumes"]:
        source, target = volume.split(":")[:2]
        if target.startswith("/etc/prometheus/"):
            shutil.copy(DEPLOY / source, mounted / target.removeprefix("/etc/prometheus/"))
    result = run(binary("promtool"), "check", "config", str(mounted / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    prometheus = yaml.safe_load((mounted / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "im-prober"
    assert sorted(job["static_configs"][0]["targets"]) == [f"{n}:{port}" for n in sorted(probers)]
    alertmanagers = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"] and "alertmanager" in services
    published = [p.split(":")[1] for s in probers.values() for p in s["ports"]]
    assert len(set(published)) == len(probers), "each prober on its own host port"


def fleet_settings_parsed() -> bool:
    from prober.config.models import Config

    return "fleet" in Config.model_fields and "vantage" in Config.model_fields


def check_config(path: Path, **environment: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MATRIX_PASSWORD": "pw-one-canary",
        "MATRIX_PEER_PASSWORD": "pw-two-c",
        "IM_PROBER_DB_PASSWORD": "pw-db-canary",
        **environment,
    }
    return run(sys.executable, "-m", "prober", "check-config", "-c", str(path), env=env)


def test_the_shipped_fleet_configs_are_valid(tmp_path):
    if not fleet_settings_parsed():
        pytest.skip("prober.config does not parse the fleet settings yet (issue 13)")
    names = fleet_environment()
    in_cluster = tmp_path / "config.yaml"
    in_cluster.write_text(
        yaml.safe_load((FLEET / "configmap.yaml").read_text())["data"]["config.yaml"]
    )
    pod = {names["vantage"]: "im-prober-2", names["shard_index"]: "2", names["shard_count"]: "3"}
    for path, environment in (
        (DEPLOY / "im-prober/fleet.yaml", {names["vantage"]: "a"}),
        (in_cluster, pod),
    ):
        result = check_config(path, **environment)
        assert result.returncode == 0, result.stderr
        assert "canary" not in result.stdout
    # A pod whose index is not below the count (replicas raised, the count not) is refused.
    result = check_config(in_cluster, **{**pod, names["shard_index"]: "3"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
