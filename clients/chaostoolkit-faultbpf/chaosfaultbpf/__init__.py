"""Chaos Toolkit extension for faultbpf, modelled on chaostoolkit-toxiproxy.

Actions add and remove faults on one or many faultbpf daemons, probes read
their health and rule counters. The daemons are listed in the experiment's
configuration, their token (and TLS files) in its secrets::

    "configuration": {"faultbpf_daemons": ["https://node1:7443", "https://node2:7443"]},
    "secrets": {"faultbpf": {"token": {"type": "env", "key": "FAULTBPF_TOKEN"},
                             "cafile": "/etc/faultbpf/ca.crt"}}

Every fault carries an expiry (``for_``, default 60 s), enforced by each
daemon: a ``chaos run`` that is killed before its rollbacks leaves nothing
in force once it passes. Rules are named ``chaostoolkit-<pid>-<n>``, so the
rollback ``remove_faults`` removes exactly what this run added.
"""

__version__ = "0.1.0"
