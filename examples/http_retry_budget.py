#!/usr/bin/env python3
"""A retry-budget test in the Wikimedia style, against real HTTP faults.

Wikimedia's "rules of thumb for robust service infrastructure": retry only
what can succeed on a retry (5xx, never 4xx: a 429 or 400 will not get
better by asking again), bound the attempts so a failing dependency sees at
most N times its load, and honour Retry-After. This script checks a client
configured that way (requests + urllib3's Retry) while `faultbpf http`
answers the service's requests with real statuses, no proxy in the path:

    # on the service's host (or: sudo ip netns exec NS ...)
    sudo faultbpf http --port 8080 --status 429 --pct 50 --json
    python3 examples/http_retry_budget.py http://127.0.0.1:8080/ --requests 200

    sudo faultbpf http --port 8080 --status 503 --pct 50 --retry-after 1s
    python3 examples/http_retry_budget.py http://127.0.0.1:8080/ --requests 20

It prints one JSON line (requests, attempts, statuses) and exits 1 if the
budget was broken: a 4xx retried, more than 1 + RETRIES attempts for one
request, or a retry sooner than the server's Retry-After. Compare its
`attempts` with faultbpf's `requests_seen`: they must be equal.
"""

import argparse
import json
import sys
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRIES = 2
# 5xx that a retry can fix; never a 4xx.
RETRY_ON = [500, 502, 503, 504]


def session():
    s = requests.Session()
    retry = Retry(
        total=RETRIES,
        status_forcelist=RETRY_ON,
        respect_retry_after_header=True,
        backoff_factor=0.1,
        raise_on_status=False,
    )
    s.mount("http://", HTTPAdapter(max_retries=retry))
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=100)
    args = ap.parse_args()

    s = session()
    attempts, statuses, broken = 0, {}, []
    for i in range(args.requests):
        t = time.monotonic()
        r = s.get(args.url, timeout=10)
        took = time.monotonic() - t
        history = r.raw.retries.history if r.raw.retries else ()
        n = len(history) + 1
        attempts += n
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if any(400 <= (h.status or 0) < 500 for h in history):
            broken.append("request %d retried a 4xx: %s" % (i, history))
        if n > 1 + RETRIES:
            broken.append("request %d made %d attempts" % (i, n))
        wait = r.headers.get("Retry-After")
        if len(history) and wait and wait.isdigit() and took < int(wait) * len(history):
            broken.append("request %d retried after %.2f s, before Retry-After %s" % (i, took, wait))
    print(json.dumps({
        "requests": args.requests,
        "attempts": attempts,
        "amplification": attempts / args.requests,
        "statuses": statuses,
        "broken": broken[:10],
    }), flush=True)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
