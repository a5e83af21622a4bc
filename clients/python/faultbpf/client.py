"""The client of faultbpf's daemon API, over its Unix socket.

Why this exists: a test that wants "Postgres hangs for the next 30 seconds"
should say so in one line, and whatever happens to the test (an assertion,
an exception, a kill -9 of the whole test run), the fault must not outlive
it. So every rule this client adds names the calling process as its owner
(``owner_pid``): the daemon removes the rule as soon as that process is
gone, and the ``with`` block removes it as soon as the block ends.

Standard library only: ``http.client`` over a Unix socket, JSON bodies, and
the daemon's RFC 9457 problem bodies turned into :class:`FaultbpfError`.
"""

import contextlib
import datetime
import grp
import http.client
import json
import os
import pwd
import socket
import ssl
import urllib.parse

#: Where the daemon listens unless told otherwise (``faultbpf daemon --socket``).
DEFAULT_SOCKET = "/run/faultbpf.sock"

#: The environment variable the CLI also reads.
SOCKET_ENV = "FAULTBPF_SOCKET"

#: Keys that hold lists in the rule JSON; a single value is wrapped.
_LIST_KEYS = ("port", "dport", "sport", "peer", "domain", "method", "path")


class FaultbpfError(Exception):
    """The daemon refused a request, or could not be reached.

    ``status`` is the HTTP status (400 bad rule, 403 guarded port, 404 no
    such rule, 409 a port another rule holds, 507 no slot left), or ``None``
    when the daemon could not be reached at all; ``detail`` says what was
    wrong, as the daemon worded it.
    """

    def __init__(self, status, detail, title=None):
        self.status = status
        self.detail = detail
        self.title = title
        if status is None:
            message = detail
        else:
            message = "the daemon said %d: %s" % (status, detail)
        super().__init__(message)


class UnixHTTPConnection(http.client.HTTPConnection):
    """An ``HTTPConnection`` whose transport is a Unix stream socket."""

    def __init__(self, path, timeout=30.0):
        super().__init__("faultbpf", timeout=timeout)
        self.unix_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.unix_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def default_socket():
    """``$FAULTBPF_SOCKET``, else ``/run/faultbpf.sock``."""
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


def refused_message(path, error):
    """What to say when the socket exists but the kernel refuses this user
    (EACCES: no write permission on the socket, or no search permission on
    a directory above it), naming the group that would let them in."""
    try:
        st = os.stat(path)
        group = grp.getgrgid(st.st_gid).gr_name
        mode = "%04o" % (st.st_mode & 0o7777)
    except (OSError, KeyError):
        group, mode = None, "?"
    user = _user_name()
    if group and group != "root":
        fix = (
            "add yourself to group %s (`sudo usermod -aG %s %s`, then log in again "
            "or run `newgrp %s`)" % (group, group, user, group)
        )
    else:
        fix = (
            "the socket is root-only (the daemon's default); give it to group faultbpf "
            "(the .deb's faultbpf.service does: `systemctl start faultbpf`) and add "
            "yourself to group faultbpf (`sudo usermod -aG faultbpf %s`), or run as root" % user
        )
    return "the daemon's socket %s (mode %s, group %s) refuses user %s: %s: %s" % (
        path,
        mode,
        group or "?",
        user,
        error.strerror or error,
        fix,
    )


def _user_name():
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return "uid %d" % os.geteuid()


