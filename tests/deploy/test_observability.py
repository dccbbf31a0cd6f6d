"""The Grafana dashboard and the Prometheus alert rules
(deploy/helm/danmaku/files/{dashboards/danmaku.json,alerts/danmaku-rules.yml}).

Metric names and labels are checked against what the binaries really export:
the module starts one danmaku-ingest and one danmaku-broadcast from
$DANMAKU_BUILD/bin (default build/default) and scrapes their /metrics, so a
renamed metric, label or label value fails here. Every series is exported
from the start, so the nodes need not reach Kafka or Redis: they use the
test services of tests/services/services.sh when DANMAKU_TEST_* is set, and
closed local ports otherwise. The scrape is also compared with
common/metrics_table.h, so the two cannot drift apart unnoticed.

PromQL is checked twice: by promtool (`check rules` on the rule file and on
every dashboard query wrapped in a recording rule; `test rules` on
tests/deploy/promtool/alerts_test.yml) and by a small tokenizer here that
pulls out metric names, label matchers and grouping labels. promtool is
required (Debian package `prometheus`, installed by deploy/install-deps.sh).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
_build = Path(os.environ.get("DANMAKU_BUILD", "build/default"))
BUILD = _build if _build.is_absolute() else ROOT / _build
BIN = BUILD / "bin"
CHART_FILES = ROOT / "deploy" / "helm" / "danmaku" / "files"
DASHBOARD = CHART_FILES / "dashboards" / "danmaku.json"
RULES = CHART_FILES / "alerts" / "danmaku-rules.yml"
ALERT_TESTS = ROOT / "tests" / "deploy" / "promtool" / "alerts_test.yml"
METRICS_TABLE = ROOT / "common" / "metrics_table.h"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
SECRET_FILE = ROOT / "tests" / "fixtures" / "dev-secret.txt"

# Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
# Series Prometheus makes itself, per target.
SYNTHETIC = {"up": set(), "scrape_duration_seconds": set(), "scrape_samples_scraped": set()}
SEVERITIES = {"critical", "warning", "info"}
# Families the issue asks the dashboard to show (issue 7, item 4).
REQUIRED_ON_DASHBOARD = {
    "danmaku_connections": "connections",
    "danmaku_rooms": "rooms",
    "danmaku_deliveries_total": "deliveries/s",
    "danmaku_fanout_latency_seconds_bucket": "fan-out latency",
    "danmaku_ws_closed_total": "drops: slow viewers closed",
    "danmaku_slow_viewer_sampled_total": "drops: slow viewers sampled",
    "danmaku_density_skipped_total": "drops: density sampling",
    "danmaku_kafka_consumer_lag": "Kafka lag",
    "danmaku_http_requests_total": "ingest status codes",
    "danmaku_http_request_duration_seconds_bucket": "ingest latency",
    "danmaku_ratelimit_decisions_total": "rate-limit decisions",
}


def promtool():
    path = shutil.which(os.environ.get("PROMTOOL") or "promtool")
    if not path:
        pytest.fail("promtool not found: it comes with Debian's `prometheus` package, which "
                    "deploy/install-deps.sh installs (apt-get install --no-install-recommends "
                    "prometheus)", pytrace=False)
    return path


def run_promtool(*args):
    r = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


# ---------------------------------------------------------------- live nodes


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parse_exposition(text):
    """{series name: {label: set(values)}} and {family: type} of a scrape."""
    series, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+$", line)
        assert m, f"unparsable exposition line: {line!r}"
        labels = series.setdefault(m.group(1), {})
        for key, value in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                     m.group(2) or ""):
            labels.setdefault(key, set()).add(value)
    return series, types


class _Node:
    def __init__(self, binary, port_flag, args):
        path = BIN / binary
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing: build first (make bins) or point DANMAKU_BUILD "
                        "at a build", pytrace=False)
        self.dir = tempfile.mkdtemp(prefix="dm-obs-")
        self.port_file = os.path.join(self.dir, "port")
        self.log_path = os.path.join(self.dir, "stderr.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(path), "--listen-host", "127.0.0.1", port_flag, "0", "--port-file",
             self.port_file, "--log-level", "warn", "--workers", "1", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.time() + 20
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{binary} exited {self.proc.returncode}: {self.stderr()}",
                            pytrace=False)
            try:
                with open(self.port_file) as f:
                    self.port = int(f.read().strip())
                break
            except (FileNotFoundError, ValueError):
                if time.time() > deadline:
                    pytest.fail(f"{binary} wrote no port file: {self.stderr()}", pytrace=False)
                time.sleep(0.02)

    def stderr(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()[-3000:]

    def scrape(self):
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200
            assert r.headers.get("Content-Type", "").startswith("text/plain")
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def exported():
    """What each binary exports: {"ingest"|"broadcast": (series, types)}."""
    brokers = os.environ.get("DANMAKU_TEST_KAFKA_BOOTSTRAP") or f"127.0.0.1:{_closed_port()}"
    redis_host = os.environ.get("DANMAKU_TEST_REDIS_HOST", "127.0.0.1")
    redis_port = os.environ.get("DANMAKU_TEST_REDIS_PORT") or str(_closed_port())
    common = ["--kafka-brokers", brokers, "--redis-host", redis_host, "--redis-port", redis_port,
              "--redis-prefix", f"dmobs:{os.getpid()}:"]
    if os.environ.get("DANMAKU_TEST_TOPIC"):
        common += ["--kafka-topic", os.environ["DANMAKU_TEST_TOPIC"]]
    if os.environ.get("DANMAKU_TEST_PARTITIONS"):
        common += ["--kafka-partitions", os.environ["DANMAKU_TEST_PARTITIONS"]]
    nodes = {}
    try:
        nodes["ingest"] = _Node("danmaku-ingest", "--http-port",
                                common + ["--jwt-key-file", str(SECRET_FILE)])
        nodes["broadcast"] = _Node("danmaku-broadcast", "--ws-port", common)
        yield {kind: _parse_exposition(node.scrape()) for kind, node in nodes.items()}
    finally:
        for node in nodes.values():
            node.stop()


@pytest.fixture(scope="module")
def known(exported):
    """{series name: {label: set(values) or None (any value)}} over both
    binaries, with Prometheus' target labels and synthetic series."""
    out = {}
    for series, _ in exported.values():
        for name, labels in series.items():
            merged = out.setdefault(name, {})
            for key, values in labels.items():
                merged.setdefault(key, set()).update(values)
    for name, labels in SYNTHETIC.items():
        out[name] = {key: None for key in labels}
    for labels in out.values():
        for key in TARGET_LABELS:
            labels[key] = None
    return out


