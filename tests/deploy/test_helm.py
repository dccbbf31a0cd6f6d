"""The Helm chart deploy/helm/danmaku, checked without a cluster: `helm lint`
(also --strict) and `helm template` for every value set in helm-values/;
each rendered manifest validated against the Kubernetes JSON schemas that
ship inside the kubernetes-validate package (offline, strict: unknown fields
fail); the Prometheus Operator kinds checked structurally (and the rules with
promtool when it is on PATH); and what the manifests mean: every configuration
key a binary receives is one of its --help keys with a value in range, probes
and ports agree, pods run as non-root on a read-only root, the grace period
is the preStop sleep plus the node's drain deadline plus the margin,
selectors match their pods, the topic Job creates the partitions the nodes
hash rooms onto.

Tools: helm (env HELM, the install-tools.sh cache, or PATH) and the
kubernetes-validate package; run tests/deploy/install-tools.sh to get them.
Binaries: $DANMAKU_BUILD/bin (default build/default), from `make bins`."""

import copy
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "danmaku"
VALUES_DIR = Path(__file__).resolve().parent / "helm-values"
VALUE_SETS = sorted(p.name for p in VALUES_DIR.glob("*.yaml"))
RULES_FILE = CHART / "files" / "alerts" / "danmaku-rules.yml"
DASHBOARD_FILE = CHART / "files" / "dashboards" / "danmaku.json"
RELEASE = "rel"
NAMESPACE = "live"
# The Kubernetes version rendered for and validated against; the newest
# version the validator ships is checked too.
KUBE_VERSION = "1.31.0"
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
             ("monitoring.coreos.com/v1", "PrometheusRule")}
COMPONENTS = ("ingest", "broadcast")
INSTALLER = "tests/deploy/install-tools.sh"


# ---- tools and rendering ---------------------------------------------------------

@pytest.fixture(scope="session")
def helm(tool):
    path = tool("helm")
    out = subprocess.run([path, "version", "--short"], capture_output=True, text=True)
    assert out.returncode == 0, f"{path} version failed: {out.stderr}"
    return path


@pytest.fixture(scope="session")
def kv():
    try:
        import kubernetes_validate  # noqa: F401
        import kubernetes_validate.utils as utils
    except ImportError:
        pytest.fail(f"the kubernetes-validate package is missing: run {INSTALLER}", pytrace=False)
    return utils


@pytest.fixture(scope="session")
def help_keys(build_dir):
    """{"ingest": {key: {"default": str, "range": (lo, hi) or None}}, "broadcast": ...}
    from the built binaries' --help."""
    keys = {}
    for component in COMPONENTS:
        binary = build_dir / "bin" / f"danmaku-{component}"
        if not os.access(binary, os.X_OK):
            pytest.fail(f"{binary} missing: run `make bins` (or set DANMAKU_BUILD)", pytrace=False)
        out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
        text = out.stdout + out.stderr
        found = {}
        for m in re.finditer(r"^  --([a-z0-9-]+)\s.*\n\s+env (DANMAKU_[A-Z0-9_]+), default "
                             r"\"([^\"]*)\"(?:, range (-?\d+)\.\.(-?\d+))?", text, re.M):
            key = m.group(1).replace("-", "_")
            assert m.group(2) == "DANMAKU_" + key.upper(), m.group(0)
            rng = (int(m.group(4)), int(m.group(5))) if m.group(4) else None
            found[key] = {"default": m.group(3), "range": rng}
        assert len(found) > 20, f"could not parse {binary} --help:\n{text[:2000]}"
        keys[component] = found
    return keys


def _run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)


def _render(helm, args=(), chart=CHART):
    cmd = [helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE,
           "--kube-version", KUBE_VERSION, *args]
    out = _run(cmd)
    return out


def _docs(text):
    return [d for d in yaml.safe_load_all(text) if d]


_cache = {}


def rendered(helm, value_set):
    """The manifests of one value set (rendered once per session)."""
    if value_set not in _cache:
        out = _render(helm, ["-f", str(VALUES_DIR / value_set)])
        assert out.returncode == 0, f"helm template -f {value_set} failed:\n{out.stderr}"
        _cache[value_set] = _docs(out.stdout)
    return copy.deepcopy(_cache[value_set])


def _merge(base, over):
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def values_of(value_set):
    """The chart's values.yaml with the value set over it (as Helm merges them)."""
    with open(CHART / "values.yaml") as f:
        base = yaml.safe_load(f)
    with open(VALUES_DIR / value_set) as f:
        over = yaml.safe_load(f) or {}
    return _merge(base, over)


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def component_of(doc):
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component")


def one(docs, kind, component):
    found = [d for d in by_kind(docs, kind) if component_of(d) == component]
    assert len(found) == 1, f"{len(found)} {kind} of {component}"
    return found[0]


def config_env(docs, component):
    """The DANMAKU_* variables a component's pods get from their ConfigMap."""
    dep = one(docs, "Deployment", component)
    names = [e["configMapRef"]["name"]
             for e in dep["spec"]["template"]["spec"]["containers"][0].get("envFrom", [])]
    env = {}
    for cm in by_kind(docs, "ConfigMap"):
        if cm["metadata"]["name"] in names:
            env.update(cm.get("data", {}))
    assert env, f"no ConfigMap for {component}"
    return env


def main_container(dep, component):
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == component)


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def readiness_path(vals, component):
    """The readiness endpoint a component's values ask for (ingest may take
    /healthz; broadcast is always /readyz)."""
    return vals[component]["probes"]["readiness"].get("path") or "/readyz"


def scrape_annotated(vals):
    """Whether the pods carry prometheus.io/* annotations: metrics.podAnnotations
    true or false, or auto: on unless the ServiceMonitor is (no double scrape)."""
    want = vals["metrics"]["podAnnotations"]
    if isinstance(want, bool):
        return want
    assert want == "auto", want
    return not vals["metrics"]["serviceMonitor"]["enabled"]


# ---- lint and schema validation -----------------------------------------------------

@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint(helm, value_set, strict):
    cmd = [helm, "lint", str(CHART), "-f", str(VALUES_DIR / value_set), "--kube-version",
           KUBE_VERSION]
    if strict:
        cmd.append("--strict")
    out = _run(cmd)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


