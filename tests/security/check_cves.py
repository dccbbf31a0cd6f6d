#!/usr/bin/env python3
"""Checks, on this machine, that the Debian packages the danmaku binaries load
carry the fixes for the CVEs listed in cves.tsv (or that the vulnerable code
cannot run in our binaries, where a row says so).

One line per row (OK or FAIL with the evidence), then a verdict; exit status
0 when every row holds, 1 otherwise, 2 on a usage error. Python 3 standard
library only; needs dpkg-query, dpkg and (for the binary checks) nm.

    tests/security/check_cves.py [--bin-dir build/default/bin] [--tsv FILE]
                                 [--src-dir REPO] [--only CVE] [--allow-missing-changelog]

The row format is documented at the top of cves.tsv; docs/security.md says
what to do when a row fails."""

import argparse
import ctypes
import gzip
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_TSV = os.path.join(HERE, "cves.tsv")
DEFAULT_BIN = os.path.join(ROOT, "build", "default", "bin")
CHANGELOG = "/usr/share/doc/{pkg}/changelog.Debian.gz"

# The product binaries that must be present for the binary checks, so that an
# empty or wrong --bin-dir cannot pass them vacuously.
REQUIRED_BINARIES = ("danmaku-ingest", "danmaku-broadcast")
# libjwt's verification entry points (1.x: jwt_decode*, jwt_valid_*; 3.x:
# jwt_verify*, jwt_checker_*). Minting (jwt_new, jwt_encode_str, ...) is fine.
JWT_VERIFY_SYMBOL = re.compile(r"^(jwt_decode\w*|jwt_verify\w*|jwt_valid_\w*|jwt_checker_\w*)$")
# Our sources, scanned by the source-level checks.
SOURCE_DIRS = ("common", "server", "broadcast", "loadtest")
# json_loads reads up to a NUL; these files call it on NUL-terminated strings
# they build themselves (minting claims), never on bytes from a peer.
JSON_LOADS_ALLOWED = {os.path.join("common", "jwt.c")}


class Row:
    def __init__(self, lineno, packages, cve, how, note):
        self.lineno = lineno
        self.packages = packages
        self.cve = cve
        self.how = how
        self.note = note

    @property
    def id(self):
        """A stable name for the row: the CVE, or package:- for release rows."""
        return self.cve if self.cve != "-" else self.packages[0] + ":-"


class Context:
    def __init__(self, bin_dir, src_dir, allow_missing_changelog):
        self.bin_dir = bin_dir
        self.src_dir = src_dir
        self.allow_missing_changelog = allow_missing_changelog
        self._versions = {}
        self._changelogs = {}
        self._imports = None


class CheckError(Exception):
    """A row does not hold; the message says why."""


def load_rows(path):
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if cols[:3] == ["package", "cve", "how-fixed"]:
                continue  # header
            if len(cols) != 4 or not all(c.strip() for c in cols):
                raise ValueError(f"{path}:{lineno}: expected 4 non-empty tab-separated columns")
            packages = [p.strip() for p in cols[0].split(",") if p.strip()]
            cve = cols[1].strip()
            if cve != "-" and not re.fullmatch(r"CVE-\d{4}-\d{4,}", cve):
                raise ValueError(f"{path}:{lineno}: {cve!r} is not a CVE id")
            rows.append(Row(lineno, packages, cve, cols[2].strip(), cols[3].strip()))
    ids = [r.id for r in rows]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise ValueError(f"{path}: rows listed twice: {', '.join(dups)}")
    return rows


# ---- the installed system ---------------------------------------------------

def installed_version(ctx, pkg):
    if pkg not in ctx._versions:
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f", "${Status}\t${Version}", pkg],
                                 capture_output=True, text=True, check=False)
        except FileNotFoundError:
            raise CheckError("dpkg-query not found: this check needs a Debian system")
        status, _, version = out.stdout.partition("\t")
        ctx._versions[pkg] = version if out.returncode == 0 and status.endswith(
            " installed") else None
    version = ctx._versions[pkg]
    if version is None:
        raise CheckError(f"{pkg} is not installed")
    return version


