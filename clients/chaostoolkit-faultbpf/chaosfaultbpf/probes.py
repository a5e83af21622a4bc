"""Probes: daemon health, the faults this run has in force, counters."""

from .common import clients, run_prefix

__all__ = ["daemons_healthy", "faults_in_force", "acted_packets"]


def daemons_healthy(configuration=None, secrets=None):
    """True when every daemon answers ``/healthz`` with status ok."""
    for _, client in clients(configuration, secrets):
        try:
            if client.health().get("status") != "ok":
                return False
        except Exception:
            return False
    return True


def faults_in_force(configuration=None, secrets=None):
    """How many rules this run added are still in force, over all daemons."""
    return sum(
        1
        for _, client in clients(configuration, secrets)
        for rule in client.rules()
        if (rule.get("name") or "").startswith(run_prefix())
    )


def acted_packets(configuration=None, secrets=None):
    """``{url: packets acted on}`` by this run's rules, per daemon."""
    out = {}
    for url, client in clients(configuration, secrets):
        names = {
            r["id"]
            for r in client.rules()
            if (r.get("name") or "").startswith(run_prefix())
        }
        out[url] = sum(s["acted_packets"] for s in client.stats() if s["id"] in names)
    return out