# ---------------------------------------------------------------- PromQL

_TOKEN = re.compile(r"""
    (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<var>\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){},])
  | (?P<ws>\s+)
""", re.X)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2"}


def tokenize(expr):
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        assert m, f"cannot tokenize {expr[pos:pos + 30]!r} in {expr!r}"
        pos = m.end()
        if m.lastgroup != "ws":
            tokens.append((m.lastgroup, m.group()))
    return tokens


def _unquote(s):
    """The value of a PromQL string literal."""
    if s[0] == "`":
        return s[1:-1]
    body = s[1:-1]
    if s[0] == "'":
        body = body.replace("\\'", "'").replace('"', '\\"')
    return json.loads('"' + body + '"')


def promql_parts(expr):
    """(selectors [(metric, [(label, op, value)])], grouping labels) of expr."""
    toks = tokenize(expr)
    selectors, grouping = [], set()
    i = 0

    def matchers(j):
        out = []
        assert toks[j][1] == "{"
        j += 1
        while toks[j][1] != "}":
            label, op, value = toks[j][1], toks[j + 1][1], toks[j + 2]
            assert toks[j][0] == "ident" and op in ("=", "!=", "=~", "!~") and value[0] == "str", \
                f"bad matcher at {toks[j:j + 3]} in {expr!r}"
            out.append((label, op, _unquote(value[1])))
            j += 3
            if toks[j][1] == ",":
                j += 1
        return out, j + 1

    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else None
        if kind == "ident" and text in _GROUPING and nxt == "(":
            j = i + 2
            while toks[j][1] != ")":
                if toks[j][0] == "ident":
                    grouping.add(toks[j][1])
                j += 1
            i = j + 1
        elif kind == "ident" and (nxt == "(" or nxt in ("by", "without")):
            i += 1  # function or aggregation
        elif kind == "ident" and text in _KEYWORDS:
            i += 1
        elif kind == "ident":
            if nxt == "{":
                ms, i = matchers(i + 1)
            else:
                ms, i = [], i + 1
            selectors.append((text, ms))
        elif text == "{":
            ms, i = matchers(i)
            names = [v for (l, op, v) in ms if l == "__name__" and op == "="]
            assert names, f"selector without a metric name in {expr!r}"
            selectors.append((names[0], ms))
        else:
            i += 1
    return selectors, grouping


