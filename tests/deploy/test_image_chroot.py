"""The Dockerfile built for real, without a container engine: its stages run
in chroots of Debian 12 (tests/deploy/chroot_image.py), then both nodes start
from the final root file system as the image's user and pass its health
check. Needs root and the Debian package mirror, as `make test` has."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_dockerfile_builds_and_runs_in_chroots():
    assert os.geteuid() == 0, "needs root (chroot, mount): run as CI does"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "deploy",
                                                          "chroot_image.py")],
                            capture_output=True, text=True, timeout=1800)
    print(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for line in ("danmaku-ingest as uid 10001: running, healthcheck passed",
                 "danmaku-broadcast as uid 10001: running, healthcheck passed",
                 "danmaku-token --help: exit 0", "danmaku-loadtest --help: exit 0"):
        assert line in result.stdout, line