def version_cmp(a, op, b):
    """dpkg --compare-versions a op b (op: lt le eq ge gt)."""
    rc = subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode
    if rc not in (0, 1):
        raise CheckError(f"dpkg --compare-versions {a} {op} {b} failed")
    return rc == 0


def changelog_text(ctx, pkg):
    if pkg not in ctx._changelogs:
        path = CHANGELOG.format(pkg=pkg)
        try:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                ctx._changelogs[pkg] = f.read()
        except FileNotFoundError:
            ctx._changelogs[pkg] = None
    return ctx._changelogs[pkg]


# ---- the terms of the how-fixed column ------------------------------------

def term_upstream_version(ctx, row, pkg, floor):
    v = installed_version(ctx, pkg)
    if not version_cmp(v, "ge", floor):
        raise CheckError(f"{pkg} {v} is older than {floor}, the first version with the fix")
    return f"{pkg} {v} >= {floor}"


def term_debian_changelog(ctx, row, pkg, floor):
    v = installed_version(ctx, pkg)
    text = changelog_text(ctx, pkg)
    if text is None:
        if not ctx.allow_missing_changelog:
            raise CheckError(f"{CHANGELOG.format(pkg=pkg)} is not installed (slim image? "
                             "use --allow-missing-changelog to rely on the version alone)")
        named = "changelog not installed"
    elif row.cve not in text:
        raise CheckError(f"{pkg}'s changelog.Debian.gz does not name {row.cve}")
    else:
        named = "changelog names it"
    if not version_cmp(v, "ge", floor):
        raise CheckError(f"{pkg} {v} is older than {floor}, the Debian upload with the fix")
    return f"{pkg} {v} >= {floor}, {named}"


def term_security_release(ctx, row, pkg, floor):
    v = installed_version(ctx, pkg)
    series = ".".join(floor.split(".")[:2]) + "."
    if not v.startswith(series):
        raise CheckError(f"{pkg} {v} is not of the {series}x series")
    if not re.search(r"[~+]deb\d+u\d+", v):
        raise CheckError(f"{pkg} {v} is not a Debian stable/security build (no ~debNuM)")
    if not version_cmp(v, "ge", floor):
        raise CheckError(f"{pkg} {v} is older than {floor}: rebuild on an updated base")
    return f"{pkg} {v} is a Debian security build >= {floor}"


# ---- not-applicable evidence ------------------------------------------------

def binaries(ctx):
    """The danmaku-* executables of bin_dir; the required ones must be there."""
    if not os.path.isdir(ctx.bin_dir):
        raise CheckError(f"--bin-dir {ctx.bin_dir} does not exist (build first)")
    missing = [b for b in REQUIRED_BINARIES if not os.path.isfile(os.path.join(ctx.bin_dir, b))]
    if missing:
        raise CheckError(f"{', '.join(missing)} not found in {ctx.bin_dir} (build first)")
    return sorted(os.path.join(ctx.bin_dir, n) for n in os.listdir(ctx.bin_dir)
                  if n.startswith("danmaku-") and os.access(os.path.join(ctx.bin_dir, n), os.X_OK))


def imported_symbols(ctx):
    """{binary name: set of undefined dynamic symbols (without @VERSION)}."""
    if ctx._imports is None:
        ctx._imports = {}
        for path in binaries(ctx):
            try:
                out = subprocess.run(["nm", "-D", "--undefined-only", path],
                                     capture_output=True, text=True, check=False)
            except FileNotFoundError:
                raise CheckError("nm not found (install binutils)")
            if out.returncode != 0:
                raise CheckError(f"nm -D --undefined-only {path} failed: {out.stderr.strip()}")
            syms = set()
            for line in out.stdout.splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[-2] == "U":
                    syms.add(parts[-1].split("@")[0])
            ctx._imports[os.path.basename(path)] = syms
    return ctx._imports