def check_expr(expr, known, where):
    """Problems of one PromQL expression against the exported series."""
    problems = []
    selectors, grouping = promql_parts(expr)
    if not selectors:
        problems.append(f"{where}: no metric in {expr!r}")
    labels_here = set()
    for name, ms in selectors:
        if name not in known:
            problems.append(f"{where}: unknown metric {name}")
            continue
        labels = known[name]
        labels_here |= set(labels)
        for label, op, value in ms:
            if label not in labels:
                problems.append(f"{where}: {name} has no label {label} "
                                f"(it has {sorted(labels)})")
                continue
            values = labels[label]
            if values is None or "$" in value or op in ("!=", "!~"):
                continue
            if op == "=" and value not in values:
                problems.append(f"{where}: {name}{{{label}={value!r}}} matches no exported "
                                f"series (values: {sorted(values)})")
            if op == "=~" and not any(re.fullmatch(value, v) for v in values):
                problems.append(f"{where}: {name}{{{label}=~{value!r}}} matches no exported "
                                f"series (values: {sorted(values)})")
    for label in grouping - labels_here:
        problems.append(f"{where}: grouping label {label} is on none of the metrics "
                        f"{sorted({n for n, _ in selectors})}")
    return problems, selectors, grouping


def grafana_to_promql(expr):
    """A dashboard query with Grafana's variables replaced by plain values."""
    fixed = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
    return re.sub(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)\}?",
                  lambda m: fixed.get(m.group(1), ".+"), expr)


# ---------------------------------------------------------------- helpers


def load_dashboard():
    with open(DASHBOARD, encoding="utf-8") as f:
        return json.load(f)


def all_panels(dash):
    for panel in dash["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_targets(dash):
    for panel in all_panels(dash):
        for target in panel.get("targets", []):
            yield panel, target


def load_rules():
    with open(RULES, encoding="utf-8") as f:
        return yaml.safe_load(f)


def alert_rules():
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                yield group["name"], rule


def table_families():
    """[(family, TYPE, labels, scope)] of common/metrics_table.h."""
    text = re.sub(r"/\*.*?\*/", "", METRICS_TABLE.read_text(), flags=re.S)
    rows = re.findall(r'DM_METRIC\(\s*\w+\s*,\s*(COUNTER|GAUGE|HISTOGRAM)\s*,\s*(\w+)\s*,\s*'
                      r'"((?:[^"\\]|\\.)*)"\s*,\s*(IB|I|B)\s*,', text)
    assert len(rows) > 20, "could not parse common/metrics_table.h"
    return [(family, kind, labels.replace('\\"', '"'), scope)
            for kind, family, labels, scope in rows]


def series_names(family, kind):
    """The series a table row exports: counters get _total, histograms their
    _bucket, _sum and _count."""
    base = "danmaku_" + family
    if kind == "COUNTER":
        return [base if base.endswith("_total") else base + "_total"]
    if kind == "HISTOGRAM":
        return [base + "_bucket", base + "_sum", base + "_count"]
    return [base]


# ---------------------------------------------------------------- exports


def test_scrape_matches_the_metrics_table(exported):
    """Every row of metrics_table.h is exported by its binaries under the
    name the dashboard and the alerts use, and nothing else is."""
    expected = {"ingest": {}, "broadcast": {}}
    for family, kind, labels, scope in table_families():
        names = series_names(family, kind)
        label_keys = set(re.findall(r'([a-zA-Z_]\w*)="', labels))
        for kind_name, letter in (("ingest", "I"), ("broadcast", "B")):
            if letter in scope:
                for name in names:
                    keys = expected[kind_name].setdefault(name, set())
                    keys |= label_keys | ({"le"} if name.endswith("_bucket") else set())
    for kind_name, (series, _types) in exported.items():
        got = {name: set(labels) for name, labels in series.items() if name.startswith("danmaku_")}
        want = expected[kind_name]
        assert got == expected[kind_name], (
            f"danmaku-{kind_name} /metrics and common/metrics_table.h disagree:\n"
            f"  only scraped: {sorted(set(got) - set(expected[kind_name]))}\n"
            f"  only in the table: {sorted(set(expected[kind_name]) - set(got))}\n"
            f"  label differences: "
            f"{ {n: (got[n], want[n]) for n in got if n in want and got[n] != want[n]} }")


# ---------------------------------------------------------------- dashboard


def test_dashboard_is_valid_json_with_the_datasource_variable():
    dash = load_dashboard()
    assert dash.get("title") and dash.get("uid"), "dashboard needs a title and a uid"
    assert dash.get("id") is None, "a provisioned dashboard must not carry a database id"
    assert isinstance(dash.get("schemaVersion"), int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", \
        "need a `datasource` variable of type datasource for prometheus"
    # No data source uid of one particular Grafana anywhere: only the variable.
    uids = {t.get("uid") for t in _find_key(dash, "datasource") if isinstance(t, dict)}
    uids.discard(None)
    assert uids <= {"${datasource}", "-- Grafana --"}, f"hard-coded data sources: {uids}"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"]["uid"] == "${datasource}"


def _find_key(obj, key):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                yield v
            yield from _find_key(v, key)
    elif isinstance(obj, list):
        for v in obj:
            yield from _find_key(v, key)


def test_dashboard_panels_are_unique_and_laid_out():
    dash = load_dashboard()
    panels = list(all_panels(dash))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), \
        f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    titles = [p["title"] for p in panels]
    assert all(t.strip() for t in titles), "a panel without a title"
    assert len(titles) == len(set(titles)), \
        f"duplicate panel titles: {sorted({t for t in titles if titles.count(t) > 1})}"
    cells = {}
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, \
            f"{p['title']}: bad gridPos {g}"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]!r} and {p['title']!r} overlap"
                cells[(x, y)] = p["title"]
        if p["type"] == "row":
            continue
        assert p.get("description"), f"{p['title']}: say what the panel shows (description)"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        targets = p.get("targets", [])
        assert targets, f"{p['title']}: no query"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), f"{p['title']}: duplicate refIds"
        for t in targets:
            assert t.get("expr", "").strip(), f"{p['title']}: empty query"
            assert t.get("datasource", p["datasource"]) == p["datasource"], p["title"]


