"""Shared fixtures of the deployment tests: the repository root, the build
directory (env DANMAKU_BUILD, default build/default) and a finder for the
tools tests/deploy/install-tools.sh installs."""

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALLER = "tests/deploy/install-tools.sh"


def tools_bin_dir():
    """Where install-tools.sh puts the tools it builds."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "danmaku" / "tools" / "bin"


def find_tool(name, env=None):
    """Path of tool `name`: from env var `env` (default the name in upper
    case), else the install-tools.sh cache, else PATH; None when missing."""
    var = env or name.upper().replace("-", "_")
    given = os.environ.get(var)
    if given:
        return given if os.path.isfile(given) or shutil.which(given) else None
    cached = tools_bin_dir() / name
    if cached.is_file() and os.access(cached, os.X_OK):
        return str(cached)
    return shutil.which(name)


def require_tool(name, env=None):
    """Like find_tool, but fails the test (never skips) when it is missing."""
    path = find_tool(name, env)
    if path is None:
        pytest.fail(f"{name} not found (env {env or name.upper().replace('-', '_')}, "
                    f"{tools_bin_dir()}, PATH): run {INSTALLER}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def build_dir():
    """The build whose bin/ holds the binaries (make BUILD=... bins)."""
    build = Path(os.environ.get("DANMAKU_BUILD", "build/default"))
    return build if build.is_absolute() else ROOT / build


@pytest.fixture(scope="session")
def tool():
    """tool(name, env=None) -> path, failing the test when it is missing."""
    return require_tool
