"""The local stack of deploy/compose/ (compose.yaml, haproxy.cfg,
prometheus.yml, grafana/provisioning/).

No container engine runs here, so the stack is checked without starting it,
as closely as the parts allow:
  - compose.yaml parses and has the services the issue lists, pinned images
    without registry host names, healthchecks, restart policies and
    dependency conditions;
  - every DANMAKU_* variable a node gets is a key of the binary it runs
    (from its --help), and each node really starts with exactly that
    environment (the real binaries of $DANMAKU_BUILD, with only addresses
    overridden), passes the compose healthcheck command, and drains within
    its stop_grace_period;
  - the topic-creation service creates the topic and partition count the
    nodes use; Kafka advertises the address the nodes use;
  - haproxy.cfg passes `haproxy -c` and routes :8080 to the ingest nodes and
    :8081 to the broadcast nodes with health checks and WebSocket timeouts;
  - prometheus.yml passes `promtool check config` (the container paths
    mapped through the compose mounts) and scrapes every node;
  - Grafana's provisioning points at the Prometheus service and at the
    dashboard file through the compose mounts.
The healthcheck test needs the Redis and Kafka of tests/services/services.sh
(DANMAKU_TEST_* variables); haproxy and promtool come from
deploy/install-deps.sh (Debian packages haproxy and prometheus).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
_build = Path(os.environ.get("DANMAKU_BUILD", "build/default"))
BUILD = _build if _build.is_absolute() else ROOT / _build
BIN = BUILD / "bin"
SECRET_FILE = ROOT / "tests" / "fixtures" / "dev-secret.txt"
NODE_BINARIES = {"danmaku-ingest": "ingest", "danmaku-broadcast": "broadcast"}
PORT_KEY = {"ingest": "DANMAKU_HTTP_PORT", "broadcast": "DANMAKU_WS_PORT"}


def need_tool(name, package):
    path = shutil.which(os.environ.get(name.upper()) or name)
    if not path:
        pytest.fail(f"{name} not found: Debian's `{package}` package provides it; "
                    "deploy/install-deps.sh installs it", pytrace=False)
    return path


def load_compose():
    with open(COMPOSE, encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose():
    return load_compose()


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def node_services(services):
    """{service name: "ingest"|"broadcast"} by the binary each one runs."""
    out = {}
    for name, svc in services.items():
        cmd = svc.get("command") or []
        cmd = cmd.split() if isinstance(cmd, str) else cmd
        if cmd and cmd[0] in NODE_BINARIES:
            out[name] = NODE_BINARIES[cmd[0]]
    return out


def topic_init_services(services):
    """Services that run kafka-topics.sh."""
    return [name for name, svc in services.items()
            if "kafka-topics.sh" in json.dumps([svc.get("entrypoint"), svc.get("command")])]


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def unescape(s):
    """compose's `$$` is a literal `$`; the file uses no host interpolation."""
    return s.replace("$$", "$")


def duration_s(text):
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    assert parts and "".join(a + b for a, b in parts) == str(text), f"bad duration {text!r}"
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(a) * scale[b] for a, b in parts)


def host_path(svc, container_path):
    """The host path behind container_path through svc's bind mounts."""
    best = None
    for vol in svc.get("volumes", []):
        src, dst = vol.split(":")[:2]
        if not src.startswith((".", "/")):
            continue  # named volume
        if container_path == dst or container_path.startswith(dst.rstrip("/") + "/"):
            if best is None or len(dst) > len(best[1]):
                best = (src, dst)
    assert best, f"{container_path} is not under a bind mount of the service"
    rest = PurePosixPath(container_path).relative_to(best[1])
    return (COMPOSE_DIR / best[0] / rest).resolve()


_help_cache = {}


