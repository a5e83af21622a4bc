"""The daemons of an experiment, as faultbpf clients."""

import os

from faultbpf import Client


def clients(configuration=None, secrets=None):
    """One client per URL in ``configuration["faultbpf_daemons"]``, with
    the token and TLS files of ``secrets["faultbpf"]`` (or the flat
    ``secrets`` given to the activity)."""
    configuration = configuration or {}
    urls = configuration.get("faultbpf_daemons")
    if not urls:
        raise ValueError(
            'configuration needs "faultbpf_daemons": ["https://HOST:PORT", ...]'
        )
    secrets = secrets or {}
    secrets = secrets.get("faultbpf", secrets)
    token = secrets.get("token")
    if not token:
        raise ValueError('secrets need "token": the daemons\' --token-file contents')
    return [
        (
            url,
            Client(
                url=url,
                token=token,
                cafile=secrets.get("cafile"),
                certfile=secrets.get("certfile"),
                keyfile=secrets.get("keyfile"),
            ),
        )
        for url in urls
    ]


def run_prefix():
    """The rule-name prefix of this ``chaos run`` process."""
    return "chaostoolkit-%d-" % os.getpid()