def test_dashboard_queries_use_exported_metrics_and_labels(known, exported):
    dash = load_dashboard()
    by_kind = {kind: set(series) for kind, (series, _) in exported.items()}
    problems = []
    for panel, target in dashboard_targets(dash):
        where = f"panel {panel['title']!r} {target['refId']}"
        expr = target["expr"]
        found, selectors, grouping = check_expr(expr, known, where)
        problems += found
        # A node-type filter must fit the metric: ingest metrics with $ingest.
        for name, ms in selectors:
            for label, _op, value in ms:
                for kind in ("ingest", "broadcast"):
                    if label == "instance" and value == f"${kind}" and name not in by_kind[kind]:
                        problems.append(f"{where}: {name} is not exported by {kind} nodes "
                                        f"but filtered with ${kind}")
        # Legend placeholders must be labels the result keeps.
        legend = target.get("legendFormat", "")
        legend_labels = set(re.findall(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}", legend))
        allowed = grouping or {lbl for n, _ in selectors for lbl in known.get(n, {})}
        for label in legend_labels - allowed:
            problems.append(f"{where}: legend uses {{{{{label}}}}}, not a label of the result")
    assert not problems, "\n".join(problems)


def test_dashboard_covers_the_issue_list_and_every_exported_family(exported):
    dash = load_dashboard()
    used = set()
    for _panel, target in dashboard_targets(dash):
        used |= {name for name, _ in promql_parts(grafana_to_promql(target["expr"]))[0]}
    missing = {name: why for name, why in REQUIRED_ON_DASHBOARD.items() if name not in used}
    assert not missing, f"the dashboard lacks: {missing}"
    # Every exported family has a place: a new metric needs a panel or a query.
    families = set()
    for series, types in exported.values():
        for family, kind in types.items():
            if family.startswith("danmaku_"):
                families.add((family, kind))
    unused = []
    for family, kind in sorted(families):
        names = {family}
        if kind == "histogram":
            names = {family + s for s in ("_bucket", "_sum", "_count")}
        if not names & used:
            unused.append(family)
    assert not unused, f"exported but on no panel of {DASHBOARD.name}: {unused}"


def test_dashboard_queries_parse_with_promtool(tmp_path):
    """Each query, with Grafana's variables filled in, as a recording rule."""
    dash = load_dashboard()
    rules = []
    for panel, target in dashboard_targets(dash):
        rules.append({"record": f"dashboard:panel_{panel['id']}:{target['refId'].lower()}",
                      "expr": grafana_to_promql(target["expr"])})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    rc, out = run_promtool("check", "rules", str(path))
    assert rc == 0, out
    assert f"SUCCESS: {len(rules)} rules found" in out, out


# ---------------------------------------------------------------- alert rules


def test_alert_rules_pass_promtool_check():
    rc, out = run_promtool("check", "rules", str(RULES))
    assert rc == 0, out


def test_alert_rules_are_complete_and_use_exported_metrics(known):
    doc = load_rules()
    assert set(doc) == {"groups"}, "a plain rule file: only `groups` at the top"
    names, problems = [], []
    for group, rule in alert_rules():
        name = rule["alert"]
        names.append(name)
        where = f"{group}/{name}"
        assert re.fullmatch(r"Danmaku[A-Z][A-Za-z0-9]+", name), f"{where}: name it Danmaku..."
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), f"{where}: needs `for:`"
        assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{where}: severity"
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert ann.get(key), f"{where}: annotation {key} missing"
        assert re.fullmatch(r"docs/operations\.md#[a-z0-9-]+", ann["runbook_url"]), \
            f"{where}: runbook_url must be docs/operations.md#<anchor>"
        found, _, _ = check_expr(rule["expr"], known, where)
        problems += found
    assert len(names) == len(set(names)), "duplicate alert names"
    assert not problems, "\n".join(problems)