def help_keys(binary):
    """{DANMAKU_KEY: (default, (lo, hi) or None)} from `binary --help`."""
    if binary not in _help_cache:
        path = BIN / binary
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: build first (make bins) or set DANMAKU_BUILD",
                        pytrace=False)
        out = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=30)
        text = out.stdout + out.stderr
        keys = dict(re.findall(r'env (DANMAKU_[A-Z0-9_]+), default "([^"]*)"', text))
        rngs = dict((m[0], (int(m[1]), int(m[2]))) for m in re.findall(
            r'env (DANMAKU_[A-Z0-9_]+), default "[^"]*", range (-?\d+)\.\.(-?\d+)', text))
        assert len(keys) > 20, f"cannot parse {binary} --help:\n{text[:2000]}"
        _help_cache[binary] = {k: (v, rngs.get(k)) for k, v in keys.items()}
    return _help_cache[binary]


def setting(binary, env, key):
    """A node's value of key: its compose environment, else the default."""
    return env.get(key, help_keys(binary)[key][0])


def drain_deadline_s(kind, env):
    """How long SIGTERM may take on this node: a drain key of the config
    table if there is one, else what the sources wait."""
    binary = f"danmaku-{kind}"
    found = []
    for key in help_keys(binary):
        if "DRAIN" in key or "SHUTDOWN" in key:
            found.append(int(setting(binary, env, key)) / 1000)
    if kind == "ingest":
        # At least kafka_delivery_timeout_ms + 1 s: comments in flight get
        # their answer (server/main.c).
        src = (ROOT / "server" / "main.c").read_text()
        for key, extra in re.findall(r"cfg->(kafka_delivery_timeout_ms)\s*\+\s*(\d+)", src):
            found.append((int(setting(binary, env, "DANMAKU_" + key.upper())) + int(extra)) / 1000)
    else:
        src = (ROOT / "broadcast" / "main.c").read_text()
        m = re.search(r"#define\s+DRAIN_DEADLINE_MS\s+(\d+)", src)
        if m:
            found.append(int(m.group(1)) / 1000)
    if not found:
        pytest.fail(f"cannot tell how long {binary} drains: update drain_deadline_s in "
                    "tests/deploy/test_compose.py", pytrace=False)
    return max(found)


# ---------------------------------------------------------------- structure


def test_compose_has_the_services_of_the_issue(compose, services):
    assert compose.get("name"), "name the project (compose `name:`)"
    nodes = node_services(services)
    assert sorted(nodes.values()) == ["broadcast", "broadcast", "ingest", "ingest"], nodes
    for want in ("kafka", "redis", "lb", "prometheus", "grafana"):
        assert want in services, f"no {want} service"
    assert topic_init_services(services), "no topic-creation service"


def test_images_are_pinned_without_registry_hosts(services):
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name}: no image"
        ref, _, tag = image.rpartition(":")
        assert ref and "/" not in tag, f"{name}: {image} has no tag"
        assert image == "danmaku:dev" or (tag != "latest" and re.search(r"\d", tag)), \
            f"{name}: pin {image} to a version"
        first = ref.split("/")[0]
        assert not ("." in first or ":" in first or first == "localhost") or "/" not in ref, \
            f"{name}: {image} names a registry host"
        if svc.get("build"):
            build = svc["build"]
            assert image == "danmaku:dev", f"{name}: only danmaku:dev is built here"
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert context == ROOT, f"{name}: build context {context} is not the repository root"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    # Nor anywhere else in the stack's files: no "host.domain/path" outside URLs.
    for path in COMPOSE_DIR.rglob("*"):
        if path.is_file():
            for m in re.finditer(r"(?<![/\w.@-])(?:[a-z0-9-]+\.)+[a-z]{2,}(?::\d+)?/[\w.-]+",
                                 path.read_text(errors="replace")):
                pytest.fail(f"{path.relative_to(ROOT)}: {m.group()} looks like a registry host")


def test_one_service_builds_the_shared_image(services):
    """danmaku:dev is built by exactly one service (several `build:` for one
    tag race each other); every other service using it depends on that one,
    so compose builds it first (and skips pulling a tag another service
    builds)."""
    users = [n for n, s in services.items() if s.get("image") == "danmaku:dev"]
    builders = [n for n in users if services[n].get("build")]
    assert len(builders) == 1, f"danmaku:dev built by {builders or 'no service'}"
    assert set(node_services(services)) <= set(users)

    def depends(name, seen=()):
        deps = services[name].get("depends_on") or {}
        deps = list(deps) if isinstance(deps, (dict, list)) else []
        return builders[0] in deps or any(depends(d, seen + (name,)) for d in deps if d not in seen)
    for name in users:
        if name != builders[0]:
            assert depends(name), f"{name}: runs danmaku:dev without depending on {builders[0]}"