def test_value_sets_present():
    assert {"defaults.yaml", "all-enabled.yaml", "external.yaml", "minimal.yaml"} <= set(VALUE_SETS)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_manifests_valid_against_kubernetes_schemas(helm, kv, value_set):
    docs = rendered(helm, value_set)
    versions = sorted({KUBE_VERSION, kv.latest_version()})
    checked = 0
    for doc in docs:
        if (doc.get("apiVersion"), doc.get("kind")) in CRD_KINDS:
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except Exception as e:  # ValidationError, SchemaNotFoundError...
                pytest.fail(f"{value_set}: {doc.get('kind')} {doc['metadata'].get('name')} "
                            f"invalid for Kubernetes {version}: {getattr(e, 'message', e)}")
        checked += 1
    assert checked >= 7, f"only {checked} manifests rendered"


def test_validator_is_strict(kv):
    """A misspelt field fails: the schemas really are the strict ones."""
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
           "spec": {"ports": [{"port": 80}], "sessionAfinity": "None"}}
    with pytest.raises(Exception):
        kv.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_expected_kinds(helm, value_set):
    docs = rendered(helm, value_set)
    vals = values_of(value_set)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == 2
    assert kinds.count("Service") == 2
    assert kinds.count("HorizontalPodAutoscaler") == sum(
        bool(vals[c]["autoscaling"]["enabled"]) for c in COMPONENTS)
    assert kinds.count("PodDisruptionBudget") == sum(bool(vals[c]["pdb"]["enabled"]) for c in COMPONENTS)
    assert kinds.count("Secret") == (
        (0 if vals["jwt"]["existingSecret"] else 1)
        + int(bool(vals["kafka"]["security"]["properties"]) and not vals["kafka"]["security"]["existingSecret"])
        + int(bool(vals["redis"]["password"]) and not vals["redis"]["existingSecret"]))
    assert kinds.count("ServiceMonitor") == int(vals["metrics"]["serviceMonitor"]["enabled"])
    assert kinds.count("PrometheusRule") == int(vals["metrics"]["prometheusRule"]["enabled"])
    assert kinds.count("Job") == int(vals["kafka"]["topicJob"]["enabled"])
    assert kinds.count("Ingress") == int(vals["ingress"]["enabled"])
    assert kinds.count("ServiceAccount") == int(vals["serviceAccount"]["create"])
    for doc in docs:
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert len(doc["metadata"]["name"]) <= 63


# ---- configuration -------------------------------------------------------------------

def _table_from_chart():
    text = (CHART / "templates" / "_config.tpl").read_text()
    body = text.split('define "danmaku.configKeys" -}}', 1)[1].split("{{- end", 1)[0]
    return yaml.safe_load(body)


def test_chart_key_table_matches_binaries(help_keys):
    """The chart's key table (which the templates check config against) is
    the binaries' own: each key with the scope their --help shows."""
    table = _table_from_chart()
    real = {k: ("I" if k in help_keys["ingest"] else "") + ("B" if k in help_keys["broadcast"] else "")
            for k in set(help_keys["ingest"]) | set(help_keys["broadcast"])}
    unknown = {k: v for k, v in table.items() if real.get(k) != v}
    assert not unknown, f"chart keys not (or not so) in the binaries' --help: {unknown}"
    missing = sorted(set(real) - set(table))
    assert not missing, ("keys the binaries take but the chart's table lacks (add them to "
                         f"templates/_config.tpl): {missing}")


def test_chart_key_defaults_match_binary(help_keys):
    """The defaults the chart computes the grace period with are the binaries'."""
    text = (CHART / "templates" / "_config.tpl").read_text()
    for key in ("kafka_delivery_timeout_ms", "drain_timeout_ms"):
        m = re.search(r'"%s" "(\d+)"' % key, text)
        assert m and m.group(1) == help_keys["ingest"][key]["default"], key
    assert help_keys["ingest"]["drain_timeout_ms"] == help_keys["broadcast"]["drain_timeout_ms"]


