"""The Dockerfile, checked as far as a machine without a container engine can:
its build stage runs the commands CI runs and they work on exactly the
build context .dockerignore leaves; the runtime stage installs every shared
library the four binaries need, runs them as a numeric non-root user, and
its HEALTHCHECK script answers for a real node."""

import http.server
import os
import re
import shutil
import socket
import subprocess
import threading

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("DANMAKU_BUILD", os.path.join(ROOT, "build", "default"))
IMAGE_BINARIES = {"danmaku-ingest", "danmaku-broadcast", "danmaku-loadtest", "danmaku-token"}
HEALTHCHECK = os.path.join(ROOT, "deploy", "docker", "healthcheck")


def _instructions():
    """[(stage index, INSTRUCTION, arguments)] with continuation lines joined."""
    with open(os.path.join(ROOT, "Dockerfile")) as f:
        text = f.read()
    logical, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    out, stage = [], -1
    for line in logical:
        word, _, rest = line.strip().partition(" ")
        if word.upper() == "FROM":
            stage += 1
        out.append((stage, word.upper(), " ".join(rest.split())))
    return out


def _stage(n):
    return [(k, v) for s, k, v in _instructions() if s == n]


def test_two_stages_from_debian_12():
    froms = [v for _, k, v in _instructions() if k == "FROM"]
    args = {v.split("=")[0]: v.split("=", 1)[1] for s, k, v in _instructions()
            if k == "ARG" and s == -1 and "=" in v}
    assert args.get("DEBIAN_IMAGE") == "debian:12-slim"
    assert froms == ["${DEBIAN_IMAGE} AS build", "${DEBIAN_IMAGE}"], froms


