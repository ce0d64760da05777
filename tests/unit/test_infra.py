"""infra/ and the CI workflow: Dockerfiles, compose, Kubernetes manifests, the Dagster Helm values,
Prometheus config and alert rules, the Grafana dashboard, .github/workflows/ci.yml.

Two layers: plain checks that need nothing but PyYAML (paths exist, ports on loopback, probes on
/readyz and /livez, every alert has its runbook, every metric a panel or rule reads is one the
endpoint serves), and the validators: hadolint, docker-compose, kubernetes-validate,
check-jsonschema (dev dependencies) and promtool, kubectl (system binaries). A validator that is
not installed is a skip, unless VIGIL_REQUIRE_INFRA_TOOLS is set: `1` makes a missing dev
dependency a failure, `all` a missing system binary too (GitHub CI sets `all`). Offline, < 30 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
BIN = Path(sys.executable).parent
REQUIRE = os.environ.get("VIGIL_REQUIRE_INFRA_TOOLS", "")
DOCKERFILES = sorted((INFRA / "docker").glob("*.Dockerfile"))
K8S_BASE = INFRA / "k8s" / "base"
K8S_VERSIONS = ("1.30.0", "1.37.0")  # oldest and newest Kubernetes the manifests are checked against
COMPOSE = INFRA / "compose" / "compose.yaml"
COMPOSE_ENV = {"VIGIL_PG_PASSWORD": "x", "MINIO_ROOT_USER": "x", "MINIO_ROOT_PASSWORD": "x", "GRAFANA_ADMIN_PASSWORD": "x"}
HELM_VALUES = INFRA / "helm" / "dagster-values.yaml"
RULES = INFRA / "prometheus" / "rules" / "vigil-serving.yml"
DASHBOARD = INFRA / "grafana" / "dashboards" / "vigil-serving.json"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _missing(tool: str, system: bool = False):
    if REQUIRE == "all" or (REQUIRE and not system):
        pytest.fail(f"{tool} is not installed and VIGIL_REQUIRE_INFRA_TOOLS={REQUIRE}")
    pytest.skip(f"{tool} is not installed")


def _tool(name: str, system: bool = False) -> str:
    """An executable from this interpreter's environment (dev dependencies) or PATH."""
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not found:
        _missing(name, system)
    return str(found)


def _module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        _missing(name)


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60, **kw)


def _check_jsonschema(*args) -> subprocess.CompletedProcess:
    _module("check_jsonschema")
    return _run([sys.executable, "-m", "check_jsonschema", *args])


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _dagster_version() -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == "dagster")