def test_no_host_interpolation(services):
    """Every `$` is escaped (`$$`): the stack does not depend on the caller's
    environment, and the shell scripts see their own variables."""
    raw = COMPOSE.read_text()
    for line in raw.splitlines():
        stripped = line.replace("$$", "")
        assert "$" not in stripped, f"unescaped $ (compose interpolation) in: {line.strip()}"


def test_node_environment_uses_real_keys(services):
    nodes = node_services(services)
    for name, kind in nodes.items():
        env = env_of(services[name])
        keys = help_keys(f"danmaku-{kind}")
        for key, value in env.items():
            if not key.startswith("DANMAKU_"):
                continue
            assert key in keys or key == "DANMAKU_CONFIG", \
                f"{name}: {key} is not a key of danmaku-{kind} (see its --help)"
            rng = keys.get(key, ("", None))[1]
            if rng and re.fullmatch(r"-?\d+", value):
                assert rng[0] <= int(value) <= rng[1], f"{name}: {key}={value} outside {rng}"
        assert "DANMAKU_JWT_SECRET" not in env, f"{name}: no secret in the compose file"
        assert env.get("DANMAKU_NODE_ID") == name, f"{name}: DANMAKU_NODE_ID should be {name}"
        port = {"ingest": "8080", "broadcast": "8081"}[kind]
        assert setting(f"danmaku-{kind}", env, PORT_KEY[kind]) == port, f"{name}: port"


