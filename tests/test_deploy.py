"""The deploy files against the tools that can run here: promtool, amtool, systemd-analyze,
a Kubernetes schema check, and the wiring between compose, Prometheus and Grafana files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