def duration(value):
    """A duration for the daemon: ``"30s"`` as is, seconds as a number, or a
    ``datetime.timedelta``. Sub-second values become milliseconds."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("a duration is a string like '30s', seconds, or a timedelta; got %r" % (value,))
    if value <= 0:
        raise ValueError("a duration must be positive; got %r" % (value,))
    if float(value).is_integer():
        return "%ds" % int(value)
    return "%dms" % max(1, round(value * 1000))


def rule_spec(fault, port=None, for_=None, owner_pid=None, **fields):
    """The rule JSON the daemon takes (``POST /v1/rules``).

    ``port``, ``dport``, ``sport`` and ``peer`` take one value or a list
    (a port is a number or a ``"8000-8100"`` range); ``for_`` is the rule's
    ``for``; any other keyword (``pct``, ``per``, ``proto``, ``direction``,
    ``mix``, ``mark``, ``name``, ``fragments``, ``force``, ``container``,
    ``engine``; ``http``'s ``status``, ``retry_after``, ``method``, ``path``,
    ``when``, ``delay_first_byte``, ``side``, ``cgroup``) goes into the JSON
    as it is, so the daemon checks it and names whatever is wrong.
    """
    spec = {"fault": fault}
    if port is not None:
        fields["port"] = port
    for key, value in fields.items():
        if value is None:
            continue
        if key in _LIST_KEYS and not isinstance(value, (list, tuple)):
            value = [value]
        elif key in _LIST_KEYS:
            value = list(value)
        spec[key] = value
    lasts = duration(for_)
    if lasts is not None:
        spec["for"] = lasts
    if owner_pid is not None:
        spec["owner_pid"] = owner_pid
    return spec


class Fault:
    """A rule in force, as returned by :meth:`Client.fault`."""

    def __init__(self, client, info):
        self._client = client
        #: The daemon's view of the rule (``id``, ``description``, ``spec``...).
        self.info = info
        self.id = info["id"]
        self.description = info.get("description", "")

    def counters(self):
        """This rule's entry of ``/v1/stats``: ``matched_packets``,
        ``matched_bytes``, ``acted_packets``, ``acted_bytes``."""
        for entry in self._client.stats():
            if entry.get("id") == self.id:
                return entry
        raise FaultbpfError(404, "rule %d is gone (expired or removed)" % self.id)

    def remove(self):
        """Lifts the fault now; a rule already gone is not an error."""
        try:
            self._client.remove(self.id)
        except FaultbpfError as e:
            if e.status != 404:
                raise

    def __repr__(self):
        return "<faultbpf.Fault %d %s>" % (self.id, self.description)


class Client:
    """Talks to ``faultbpf daemon`` over its Unix socket.

    >>> client = Client()                       # $FAULTBPF_SOCKET or /run/faultbpf.sock
    >>> with client.fault("blackhole", port=5672, for_="30s"):
    ...     pass                                # RabbitMQ is unreachable here
    """

    def __init__(
        self,
        socket_path=None,
        timeout=30.0,
        url=None,
        token=None,
        cafile=None,
        certfile=None,
        keyfile=None,
    ):
        """``url``: a remote daemon's ``--listen`` port instead of the Unix
        socket, ``http://HOST:PORT`` or ``https://HOST:PORT`` (``cafile``:
        the CA that signed the daemon's certificate; ``certfile`` and
        ``keyfile``: a client certificate when the daemon requires one),
        with ``token``, the daemon's ``--token-file`` contents."""
        self.url = url
        self.token = token
        self.timeout = timeout
        self.socket_path = None if url else (socket_path or default_socket())
        self._tls = None
        if url:
            parsed = urllib.parse.urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname or not parsed.port:
                raise ValueError("url %r: use http://HOST:PORT or https://HOST:PORT" % url)
            if token is None:
                raise ValueError("url %r needs the daemon's token (token=...)" % url)
            self._host, self._port = parsed.hostname, parsed.port
            if parsed.scheme == "https":
                self._tls = ssl.create_default_context(cafile=cafile)
                if certfile:
                    self._tls.load_cert_chain(certfile, keyfile)

    def _where(self):
        return self.url or self.socket_path

    def _connection(self):
        if self.url is None:
            return UnixHTTPConnection(self.socket_path, timeout=self.timeout)
        if self._tls is not None:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self.timeout, context=self._tls
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def request(self, method, path, body=None):
        """One request; returns the decoded JSON answer (``None`` if empty).
        Raises :class:`FaultbpfError` for an error status or no daemon."""
        conn = self._connection()
        data = None if body is None else json.dumps(body).encode()
        headers = {"Connection": "close"}
        if self.token is not None:
            headers["Authorization"] = "Bearer " + self.token
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            status = resp.status
        except PermissionError as e:
            raise FaultbpfError(None, refused_message(self.socket_path, e)) from e
        except (OSError, http.client.HTTPException) as e:
            raise FaultbpfError(
                None,
                "could not talk to the daemon at %s (is `faultbpf daemon` running there?): %s"
                % (self._where(), e),
            ) from e
        finally:
            conn.close()
        try:
            decoded = json.loads(raw.decode()) if raw else None
        except ValueError:
            decoded = None
        if not 200 <= status < 300:
            if isinstance(decoded, dict) and "detail" in decoded:
                raise FaultbpfError(status, str(decoded["detail"]), decoded.get("title"))
            raise FaultbpfError(status, raw.decode(errors="replace").strip() or resp.reason)
        if raw and decoded is None:
            raise FaultbpfError(status, "the daemon's answer is not JSON: %r" % raw[:200])
        return decoded

    def is_up(self):
        """True when a daemon answers ``/healthz``."""
        try:
            self.request("GET", "/healthz")
            return True
        except FaultbpfError:
            return False

    def health(self):
        """``/healthz``: ``status``, ``attach``, ``interfaces``, ``rules``."""
        return self.request("GET", "/healthz")

    def add(self, fault, port=None, for_=None, owner_pid=None, **fields):
        """Adds a rule and returns the daemon's view of it (with its ``id``).

        The rule belongs to this process (``owner_pid``, default
        ``os.getpid()``): the daemon removes it when the process is gone.
        Pass ``owner_pid=0`` for a rule that outlives the process (until its
        ``for``, or the daemon's default expiry)."""
        if owner_pid is None:
            owner_pid = os.getpid()
        spec = rule_spec(fault, port=port, for_=for_, owner_pid=owner_pid or None, **fields)
        return self.request("POST", "/v1/rules", spec)

    def remove(self, rule_id):
        """Removes rule ``rule_id``; returns what it was. 404 if it is gone."""
        return self.request("DELETE", "/v1/rules/%d" % int(rule_id))

    def remove_all(self):
        """Removes every rule of the daemon (every owner's); returns how many."""
        return self.request("DELETE", "/v1/rules")["removed"]

    def rules(self):
        """Every rule of the daemon."""
        return self.request("GET", "/v1/rules")["rules"]

    def stats(self):
        """Every rule's counters."""
        return self.request("GET", "/v1/stats")["rules"]

    @contextlib.contextmanager
    def fault(self, fault, port=None, for_=None, **fields):
        """Puts a fault in force for the ``with`` block; yields a
        :class:`Fault`. The fault is lifted when the block ends, however
        it ends (and by the daemon if this process dies first)."""
        rule = Fault(self, self.add(fault, port=port, for_=for_, **fields))
        try:
            yield rule
        finally:
            rule.remove()


def fault(fault, port=None, for_=None, socket_path=None, **fields):
    """``with faultbpf.fault("hang", port=5432, for_="30s"):`` with the
    default client (``socket_path``, ``$FAULTBPF_SOCKET`` or
    ``/run/faultbpf.sock``). See :meth:`Client.fault`."""
    return Client(socket_path).fault(fault, port=port, for_=for_, **fields)