def test_nodes_agree_with_kafka_redis_and_topic_init(services):
    nodes = node_services(services)
    envs = {name: env_of(services[name]) for name in nodes}

    def one(key):
        values = {setting(f"danmaku-{nodes[n]}", e, key) for n, e in envs.items()}
        assert len(values) == 1, f"nodes disagree on {key}: {values}"
        return values.pop()

    partitions, topic, brokers = (one("DANMAKU_KAFKA_PARTITIONS"), one("DANMAKU_KAFKA_TOPIC"),
                                  one("DANMAKU_KAFKA_BROKERS"))
    redis_host, redis_port = one("DANMAKU_REDIS_HOST"), one("DANMAKU_REDIS_PORT")
    assert redis_host in services and redis_port == "6379", (redis_host, redis_port)
    one("DANMAKU_JWT_KEY_FILE")

    # Kafka: KRaft, advertising the address the nodes bootstrap from.
    kenv = env_of(services["kafka"])
    assert set(kenv["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for k in kenv)
    advertised = [a.split("://", 1)[1] for a in kenv["KAFKA_ADVERTISED_LISTENERS"].split(",")]
    for broker in brokers.split(","):
        assert broker in advertised, f"Kafka does not advertise {broker}: {advertised}"
    assert kenv.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", \
        "only the init service creates the topic (with the nodes' partition count)"

    # The topic-creation service.
    inits = topic_init_services(services)
    assert len(inits) == 1, inits
    init = services[inits[0]]
    ienv = env_of(init)
    parts = init.get("entrypoint", []) + (init.get("command") or [])
    script = unescape(" ".join(parts if isinstance(parts, list) else [parts]))

    def resolve(token):
        token = token.strip("'\"")
        m = re.fullmatch(r"\$\{?(\w+)\}?", token)
        return ienv.get(m.group(1)) if m else token

    create = re.search(r"kafka-topics\.sh(.*?)(?:\n\s*\S+=|\n\s*have=|$)", script, re.S).group(1)
    assert "--create" in create and "--if-not-exists" in create, create
    opts = dict(re.findall(r"--(partitions|topic|bootstrap-server)\s+(\S+)", create))
    assert resolve(opts["partitions"]) == partitions, \
        f"topic init creates {resolve(opts['partitions'])} partitions, the nodes use {partitions}"
    assert resolve(opts["topic"]) == topic, (resolve(opts["topic"]), topic)
    assert resolve(opts["bootstrap-server"]) in brokers.split(",")
    assert "PartitionCount" in script, "the init service also checks an existing topic's count"
    assert init.get("restart") == "no"
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in nodes:
        deps = services[name]["depends_on"]
        assert deps[inits[0]]["condition"] == "service_completed_successfully", name
        assert deps[redis_host]["condition"] == "service_healthy", name


def test_dev_jwt_secret_is_generated_not_committed(services):
    nodes = node_services(services)
    key_files = {env_of(services[n])["DANMAKU_JWT_KEY_FILE"] for n in nodes}
    assert len(key_files) == 1
    key_file = key_files.pop()
    key_dir = str(PurePosixPath(key_file).parent)
    makers = [n for n, s in services.items()
              if key_file in unescape(json.dumps(s.get("command", "")))]
    assert len(makers) == 1, f"one service should write {key_file}: {makers}"
    maker = services[makers[0]]
    assert "dev" in makers[0], "name the secret generator as a dev-only fixture"
    assert maker.get("restart") == "no"
    script = unescape(" ".join(maker["command"]))
    assert "/dev/urandom" in script and "10001" in script, "random secret, readable by uid 10001"

    def volume_at(svc, target):
        for vol in svc.get("volumes", []):
            parts = vol.split(":")
            if parts[1] == target:
                return parts[0], parts[2:] == ["ro"]
        return None, None

    vol, _ = volume_at(maker, key_dir)
    assert vol and not vol.startswith((".", "/")), f"{makers[0]}: {key_dir} is a named volume"
    for n in nodes:
        nvol, ro = volume_at(services[n], key_dir)
        assert nvol == vol and ro, f"{n}: mounts {vol} read-only at {key_dir}"
        assert services[n]["depends_on"][makers[0]]["condition"] == "service_completed_successfully"
    for path in COMPOSE_DIR.rglob("*"):
        assert not re.search(r"secret|\.key$|\.pem$", path.name, re.I), \
            f"{path}: no key material in deploy/compose"


def test_restart_healthchecks_and_grace(services):
    for name, svc in services.items():
        if svc.get("restart") == "no":
            continue  # one-shot
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), f"{name}: restart"
        hc = svc.get("healthcheck")
        assert hc and hc.get("test"), f"{name}: no healthcheck"
        for key in ("interval", "timeout"):
            duration_s(hc[key])
    for name, kind in node_services(services).items():
        svc = services[name]
        test = " ".join(svc["healthcheck"]["test"])
        port = {"ingest": "8080", "broadcast": "8081"}[kind]
        assert f"/{port}" in test and "/readyz" in test, f"{name}: healthcheck {test}"
        grace = duration_s(svc.get("stop_grace_period", "10s"))
        drain = drain_deadline_s(kind, env_of(svc))
        assert grace >= drain + 2, f"{name}: stop_grace_period {grace}s < drain {drain}s + 2s"
        assert not svc.get("ports"), f"{name}: nodes are reached through the balancer only"


def test_published_ports(services):
    published = {}
    for name, svc in services.items():
        for port in svc.get("ports", []):
            host = str(port).rsplit(":", 1)[0].split(":")[-1]
            assert host not in published, f"host port {host} published twice"
            published[host] = name
    assert published.get("8080") == "lb" and published.get("8081") == "lb", published
    assert published.get("9090") == "prometheus" and published.get("3000") == "grafana"


def test_bind_mounts_exist(services):
    for name, svc in services.items():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith((".", "/")):
                assert (COMPOSE_DIR / src).exists(), f"{name}: mount source {src} is missing"


# ---------------------------------------------------------------- balancer


def haproxy_sections(text):
    sections, current = [], None
    for line in text.splitlines():
        line = line.split("#", 1)[0].rstrip()
        if not line:
            continue
        if not line[0].isspace():
            current = (line.split()[0], (line.split() + [""])[1], [])
            sections.append(current)
        else:
            current[2].append(line.split())
    return sections


def test_haproxy_config_routes_both_node_types(services):
    lb = services["lb"]
    cfg = host_path(lb, "/usr/local/etc/haproxy/haproxy.cfg")
    sections = haproxy_sections(cfg.read_text())
    nodes = node_services(services)
    backends = {name: lines for kind, name, lines in sections if kind == "backend"}
    defaults = [lines for kind, _, lines in sections if kind == "defaults"]
    assert defaults, "a defaults section"
    timeouts = {l[1]: duration_s(l[2]) for l in defaults[0] if l[0] == "timeout"}
    default_server = next((l for l in defaults[0] if l[0] == "default-server"), [])
    env_b = env_of(services[next(n for n, k in nodes.items() if k == "broadcast")])
    idle_s = int(setting("danmaku-broadcast", env_b, "DANMAKU_IDLE_TIMEOUT_MS")) / 1000
    heartbeat_s = int(setting("danmaku-broadcast", env_b, "DANMAKU_HEARTBEAT_MS")) / 1000
    assert timeouts.get("tunnel", 0) >= 600, "WebSockets need a long `timeout tunnel`"
    assert timeouts["tunnel"] > idle_s
    assert timeouts["client"] > 2 * heartbeat_s and timeouts["server"] > 2 * heartbeat_s
    routed = {}
    for kind, name, lines in sections:
        if kind != "frontend":
            continue
        binds = [l[1] for l in lines if l[0] == "bind"]
        backend = next((l[1] for l in lines if l[0] == "default_backend"), None)
        for b in binds:
            routed[b.rsplit(":", 1)[1]] = backend
    for port, kind in (("8080", "ingest"), ("8081", "broadcast")):
        backend = backends[routed[port]]
        servers = {l[2] for l in backend if l[0] == "server"}
        want = {f"{n}:{port}" for n, k in nodes.items() if k == kind}
        assert servers == want, f":{port} goes to {servers}, want {want}"
        flat = [" ".join(l) for l in backend]
        assert any(s.startswith("option httpchk") for s in flat), f"{routed[port]}: httpchk"
        # Broadcast: ready (a Kafka broker). Ingest: alive, or ready.
        probes = ("/readyz",) if kind == "broadcast" else ("/healthz", "/readyz")
        assert any(p in s for s in flat for p in probes), f"{routed[port]}: check {probes}"
        checked = "check" in default_server or \
            all("check" in l for l in backend if l[0] == "server")
        assert checked, f"{routed[port]}: servers need health checks"
    assert "resolvers" in default_server, "resolve node names at run time (restarted nodes)"


def test_haproxy_retries_never_repeat_an_unkeyed_post(services):
    """The ingest backend retries a 503 on another node only for requests a
    second attempt cannot publish twice (GET/HEAD, or an Idempotency-Key):
    an unkeyed POST's 503 may follow a write that reached Kafka."""
    cfg = host_path(services["lb"], "/usr/local/etc/haproxy/haproxy.cfg")
    sections = haproxy_sections(cfg.read_text())
    backends = {name: lines for kind, name, lines in sections if kind == "backend"}
    defaults = next(lines for kind, _, lines in sections if kind == "defaults")
    for name, lines in backends.items():
        retry_on = {w for l in defaults + lines if l[0] == "retry-on" for w in l[1:]}
        l7 = retry_on - {"conn-failure", "none"}
        if not l7:
            continue
        assert name == "ingest", f"{name}: L7 retries ({l7}) only where they are known to be safe"
        assert l7 <= {"503"}, f"ingest: retry-on {l7}: only a 503 is known to publish nothing twice"
        guards = [" ".join(l) for l in lines if l[:2] == ["http-request", "disable-l7-retry"]]
        assert guards, "ingest: retry-on 503 needs http-request disable-l7-retry for unkeyed POSTs"
        guard = guards[0]
        assert guard.startswith("http-request disable-l7-retry unless"), guard
        assert "METH_GET" in guard and "req.hdr(idempotency-key)" in guard.lower(), guard
        assert not re.search(r"METH_POST|METH_PUT|METH_DELETE", guard), guard
        assert any(l[:2] == ["option", "http-buffer-request"] for l in lines), \
            "ingest: buffer requests so a retry can resend the body"
    # The server's contract the guard relies on: an Idempotency-Key repeated
    # while its first attempt is unresolved is refused (409), not published.
    src = (ROOT / "server" / "comments.c").read_text()
    assert re.search(r"409,\s*\d+,\s*\"in_progress\"", src), "server/comments.c: in_progress answer"
    assert "Idempotency-Key" in (ROOT / "server" / "http.c").read_text()


def test_haproxy_checks_draining_nodes_fast(services):
    """A draining node (503 to its check) leaves the rotation quickly: once a
    check fails the next come at fastinter, shorter than inter."""
    cfg = host_path(services["lb"], "/usr/local/etc/haproxy/haproxy.cfg")
    sections = haproxy_sections(cfg.read_text())
    defaults = next(lines for kind, _, lines in sections if kind == "defaults")
    ds = next(l for l in defaults if l[0] == "default-server")
    opt = {ds[i]: ds[i + 1] for i in range(len(ds) - 1) if ds[i] in ("inter", "fastinter", "fall")}
    inter, fast, fall = duration_s(opt["inter"]), duration_s(opt["fastinter"]), int(opt["fall"])
    assert fast < inter, opt
    # Out of rotation within one interval plus (fall - 1) fast checks.
    assert inter + (fall - 1) * fast <= 2, opt


def test_haproxy_config_is_valid():
    haproxy = need_tool("haproxy", "haproxy")
    r = subprocess.run([haproxy, "-c", "-f", str(COMPOSE_DIR / "haproxy.cfg")],
                       capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    # Node names resolve only inside the compose network.
    warnings = [line for line in out.splitlines()
                if "[WARNING]" in line and "could not resolve address" not in line]
    assert not warnings, "\n".join(warnings)


# ---------------------------------------------------------------- prometheus


def test_prometheus_config_is_valid_and_scrapes_every_node(services, tmp_path):
    promtool = need_tool("promtool", "prometheus")
    prom = services["prometheus"]
    cmd = prom["command"]
    config_path = next(a.split("=", 1)[1] for a in cmd if a.startswith("--config.file="))
    local = host_path(prom, config_path)
    assert local == (COMPOSE_DIR / "prometheus.yml").resolve()
    cfg = yaml.safe_load(local.read_text())
    # Map the rule files' container paths to the repository's files.
    rule_files = [str(host_path(prom, p)) for p in cfg.get("rule_files", [])]
    assert rule_files, "load the alert rules"
    for path in rule_files:
        assert Path(path).is_file(), path
    cfg["rule_files"] = rule_files
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([promtool, "check", "config", str(copy)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (ROOT / "deploy/helm/danmaku/files/alerts/danmaku-rules.yml").resolve() in \
        [Path(p).resolve() for p in rule_files]
    nodes = node_services(services)
    scraped = {}
    for job in cfg["scrape_configs"]:
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                scraped[target] = (job["job_name"], job.get("metrics_path", "/metrics"))
    for name, kind in nodes.items():
        port = {"ingest": "8080", "broadcast": "8081"}[kind]
        job, path = scraped.get(f"{name}:{port}", (None, None))
        assert job and kind in job and path == "/metrics", \
            f"{name}:{port} must be scraped by a job named with {kind!r} (the alerts expect it)"


# ---------------------------------------------------------------- grafana


def test_grafana_provisions_datasource_and_dashboard(services):
    graf = services["grafana"]
    prov = host_path(graf, "/etc/grafana/provisioning")
    datasources = []
    for f in sorted((prov / "datasources").glob("*.y*ml")):
        datasources += yaml.safe_load(f.read_text())["datasources"]
    prom = [d for d in datasources if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0].get("isDefault"), \
        "one default Prometheus data source (the dashboard's ${datasource} picks the default)"
    m = re.fullmatch(r"http://([\w.-]+):(\d+)/?", prom[0]["url"])
    assert m and m.group(1) in services, prom[0]["url"]
    assert any(str(p).endswith(f":{m.group(2)}") for p in services[m.group(1)].get("ports", []))
    providers = []
    for f in sorted((prov / "dashboards").glob("*.y*ml")):
        providers += yaml.safe_load(f.read_text())["providers"]
    assert providers, "a dashboard provider"
    canonical = (ROOT / "deploy/helm/danmaku/files/dashboards/danmaku.json").resolve()
    found = False
    for p in providers:
        assert p["type"] == "file"
        folder = host_path(graf, p["options"]["path"])
        found |= canonical in [f.resolve() for f in folder.glob("*.json")]
    assert found, "the provider must load deploy/helm/danmaku/files/dashboards/danmaku.json"
    json.loads(canonical.read_text())
    home = env_of(graf).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        assert host_path(graf, home) == canonical


# ---------------------------------------------------------------- nodes for real


def test_nodes_start_with_their_compose_environment_and_pass_the_healthcheck(services):
    """Each node's compose environment, given to the real binary (addresses
    and the port swapped for local ones), starts a node that the compose
    healthcheck command finds ready and that drains within its grace."""
    missing = [v for v in ("DANMAKU_TEST_KAFKA_BOOTSTRAP", "DANMAKU_TEST_REDIS_PORT")
               if not os.environ.get(v)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not set: this test needs the Redis and Kafka of "
                    "tests/services/services.sh (start them, then source <statedir>/env)",
                    pytrace=False)
    bash = shutil.which("bash")
    for name, kind in node_services(services).items():
        svc = services[name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DANMAKU_")}
        env.update({k: v for k, v in env_of(svc).items() if k.startswith("DANMAKU_")})
        tmp = tempfile.mkdtemp(prefix="dm-compose-")
        port_file = os.path.join(tmp, "port")
        log_path = os.path.join(tmp, "stderr.log")
        port_flag = {"ingest": "--http-port", "broadcast": "--ws-port"}[kind]
        args = [str(BIN / f"danmaku-{kind}"), "--listen-host", "127.0.0.1", port_flag, "0",
                "--port-file", port_file, "--workers", "1",
                "--kafka-brokers", os.environ["DANMAKU_TEST_KAFKA_BOOTSTRAP"],
                "--kafka-topic", os.environ.get("DANMAKU_TEST_TOPIC", "danmaku.comments"),
                "--kafka-partitions", os.environ.get("DANMAKU_TEST_PARTITIONS", "32"),
                "--redis-host", os.environ.get("DANMAKU_TEST_REDIS_HOST", "127.0.0.1"),
                "--redis-port", os.environ["DANMAKU_TEST_REDIS_PORT"],
                "--redis-prefix", f"dmcompose:{os.getpid()}:", "--jwt-key-file", str(SECRET_FILE)]
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=log)
        try:
            deadline = time.time() + 20
            while not os.path.exists(port_file) or not open(port_file).read().strip():
                assert proc.poll() is None, \
                    f"{name} exited {proc.returncode} with its compose environment:\n" + \
                    open(log_path, errors="replace").read()[-3000:]
                assert time.time() < deadline, f"{name}: no port file"
                time.sleep(0.05)
            port = open(port_file).read().strip()
            test = svc["healthcheck"]["test"]
            assert test[0] == "CMD" and test[1] == "bash" and test[2] == "-c", test
            script = test[3].replace({"ingest": "8080", "broadcast": "8081"}[kind], port)
            deadline = time.time() + 20
            while True:
                r = subprocess.run([bash, "-c", script], capture_output=True, text=True,
                                   timeout=duration_s(svc["healthcheck"]["timeout"]) + 5)
                if r.returncode == 0:
                    break
                assert time.time() < deadline, \
                    f"{name}: the healthcheck never passed: {r.stdout}{r.stderr}"
                time.sleep(0.25)
            t0 = time.time()
            proc.send_signal(signal.SIGTERM)
            grace = duration_s(svc.get("stop_grace_period", "10s"))
            try:
                code = proc.wait(grace)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} did not stop within its stop_grace_period {grace}s")
            assert code == 0, \
                f"{name} exited {code}:\n" + open(log_path, errors="replace").read()[-3000:]
            assert time.time() - t0 < grace
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            shutil.rmtree(tmp, ignore_errors=True)
