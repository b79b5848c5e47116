"""Deployment files reference each other consistently.

Docker cannot run where these tests run, so instead of `docker compose up`
this checks what would break it: paths mounted into containers exist and hold
what the services look for, ports and service names agree between the
Dockerfile, compose, Prometheus' scrape config and Grafana's datasource, the
Prometheus job name is the one the alerts watch, and the dashboard is
well-formed (variables, units, descriptions, thresholds equal to the alerts').
The image's and the compose stack's defaults keep the privacy defaults: the
image's environment is applied to a config that says nothing, and the compose
exporter's command is run for real (on 0.0.0.0, reached over loopback).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import httpx
import pytest
import yaml

from outbound_call_exporter.config import load_config
from outbound_call_exporter.privacy import Privacy, writes_refused

from conftest import wait_until

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = REPO / "pyproject.toml"
PROM_CONFIG = REPO / "prometheus" / "prometheus.yml"
RULES = REPO / "prometheus" / "rules.yml"
ALERTS = REPO / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "grafana" / "dashboards" / "outbound-calls.json"
PROVISIONING = REPO / "grafana" / "provisioning"
DOCS = REPO / "README.md"

DEFAULT_PORT = 9877  # docs/design.md: listen_address "0.0.0.0:9877"
PROMETHEUS_PORT = 9090
GRAFANA_PORT = 3000


# ------------------------------------------------------------------ helpers


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict:
    return compose()["services"][name]


def bind_mounts(svc: dict) -> list[tuple[Path, PurePosixPath]]:
    """(repo path, container path) for every ./relative bind mount of a service."""
    mounts = []
    for volume in svc.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append(((REPO / source).resolve(), PurePosixPath(target)))
    return mounts


def to_repo_path(svc: dict, container_path: str | PurePosixPath) -> Path:
    """The repo file a container path of a service comes from, via its bind mounts."""
    container_path = PurePosixPath(container_path)
    for source, target in bind_mounts(svc):
        if container_path == target or target in container_path.parents:
            return source / container_path.relative_to(target)
    raise AssertionError(f"{container_path} is not inside any bind mount of the service")


def published_ports(svc: dict) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for entry in svc.get("ports", []):
        parts = str(entry).split(":")
        out[int(parts[-1])] = int(parts[-2])
    return out


def command_args(svc: dict) -> list[str]:
    cmd = svc.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined, comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    out = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    return instructions[last_from:]


def json_or_words(args: str) -> list[str]:
    args = args.strip()
    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or a parent decides."""
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    parts = PurePosixPath(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        globs = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(c, g) for c in candidates for g in globs):
            excluded = not negate
    return excluded


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return [p for p in out if p.get("type") != "row"]


def alert_rules() -> list[dict]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def recorded_names() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def alert_thresholds(alert: str, series: str) -> set[float]:
    """Numbers compared with `series > N` in the expressions of an alert."""
    found = set()
    for rule in alert_rules():
        if rule["alert"] == alert:
            for number in re.findall(re.escape(series) + r"[^\n]*?>\s*([\d.]+)", rule["expr"]):
                found.add(float(number))
    return found


def panel_thresholds(panel: dict) -> set[float]:
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return {float(s["value"]) for s in steps if s["value"] is not None}


def panels_with_expr(fragment: str) -> list[dict]:
    return [p for p in panels() if any(fragment in t.get("expr", "") for t in p.get("targets", []))]


# ------------------------------------------------------------------ compose


def test_compose_has_the_three_services():
    assert {"exporter", "prometheus", "grafana"} <= set(compose()["services"])


def test_compose_bind_mount_sources_exist():
    for name, svc in compose()["services"].items():
        for source, _ in bind_mounts(svc):
            assert source.exists(), f"{name}: mounts missing {source.relative_to(REPO)}"


def test_compose_images_are_pinned():
    for name, svc in compose()["services"].items():
        if "image" in svc and "build" not in svc:
            assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name