def _check_value(component, key, value, spec):
    if spec["range"] is None:
        if spec["default"] in ("true", "false"):
            assert value.lower() in ("1", "0", "true", "false", "yes", "no", "on", "off"), \
                f"{component}: {key}={value!r} is not a boolean"
        return
    lo, hi = spec["range"]
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    assert m, f"{component}: {key}={value!r} is not a number"
    is_size = bool(re.fullmatch(r"\d+[kKmMgG]", spec["default"]))  # SIZE keys default with a suffix
    assert not m.group(2) or is_size, f"{component}: {key}={value!r}: suffix on a plain integer"
    n = int(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    assert lo <= n <= hi, f"{component}: {key}={value} outside {lo}..{hi}"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_config_keys_are_real_and_in_range(helm, help_keys, value_set):
    docs = rendered(helm, value_set)
    for component in COMPONENTS:
        env = config_env(docs, component)
        for name, value in env.items():
            assert name.startswith("DANMAKU_"), name
            key = name[len("DANMAKU_"):].lower()
            assert key in help_keys[component], \
                f"{value_set}: {component} gets {name}, not a key of danmaku-{component}"
            assert isinstance(value, str)
            _check_value(component, key, value, help_keys[component][key])
        dep = one(docs, "Deployment", component)
        for e in main_container(dep, component).get("env", []):
            if e["name"].startswith("DANMAKU_"):
                assert e["name"][len("DANMAKU_"):].lower() in help_keys[component], e["name"]
        # Secrets never go into a ConfigMap.
        assert "DANMAKU_JWT_SECRET" not in env


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_config_follows_values(helm, value_set):
    docs = rendered(helm, value_set)
    vals = values_of(value_set)
    for component in COMPONENTS:
        env = config_env(docs, component)
        assert env["DANMAKU_KAFKA_BROKERS"] == vals["kafka"]["brokers"]
        assert env["DANMAKU_KAFKA_TOPIC"] == vals["kafka"]["topic"]
        assert env["DANMAKU_KAFKA_PARTITIONS"] == str(vals["kafka"]["partitions"])
        assert env["DANMAKU_REDIS_HOST"] == vals["redis"]["host"]
        assert env["DANMAKU_REDIS_PORT"] == str(vals["redis"]["port"])
        assert env["DANMAKU_REDIS_PREFIX"] == vals["redis"]["prefix"]
        assert env.get("DANMAKU_REDIS_USER", "") == vals["redis"]["user"]
        assert env["DANMAKU_JWT_ALG"] == vals["jwt"]["alg"]
        port_key = "DANMAKU_HTTP_PORT" if component == "ingest" else "DANMAKU_WS_PORT"
        assert env[port_key] == str(vals[component]["port"])
        for key, value in {**vals["config"], **vals[component]["config"]}.items():
            name = "DANMAKU_" + key.upper()
            if name in env:
                want = ("true" if value else "false") if isinstance(value, bool) else str(value)
                assert env[name] == want, (component, key)
    # Ingest-only and broadcast-only keys of the shared map reach only their binary.
    if "allow_anonymous" in vals["config"]:
        assert "DANMAKU_ALLOW_ANONYMOUS" in config_env(docs, "broadcast")
        assert "DANMAKU_ALLOW_ANONYMOUS" not in config_env(docs, "ingest")


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_workers_follow_cpu(helm, value_set):
    docs = rendered(helm, value_set)
    vals = values_of(value_set)
    for component in COMPONENTS:
        env = config_env(docs, component)
        c = vals[component]
        if "workers" in {**vals["config"], **c["config"]}:
            continue
        res = c.get("resources") or {}
        cpu = c.get("workers") or (res.get("limits") or {}).get("cpu") or (res.get("requests") or {}).get("cpu")
        if not cpu:
            assert "DANMAKU_WORKERS" not in env
            continue
        cpu = str(cpu)
        want = math.ceil(int(cpu[:-1]) / 1000) if cpu.endswith("m") else math.ceil(float(cpu))
        assert env["DANMAKU_WORKERS"] == str(want), (component, cpu)


# ---- pods -----------------------------------------------------------------------------

@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_ports_and_security(helm, value_set):
    docs = rendered(helm, value_set)
    vals = values_of(value_set)
    for component in COMPONENTS:
        dep = one(docs, "Deployment", component)
        pod = dep["spec"]["template"]["spec"]
        c = main_container(dep, component)
        assert c["command"] == [f"/usr/local/bin/danmaku-{component}"]
        port = vals[component]["port"]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert list(ports.values()) == [port]
        for probe, path in (("livenessProbe", "/healthz"),
                            ("readinessProbe", readiness_path(vals, component)),
                            ("startupProbe", "/healthz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path, (component, probe)
            assert ports.get(get["port"], get["port"]) == port, (component, probe)
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        if scrape_annotated(vals):
            assert ann["prometheus.io/scrape"] == "true"
            assert ann["prometheus.io/port"] == str(port) and ann["prometheus.io/path"] == "/metrics"
        else:
            assert not any(k.startswith("prometheus.io/") for k in ann), ann
        # non-root, read-only root, no capabilities, default seccomp
        psc, sc = pod["securityContext"], c["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
        assert psc["seccompProfile"]["type"] == "RuntimeDefault"
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert pod["automountServiceAccountToken"] is False
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/tmp" in mounts
        if vals[component]["resources"]:
            assert c["resources"]["requests"] and c["resources"]["limits"]
        spread = pod.get("topologySpreadConstraints", [])
        assert bool(spread) == vals[component]["topologySpread"]["enabled"]
        for tsc in spread:
            assert matches(tsc["labelSelector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"])
            # KUBE_VERSION is >= 1.27: each rollout's ReplicaSet spreads on its own.
            assert tsc.get("matchLabelKeys", []) == vals[component]["topologySpread"]["matchLabelKeys"]
        assert ("replicas" in dep["spec"]) == (not vals[component]["autoscaling"]["enabled"])


def test_drain_deadlines_in_the_sources():
    """The drains the chart assumes are those the binaries do: broadcast waits
    drain_timeout_ms, ingest max(drain_timeout_ms, kafka_delivery_timeout_ms + 1000)."""
    bcast = (ROOT / "broadcast" / "main.c").read_text()
    assert re.search(r"dm_worker_drain\([^;]*cfg->drain_timeout_ms\)", bcast), \
        "broadcast/main.c changed its drain deadline: update danmaku.drainSeconds in _helpers.tpl"
    ingest = re.sub(r"\s+", " ", (ROOT / "server" / "main.c").read_text())
    assert re.search(r"drain_ms = cfg->kafka_delivery_timeout_ms \+ 1000; "
                     r"if \(cfg->drain_timeout_ms > drain_ms\) drain_ms = cfg->drain_timeout_ms;", ingest), \
        "server/main.c changed its drain deadline: update danmaku.drainSeconds in _helpers.tpl"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_grace_period_is_prestop_plus_drain_plus_margin(helm, help_keys, value_set):
    docs = rendered(helm, value_set)
    vals = values_of(value_set)
    for component in COMPONENTS:
        dep = one(docs, "Deployment", component)
        pod = dep["spec"]["template"]["spec"]
        c = main_container(dep, component)
        cmd = c["lifecycle"]["preStop"]["exec"]["command"]
        assert cmd[0].endswith("sleep")
        sleep = int(cmd[1])
        assert sleep == vals[component]["preStopSleepSeconds"]
        env = config_env(docs, component)
        drain_ms = int(env.get("DANMAKU_DRAIN_TIMEOUT_MS",
                               help_keys[component]["drain_timeout_ms"]["default"]))
        if component == "ingest":
            timeout = int(env.get("DANMAKU_KAFKA_DELIVERY_TIMEOUT_MS",
                                  help_keys["ingest"]["kafka_delivery_timeout_ms"]["default"]))
            drain_ms = max(drain_ms, timeout + 1000)
        margin = vals[component]["terminationMarginSeconds"]
        want = sleep + math.ceil(drain_ms / 1000) + margin
        assert pod["terminationGracePeriodSeconds"] == want, (component, drain_ms)
        assert pod["terminationGracePeriodSeconds"] > sleep + drain_ms / 1000


def test_grace_period_follows_delivery_timeout(helm):
    out = _render(helm, ["--set", "ingest.config.kafka_delivery_timeout_ms=30000",
                         "--set", "ingest.preStopSleepSeconds=3",
                         "--set", "ingest.terminationMarginSeconds=2"])
    assert out.returncode == 0, out.stderr
    dep = one(_docs(out.stdout), "Deployment", "ingest")
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 3 + 31 + 2
    out = _render(helm, ["--set", "config.drain_timeout_ms=40500"])
    assert out.returncode == 0, out.stderr
    docs = _docs(out.stdout)
    for component in COMPONENTS:
        dep = one(docs, "Deployment", component)
        assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 5 + 41 + 5


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_jwt_keys_mounted(helm, value_set):
    docs = rendered(helm, value_set)
    vals = values_of(value_set)
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    for component in COMPONENTS:
        dep = one(docs, "Deployment", component)
        pod = dep["spec"]["template"]["spec"]
        env = config_env(docs, component)
        vol = next(v for v in pod["volumes"] if v["name"] == "jwt-keys")
        name = vol["secret"]["secretName"]
        mount = next(m for m in main_container(dep, component)["volumeMounts"] if m["name"] == "jwt-keys")
        assert mount["readOnly"] is True
        assert env["DANMAKU_JWT_KEY_DIR"] == mount["mountPath"]
        if vals["jwt"]["existingSecret"]:
            assert name == vals["jwt"]["existingSecret"] and name not in secrets
        else:
            items = secrets[name]["data"]
            for item in items:
                assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}\.(key|pem)", item), item
            if "DANMAKU_JWT_KEY_FILE" in env:
                d, _, item = env["DANMAKU_JWT_KEY_FILE"].rpartition("/")
                assert d == mount["mountPath"] and item in items
        if "DANMAKU_JWT_KEY_FILE" in env and vals["jwt"]["defaultKey"]:
            assert env["DANMAKU_JWT_KEY_FILE"].endswith("/" + vals["jwt"]["defaultKey"])
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", ann["checksum/config"])
        assert re.fullmatch(r"[0-9a-f]{64}", ann["checksum/jwt"])


def _secret_file(docs, dep, component, path):
    """(volume, Secret-or-None) of the file at `path` in a component's pod:
    the file is an item of a mounted Secret volume."""
    pod = dep["spec"]["template"]["spec"]
    mount_dir, _, item = path.rpartition("/")
    mount = next(m for m in main_container(dep, component)["volumeMounts"] if m["mountPath"] == mount_dir)
    assert mount["readOnly"] is True
    vol = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    items = vol["secret"].get("items")
    if items:
        assert item in {i["path"] for i in items}
    secret = next((s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == vol["secret"]["secretName"]), None)
    if secret is not None:
        key = next((i["key"] for i in items or [] if i["path"] == item), item)
        assert key in {**secret.get("data", {}), **secret.get("stringData", {})}
    return vol, secret


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_kafka_properties_and_redis_password(helm, value_set):
    docs = rendered(helm, value_set)
    vals = values_of(value_set)
    ks, redis = vals["kafka"]["security"], vals["redis"]
    for component in COMPONENTS:
        dep = one(docs, "Deployment", component)
        env = config_env(docs, component)
        props = "DANMAKU_KAFKA_PROPERTIES_FILE" in env
        assert props == bool(ks["existingSecret"] or ks["properties"])
        if props:
            vol, secret = _secret_file(docs, dep, component, env["DANMAKU_KAFKA_PROPERTIES_FILE"])
            if ks["existingSecret"]:
                assert vol["secret"]["secretName"] == ks["existingSecret"] and secret is None
                assert env["DANMAKU_KAFKA_PROPERTIES_FILE"].endswith("/" + ks["existingSecretKey"])
            else:
                lines = [ln for ln in secret["stringData"]["client.properties"].splitlines() if ln.strip()]
                parsed = dict(ln.split(" = ", 1) for ln in lines)
                assert parsed == {k: str(v) for k, v in ks["properties"].items()}
                assert "bootstrap.servers" not in parsed
        if ks["tlsSecret"]:
            vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "kafka-tls")
            assert vol["secret"]["secretName"] == ks["tlsSecret"]
            assert any(m["name"] == "kafka-tls" for m in main_container(dep, component)["volumeMounts"])
        auth = "DANMAKU_REDIS_PASSWORD_FILE" in env
        assert auth == bool(redis["existingSecret"] or redis["password"])
        if auth:
            vol, secret = _secret_file(docs, dep, component, env["DANMAKU_REDIS_PASSWORD_FILE"])
            if redis["existingSecret"]:
                assert vol["secret"]["secretName"] == redis["existingSecret"] and secret is None
            else:
                import base64
                assert base64.b64decode(secret["data"]["password"]).decode() == redis["password"]
        # Passwords never reach a ConfigMap or the pod's environment.
        for secret_value in (redis["password"], ks["properties"].get("sasl.password")):
            if secret_value:
                assert all(secret_value not in str(cm) for cm in by_kind(docs, "ConfigMap"))
                assert secret_value not in str(dep)


def test_checksums_roll_only_the_changed_component(helm):
    def annotations(*args):
        out = _render(helm, list(args))
        assert out.returncode == 0, out.stderr
        docs = _docs(out.stdout)
        return {c: one(docs, "Deployment", c)["spec"]["template"]["metadata"]["annotations"]
                for c in COMPONENTS}
    base = annotations()
    ingest_change = annotations("--set", "ingest.config.max_text_chars=50")
    assert ingest_change["ingest"]["checksum/config"] != base["ingest"]["checksum/config"]
    assert ingest_change["broadcast"]["checksum/config"] == base["broadcast"]["checksum/config"]
    keys = annotations("--set", "jwt.keys.k1\\.key=0123456789abcdef0123456789abcdef")
    assert all(keys[c]["checksum/jwt"] != base[c]["checksum/jwt"] for c in COMPONENTS)
    assert base["ingest"]["checksum/jwt"] == annotations()["ingest"]["checksum/jwt"]


# ---- services, selectors, autoscaling, disruption budgets --------------------------------

@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_selectors_match_their_pods(helm, value_set):
    docs = rendered(helm, value_set)
    deps = {component_of(d): d for d in by_kind(docs, "Deployment")}
    pod_labels = {c: d["spec"]["template"]["metadata"]["labels"] for c, d in deps.items()}
    for c, d in deps.items():
        assert matches(d["spec"]["selector"]["matchLabels"], pod_labels[c])
    for svc in by_kind(docs, "Service"):
        c = component_of(svc)
        hit = [x for x, labels in pod_labels.items() if matches(svc["spec"]["selector"], labels)]
        assert hit == [c], f"Service {svc['metadata']['name']} selects {hit}"
        ports = {p["name"] for p in main_container(deps[c], c)["ports"]}
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports
        assert svc["spec"]["sessionAffinity"] == "None"
        assert c in svc["metadata"]["name"]  # the alert rules tell nodes apart by job (Service) name
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        c = component_of(pdb)
        hit = [x for x, labels in pod_labels.items() if matches(pdb["spec"]["selector"]["matchLabels"], labels)]
        assert hit == [c], f"PDB {pdb['metadata']['name']} selects {hit}"
        assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        c = component_of(hpa)
        ref = hpa["spec"]["scaleTargetRef"]
        assert ref["kind"] == "Deployment" and ref["apiVersion"] == "apps/v1"
        assert ref["name"] == deps[c]["metadata"]["name"]
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    for ing in by_kind(docs, "Ingress"):
        names = {d["metadata"]["name"]: c for d in by_kind(docs, "Service") for c in [component_of(d)]}
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                svc = path["backend"]["service"]
                c = names[svc["name"]]
                assert svc["port"]["name"] in {p["name"] for p in main_container(deps[c], c)["ports"]}
                want = "ingest" if path["path"].startswith("/v1/rooms") else "broadcast"
                assert c == want, path


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_autoscaling_metrics(helm, value_set):
    docs = rendered(helm, value_set)
    vals = values_of(value_set)
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        c = component_of(hpa)
        metrics = hpa["spec"]["metrics"]
        kinds = [m["type"] for m in metrics]
        a = vals[c]["autoscaling"]
        if c == "ingest" or a.get("metric", "cpu") == "cpu":
            assert kinds == ["Resource"]
        else:
            pods = next(m["pods"] for m in metrics if m["type"] == "Pods")
            assert pods["metric"]["name"] == "danmaku_connections"
            assert pods["target"] == {"type": "AverageValue",
                                      "averageValue": str(a["targetConnectionsPerPod"])}
            assert ("Resource" in kinds) == bool(a["alsoCPU"])
        for m in metrics:
            if m["type"] == "Resource":
                assert m["resource"]["name"] == "cpu"
                assert m["resource"]["target"]["type"] == "Utilization"


def test_connections_metric_is_a_broadcast_gauge():
    """The custom metric the broadcast HPA can scale on is exported."""
    text = (ROOT / "common" / "metrics_table.h").read_text()
    assert re.search(r"DM_METRIC\(\w+,\s*GAUGE,\s*connections,\s*\"\",\s*I?B,", text)


def _render_docs(helm, *args):
    out = _render(helm, list(args))
    assert out.returncode == 0, out.stderr
    return _docs(out.stdout)


def test_pdb_honours_explicit_zero(helm, tmp_path):
    """maxUnavailable / minAvailable 0 stay 0 (not the fallback 1), whether
    from --set (an integer) or a values file (a float to Helm)."""
    def pdb(*args):
        return one(_render_docs(helm, *args), "PodDisruptionBudget", "ingest")["spec"]
    assert pdb() == {**pdb(), "maxUnavailable": 1} and "minAvailable" not in pdb()
    assert pdb("--set", "ingest.pdb.maxUnavailable=0")["maxUnavailable"] == 0
    zero_file = tmp_path / "zero.yaml"
    zero_file.write_text("ingest:\n  pdb:\n    maxUnavailable: 0\n")
    assert pdb("-f", str(zero_file))["maxUnavailable"] == 0
    spec = pdb("--set", "ingest.pdb.maxUnavailable=", "--set", "ingest.pdb.minAvailable=0")
    assert spec["minAvailable"] == 0 and "maxUnavailable" not in spec
    min_file = tmp_path / "min.yaml"
    min_file.write_text("ingest:\n  pdb:\n    maxUnavailable: \"\"\n    minAvailable: 0\n")
    spec = pdb("-f", str(min_file))
    assert spec["minAvailable"] == 0 and "maxUnavailable" not in spec
    # Neither set: the documented fallback.
    spec = pdb("--set", "ingest.pdb.maxUnavailable=", "--set", "ingest.pdb.minAvailable=")
    assert spec["maxUnavailable"] == 1 and "minAvailable" not in spec
    assert pdb("--set", "ingest.pdb.maxUnavailable=25%")["maxUnavailable"] == "25%"
    # An explicit zero counts as set: together with the other, refused.
    out = _render(helm, ["--set", "ingest.pdb.minAvailable=0"])
    assert out.returncode != 0 and "not both" in out.stderr


def test_scrape_annotations_off_with_service_monitor(helm):
    """One Prometheus reading both annotations and ServiceMonitors would
    scrape each pod twice: auto leaves the annotations off with a ServiceMonitor."""
    def state(*args):
        docs = _render_docs(helm, *args)
        ann = {c: "prometheus.io/scrape" in one(docs, "Deployment", c)["spec"]["template"]["metadata"]["annotations"]
               for c in COMPONENTS}
        assert len(set(ann.values())) == 1, ann
        return ann["ingest"], len(by_kind(docs, "ServiceMonitor"))
    sm = ("--set", "metrics.serviceMonitor.enabled=true")
    assert state() == (True, 0)
    assert state(*sm) == (False, 1)
    assert state(*sm, "--set", "metrics.podAnnotations=true") == (True, 1)
    assert state("--set", "metrics.podAnnotations=false") == (False, 0)
    assert state(*sm, "--set", "metrics.podAnnotations=auto") == (False, 1)


def test_ingest_readiness_path(helm):
    """ingest.probes.readiness.path picks /readyz (Kafka and Redis) or /healthz;
    broadcast stays on /readyz."""
    for path in ("/readyz", "/healthz"):
        docs = _render_docs(helm, "--set", f"ingest.probes.readiness.path={path}")
        got = {c: main_container(one(docs, "Deployment", c), c)["readinessProbe"]["httpGet"]["path"]
               for c in COMPONENTS}
        assert got == {"ingest": path, "broadcast": "/readyz"}
    with open(CHART / "values.yaml") as f:
        assert yaml.safe_load(f)["ingest"]["probes"]["readiness"]["path"] == "/readyz"


def test_readiness_choice_documented_and_compose_agrees():
    """values.yaml explains the choice (Kafka AND Redis; a Redis outage takes
    every pod out; /healthz keeps them on local limits), and its claim that
    the compose stack's balancer checks ingest on /healthz holds."""
    text = (CHART / "values.yaml").read_text()
    block = text[text.index("ingest:\n"):text.index("broadcast:\n")]
    block = block[block.index("probes:"):block.index("startup:")]
    for words in ("Kafka AND Redis", "Redis outage", "/healthz", "local rate limits", "503",
                  "compose stack's HAProxy checks"):
        assert words in re.sub(r"\s*\n\s*#\s*", " ", block), words
    cfg = (ROOT / "deploy" / "compose" / "haproxy.cfg").read_text()
    backend = cfg[re.search(r"^backend ingest$", cfg, re.M).start():].split("\nbackend ", 1)[0]
    assert re.search(r"http-check send meth GET uri /healthz", backend), backend


@pytest.mark.parametrize("kube_version,present", [("1.23.0", False), ("1.26.0", False),
                                                  ("1.27.0", True), (KUBE_VERSION, True)])
def test_topology_spread_match_label_keys_by_kube_version(helm, kv, kube_version, present):
    """matchLabelKeys (Kubernetes >= 1.27) only for clusters that have it; the
    manifests stay valid for that version (where the validator ships it)."""
    out = subprocess.run([helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                          "--kube-version", kube_version], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    docs = _docs(out.stdout)
    for component in COMPONENTS:
        dep = one(docs, "Deployment", component)
        spread = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert spread
        for tsc in spread:
            assert ("matchLabelKeys" in tsc) == present, (kube_version, tsc)
            if present:
                assert tsc["matchLabelKeys"] == ["pod-template-hash"]
        oldest = min(tuple(int(x) for x in v.split(".")[:2]) for v in kv.all_versions())
        if tuple(int(x) for x in kube_version.split(".")[:2]) >= oldest:
            kv.validate(dep, kube_version, strict=True)
    docs = _render_docs(helm, "--set", "ingest.topologySpread.matchLabelKeys=null")
    spread = one(docs, "Deployment", "ingest")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert all("matchLabelKeys" not in tsc for tsc in spread)


def test_generated_jwt_key_gitops_caveat_documented():
    """jwt.generate keeps its key through Helm's lookup, which GitOps renders
    lack: values.yaml and the README say so and point at existingSecret."""
    text = (CHART / "values.yaml").read_text()
    jwt = re.sub(r"\s*\n\s*#\s*", " ", text[text.index("\njwt:"):text.index("\ningest:")])
    readme = re.sub(r"\s+", " ", (CHART / "README.md").read_text())
    for doc in (jwt, readme):
        assert "lookup" in doc and "helm template" in doc and "Argo CD" in doc
        assert "existingSecret" in doc


# ---- Kafka topic Job ---------------------------------------------------------------------

def topic_job_script(job):
    """The Job's shell script, and the argument lists of its kafka-topics.sh
    calls: {"create": [...], "describe": [...]}."""
    c = job["spec"]["template"]["spec"]["containers"][0]
    cmd = c["command"]
    assert cmd[:2] == ["/bin/sh", "-c"] and len(cmd) == 3, cmd
    script = cmd[2]
    calls = {}
    for line in script.replace("\\\n", " ").splitlines():
        m = re.search(r"(\S*kafka-topics\.sh\S*)(.*?)\)?$", line)
        if not m:
            continue
        args = shlex.split(m.group(1) + m.group(2))
        kind = "create" if "--create" in args else "describe" if "--describe" in args else None
        assert kind and kind not in calls, line
        calls[kind] = args
    assert set(calls) == {"create", "describe"}, script
    return script, calls


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_topic_job_matches_node_config(helm, value_set):
    docs = rendered(helm, value_set)
    vals = values_of(value_set)
    jobs = by_kind(docs, "Job")
    if not vals["kafka"]["topicJob"]["enabled"]:
        assert not jobs
        return
    (job,) = jobs
    ann = job["metadata"]["annotations"]
    assert "pre-install" in ann["helm.sh/hook"] and "pre-upgrade" in ann["helm.sh/hook"]
    c = job["spec"]["template"]["spec"]["containers"][0]
    script, calls = topic_job_script(job)
    cmd = calls["create"]
    assert cmd[0] == vals["kafka"]["topicJob"]["command"]
    assert "--create" in cmd and "--if-not-exists" in cmd

    def arg(flag, call=cmd):
        return call[call.index(flag) + 1]
    for component in COMPONENTS:
        env = config_env(docs, component)
        assert arg("--partitions") == env["DANMAKU_KAFKA_PARTITIONS"]
        assert arg("--topic") == env["DANMAKU_KAFKA_TOPIC"]
        assert arg("--topic", calls["describe"]) == env["DANMAKU_KAFKA_TOPIC"]
    assert arg("--replication-factor") == str(vals["kafka"]["topicJob"]["replicationFactor"])
    bootstrap = vals["kafka"]["topicJob"]["bootstrapServers"] or vals["kafka"]["brokers"]
    assert arg("--bootstrap-server") == bootstrap
    assert arg("--bootstrap-server", calls["describe"]) == bootstrap
    configs = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--config"]
    assert sorted(configs) == sorted(f"{k}={v}" for k, v in vals["kafka"]["topicJob"]["topicConfig"].items())
    # Client settings (--command-config ...) reach both calls.
    extra = [str(a) for a in vals["kafka"]["topicJob"]["extraArgs"]]
    for call in calls.values():
        assert call[len(call) - len(extra):] == extra
    assert "PartitionCount" in script and "exit 1" in script
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    # The Job gives up (with its own reason) before Helm's default 5 m hook timeout.
    assert job["spec"]["activeDeadlineSeconds"] < 300


STUB_TOPICS = """#!/bin/sh
# kafka-topics.sh stand-in: logs its arguments; --describe prints what a
# real broker would for a topic of $STUB_PARTITIONS partitions.
printf '%s\\n' "$*" >> "$STUB_LOG"
case " $* " in
  *" --describe "*)
    [ -n "${STUB_DESCRIBE_FAILS:-}" ] && { echo "Error: topic not found" >&2; exit 3; }
    [ -n "${STUB_GARBAGE:-}" ] && { echo "something else"; exit 0; }
    printf 'Topic: %s\\tTopicId: AbCd\\tPartitionCount: %s\\tReplicationFactor: 3\\tConfigs: retention.ms=1\\n' "$STUB_TOPIC" "$STUB_PARTITIONS"
    i=0
    while [ "$i" -lt "$STUB_PARTITIONS" ]; do
      printf '\\tTopic: %s\\tPartition: %s\\tLeader: 1\\tReplicas: 1\\tIsr: 1\\n' "$STUB_TOPIC" "$i"
      i=$((i + 1))
    done;;
esac
exit 0
"""


def test_topic_job_fails_on_another_partition_count(helm, tmp_path):
    """The Job's script, run by a real /bin/sh against a kafka-topics.sh
    stand-in: an existing topic with another partition count (which --create
    --if-not-exists passes over) fails it with a message naming both counts."""
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(STUB_TOPICS)
    stub.chmod(0o755)
    topic = "it's.comments"  # a quote, to exercise the shell quoting
    out = _render(helm, ["--set", "kafka.topicJob.enabled=true", "--set", f"kafka.topicJob.command={stub}",
                         "--set", "kafka.partitions=8", "--set-string", f"kafka.topic={topic}",
                         "--set", "kafka.topicJob.extraArgs[0]=--command-config",
                         "--set", "kafka.topicJob.extraArgs[1]=/etc/kafka-client/client.properties",
                         "--show-only", "templates/topic-job.yaml"])
    assert out.returncode == 0, out.stderr
    (job,) = _docs(out.stdout)
    script, _ = topic_job_script(job)
    log = tmp_path / "calls.log"

    def run(partitions, **extra):
        if log.exists():
            log.unlink()
        env = {"PATH": os.environ["PATH"], "STUB_LOG": str(log), "STUB_TOPIC": topic,
               "STUB_PARTITIONS": str(partitions), **extra}
        r = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        return r, log.read_text().splitlines() if log.exists() else []

    r, calls = run(8)
    assert r.returncode == 0, r.stderr
    assert len(calls) == 2 and "--create" in calls[0] and "--describe" in calls[1], calls
    assert all(topic in c and c.endswith("--command-config /etc/kafka-client/client.properties")
               for c in calls), calls
    assert "8 partitions" in r.stdout
    r, _ = run(12)
    assert r.returncode == 1
    assert "exists with 12 partitions" in r.stderr and "kafka.partitions is 8" in r.stderr, r.stderr
    r, _ = run(8, STUB_GARBAGE="1")
    assert r.returncode == 1 and "could not read the partition count" in r.stderr, r.stderr
    r, _ = run(8, STUB_DESCRIBE_FAILS="1")
    assert r.returncode != 0


# ---- monitoring (custom resources, checked by structure) ------------------------------------

def test_service_monitor(helm):
    docs = rendered(helm, "all-enabled.yaml")
    (sm,) = by_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    spec = sm["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    services = by_kind(docs, "Service")
    selected = [s for s in services if matches(spec["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert {component_of(s) for s in selected} == set(COMPONENTS)
    ports = {p["name"] for s in selected for p in s["spec"]["ports"]}
    assert {e["port"] for e in spec["endpoints"]} == ports
    for e in spec["endpoints"]:
        assert set(e) <= {"port", "path", "interval", "scrapeTimeout"}
        assert e["path"] == "/metrics"
        assert re.fullmatch(r"\d+[smh]", e["interval"]) and re.fullmatch(r"\d+[smh]", e["scrapeTimeout"])


def test_prometheus_rule(helm, tmp_path):
    assert RULES_FILE.is_file(), f"{RULES_FILE} missing"
    docs = rendered(helm, "all-enabled.yaml")
    (pr,) = by_kind(docs, "PrometheusRule")
    assert pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert pr["metadata"]["labels"]["release"] == "prometheus"
    assert list(pr["spec"]) == ["groups"]
    with open(RULES_FILE) as f:
        source = yaml.safe_load(f)
    assert pr["spec"]["groups"] == source["groups"]
    assert pr["spec"]["groups"], "no rule groups"
    for group in pr["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert ("alert" in rule) != ("record" in rule), rule
            assert isinstance(rule["expr"], (str, int, float))
            assert set(rule) <= {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
    promtool = shutil.which("promtool")
    if promtool:
        extracted = tmp_path / "rules.yml"
        extracted.write_text(yaml.safe_dump(pr["spec"], sort_keys=False))
        out = _run([promtool, "check", "rules", str(extracted)])
        assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_configmap(helm):
    assert DASHBOARD_FILE.is_file(), f"{DASHBOARD_FILE} missing"
    docs = rendered(helm, "all-enabled.yaml")
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if component_of(d) is None
             and "grafana_dashboard" in d["metadata"]["labels"]]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"]["grafana_folder"] == "Danmaku"
    assert json.loads(cm["data"]["danmaku.json"]) == json.loads(DASHBOARD_FILE.read_text())


# ---- values that must not render ---------------------------------------------------------

BAD_VALUES = [
    (["--set", "config.no_such_key=1"], "not a configuration key"),
    (["--set", "ingest.config.heartbeat_ms=1000"], "not a configuration key of danmaku-ingest"),
    (["--set", "broadcast.config.max_text_chars=10"], "not a configuration key of danmaku-broadcast"),
    (["--set", "config.kafka_brokers=x:9092"], "set kafka.brokers"),
    (["--set", "config.jwt_secret=abc"], "never in a ConfigMap"),
    (["--set", "ingest.config.http_port=1"], "set ingest.port"),
    (["--set", "config.log_level[0]=x"], "/config/log_level"),
    (["--set", "jwt.keys.bad-name=0123456789abcdef0123456789abcdef"], "bad-name"),
    (["--set", "config.redis_password_file=/x"], "set redis.password"),
    (["--set", "broadcast.config.kafka_properties_file=/x"], "set kafka.security"),
    (["--set", "kafka.security.properties.bootstrap\\.servers=x:1"], "bootstrap.servers"),
    (["--set", "jwt.keys.k\\.key=short"], "at least 32 bytes"),
    (["--set", "jwt.keys.k\\.key=0123456789abcdef0123456789abcdef", "--set", "jwt.defaultKey=x.key"],
     "not one of jwt.keys"),
    (["--set", "jwt.alg=RS256"], "jwt.generate makes an HS"),
    (["--set", "jwt.generate=false"], "no JWT key"),
    (["--set", "jwt.alg=none"], "jwt"),
    (["--set", "kafka.partitions=0"], "partitions"),
    (["--set", "broadcast.autoscaling.metric=memory"], "metric"),
    (["--set", "ingest.pdb.minAvailable=1"], "not both"),
    (["--set", "unknownTopLevel=1"], "unknownTopLevel"),
    (["--set", "ingest.probes.readiness.path=/livez"], "/ingest/probes/readiness/path"),
    (["--set", "broadcast.probes.readiness.path=/healthz"], "/broadcast/probes/readiness"),
    (["--set", "metrics.podAnnotations=maybe"], "/metrics/podAnnotations"),
]


@pytest.mark.parametrize("args,message", BAD_VALUES, ids=[" ".join(a[1::2]) for a, _ in BAD_VALUES])
def test_bad_values_fail(helm, args, message):
    out = _render(helm, args)
    assert out.returncode != 0, f"{args} rendered"
    assert message in out.stderr, out.stderr


def test_values_needing_the_rules_file(helm, tmp_path):
    """Without its rules file the chart refuses the PrometheusRule rather
    than rendering an empty one."""
    copy_dir = tmp_path / "danmaku"
    shutil.copytree(CHART, copy_dir)
    (copy_dir / "files" / "alerts" / "danmaku-rules.yml").unlink()
    out = _render(helm, ["--set", "metrics.prometheusRule.enabled=true"], chart=copy_dir)
    assert out.returncode != 0 and "danmaku-rules.yml is missing" in out.stderr


# ---- docs and hygiene ------------------------------------------------------------------

def _notes(helm, args, tmp_path):
    """NOTES.txt rendered (helm template skips it): a copy of the chart with
    the notes as the data of a ConfigMap."""
    copy_dir = tmp_path / "danmaku"
    shutil.copytree(CHART, copy_dir)
    (copy_dir / "templates" / "NOTES.txt").rename(copy_dir / "notes-under-test.txt")
    (copy_dir / "templates" / "notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        "  notes: {{ tpl (.Files.Get \"notes-under-test.txt\") . | quote }}\n")
    out = _render(helm, [*args, "--show-only", "templates/notes-under-test.yaml"], chart=copy_dir)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)["data"]["notes"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_notes(helm, value_set, tmp_path):
    notes = _notes(helm, ["-f", str(VALUES_DIR / value_set)], tmp_path)
    vals = values_of(value_set)
    assert "idle timeout" in notes and "affinity" in notes
    assert vals["kafka"]["topic"] in notes
    if vals["broadcast"]["autoscaling"]["enabled"] and vals["broadcast"]["autoscaling"]["metric"] == "connections":
        assert "custom metrics adapter" in notes
    generated = not vals["jwt"]["existingSecret"] and not vals["jwt"]["keys"]
    assert ("danmaku-token mint" in notes) == generated
    if generated:
        assert "jwt.existingSecret" in notes  # the GitOps caveat
    # Both Services forwarded: the demo page's send box posts to port 8080.
    full = vals.get("fullnameOverride") or f"{RELEASE}-danmaku"
    for component, local in (("ingest", 8080), ("broadcast", 8081)):
        assert (f"port-forward svc/{full}-{component} {local}:{vals[component]['service']['port']}"
                in notes), component
    assert "demo_page: false" in notes
    if vals["ingress"]["enabled"]:
        scheme = "https" if vals["ingress"]["tls"] else "http"
        assert f"demo_ingest_url: {scheme}://{vals['ingress']['host']}" in notes


def test_notes_follow_demo_settings(helm, tmp_path):
    notes = _notes(helm, ["--set", "ingress.enabled=true", "--set", "ingress.host=live.example.org",
                          "--set", "broadcast.config.demo_ingest_url=/"], tmp_path)
    assert "demo_ingest_url: /" in notes and "demo_ingest_url: http" not in notes
    shutil.rmtree(tmp_path / "danmaku")
    notes = _notes(helm, ["--set", "broadcast.config.demo_page=false", "--set", "ingress.enabled=true"],
                   tmp_path)
    assert "demo_ingest_url" not in notes and "demo_page: false" not in notes
    assert "port-forward svc/rel-danmaku-ingest 8080:" in notes


@pytest.mark.parametrize("value_set", ["defaults.yaml", "external.yaml", "minimal.yaml"])
def test_default_images_name_no_registry_host(helm, value_set):
    """Image references carry no registry host unless the values give one:
    the first path part of each is not a host name (no dot, colon or localhost)."""
    docs = rendered(helm, value_set)
    images = [c["image"] for d in docs if d["kind"] in ("Deployment", "Job")
              for c in d["spec"]["template"]["spec"]["containers"]]
    assert images
    for image in images:
        first, sep, _ = image.partition("/")
        assert not sep or not (("." in first) or (":" in first) or first == "localhost"), image


def test_values_yaml_commented():
    """Every value has a comment above it or above its enclosing block."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not m or len(m.group(1)) > 2:
            continue
        prev = lines[i - 1].strip() if i else ""
        # top-level keys need their own comment; second-level ones a comment
        # or a sibling group led by one (within the block)
        if m.group(1) == "" and not prev.startswith("#"):
            uncommented.append(line)
    assert not uncommented, uncommented


def test_chart_readme_and_schema():
    readme = (CHART / "README.md").read_text()
    for word in ("helm install", "kafka.brokers", "redis.host", "jwt", "autoscaling"):
        assert word in readme, word
    schema = json.loads((CHART / "values.schema.json").read_text())
    with open(CHART / "values.yaml") as f:
        values = yaml.safe_load(f)
    assert set(values) <= set(schema["properties"]), set(values) - set(schema["properties"])