def na_jwt_verify_unused(ctx, row, pkg):
    bad = []
    for name, syms in imported_symbols(ctx).items():
        bad += [f"{name}:{s}" for s in sorted(syms) if JWT_VERIFY_SYMBOL.match(s)]
    if bad:
        raise CheckError("libjwt verification is linked: " + ", ".join(bad))
    names = ", ".join(sorted(imported_symbols(ctx)))
    return f"no jwt_decode/jwt_verify/jwt_valid import in {names}"


def library_files(pkg):
    out = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True, text=True, check=False)
    return [p for p in out.stdout.splitlines() if re.search(r"\.so(\.\d+)*$", p)
            and os.path.isfile(p) and not os.path.islink(p)]


def na_no_websocket_module(ctx, row, pkg):
    v = installed_version(ctx, pkg)
    if not version_cmp(v, "lt", "2.2~"):
        raise CheckError(f"{pkg} {v} is 2.2 or newer, which has the WebSocket module")
    exported = []
    for lib in library_files(pkg):
        out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True,
                             check=False)
        for line in out.stdout.splitlines():
            parts = line.split()
            if parts and parts[-1].startswith("evws_"):
                exported.append(f"{os.path.basename(lib)}:{parts[-1]}")
    if exported:
        raise CheckError("libevent exports WebSocket functions: " + ", ".join(exported[:5]))
    used = [f"{n}:{s}" for n, syms in imported_symbols(ctx).items() for s in syms
            if s.startswith("evws_") or s.startswith("evhttp_set_ws")]
    if used:
        raise CheckError("a binary imports libevent WebSocket functions: " + ", ".join(used))
    return f"{pkg} {v} < 2.2, no evws_* in the library or our binaries"


def na_json_loads_trusted_only(ctx, row, pkg):
    if ctx.src_dir is None or not os.path.isdir(os.path.join(ctx.src_dir, "common")):
        raise CheckError("needs the source tree (--src-dir) to find json_loads callers")
    call = re.compile(r"\bjson_loads\s*\(")
    callers = set()
    for d in SOURCE_DIRS:
        for dirpath, _, files in os.walk(os.path.join(ctx.src_dir, d)):
            for fn in files:
                if fn.endswith((".c", ".h")):
                    path = os.path.join(dirpath, fn)
                    with open(path, encoding="utf-8", errors="replace") as f:
                        if call.search(f.read()):
                            callers.add(os.path.relpath(path, ctx.src_dir))
    stray = sorted(callers - JSON_LOADS_ALLOWED)
    if stray:
        raise CheckError("json_loads called outside the reviewed places: " + ", ".join(stray)
                         + " (use json_loadb with the length for peer data, or review and "
                         "extend JSON_LOADS_ALLOWED)")
    return "json_loads only in " + (", ".join(sorted(callers)) or "no file") + \
        "; peer data goes through json_loadb"


def rdkafka_features():
    try:
        lib = ctypes.CDLL("librdkafka.so.1")
    except OSError as e:
        raise CheckError(f"cannot load librdkafka.so.1: {e}")
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.POINTER(ctypes.c_size_t)]
    lib.rd_kafka_conf_destroy.argtypes = [ctypes.c_void_p]
    conf = lib.rd_kafka_conf_new()
    buf = ctypes.create_string_buffer(4096)
    size = ctypes.c_size_t(len(buf))
    rc = lib.rd_kafka_conf_get(conf, b"builtin.features", buf, ctypes.byref(size))
    lib.rd_kafka_conf_destroy(conf)
    if rc != 0:
        raise CheckError("librdkafka did not report builtin.features")
    return buf.value.decode().split(",")


def na_rdkafka_no_oidc(ctx, row, pkg):
    installed_version(ctx, pkg)
    features = rdkafka_features()
    if "oidc" in features or "http" in features:
        raise CheckError("this librdkafka has OIDC/HTTP support (builtin.features: "
                         + ",".join(features) + "): its embedded cJSON parses network data")
    return "librdkafka builtin.features has no oidc/http: " + ",".join(features)