def test_exporter_service_runs_the_demo_on_the_exposed_port():
    svc = service("exporter")
    build = svc["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
    assert (REPO / context / dockerfile).resolve() == DOCKERFILE
    args = command_args(svc)
    assert args[0] == "demo"
    listen = option(args, "--listen")
    assert listen is not None, "the demo must listen on all interfaces inside the container"
    host, port = listen.rsplit(":", 1)
    assert host == "0.0.0.0"
    assert int(port) == DEFAULT_PORT
    assert DEFAULT_PORT in published_ports(svc)
    store = option(args, "--store")
    assert store is not None
    volume_targets = [v.split(":")[1] for v in svc.get("volumes", [])]
    assert any(PurePosixPath(t) in PurePosixPath(store).parents for t in volume_targets), (
        "the demo store should live on a volume"
    )


def test_prometheus_service_loads_the_repo_config_and_rules():
    svc = service("prometheus")
    config_path = option(command_args(svc), "--config.file")
    assert config_path
    assert to_repo_path(svc, config_path).resolve() == PROM_CONFIG
    config = yaml.safe_load(PROM_CONFIG.read_text())
    rule_files = {
        to_repo_path(svc, PurePosixPath(config_path).parent / f).resolve() for f in config["rule_files"]
    }
    assert rule_files == {RULES, ALERTS}
    assert PROMETHEUS_PORT in published_ports(svc)


def test_prometheus_scrapes_the_exporter_service_with_the_alerted_job_name():
    config = yaml.safe_load(PROM_CONFIG.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "outbound-call-exporter"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"exporter:{DEFAULT_PORT}"]
    assert "exporter" in compose()["services"]
    (absent,) = [r for r in alert_rules() if r["alert"] == "OutboundCallExporterAbsent"]
    assert f'job="{job["job_name"]}"' in absent["expr"]
    assert job["job_name"] in ALERTS.read_text().split("groups:")[0], "document the job name atop alerts.yml"


def test_the_scaleout_profile_runs_three_replicas_on_one_postgres_and_prometheus_scrapes_each():
    services = compose()["services"]
    replicas = {name: svc for name, svc in services.items() if name.startswith("replica-")}
    assert len(replicas) == 3 and all(svc.get("profiles") == ["scaleout"] for svc in replicas.values())
    assert services["postgres"].get("profiles") == ["scaleout"]
    config = yaml.safe_load((REPO / "deploy" / "compose" / "scaleout.yml").read_text())
    assert "store_url_file" in config and "store_path" not in config
    url = (REPO / "deploy" / "compose" / "secrets" / "store_url").read_text().strip()
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert url == f"postgresql://oce:{password}@postgres:5432/oce"
    for svc in replicas.values():
        assert svc["command"] == ["run", "--config", "/etc/outbound-call-exporter/config.yml"]
        assert svc["depends_on"]["postgres"]["condition"] == "service_healthy"
    (job,) = [j for j in yaml.safe_load(PROM_CONFIG.read_text())["scrape_configs"]
              if j["job_name"] == "outbound-call-exporter-scaleout"]
    port = config["listen_address"].rsplit(":", 1)[1]
    assert sorted(t for sc in job["static_configs"] for t in sc["targets"]) == [f"{n}:{port}" for n in sorted(replicas)]


def test_grafana_provisioning_is_mounted_where_grafana_reads_it():
    svc = service("grafana")
    for kind in ("datasources", "dashboards"):
        source = to_repo_path(svc, f"/etc/grafana/provisioning/{kind}")
        assert source == (PROVISIONING / kind).resolve()
        assert list(source.glob("*.yml")), f"no provisioning file in grafana/provisioning/{kind}"
    home = svc["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert to_repo_path(svc, home).resolve() == DASHBOARD
    assert GRAFANA_PORT in published_ports(svc)


def test_grafana_datasource_points_at_the_prometheus_service():
    (path,) = (PROVISIONING / "datasources").glob("*.yml")
    doc = yaml.safe_load(path.read_text())
    (ds,) = doc["datasources"]
    assert ds["type"] == "prometheus"
    assert ds["url"] == f"http://prometheus:{PROMETHEUS_PORT}"
    assert "prometheus" in compose()["services"]
    scrape_interval = yaml.safe_load(PROM_CONFIG.read_text())["global"]["scrape_interval"]
    assert ds["jsonData"]["timeInterval"] == scrape_interval


def test_grafana_dashboard_provider_finds_the_dashboard():
    (path,) = (PROVISIONING / "dashboards").glob("*.yml")
    doc = yaml.safe_load(path.read_text())
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    folder = to_repo_path(service("grafana"), provider["options"]["path"])
    assert (folder / DASHBOARD.name).resolve() == DASHBOARD


def test_alert_dashboard_urls_open_this_dashboard_on_the_compose_grafana():
    uid = dashboard()["uid"]
    host_port = published_ports(service("grafana"))[GRAFANA_PORT]
    for rule in alert_rules():
        url = rule["annotations"]["dashboard_url"]
        assert url.startswith(f"http://localhost:{host_port}/d/{uid}/"), (rule["alert"], url)
        if "$labels.account" in rule["expr"] or "by (provider, account)" in rule["expr"]:
            assert "var-account={{ $labels.account }}" in url, rule["alert"]
            assert "var-provider={{ $labels.provider }}" in url, rule["alert"]


# --------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_on_slim_python():
    instructions = dockerfile_instructions()
    args = dict(
        a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a
    )
    froms = [a for k, a in instructions if k == "FROM"]
    assert len(froms) >= 2
    for line in froms:
        image = line.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image)
        assert image.startswith("python:") and "slim" in image, image


def test_dockerfile_runs_as_non_root():
    users = [a for k, a in final_stage() if k == "USER"]
    assert users, "final stage needs a USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")


