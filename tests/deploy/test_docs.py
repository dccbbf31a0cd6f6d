"""docs/operations.md's configuration reference is generated from the config
table (through the binaries' --help): it must be current, and cover every
key of both nodes."""

import os
import re
import subprocess
import sys

from test_observability import series_names, table_families

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DANMAKU_BUILD", os.path.join(ROOT, "build", "default"))
GENERATOR = os.path.join(ROOT, "docs", "config_reference.py")


def test_config_reference_is_current():
    result = subprocess.run([sys.executable, GENERATOR, "--build", BUILD, "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr


def test_every_key_of_both_nodes_is_documented_once():
    with open(os.path.join(ROOT, "docs", "operations.md")) as f:
        documented = re.findall(r"^\| `(\w+)` \| `DANMAKU_", f.read(), re.M)
    keys = set()
    for binary in ("danmaku-ingest", "danmaku-broadcast"):
        out = subprocess.run([os.path.join(BUILD, "bin", binary), "--help"],
                             capture_output=True, text=True, timeout=30).stdout
        keys |= {k.replace("-", "_") for k in re.findall(r"^  --([\w-]+) ", out, re.M)}
    assert len(keys) > 50
    assert sorted(documented) == sorted(keys)


def test_readme_links_the_operations_guide():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert "(docs/operations.md)" in readme
    for command in ("docker build", "helm install", "docker compose"):
        assert command in readme, command


def _anchor(heading):
    """The anchor a Markdown renderer gives a heading (GitHub's rules)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_runbook_link_has_its_section():
    with open(os.path.join(ROOT, "docs", "operations.md")) as f:
        anchors = {_anchor(h) for h in re.findall(r"^#+ (.+)$", f.read(), re.M)}
    rules = os.path.join(ROOT, "deploy", "helm", "danmaku", "files", "alerts",
                         "danmaku-rules.yml")
    with open(rules) as f:
        links = re.findall(r"runbook_url: \S*docs/operations\.md#([\w-]+)", f.read())
    assert len(links) >= 5
    assert not sorted(set(links) - anchors), "runbook links without a section"


def test_metrics_named_in_the_docs_exist():
    # The histogram family itself is named in prose, next to its series.
    exported = {name for family, kind, _, _ in table_families()
                for name in series_names(family, kind)
                + (["danmaku_" + family] if kind == "HISTOGRAM" else [])}
    assert "danmaku_connections" in exported
    for doc in ("docs/operations.md", "README.md"):
        with open(os.path.join(ROOT, doc)) as f:
            named = set(re.findall(r"\bdanmaku_[a-z_]+[a-z]\b", f.read()))
        named = {n for n in named if not n.endswith("_")}
        assert not sorted(named - exported), f"{doc} names metrics no node exports"


def test_readme_helm_install_command_renders(tool, tmp_path):
    """The README's `helm install` example, rendered as `helm template`."""
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    command = re.search(r"^helm install (.*?)(?<!\\)$", readme, re.M | re.S).group(0)
    command = command.replace("\\\n", " ").replace("<your registry>", "registry.example")
    args = command.split()[2:]
    result = subprocess.run([tool("helm"), "template", *args, "--kube-version", "1.31.0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert 'image: "registry.example/danmaku:1.0"' in result.stdout
    assert "kafka-0.kafka:9092" in result.stdout
