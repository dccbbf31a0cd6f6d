"""The Debian packages our binaries load carry the fixes for their known CVEs
(tests/security/cves.tsv, checked by tests/security/check_cves.py): one case
per row, so a failure names the CVE, plus the checker run end to end as an
operator runs it. Needs a Debian system (dpkg) and the built binaries."""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from dmtest import BIN, ROOT

CHECKER = os.path.join(ROOT, "tests", "security", "check_cves.py")
TSV = os.path.join(ROOT, "tests", "security", "cves.tsv")


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_cves", CHECKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_cves = _load_checker()
ROWS = check_cves.load_rows(TSV)

pytestmark = pytest.mark.skipif(shutil.which("dpkg-query") is None,
                                reason="not a Debian system (no dpkg-query)")


@pytest.fixture(scope="module")
def ctx():
    return check_cves.Context(BIN, ROOT, allow_missing_changelog=False)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.id}-{r.packages[0]}" for r in ROWS])
def test_cve_row(ctx, row):
    ok, message = check_cves.check_row(ctx, row)
    assert ok, f"{row.id} ({', '.join(row.packages)}, {row.how}): {message}"


def test_table_covers_every_library_we_link():
    """Each Debian library package the binaries load has at least one row, so
    a new dependency cannot slip in unreviewed."""
    covered = {p for r in ROWS for p in r.packages}
    for pkg in ("libhiredis0.14", "libjwt0", "libevent-2.1-7", "libevent-core-2.1-7",
                "libjansson4", "librdkafka1", "libssl3"):
        assert pkg in covered, f"cves.tsv has no row for {pkg}"


def test_checker_passes():
    out = subprocess.run([sys.executable, CHECKER, "--bin-dir", BIN], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert len([l for l in lines if l.startswith("OK ")]) == len(ROWS), out.stdout
    assert lines[-1] == f"verdict: {len(ROWS)} of {len(ROWS)} rows hold", out.stdout
