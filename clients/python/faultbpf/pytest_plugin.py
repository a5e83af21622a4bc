"""The ``faultbpf`` pytest fixture, registered through the ``pytest11``
entry point when the package is installed.

Why a fixture and not just the client: a test that fails between adding a
fault and removing it must not leave the fault to the next test. The
fixture remembers every rule the test added and removes what is left at
teardown, whatever the outcome; the daemon's ``owner_pid`` check covers a
test run that is killed outright.

    def test_reconnects(faultbpf):
        with faultbpf.fault("blackhole", port=5672, for_="30s"):
            ...
        rule = faultbpf.add("hang", port=5432)    # lifted at teardown
"""

import pytest

from .client import Client, FaultbpfError


class FixtureClient(Client):
    """A :class:`faultbpf.Client` that tracks the rules it adds, so the
    fixture can remove those still there at teardown."""

    def __init__(self, socket_path=None, timeout=30.0):
        super().__init__(socket_path, timeout)
        self.added = []

    def add(self, fault, port=None, for_=None, owner_pid=None, **fields):
        info = super().add(fault, port=port, for_=for_, owner_pid=owner_pid, **fields)
        self.added.append(info["id"])
        return info

    def remove(self, rule_id):
        info = super().remove(rule_id)
        if rule_id in self.added:
            self.added.remove(rule_id)
        return info

    def cleanup(self):
        """Removes every rule this client added that is still there;
        returns the ids it removed."""
        removed = []
        for rule_id in list(self.added):
            try:
                self.remove(rule_id)
                removed.append(rule_id)
            except FaultbpfError as e:
                if e.status != 404:
                    raise
        self.added = []
        return removed


def pytest_addoption(parser):
    group = parser.getgroup("faultbpf")
    group.addoption(
        "--faultbpf-socket",
        default=None,
        metavar="PATH",
        help="the faultbpf daemon's socket (default: $FAULTBPF_SOCKET or /run/faultbpf.sock)",
    )


@pytest.fixture
def faultbpf(request):
    """A faultbpf client for this test; every rule it added is removed at
    teardown (``faultbpf.fault(...)`` as a ``with`` block, or
    ``faultbpf.add(...)`` for the rest of the test)."""
    client = FixtureClient(request.config.getoption("faultbpf_socket"))
    yield client
    client.cleanup()