def na_upstream_below(ctx, row, pkg, bound):
    v = installed_version(ctx, pkg)
    if not version_cmp(v, "lt", bound):
        raise CheckError(f"{pkg} {v} is not older than {bound}: the affected code may be there")
    return f"{pkg} {v} < {bound}"


NOT_APPLICABLE = {
    "jwt-verify-unused": na_jwt_verify_unused,
    "no-websocket-module": na_no_websocket_module,
    "json-loads-trusted-only": na_json_loads_trusted_only,
    "rdkafka-no-oidc": na_rdkafka_no_oidc,
}
# Checks about our binaries or sources rather than a package: run once per row.
ONCE = {"jwt-verify-unused", "json-loads-trusted-only"}


def check_term(ctx, row, term):
    """Checks one how-fixed term for every package of the row; returns evidence."""
    m = re.fullmatch(r"(upstream-version|debian-changelog|debian-security-release)>=(\S+)", term)
    if m:
        fn = {"upstream-version": term_upstream_version, "debian-changelog": term_debian_changelog,
              "debian-security-release": term_security_release}[m.group(1)]
        return "; ".join(fn(ctx, row, pkg, m.group(2)) for pkg in row.packages)
    m = re.fullmatch(r"not-applicable:upstream<(\S+)", term)
    if m:
        return "; ".join(na_upstream_below(ctx, row, pkg, m.group(1)) for pkg in row.packages)
    m = re.fullmatch(r"not-applicable:([a-z0-9-]+)", term)
    if m and m.group(1) in NOT_APPLICABLE:
        fn = NOT_APPLICABLE[m.group(1)]
        if m.group(1) in ONCE:
            for pkg in row.packages:
                installed_version(ctx, pkg)
            return fn(ctx, row, row.packages[0])
        return "; ".join(fn(ctx, row, pkg) for pkg in row.packages)
    raise CheckError(f"unknown how-fixed term {term!r} (see the top of cves.tsv)")


def check_row(ctx, row):
    """Returns (ok, message) for one row."""
    evidence = []
    try:
        for term in (t.strip() for t in row.how.split("&")):
            evidence.append(check_term(ctx, row, term))
    except CheckError as e:
        return False, str(e)
    return True, "; ".join(evidence)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=DEFAULT_BIN,
                    help="directory with danmaku-ingest, danmaku-broadcast, ... "
                         "(default: build/default/bin)")
    ap.add_argument("--tsv", default=DEFAULT_TSV, help="the CVE table (default: cves.tsv here)")
    ap.add_argument("--src-dir", default=ROOT, help="the source tree (default: this checkout)")
    ap.add_argument("--only", action="append", metavar="CVE",
                    help="check only this row (CVE id, or package:- for release rows); repeatable")
    ap.add_argument("--allow-missing-changelog", action="store_true",
                    help="where /usr/share/doc was stripped (slim images), accept the version "
                         "alone for debian-changelog rows")
    args = ap.parse_args(argv)

    try:
        rows = load_rows(args.tsv)
    except (OSError, ValueError) as e:
        print(f"check_cves: {e}", file=sys.stderr)
        return 2
    if args.only:
        unknown = sorted(set(args.only) - {r.id for r in rows})
        if unknown:
            print(f"check_cves: no row {', '.join(unknown)} in {args.tsv}", file=sys.stderr)
            return 2
        rows = [r for r in rows if r.id in args.only]

    ctx = Context(os.path.abspath(args.bin_dir), args.src_dir, args.allow_missing_changelog)
    failed = 0
    for row in rows:
        ok, msg = check_row(ctx, row)
        failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {','.join(row.packages)} {row.cve} [{row.how}]: {msg}")
    print(f"verdict: {len(rows) - failed} of {len(rows)} rows hold"
          + ("" if not failed else f", {failed} FAILED"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
