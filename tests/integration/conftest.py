"""Every server a test started is checked for sanitizer reports once it has
exited, however it was stopped: a test that stops a node itself, or a
module fixture's node, still fails the first test to notice a report (the
ASan+UBSan runs report leaks at exit, DESIGN §9). assert_clean_exit does the
same for the nodes a test stops on purpose."""

import pytest

import dmtest

_checked = set()


def _reports(node):
    try:
        log = node.log()
    except (OSError, ValueError):
        return []
    return [line for line in log.splitlines() if any(m in line for m in dmtest.SANITIZER_MARKS)]


@pytest.fixture(autouse=True)
def no_sanitizer_reports():
    yield
    bad = []
    for node in list(dmtest._started):
        if id(node) in _checked or node.proc.poll() is None:
            continue
        _checked.add(id(node))
        lines = _reports(node)
        if lines:
            bad.append(f"{node.proc.args[0]} (log {node.stderr_path}):\n" + "\n".join(lines[:20]))
    assert not bad, "sanitizer reports from servers that exited:\n" + "\n\n".join(bad)