def test_build_stage_runs_the_ci_commands():
    runs = [v for k, v in _stage(0) if k == "RUN"]
    assert any(r.startswith("deploy/install-deps.sh build") for r in runs), runs
    make = [r for r in runs if r.startswith("make ")]
    assert make and " bins" in make[0], runs
    # What the final stage takes from /out is what the build installed there.
    installed = re.search(r"install -m 0755 (.*?) /out/", make[0]).group(1).split()
    assert {os.path.basename(p) for p in installed} == IMAGE_BINARIES
    assert all(p.startswith("build/default/bin/") for p in installed)
    # `make bins` builds each of them.
    dry = subprocess.run(["make", "-n", "-B", "BUILD=build/dockerfile-dry", "bins"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    for name in IMAGE_BINARIES:
        assert f"build/dockerfile-dry/bin/{name}" in dry.stdout, name


def test_runtime_stage_is_small_non_root_and_checked():
    final = _stage(1)
    kinds = [k for k, _ in final]
    user = [v for k, v in final if k == "USER"]
    assert user and user[-1].isdigit() and int(user[-1]) != 0, user
    assert kinds.index("USER") > max(i for i, k in enumerate(kinds) if k == "RUN"), \
        "everything after USER runs unprivileged"
    health = [v for k, v in final if k == "HEALTHCHECK"]
    assert health and 'CMD ["danmaku-healthcheck"]' in health[0], health
    labels = " ".join(v for k, v in final if k == "LABEL")
    for key in ("title", "description", "version"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert "EXPOSE 8080 8081" in [f"{k} {v}" for k, v in final]
    assert ("STOPSIGNAL", "SIGTERM") in final
    copies = [v for k, v in final if k == "COPY"]
    assert "--from=build /out/ /usr/local/bin/" in copies, copies
    assert "deploy/docker/healthcheck /usr/local/bin/danmaku-healthcheck" in copies, copies
    assert len(copies) == 2, "nothing but the binaries and the health check"
    run = " ".join(v for k, v in final if k == "RUN")
    assert "--no-install-recommends" in run and "rm -rf /var/lib/apt/lists/*" in run
    assert os.access(HEALTHCHECK, os.X_OK)


def _runtime_packages():
    run = " ".join(v for k, v in _stage(1) if k == "RUN")
    names = re.search(r"--no-install-recommends (.*?) &&", run).group(1).split()
    return set(names)


def _package_of(library):
    """The Debian package that ships a shared library the loader would find."""
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
        parts = line.split(" => ")
        if len(parts) == 2 and parts[0].split()[0] == library:
            real = os.path.realpath(parts[1].strip())
            for candidate in (real, re.sub(r"^/usr/lib/", "/lib/", real)):
                found = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
                if found.returncode == 0:
                    return found.stdout.split(":")[0]
    pytest.fail(f"no Debian package ships {library}")


def test_runtime_packages_cover_every_library_the_binaries_link():
    """Each NEEDED entry of each binary in the image comes from a package the
    runtime stage installs (libc6 is in every Debian image); their own
    dependencies come with them through apt."""
    packages = _runtime_packages()
    needed = {}
    for name in IMAGE_BINARIES:
        path = os.path.join(BUILD, "bin", name)
        assert os.path.exists(path), f"{path} missing: build first (make bins)"
        dyn = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
        for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(.*?)\]", dyn):
            needed.setdefault(_package_of(lib), set()).add(name)
    needed.pop("libc6", None)
    missing = {p: sorted(b) for p, b in needed.items() if p not in packages}
    assert not missing, f"the runtime stage lacks {missing}"
    unused = packages - set(needed) - {"ca-certificates"}
    assert not unused, f"installed but linked by no binary: {sorted(unused)}"
    # And each is a real package of this Debian release.
    policy = subprocess.run(["apt-cache", "policy"] + sorted(packages), capture_output=True,
                            text=True).stdout
    for p in packages:
        assert re.search(rf"^{re.escape(p)}:\n\s+Installed: .*\n\s+Candidate: (?!\(none\))",
                         policy, re.M), p


def _ignored(path, patterns):
    for pat in patterns:
        rx = re.escape(pat.rstrip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if re.fullmatch(rx + "(/.*)?", path):
            return True
    return False


def test_build_context_builds_the_image_binaries(tmp_path):
    """`COPY . .` then `make bins`, on the files .dockerignore lets through
    (a clean checkout's files, as in CI): the build stage's own steps."""
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    for out in (".git/HEAD", "build/default/bin/danmaku-ingest",
                "tests/integration/node/node_modules/ws/package.json", "common/x.o"):
        assert _ignored(out, patterns), out
    # What the Dockerfile copies by name must be in the context.
    for needed in ("deploy/install-deps.sh", "deploy/docker/healthcheck", "Makefile"):
        assert not _ignored(needed, patterns), needed
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True).stdout.split("\0")
    context = tmp_path / "context"
    copied = 0
    for rel in filter(None, files):
        src = os.path.join(ROOT, rel)
        if _ignored(rel, patterns) or not os.path.isfile(src):
            continue
        dst = context / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
        copied += 1
    assert copied > 100
    assert not (context / "build").exists() and not (context / ".git").exists()
    build = subprocess.run(["make", f"-j{os.cpu_count() or 2}", "bins"], cwd=context,
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    for name in IMAGE_BINARIES:
        assert os.access(context / "build" / "default" / "bin" / name, os.X_OK), name


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthcheck(port):
    env = {"PATH": os.environ["PATH"], "DANMAKU_HEALTH_PORT": str(port)}
    return subprocess.run([HEALTHCHECK], env=env, capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("binary, port_flag", [("danmaku-ingest", "--http-port"),
                                               ("danmaku-broadcast", "--ws-port")])
def test_healthcheck_passes_for_a_live_node(tmp_path, binary, port_flag):
    # Liveness needs neither Kafka nor Redis: point both at closed ports.
    port = _free_port()
    node = subprocess.Popen(
        [os.path.join(BUILD, "bin", binary), "--listen-host", "127.0.0.1", port_flag, str(port),
         "--port-file", str(tmp_path / "port"), "--kafka-brokers", "127.0.0.1:1",
         "--redis-port", "1", "--jwt-key-file", os.path.join(ROOT, "tests", "fixtures",
                                                             "dev-secret.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if (tmp_path / "port").exists():
                break
            threading.Event().wait(0.05)
        assert _healthcheck(port).returncode == 0
    finally:
        node.terminate()
        node.wait(30)
    assert _healthcheck(port).returncode == 1, "a stopped node is unhealthy"


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_GET(self):
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_healthcheck_fails_on_an_error_or_a_silent_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert _healthcheck(server.server_port).returncode == 1
        _Answer.status = 200
        assert _healthcheck(server.server_port).returncode == 0, "the same server, healthy"
    finally:
        server.shutdown()
    with socket.socket() as silent:  # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        result = _healthcheck(silent.getsockname()[1])
        assert result.returncode == 1
