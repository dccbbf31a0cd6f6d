#!/usr/bin/env python3
"""Builds the Dockerfile's image without a container engine, to check its
steps where no Docker daemon runs: each stage's FROM becomes a fresh Debian
12 minbase root file system (debootstrap), COPY copies from the build
context as .dockerignore leaves it (or from an earlier stage), RUN runs in a
chroot with /proc and /dev mounted, and ARG/ENV/WORKDIR/USER apply as
Docker applies them. Then the final stage is started the way the image runs:
as its USER, with its ENV, each node once, and its HEALTHCHECK command must
pass inside the root file system.

    tests/deploy/chroot_image.py [--keep DIR]

Needs root, debootstrap (installed when missing) and the Debian package
mirror that apt uses. Takes a few minutes; not part of `make test`.
It checks the Dockerfile's commands, not Docker itself: no layers, no
isolation beyond the chroot (the nodes share the host's network).
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_dockerfile import _ignored, _instructions  # noqa: E402


def log(msg):
    print(f"chroot_image: {msg}", flush=True)


def sh(cmd, **kw):
    subprocess.run(cmd, check=True, **kw)


def apt_mirror():
    """The Debian mirror apt on this machine uses."""
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        if os.path.exists(path):
            with open(path) as f:
                m = re.search(r"(?:URIs:|deb)\s+(\S+/debian)\b", f.read())
            if m:
                return m.group(1)
    sys.exit("chroot_image: no Debian mirror found in apt's sources")


def base_rootfs(cache):
    """A tarball of a bookworm minbase system (what debian:12-slim is)."""
    tarball = os.path.join(cache, "bookworm-minbase.tar")
    if os.path.exists(tarball):
        return tarball
    if shutil.which("debootstrap") is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "debootstrap"]
        if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            sh(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)  # no lists yet
            sh(install, env=env, stdout=subprocess.DEVNULL)
    tree = tempfile.mkdtemp(prefix="minbase-", dir=cache)
    log("debootstrap bookworm (minbase)")
    sh(["debootstrap", "--variant=minbase", "bookworm", tree, apt_mirror()],
       stdout=subprocess.DEVNULL)
    sh(["tar", "-C", tree, "-cf", tarball, "."])
    shutil.rmtree(tree)
    return tarball


class Chroot:
    def __init__(self, path):
        self.path = path
        self.mounts = []

    def __enter__(self):
        for src, dst, opts in (("proc", "proc", ["-t", "proc"]),
                               ("/dev", "dev", ["--bind"])):
            target = os.path.join(self.path, dst)
            os.makedirs(target, exist_ok=True)
            sh(["mount", *opts, src, target])
            self.mounts.append(target)
        shutil.copy("/etc/resolv.conf", os.path.join(self.path, "etc", "resolv.conf"))
        return self

    def __exit__(self, *exc):
        for target in reversed(self.mounts):
            subprocess.run(["umount", "-l", target])

    def run(self, command, env, workdir, user=None, **kw):
        userspec = [f"--userspec={user}:0"] if user else []
        full = ["chroot", *userspec, self.path, "/usr/bin/env", "-i",
                *[f"{k}={v}" for k, v in env.items()], "/bin/sh", "-c",
                f"cd {shlex.quote(workdir)} && {command}"]
        return subprocess.run(full, **kw)


def copy_context(dst):
    with open(os.path.join(ROOT, ".dockerignore")) as f:
        patterns = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        src = os.path.join(ROOT, rel)
        if _ignored(rel, patterns) or not os.path.isfile(src):
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, rel))


def substitute(text, args):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2),
                                                             m.group(0)), text)


def build(work, tarball):
    """Runs every stage; returns (final rootfs, its ENV, USER, HEALTHCHECK command)."""
    context = os.path.join(work, "context")
    copy_context(context)
    global_args, stages = {}, []
    for stage, kind, value in _instructions():
        if stage < 0:
            if kind == "ARG" and "=" in value:
                k, v = value.split("=", 1)
                global_args[k] = v
            continue
        if kind == "FROM":
            name = value.split(" AS ")[1] if " AS " in value else str(stage)
            rootfs = os.path.join(work, f"stage{stage}")
            os.makedirs(rootfs)
            sh(["tar", "-C", rootfs, "-xf", tarball])
            stages.append({"name": name, "root": rootfs, "env": {
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/root"}, "args": dict(global_args), "workdir": "/", "user": None,
                "health": None})
            log(f"stage {name}: FROM {substitute(value, global_args)}")
            continue
        st = stages[-1]
        if kind != "RUN":  # RUN's variables are the shell's business
            value = substitute(value, {**st["args"], **st["env"]})
        if kind == "ARG":
            k, _, v = value.partition("=")
            st["args"][k] = v
        elif kind == "ENV":
            k, v = value.split("=", 1)
            st["env"][k] = v
        elif kind == "WORKDIR":
            st["workdir"] = value
            os.makedirs(st["root"] + value, exist_ok=True)
        elif kind == "USER":
            st["user"] = value
        elif kind == "COPY":
            parts = value.split()
            source_root = context
            if parts[0].startswith("--from="):
                source_root = next(s["root"] for s in stages if s["name"] == parts[0][7:])
                parts = parts[1:]
            *srcs, dst = parts
            dst_abs = st["root"] + (dst if dst.startswith("/") else
                                    os.path.join(st["workdir"], dst))
            for src in srcs:
                path = os.path.join(source_root, src.lstrip("/"))
                if src in (".", "./") or os.path.isdir(path):
                    shutil.copytree(path, dst_abs, dirs_exist_ok=True, symlinks=True)
                else:
                    target = dst_abs if not dst.endswith("/") else os.path.join(
                        dst_abs, os.path.basename(src))
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy2(path, target)
        elif kind == "RUN":
            log(f"stage {st['name']}: RUN {value[:100]}")
            with Chroot(st["root"]) as ch:
                done = ch.run(value, {**st["env"], **st["args"]}, st["workdir"], st["user"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if done.returncode != 0:
                print(done.stdout[-4000:])
                sys.exit(f"chroot_image: RUN failed in stage {st['name']}")
        elif kind == "HEALTHCHECK":
            st["health"] = re.search(r'CMD \["(.*?)"\]', value).group(1)
    final = stages[-1]
    return final


def start_node(final, ch, binary, port_key, port):
    env = {**final["env"], port_key: str(port), "DANMAKU_KAFKA_BROKERS": "127.0.0.1:1",
           "DANMAKU_REDIS_PORT": "1", "DANMAKU_JWT_SECRET": "x" * 32}
    return subprocess.Popen(
        ["chroot", f"--userspec={final['user']}:0", final["root"], "/usr/bin/env", "-i",
         *[f"{k}={v}" for k, v in env.items()], binary],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def check_image(final):
    root = final["root"]
    sizes = subprocess.run(["du", "-sm", "--exclude=proc", "--exclude=dev", root],
                           capture_output=True, text=True).stdout.split()[0]
    log(f"final root file system: {sizes} MB (uncompressed)")
    bins = sorted(os.listdir(os.path.join(root, "usr", "local", "bin")))
    log("in /usr/local/bin: " + " ".join(bins))
    failures = 0
    with Chroot(root) as ch:
        for binary, port_key, port in (("danmaku-ingest", "DANMAKU_HTTP_PORT", 18080),
                                       ("danmaku-broadcast", "DANMAKU_WS_PORT", 18081)):
            node = start_node(final, ch, binary, port_key, port)
            try:
                time.sleep(1.5)
                health = ch.run(final["health"], {**final["env"],
                                                  "DANMAKU_HEALTH_PORT": str(port)}, "/",
                                final["user"])
                ok = node.poll() is None and health.returncode == 0
                log(f"{binary} as uid {final['user']}: "
                    f"{'running, healthcheck passed' if ok else 'FAILED'}")
                failures += not ok
            finally:
                node.send_signal(signal.SIGTERM)
                try:
                    _, err = node.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    node.kill()
                    _, err = node.communicate()
                if node.returncode != 0:
                    log(f"{binary} exited {node.returncode}: {err[-2000:]}")
                    failures += 1
        for tool, args in (("danmaku-token", "--help"), ("danmaku-loadtest", "--help")):
            done = ch.run(f"{tool} {args}", final["env"], "/", final["user"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            log(f"{tool} {args}: exit {done.returncode}")
            failures += done.returncode != 0
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", help="work in this directory and keep it")
    ap.add_argument("--cache", default=os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "danmaku"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("chroot_image: needs root (chroot, mount)")
    os.makedirs(args.cache, exist_ok=True)
    work = args.keep or tempfile.mkdtemp(prefix="danmaku-chroot-image-")
    os.makedirs(work, exist_ok=True)
    start = time.monotonic()
    try:
        final = build(work, base_rootfs(args.cache))
        failures = check_image(final)
    finally:
        with open("/proc/mounts") as f:
            mounted = [line.split()[1] for line in f if line.split()[1].startswith(work)]
        if mounted:  # never delete through a bind mount of the host's /dev
            log(f"left {work} in place: still mounted {mounted}")
        elif not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    log(f"{'ok' if failures == 0 else f'{failures} failures'} in {time.monotonic() - start:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