def _served_metrics() -> set[str]:
    """Series names the endpoint's /metrics serves, read from the code that defines them."""
    out = set()
    for f in (ROOT / "serving").glob("*.py"):
        for kind, name in re.findall(r"bentoml\.metrics\.(Counter|Histogram)\(\s*name=\"(\w+)\"", f.read_text()):
            out |= {f"{name}_total"} if kind == "Counter" else {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return out | {"up"}


def _metric_names(expr: str) -> set[str]:
    expr = re.sub(r"\{[^}]*\}", "", re.sub(r'"[^"]*"', "", expr))  # label matchers and strings out
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", expr))
    return {w for w in words if w.startswith("vigil_") or w == "up"}


# --- served metrics, the shared vocabulary of rules and dashboard ----------------------------------------

def test_the_metrics_rules_and_dashboard_read_are_the_ones_the_endpoint_defines():
    served = _served_metrics()
    assert {"vigil_http_requests_total", "vigil_http_request_seconds_bucket", "vigil_fraud_score_bucket",
            "vigil_decisions_total", "vigil_stale_features_total", "vigil_degraded_total"} <= served
    exprs = [r["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    used = set().union(*(_metric_names(e) for e in exprs))
    assert used and used <= served, f"not served: {sorted(used - served)}"
    # the label the code sets is `code`, not `status`
    assert all("status=" not in e for e in exprs)


# --- Dockerfiles ------------------------------------------------------------------------------------------

def test_dockerfiles_pin_bases_run_non_root_bake_no_secret_and_copy_what_exists():
    assert {p.name for p in DOCKERFILES} == {"vigil.Dockerfile", "serving.Dockerfile"}
    for path in DOCKERFILES:
        text = path.read_text()
        base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M).group(1)
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", base), base
        assert all(f.split()[1] == "${PYTHON_IMAGE}" for f in re.findall(r"^FROM .*$", text, re.M))
        assert "uv==0.13.9" in text and text.count("uv sync --frozen --no-dev --extra production") == 2
        assert re.search(r"^USER 10001:10001$", text, re.M) and "HEALTHCHECK" in text
        joined = text.replace("\\\n", " ")  # continuation lines: one instruction per line
        assert not re.search(r"^(ENV|ARG)\b.*(PASSWORD|SECRET|TOKEN|_DSN|REDIS_URL|REGISTRY)\w*=", joined, re.M)
        assert re.search(r"^ENV\b.*\bVIGIL_PROFILE=production\b", joined, re.M)  # the check sees ENV lines
        for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
            for s in src.split():
                assert (ROOT / s).exists(), f"{path.name}: COPY {s} does not exist"
        assert (path.parent / f"{path.name}.dockerignore").exists()
    serving = (INFRA / "docker" / "serving.Dockerfile").read_text()
    assert '"serving.service:FraudScorer"' in serving and 'CMD ["--host", "0.0.0.0", "--port", "3000"]' in serving


def test_hadolint():
    hadolint = _tool("hadolint")
    r = _run([hadolint, "--failure-threshold", "info", *DOCKERFILES])
    assert r.returncode == 0, r.stdout + r.stderr


# --- compose ----------------------------------------------------------------------------------------------

def test_compose_publishes_on_loopback_and_mounts_what_exists():
    spec = yaml.safe_load(COMPOSE.read_text())
    assert {"postgres", "redis", "minio", "code", "webserver", "daemon", "serving", "prometheus"} <= set(spec["services"])
    for name, svc in spec["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                assert (COMPOSE.parent / src).resolve().exists(), f"{name}: {src} does not exist"
        if "build" in svc:
            assert (COMPOSE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).exists()
    assert spec["services"]["serving"]["read_only"] is True
    workspace = yaml.safe_load((COMPOSE.parent / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"] == {"host": "code", "port": 4000, "location_name": "vigil"}


def test_compose_config_and_compose_spec(tmp_path):
    r = _check_jsonschema("--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert r.returncode == 0, r.stdout + r.stderr
    compose = _tool("docker-compose")
    no_env_file = tmp_path / "empty.env"  # a developer's infra/compose/.env must not change the result
    no_env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    config = [compose, "-f", COMPOSE, "--env-file", no_env_file, "config", "--quiet"]
    r = _run(config, env={**env, **COMPOSE_ENV})
    assert r.returncode == 0, r.stdout + r.stderr
    # a password left unset stops the stack instead of starting it with an empty one
    r = _run(config, env={**env, **COMPOSE_ENV, "VIGIL_PG_PASSWORD": ""})
    assert r.returncode != 0 and "VIGIL_PG_PASSWORD" in r.stderr


# --- Kubernetes -------------------------------------------------------------------------------------------

def _k8s_base() -> dict[str, dict]:
    kust = yaml.safe_load((K8S_BASE / "kustomization.yaml").read_text())
    return {d["kind"]: d for f in kust["resources"] for d in _docs(K8S_BASE / f)}


def test_serving_manifests_probe_readyz_livez_and_fit_together():
    res = _k8s_base()
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "PersistentVolumeClaim"} <= set(res)
    dep = res["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez" == c["startupProbe"]["httpGet"]["path"]
    assert c["args"][:2] == ["--host", "0.0.0.0"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
    assert pod["securityContext"]["runAsNonRoot"] and c["resources"]["requests"]["cpu"]
    assert c["envFrom"] == [{"secretRef": {"name": "vigil-secrets"}}]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["VIGIL_PROFILE"] == "production" and not env["BENTOML_HOME"].startswith(env["VIGIL_HOME"])
    labels = dep["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        sel = res[kind]["spec"]["selector"]
        assert (sel.get("matchLabels") or sel).items() <= labels.items(), kind
    assert res["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert res["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    claim = res["PersistentVolumeClaim"]["metadata"]["name"]
    assert {"name": "vigil-home", "persistentVolumeClaim": {"claimName": claim}} in pod["volumes"]
    assert "ReadWriteMany" in res["PersistentVolumeClaim"]["spec"]["accessModes"]


def test_kubernetes_schemas_strict():
    _module("kubernetes_validate")
    import kubernetes_validate

    docs = [d for f in [*sorted(K8S_BASE.glob("*.yaml"))] if f.name != "kustomization.yaml" for d in _docs(f)]
    assert len(docs) >= 9
    for version in K8S_VERSIONS:
        for d in docs:
            kubernetes_validate.validate(d, version, strict=True)
    broken = json.loads(json.dumps(_k8s_base()["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_kustomize_overlay_renders_and_validates():
    kubectl = _tool("kubectl", system=True)
    r = _run([kubectl, "kustomize", INFRA / "k8s" / "overlays" / "staging"])
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert {d["metadata"].get("namespace") for d in docs} == {"vigil-staging"}
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "vigil" for d in docs)
    _module("kubernetes_validate")
    import kubernetes_validate

    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSIONS[-1], strict=True)


# --- Helm values for Dagster's chart ----------------------------------------------------------------------

def _vendor_schema_module():
    spec = importlib.util.spec_from_file_location("vendor_schema", INFRA / "helm" / "dagster-chart" / "vendor_schema.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_helm_values_k8s_run_launcher_pinned_images_shared_volume():
    values = yaml.safe_load(HELM_VALUES.read_text())
    version = _dagster_version()
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    for part in ("dagsterWebserver", "dagsterDaemon"):
        assert values[part]["image"]["tag"] == version
    (code,) = values["dagster-user-deployments"]["deployments"]
    assert code["dagsterApiGrpcArgs"][:2] == ["--module-name", "pipelines.definitions"]
    assert code["includeConfigInLaunchedRuns"] == {"enabled": True}
    claim = next(d for d in _docs(K8S_BASE / "vigil-home-pvc.yaml"))["metadata"]["name"]
    assert code["volumes"] == [{"name": "vigil-home", "persistentVolumeClaim": {"claimName": claim}}]
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2" and values["postgresql"]["enabled"] is False
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]["tagConcurrencyLimits"]
    assert {"key": "dagster/backfill", "limit": 2} in limits
    assert f"--version {version}" in HELM_VALUES.read_text() and f"--version {version}" in WORKFLOW.read_text()


def test_helm_values_against_the_charts_schema(tmp_path):
    schema = _vendor_schema_module().write_overlay(tmp_path)
    r = _check_jsonschema("--check-metaschema", INFRA / "helm" / "dagster-chart" / "values.schema.json")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _check_jsonschema("--schemafile", schema, HELM_VALUES)
    assert r.returncode == 0, r.stdout + r.stderr
    # it bites: a misspelt key, a wrong type inside a Kubernetes definition, a list item missing a key
    values = yaml.safe_load(HELM_VALUES.read_text())
    values["runLauncher"]["config"]["k8sRunLauncher"]["imagePulPolicy"] = "Always"
    values["dagster-user-deployments"]["deployments"][0]["podSecurityContext"]["fsGroup"] = "ten"
    del values["dagster-user-deployments"]["deployments"][0]["port"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    r = _check_jsonschema("--schemafile", schema, bad)
    assert r.returncode == 1
    for where in ("k8sRunLauncher", "podSecurityContext", "'port' is a required property"):
        assert where in r.stdout, where


# --- Prometheus and Grafana -------------------------------------------------------------------------------

def test_alert_rules_have_severity_and_their_runbook():
    from vigil.alerts import CATALOGUE, SEVERITIES

    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"serving_down", "serving_degraded", "serving_errors", "serving_latency", "stale_features"} == names
    for r in rules:
        assert r["labels"]["severity"] in SEVERITIES
        if r["alert"] in CATALOGUE:
            assert r["labels"]["severity"] == CATALOGUE[r["alert"]][0], r["alert"]
        assert r["annotations"]["runbook_url"] == f"docs/runbooks/{r['alert']}.md"
        text = (ROOT / r["annotations"]["runbook_url"]).read_text()
        assert text.startswith(f"# {r['alert']} ({r['labels']['severity']})") and "```" in text


def test_prometheus_configs_scrape_metrics_with_a_key_file():
    for name in ("prometheus.yml", "prometheus-k8s.yml"):
        cfg = yaml.safe_load((INFRA / "prometheus" / name).read_text())
        (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "vigil-serving"]
        assert job["metrics_path"] == "/metrics" and job["authorization"]["type"] == "Bearer"
        assert job["authorization"]["credentials_file"] and "credentials" not in job["authorization"]
        assert cfg["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def _promtool() -> str:
    return _tool("promtool", system=True)


def test_promtool_config_rules_and_rule_unit_tests():
    promtool = _promtool()
    r = _run([promtool, "check", "config", "--syntax-only", INFRA / "prometheus" / "prometheus.yml"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([promtool, "check", "rules", RULES])
    assert r.returncode == 0 and "SUCCESS: 5 rules found" in r.stdout, r.stdout + r.stderr
    r = _run([promtool, "test", "rules", RULES.with_suffix(".test.yml")], cwd=RULES.parent)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_kubernetes_scrape_config():
    promtool = _promtool()
    r = _run([promtool, "check", "config", "--syntax-only", INFRA / "prometheus" / "prometheus-k8s.yml"])
    if "kubernetes_sd_configs not found" in r.stdout + r.stderr and REQUIRE != "all":
        pytest.skip("this promtool is built without Kubernetes service discovery (Debian's is)")
    assert r.returncode == 0, r.stdout + r.stderr


def test_grafana_dashboard_panels():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "vigil-serving" and dash["templating"]["list"][0]["type"] == "datasource"
    titles = " | ".join(p["title"] for p in dash["panels"])
    for word in ("route and status", "p50 / p99", "Decisions", "Degraded", "stale", "score distribution"):
        assert word in titles, word
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and p["targets"]
    provider = yaml.safe_load((INFRA / "grafana" / "provisioning" / "dashboards" / "vigil.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_grafana_queries_are_valid_promql(tmp_path):
    """promtool parses each panel's query as a recording rule (Grafana's $__rate_interval as 5m)."""
    promtool = _promtool()
    exprs = [t["expr"].replace("$__rate_interval", "5m") for p in json.loads(DASHBOARD.read_text())["panels"]
             for t in p["targets"]]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"vigil:panel_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    f = tmp_path / "dashboard-queries.yml"
    f.write_text(yaml.safe_dump(rules))
    r = _run([promtool, "check", "rules", f])
    assert r.returncode == 0, r.stdout + r.stderr


# --- CI workflow ------------------------------------------------------------------------------------------

def test_workflow_runs_ci_run_then_bento_images_staging_smoke():
    wf = yaml.safe_load(WORKFLOW.read_text())
    jobs = wf["jobs"]
    assert list(jobs) == ["test", "images", "deploy-staging"]
    assert {"postgres", "redis"} <= set(jobs["test"]["services"])
    runs = {job: "\n".join(s.get("run", "") for s in j["steps"]) for job, j in jobs.items()}
    assert "bash .ci/run" in runs["test"] and "make bento" in runs["images"] and "bentoml containerize" in runs["images"]
    assert jobs["images"]["needs"] == "test" and jobs["deploy-staging"]["needs"] == "images"
    assert "kubectl apply -k infra/k8s/overlays/staging" in runs["deploy-staging"]
    assert "helm upgrade --install dagster dagster/dagster" in runs["deploy-staging"]
    assert "/readyz" in runs["deploy-staging"] and "/score" in runs["deploy-staging"]
    assert jobs["deploy-staging"]["env"]["NAMESPACE"] == "vigil-staging"
    # no secret value in the file: only references to the repository's secrets
    assert not re.search(r"(?i)(password|token|key)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}", WORKFLOW.read_text())


def test_workflow_schema():
    r = _check_jsonschema("--builtin-schema", "vendor.github-workflows", WORKFLOW)
    assert r.returncode == 0, r.stdout + r.stderr
