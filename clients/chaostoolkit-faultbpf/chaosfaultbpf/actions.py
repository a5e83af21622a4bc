"""Actions: add a fault on every daemon, remove what this run added."""

import itertools

from faultbpf.client import rule_spec

from .common import clients, run_prefix

__all__ = ["add_fault", "remove_faults"]

_numbers = itertools.count()


def add_fault(fault, port=None, for_="60s", configuration=None, secrets=None, **fields):
    """Adds ``fault`` (blackhole, reset, hang, delay, ...) on ``port`` on
    every daemon, expiring after ``for_`` whatever happens to this run.
    Returns ``{url: rule id}``. If one daemon refuses, the rules already
    added are removed and the error is raised."""
    added = {}
    try:
        for url, client in clients(configuration, secrets):
            name = "%s%d" % (run_prefix(), next(_numbers))
            spec = rule_spec(fault, port=port, for_=for_, name=name, **fields)
            info = client.request("POST", "/v1/rules", spec)
            added[url] = info["id"]
    except Exception:
        for url, client in clients(configuration, secrets):
            if url in added:
                try:
                    client.remove(added[url])
                except Exception:  # the expiry still holds
                    pass
        raise
    return added


def remove_faults(configuration=None, secrets=None):
    """Removes every rule this ``chaos run`` added, on every daemon (the
    rollback). Returns ``{url: number removed}``."""
    removed = {}
    for url, client in clients(configuration, secrets):
        n = 0
        for rule in client.rules():
            if (rule.get("name") or "").startswith(run_prefix()):
                client.remove(rule["id"])
                n += 1
        removed[url] = n
    return removed