def test_dockerfile_healthcheck_reads_the_config_the_service_runs_with():
    """No hand-set URL: the check reads listen_address from the same config file as CMD."""
    (check,) = [a for k, a in final_stage() if k == "HEALTHCHECK"]
    options, _, cmd = check.partition("CMD")
    assert "--interval" in options and "--timeout" in options
    cmd = json_or_words(cmd)
    assert cmd[:2] == ["outbound-call-exporter", "healthcheck"]
    (run,) = [json_or_words(a) for k, a in final_stage() if k == "CMD"]
    assert option(cmd, "--config") == option(run, "--config")
    assert not any("HEALTHCHECK_URL" in a for k, a in final_stage() if k == "ENV")


def test_compose_healthcheck_follows_the_demo_listen_address():
    svc = service("exporter")
    test = svc["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1:3] == ["outbound-call-exporter", "healthcheck"]
    assert option(test, "--listen") == option(command_args(svc), "--listen")


def test_dockerfile_exposes_port_volumes_and_entrypoint():
    stage = final_stage()
    exposed = [int(p.split("/")[0]) for k, a in stage if k == "EXPOSE" for p in a.split()]
    assert exposed == [DEFAULT_PORT]
    (volumes,) = [json_or_words(a) for k, a in stage if k == "VOLUME"]
    assert "/etc/outbound-call-exporter" in volumes
    assert "/var/lib/outbound-call-exporter" in volumes
    (workdir,) = [a for k, a in stage if k == "WORKDIR"][-1:]
    assert workdir in volumes, "the working directory (default store_path ./data) should be the store volume"
    (entrypoint,) = [json_or_words(a) for k, a in stage if k == "ENTRYPOINT"]
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert entrypoint == ["outbound-call-exporter"]
    assert entrypoint[0] in scripts
    (cmd,) = [json_or_words(a) for k, a in stage if k == "CMD"]
    assert cmd[0] == "run" and PurePosixPath(option(cmd, "--config")).parent == PurePosixPath(
        "/etc/outbound-call-exporter"
    )


def test_dockerfile_copies_what_the_package_build_needs():
    copied = []
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and "--from" not in args:
            words = json_or_words(args)
            copied.extend(w.rstrip("/") for w in words[:-1] if not w.startswith("--"))
    for source in copied:
        assert (REPO / source).exists(), f"COPY source {source} missing"
        assert not dockerignore_excludes(source), f"COPY source {source} is excluded by .dockerignore"
        if (REPO / source).is_dir():
            for path in (REPO / source).rglob("*.py"):
                rel = path.relative_to(REPO).as_posix()
                if "__pycache__" not in rel:
                    assert not dockerignore_excludes(rel), f"{rel} is excluded by .dockerignore"
    project = tomllib.loads(PYPROJECT.read_text())
    needed = {"pyproject.toml"}
    readme = project["project"].get("readme")
    if isinstance(readme, str):
        needed.add(readme)
    package_dirs = project.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    needed |= {d.rstrip("/") for d in package_dirs.values() if d not in ("", ".")}
    needed |= set(project["project"].get("license-files", []))
    assert needed <= set(copied), f"Dockerfile does not COPY {needed - set(copied)}"


def test_dockerignore_keeps_tests_and_local_state_out():
    for path in ("tests/test_rules.py", ".git/HEAD", "data/calls.db", ".venv/bin/python"):
        assert dockerignore_excludes(path), path


# ---------------------------------------------------------------- dashboard


def test_dashboard_header():
    d = dashboard()
    assert d["schemaVersion"] >= 39
    assert d["uid"] and d["title"]
    assert d["time"]["from"].startswith("now-")
    assert d["refresh"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("provider", "account"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"]["uid"] == "${datasource}"
        assert var["multi"] and var["includeAll"]
        assert "label_values(" in var["definition"] and var["definition"].endswith(f", {name})")
    assert "$provider" in variables["account"]["definition"], "account choices should follow the provider"


def test_every_panel_has_title_description_unit_and_the_datasource_variable():
    ids = set()
    for panel in panels():
        title = panel.get("title", "")
        assert title.strip(), panel
        assert len(panel.get("description", "")) >= 40, f"{title}: describe what it shows"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel["id"] not in ids, f"{title}: duplicate id"
        ids.add(panel["id"])
        assert panel["targets"], title
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], title
            assert target["datasource"]["uid"] == "${datasource}", title


def test_panels_fit_the_grid_without_overlapping():
    taken = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_panels_follow_the_provider_and_account_variables():
    for panel in panels():
        for target in panel["targets"]:
            expr = target["expr"]
            if "build_info" in expr:
                continue  # no provider/account labels
            for selector in re.findall(r"(?:outbound_call|:)\w*\{([^}]*)\}", expr):
                assert 'provider=~"$provider"' in selector, (panel["title"], expr)
                assert 'account=~"$account"' in selector, (panel["title"], expr)


def test_dashboard_uses_only_recorded_series_that_exist():
    recorded = recorded_names()
    for panel in panels():
        for target in panel["targets"]:
            for name in re.findall(r"\b[a-z_]+:[a-z0-9_:]+", target["expr"]):
                assert name in recorded, f"{panel['title']}: {name} is not a recording rule"


@pytest.mark.parametrize(
    "fragment",
    [
        "outbound_calls{",
        "outbound_calls_finished_total",
        "outbound_calls_registered_total",
        "provider_account:outbound_call_technical_failure_ratio:ratio_rate5m",
        "provider_account:outbound_call_technical_failure_ratio:baseline1d",
        "provider_account:outbound_call_answer_rate:ratio_rate5m",
        "provider_account:outbound_call_answer_rate:baseline1d",
        "provider_account:outbound_calls_not_reached:rate5m",
        "outbound_call_time_to_terminal_seconds:histogram_quantile",
        "outbound_call_time_to_terminal_seconds_bucket",
        "outbound_call_time_to_answer_seconds:histogram_quantile",
        "outbound_call_talk_time_seconds:histogram_quantile",
        "outbound_call_status_requests_total",
        "outbound_call_status_request_errors_total",
        "provider_account:outbound_call_status_request_error_ratio:rate5m",
        "outbound_call_status_request_duration_seconds:histogram_quantile",
        "outbound_call_account_up",
        "outbound_call_last_successful_poll_timestamp_seconds",
        "outbound_call_exporter_build_info",
        "outbound_call_failures_total",
        "outbound_call_sip_failures_total",
    ],
)
def test_dashboard_covers(fragment):
    assert panels_with_expr(fragment), f"no panel queries {fragment}"


def test_time_to_terminal_has_a_heatmap_and_p50_p90_p99():
    assert any(p["type"] == "heatmap" for p in panels_with_expr("outbound_call_time_to_terminal_seconds_bucket"))
    (quantiles,) = panels_with_expr("outbound_call_time_to_terminal_seconds:histogram_quantile")
    assert {re.search(r'quantile="([\d.]+)"', t["expr"])[1] for t in quantiles["targets"]} == {"0.5", "0.9", "0.99"}


def _page_factor() -> str:
    """The `0.8` of `1 - 0.8 * (1 - reference)` in the critical technical failure alert."""
    (rule,) = [r for r in alert_rules()
               if r["alert"] == "OutboundCallTechnicalFailuresHigh" and r["labels"]["severity"] == "critical"]
    return re.search(r"ratio_rate1m\s*>\s*on \(provider, account\)\s*\(1 - ([\d.]+) \* \(1 - \S+:reference\)\)",
                     rule["expr"])[1]


def _norm() -> float:
    doc = yaml.safe_load(RULES.read_text())
    (rule,) = [r for g in doc["groups"] for r in g["rules"]
               if r.get("record") == "provider_account:outbound_call_technical_failure_ratio:reference"]
    return float(re.search(r"clamp_min\([^,]+,\s*([\d.]+)\)", rule["expr"])[1])


def test_technical_failure_panels_show_baseline_and_page_threshold():
    """Each account's ratio is drawn beside its baseline and the threshold the page uses."""
    (series,) = [p for p in panels_with_expr("technical_failure_ratio:ratio_rate5m") if p["type"] == "timeseries"]
    exprs = [t["expr"] for t in series["targets"]]
    assert any("technical_failure_ratio:baseline1d" in e for e in exprs)
    assert any(e.startswith(f"1 - {_page_factor()} * (1 - provider_account:outbound_call_technical_failure_ratio:reference")
               for e in exprs), exprs
    (stat,) = [p for p in panels_with_expr("outbound_calls_technical_failures:rate5m") if p["type"] == "stat"]
    norm = _norm()
    assert panel_thresholds(stat) == {norm, round(1 - float(_page_factor()) * (1 - norm), 6)}


def test_answer_rate_panel_shows_baseline_and_warning_level():
    (rule,) = [r for r in alert_rules() if r["alert"] == "OutboundCallAnswerRateLow"]
    factor = re.search(r"ratio_rate5m\s*<\s*on \(provider, account\)\s*([\d.]+) \* \S+:baseline1d", rule["expr"])[1]
    (series,) = [p for p in panels_with_expr("answer_rate:ratio_rate5m") if p["type"] == "timeseries"]
    exprs = [t["expr"] for t in series["targets"]]
    assert any(e.startswith("provider_account:outbound_call_answer_rate:baseline1d") for e in exprs)
    assert any(e.startswith(f"{factor} * provider_account:outbound_call_answer_rate:baseline1d") for e in exprs)


def test_polling_error_ratio_panels_show_the_alert_threshold():
    alert = alert_thresholds(
        "OutboundCallPollingErrorRatioHigh", "provider_account:outbound_call_status_request_error_ratio:rate5m"
    )
    assert len(alert) == 1
    shown = panels_with_expr("outbound_call_status_request_error")
    ratio_panels = [p for p in shown if p["fieldConfig"]["defaults"]["unit"] == "percentunit"]
    assert ratio_panels
    for panel in ratio_panels:
        assert panel_thresholds(panel) == alert, panel["title"]


def test_last_poll_panel_shows_the_stale_threshold():
    alert = alert_thresholds("OutboundCallPollingStale", "outbound_call_last_successful_poll_timestamp_seconds)")
    (panel,) = panels_with_expr("outbound_call_last_successful_poll_timestamp_seconds")
    assert panel_thresholds(panel) == alert == {600.0}


def test_ratio_and_duration_units():
    for panel in panels():
        unit = panel["fieldConfig"]["defaults"]["unit"]
        exprs = " ".join(t["expr"] for t in panel["targets"])
        if re.search(r"_ratio:|_failed:", exprs):
            assert unit == "percentunit", panel["title"]
        if "histogram_quantile" in exprs or "time() -" in exprs:
            assert unit == "s", panel["title"]


# ----------------------------------------------- privacy and access defaults


PRIVACY_ENV = ("OCE_PRIVACY", "OCE_ALLOW_UNAUTHENTICATED_WRITES", "OCE_API_TOKEN")


def dockerfile_env() -> dict[str, str]:
    """The final stage's ENV, as the container's environment."""
    env = {}
    for keyword, args in final_stage():
        if keyword == "ENV":
            env.update(word.split("=", 1) for word in shlex.split(args) if "=" in word)
    return env


def test_the_image_defaults_mask_numbers_and_refuse_open_writes(tmp_path):
    """The image ships no config: an operator's config that says nothing about privacy or the
    token, run with the image's environment, masks numbers and refuses unauthenticated writes."""
    env = dockerfile_env()
    assert "PATH" in env, "the ENV parser found nothing"
    assert not [k for k in env if k.startswith(PRIVACY_ENV)]
    config_file = tmp_path / "config.yml"
    config_file.write_text("accounts: [{name: tz, provider: telzino, settings: {token: tz-token}}]\n")
    config = load_config(config_file, environ=env)
    assert config.privacy == Privacy(destination="masked", provider_metadata=False)
    assert config.listen_address.startswith("0.0.0.0:") and writes_refused(config)


def test_the_compose_demo_masks_numbers_and_refuses_open_writes(tmp_path):
    """The compose exporter, run as compose runs it (its command, on 0.0.0.0, only the port and
    the store moved): the API shows no full number or CRM field, and refuses writes."""
    svc = service("exporter")
    environment = svc.get("environment", {})
    assert not [k for k in environment if str(k).startswith(PRIVACY_ENV)]
    args = command_args(svc)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args[args.index("--listen") + 1] = f"0.0.0.0:{port}"
    args[args.index("--store") + 1] = str(tmp_path / "demo.db")
    proc = subprocess.Popen([sys.executable, "-m", "outbound_call_exporter.cli", *args, "--duration", "60",
                             "--calls-per-second", "20"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **{str(k): str(v) for k, v in environment.items()}})
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5, trust_env=False) as client:
            def finished_telzino_call():
                try:
                    calls = client.get("/api/v1/calls", params={"account": "demo-telzino", "state": "completed"})
                except httpx.HTTPError:
                    return None
                return calls.status_code == 200 and calls.json()["calls"]

            [record, *_] = wait_until(finished_telzino_call, timeout=60, message="a finished demo-telzino call")
            assert record["extras"]["to_number"] == "+1•••••••34"
            assert "request_metadata" not in record["extras"]
            response = client.post("/api/v1/calls", json={"account": "demo-telzino", "call_id": "x"})
            assert response.status_code == 403 and "set api_token" in response.json()["error"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert b"is not loopback and no api_token is set" in stderr
    stored = b"".join(f.read_bytes() for f in tmp_path.glob("demo.db*"))
    assert b"8135551234" not in stored and b"crm_id" not in stored


# --------------------------------------------------------------------- docs


def test_docs_explain_import_alerts_and_compose():
    text = DOCS.read_text()
    assert "docker compose up" in text
    assert "grafana/dashboards/outbound-calls.json" in text
    assert "prometheus/rules.yml" in text and "prometheus/alerts.yml" in text
    for rule in alert_rules():
        assert rule["alert"] in text