def test_alert_rules_cover_the_issue_list():
    by_metric = {}
    for _group, rule in alert_rules():
        for name, ms in promql_parts(rule["expr"])[0]:
            by_metric.setdefault(name, []).append((rule["alert"], ms))
    for metric in ("up", "danmaku_kafka_consumer_lag", "danmaku_http_requests_total",
                   "danmaku_kafka_delivery_failed_total", "danmaku_redis_errors_total",
                   "danmaku_ratelimit_fallback_total", "danmaku_fanout_latency_seconds_bucket",
                   "danmaku_http_request_duration_seconds_bucket", "danmaku_ws_closed_total"):
        assert metric in by_metric, f"no alert on {metric}"
    # Density sampling is the display cap at work, not a fault.
    assert "danmaku_density_skipped_total" not in by_metric
    # Of the close reasons, only slow viewers (the node failing them) alert.
    reasons = {v for _, ms in by_metric["danmaku_ws_closed_total"] for (l, _op, v) in ms
               if l == "reason"}
    assert reasons == {"slow_consumer"}, reasons
    # Both node types are watched for having no node up.
    up_jobs = {v for _, ms in by_metric["up"] for (l, _op, v) in ms if l == "job"}
    assert any(re.fullmatch(j, "danmaku-ingest") for j in up_jobs)
    assert any(re.fullmatch(j, "danmaku-broadcast") for j in up_jobs)


def test_alert_unit_tests_pass_and_cover_every_alert():
    rc, out = run_promtool("test", "rules", str(ALERT_TESTS))
    assert rc == 0, out
    with open(ALERT_TESTS, encoding="utf-8") as f:
        tests = yaml.safe_load(f)
    rule_files = [(ALERT_TESTS.parent / p).resolve() for p in tests["rule_files"]]
    assert rule_files == [RULES.resolve()], f"the unit tests must load {RULES}: {rule_files}"
    fires, quiet = set(), set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {rule["alert"] for _, rule in alert_rules()}
    assert alerts - fires == set(), f"alerts never seen firing in the unit tests: {alerts - fires}"
    assert alerts - quiet == set(), f"alerts never seen quiet in the unit tests: {alerts - quiet}"
    assert (fires | quiet) - alerts == set(), f"tests of unknown alerts: {(fires | quiet) - alerts}"


def _github_anchors(markdown):
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", m.group(1)).strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
        anchors |= set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", line))
    return anchors


def test_runbook_anchors_exist_in_operations_doc():
    wanted = {rule["annotations"]["runbook_url"].split("#", 1)[1] for _, rule in alert_rules()}
    assert OPERATIONS_DOC.is_file(), \
        f"{OPERATIONS_DOC.relative_to(ROOT)} is missing; the alerts point to its sections " \
        f"{sorted(wanted)}"
    missing = wanted - _github_anchors(OPERATIONS_DOC.read_text(encoding="utf-8"))
    assert not missing, \
        f"docs/operations.md has no section for the runbook anchors {sorted(missing)}"
