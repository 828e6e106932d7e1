"""The compose deployment: valid against the Compose Specification's schema, running the
commands the tests run, with health checks and restart policies; the image built in stages,
as a user without privileges, from the lock file; the dashboard plotting series the hub
exposes."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from server.launch import LEDGER_COMMAND, hub_command
from server.metrics import Metrics
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
HUBS = ("hub-a", "hub-b")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # type: ignore[no-any-return]


def _validator() -> jsonschema.Draft201909Validator:
    schema = json.loads((DEPLOY / "schema" / "compose-spec.json").read_text())
    return jsonschema.Draft201909Validator(schema)


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in _validator().iter_errors(compose)]
    assert errors == []


def test_the_schema_check_refuses_a_broken_file(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["redis"]["restart"] = 7
    broken["services"]["proxy"]["portz"] = []
    assert len(list(_validator().iter_errors(broken))) == 2


def test_compose_runs_the_commands_the_tests_run(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in HUBS:
        assert services[name]["command"] == ["python", *hub_command("0.0.0.0", 8000)]
    assert services["ledger"]["command"] == ["python", *LEDGER_COMMAND]
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))  # type: ignore[union-attr]
    assert cmd == ["python", *hub_command("0.0.0.0", 8000)]


def test_every_long_running_service_restarts_and_the_hubs_report_readiness(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name
    for name in (*HUBS, "redis", "postgres", "proxy"):
        assert "test" in services[name]["healthcheck"], name
    for name in HUBS:
        hub = services[name]
        assert "/readyz" in " ".join(hub["healthcheck"]["test"])
        assert hub["environment"]["DISPATCH_LEDGER_IN_HUB"] == "0"  # the ledger service writes
        assert hub["depends_on"]["redis"]["condition"] == "service_healthy"
        # a rolling restart: the drain (wait + spread) fits in the grace period
        grace = int(hub["stop_grace_period"].rstrip("s"))
        env = hub["environment"]
        assert float(env["DISPATCH_DRAIN_WAIT_S"]) + float(env["DISPATCH_DRAIN_SPREAD_S"]) < grace
    assert "--appendonly" in services["redis"]["command"]  # the live state survives a restart


def test_the_proxy_spreads_over_every_hub_with_the_edge_limits(compose: dict[str, Any]) -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream hubs \{(.*?)\}", conf, re.S)
    assert upstream is not None
    assert sorted(re.findall(r"server ([\w-]+):8000", upstream.group(1))) == sorted(HUBS)
    for limit in ("client_header_timeout", "client_max_body_size", "limit_conn per_address"):
        assert limit in conf
    assert "proxy_set_header Upgrade $http_upgrade" in conf  # WebSockets pass


def test_the_image_is_built_in_stages_from_the_lock_and_runs_without_privileges() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert "--require-hashes" in dockerfile and "requirements.lock" in dockerfile
    users = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")


def test_prometheus_scrapes_every_hub_and_the_dashboard_plots_exposed_series(
    compose: dict[str, Any],
) -> None:
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    port = compose["services"]["hub-a"]["environment"]["DISPATCH_METRICS_PORT"]
    assert sorted(targets) == sorted(f"{h}:{port}" for h in HUBS)
    names = set()
    for family in text_string_to_metric_families(generate_latest(Metrics().registry).decode()):
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"dispatch_\w+", target["expr"])
    }
    assert used and used <= names, used - names


def test_deploy_readme_documents_every_variable_compose_sets(compose: dict[str, Any]) -> None:
    readme = (DEPLOY / "README.md").read_text()
    hub_env = compose["services"]["hub-a"]["environment"]
    missing = [name for name in hub_env if f"`{name}`" not in readme]
    assert missing == []


def test_compose_paths_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source
