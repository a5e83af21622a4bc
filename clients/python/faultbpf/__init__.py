"""faultbpf for Python tests: make one of your service's dependencies fail,
at the packet level, for the length of a ``with`` block.

    import faultbpf

    with faultbpf.fault("hang", port=5432, for_="30s"):
        ...  # queries to Postgres hang here: does the service time out?

The faults are applied by ``faultbpf daemon`` (run as root); this package
only talks to it over its Unix socket, with the standard library. See
README.md beside this package.
"""

from .client import (
    DEFAULT_SOCKET,
    SOCKET_ENV,
    Client,
    Fault,
    FaultbpfError,
    default_socket,
    fault,
    rule_spec,
)

__all__ = [
    "DEFAULT_SOCKET",
    "SOCKET_ENV",
    "Client",
    "Fault",
    "FaultbpfError",
    "default_socket",
    "fault",
    "rule_spec",
]

__version__ = "0.1.0"
