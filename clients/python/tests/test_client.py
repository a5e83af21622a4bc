"""Unit tests of the Python client against a small fake daemon on a
temporary Unix socket: what the client sends (the rule JSON, owner_pid,
durations), what it makes of the answers (problem bodies, no daemon), and
that ``with`` blocks and the pytest fixture leave no rule behind.

Standard library only: ``python3 -m unittest discover clients/python/tests``.
The pytest fixture test runs only where pytest is installed.
"""

import grp
import http.server
import json
import os
import re
import socketserver
import subprocess
import sys
import tempfile
import threading
import unittest
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
sys.path.insert(0, PACKAGE_ROOT)

import faultbpf  # noqa: E402
from faultbpf.client import duration, rule_spec  # noqa: E402

CLIENT_DIR = PACKAGE_ROOT

#: An interpreter another user can run (a pyenv one under /root is not).
PROBE_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

#: Run as another user: prints the error the client raises for the socket.
REFUSED_PROBE = """
import sys, faultbpf
try:
    faultbpf.Client(sys.argv[1], timeout=5).rules()
except faultbpf.FaultbpfError as e:
    print(e)
else:
    sys.exit("the daemon answered a user it should have refused")
"""


class FakeDaemon:
    """Answers the daemon's routes from a dict of rules, and records every
    request (method, path, JSON body)."""

    def __init__(self, path):
        self.path = path
        self.rules = {}
        self.next_id = 0
        self.requests = []
        self.lock = threading.Lock()
        daemon = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, body, content_type="application/json"):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def _problem(self, status, detail):
                self._reply(
                    status,
                    {"type": "about:blank", "title": "Error", "status": status, "detail": detail},
                    "application/problem+json",
                )

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                with daemon.lock:
                    daemon.requests.append((self.command, self.path, body))
                    self._route(body)

            def _route(self, body):
                m = re.fullmatch(r"/v1/rules/(\d+)", self.path)
                if self.command == "POST" and self.path == "/v1/rules":
                    if body.get("fault") not in ("blackhole", "reset", "hang", "chaos"):
                        return self._problem(400, "bad rule: unknown variant `%s`" % body.get("fault"))
                    if 22 in body.get("port", []):
                        return self._problem(403, "rule on port 22: it would cut ssh to this host")
                    rule_id = daemon.next_id
                    daemon.next_id += 1
                    info = {
                        "id": rule_id,
                        "fault": body["fault"],
                        "description": "%s port %s" % (body["fault"], body.get("port")),
                        "origin": "api",
                        "spec": body,
                    }
                    daemon.rules[rule_id] = info
                    return self._reply(201, info)
                if self.command == "GET" and self.path == "/v1/rules":
                    return self._reply(200, {"rules": list(daemon.rules.values())})
                if self.command == "DELETE" and self.path == "/v1/rules":
                    n = len(daemon.rules)
                    daemon.rules.clear()
                    return self._reply(200, {"removed": n})
                if m and self.command == "DELETE":
                    info = daemon.rules.pop(int(m.group(1)), None)
                    if info is None:
                        return self._problem(404, "no rule %s" % m.group(1))
                    return self._reply(200, info)
                if self.command == "GET" and self.path == "/v1/stats":
                    return self._reply(
                        200,
                        {
                            "rules": [
                                {"id": i, "matched_packets": 7, "matched_bytes": 700, "acted_packets": 5, "acted_bytes": 500}
                                for i in daemon.rules
                            ]
                        },
                    )
                if self.command == "GET" and self.path == "/healthz":
                    return self._reply(200, {"status": "ok", "rules": len(daemon.rules)})
                if self.command == "GET" and self.path == "/teapot":
                    data = b"not json"
                    self.send_response(418)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return None
                return self._problem(404, "no route %s %s" % (self.command, self.path))

            do_GET = do_POST = do_DELETE = _handle

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def posted(self):
        return [b for (m, p, b) in self.requests if m == "POST"]


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.socket = os.path.join(self.dir.name, "fb.sock")
        self.daemon = FakeDaemon(self.socket)
        self.client = faultbpf.Client(self.socket, timeout=5)

    def tearDown(self):
        self.daemon.close()
        self.dir.cleanup()

    def test_with_block_adds_then_removes_an_owned_rule(self):
        with faultbpf.fault("hang", port=5432, for_="30s", socket_path=self.socket) as rule:
            self.assertEqual(list(self.daemon.rules), [rule.id])
            self.assertIn("hang", rule.description)
        self.assertEqual(self.daemon.rules, {})
        (spec,) = self.daemon.posted()
        self.assertEqual(spec, {"fault": "hang", "port": [5432], "for": "30s", "owner_pid": os.getpid()})
        self.assertEqual(self.daemon.requests[-1][:2], ("DELETE", "/v1/rules/%d" % rule.id))

    def test_the_rule_is_removed_when_the_block_raises(self):
        with self.assertRaises(ZeroDivisionError):
            with self.client.fault("blackhole", port=5672):
                1 / 0
        self.assertEqual(self.daemon.rules, {})

    def test_extra_keywords_map_to_the_rule_json(self):
        self.client.add(
            "chaos",
            port="8000-8100",
            dport=[80, 443],
            sport=53,
            pct=30,
            per="flow",
            peer="10.200.0.0/24",
            mix="drop:20,reset:10",
            mark=None,
            direction="egress",
            proto="tcp",
            name="api-flaky",
            container="api",
            engine="docker",
            for_=1.5,
        )
        (spec,) = self.daemon.posted()
        self.assertEqual(
            spec,
            {
                "fault": "chaos",
                "port": ["8000-8100"],
                "dport": [80, 443],
                "sport": [53],
                "pct": 30,
                "per": "flow",
                "peer": ["10.200.0.0/24"],
                "mix": "drop:20,reset:10",
                "direction": "egress",
                "proto": "tcp",
                "name": "api-flaky",
                "container": "api",
                "engine": "docker",
                "for": "1500ms",
                "owner_pid": os.getpid(),
            },
        )

    def test_owner_pid_can_be_given_or_left_out(self):
        self.client.add("reset", port=1, owner_pid=4242)
        self.client.add("reset", port=2, owner_pid=0)
        first, second = self.daemon.posted()
        self.assertEqual(first["owner_pid"], 4242)
        self.assertNotIn("owner_pid", second)

    def test_errors_carry_status_and_detail(self):
        with self.assertRaises(faultbpf.FaultbpfError) as cm:
            self.client.add("explode", port=1)
        self.assertEqual(cm.exception.status, 400)
        self.assertIn("explode", cm.exception.detail)
        self.assertIn("400", str(cm.exception))
        with self.assertRaises(faultbpf.FaultbpfError) as cm:
            self.client.add("blackhole", port=22)
        self.assertEqual(cm.exception.status, 403)
        self.assertIn("ssh", cm.exception.detail)
        with self.assertRaises(faultbpf.FaultbpfError) as cm:
            self.client.remove(99)
        self.assertEqual((cm.exception.status, cm.exception.detail), (404, "no rule 99"))
        with self.assertRaises(faultbpf.FaultbpfError) as cm:
            self.client.request("GET", "/teapot")
        self.assertEqual((cm.exception.status, cm.exception.detail), (418, "not json"))

    def test_no_daemon_is_a_clear_error(self):
        client = faultbpf.Client(os.path.join(self.dir.name, "nothing.sock"))
        self.assertFalse(client.is_up())
        with self.assertRaises(faultbpf.FaultbpfError) as cm:
            client.rules()
        self.assertIsNone(cm.exception.status)
        self.assertIn("nothing.sock", str(cm.exception))
        self.assertIn("faultbpf daemon", str(cm.exception))

    def test_a_socket_that_refuses_the_user_says_which_group_to_join(self):
        # Issue 13: the socket exists but the kernel refuses the caller
        # (EACCES). Root passes any permission check, so as root the client
        # runs in a child as nobody; the socket is root's with mode 0600, as
        # the daemon's default, or group-owned with 0660 as the .deb's unit.
        os.chmod(self.dir.name, 0o755)
        cases = [(0, 0o600, "root-only"), (65534, 0o660, "add yourself to group %s")]
        for gid, mode, expected in cases:
            os.chown(self.socket, -1, gid)
            os.chmod(self.socket, mode)
            group = grp.getgrgid(gid).gr_name
            if os.geteuid() == 0:
                out = subprocess.run(
                    [PROBE_PYTHON, "-c", REFUSED_PROBE, self.socket],
                    env=dict(os.environ, PYTHONPATH=CLIENT_DIR),
                    user=65534,
                    group=65533 if gid == 65534 else 65534,
                    extra_groups=[],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                self.assertEqual(out.returncode, 0, out.stderr)
                message = out.stdout
            else:
                os.chmod(self.socket, 0)
                with self.assertRaises(faultbpf.FaultbpfError) as cm:
                    self.client.rules()
                message = str(cm.exception)
            self.assertIn("refuses user", message)
            self.assertIn(self.socket, message)
            self.assertIn("Permission denied", message)
            if os.geteuid() == 0:
                self.assertIn(expected.replace("%s", group), message)
            self.assertNotIn("is `faultbpf daemon` running", message)

    def test_rules_stats_counters_and_remove_all(self):
        self.assertTrue(self.client.is_up())
        with self.client.fault("blackhole", port=5672) as rule:
            self.assertEqual([r["id"] for r in self.client.rules()], [rule.id])
            self.assertEqual(rule.counters()["acted_packets"], 5)
            self.assertEqual(self.client.stats()[0]["matched_packets"], 7)
            # Lifted early by someone else: leaving the block is still fine.
            self.assertEqual(self.client.remove_all(), 1)
        with self.assertRaises(faultbpf.FaultbpfError):
            rule.counters()

    def test_socket_from_the_environment(self):
        with mock.patch.dict(os.environ, {"FAULTBPF_SOCKET": self.socket}):
            self.assertEqual(faultbpf.Client().socket_path, self.socket)
            with faultbpf.fault("reset", port=6379):
                self.assertEqual(len(self.daemon.rules), 1)
        with mock.patch.dict(os.environ, clear=False):
            os.environ.pop("FAULTBPF_SOCKET", None)
            self.assertEqual(faultbpf.Client().socket_path, "/run/faultbpf.sock")


class HelpersTest(unittest.TestCase):
    def test_durations(self):
        import datetime

        self.assertEqual(duration("1m30s"), "1m30s")
        self.assertEqual(duration(30), "30s")
        self.assertEqual(duration(2.0), "2s")
        self.assertEqual(duration(0.25), "250ms")
        self.assertEqual(duration(datetime.timedelta(minutes=2)), "120s")
        self.assertIsNone(duration(None))
        with self.assertRaises(ValueError):
            duration(0)
        with self.assertRaises(TypeError):
            duration([1])

    def test_rule_spec_without_owner(self):
        self.assertEqual(rule_spec("blackhole", port=(1, "2-3")), {"fault": "blackhole", "port": [1, "2-3"]})


class PytestPluginTest(unittest.TestCase):
    """The fixture, run by a real pytest on a generated test file."""

    def setUp(self):
        try:
            import pytest  # noqa: F401
        except ImportError:
            self.skipTest("pytest is not installed for %s" % sys.executable)
        self.dir = tempfile.TemporaryDirectory()
        self.socket = os.path.join(self.dir.name, "fb.sock")
        self.daemon = FakeDaemon(self.socket)

    def tearDown(self):
        self.daemon.close()
        self.dir.cleanup()

    def test_fixture_removes_what_a_failing_test_left(self):
        test_file = os.path.join(self.dir.name, "test_generated.py")
        with open(test_file, "w") as f:
            f.write(
                "def test_with_block(faultbpf):\n"
                "    with faultbpf.fault('hang', port=5432, for_='30s') as rule:\n"
                "        assert rule.counters()['acted_packets'] == 5\n"
                "\n"
                "def test_left_behind_and_failing(faultbpf):\n"
                "    faultbpf.add('blackhole', port=5672)\n"
                "    faultbpf.add('reset', port=6379)\n"
                "    assert False, 'the rules must go anyway'\n"
            )
        env = dict(os.environ, PYTHONPATH=PACKAGE_ROOT, PYTHONDONTWRITEBYTECODE="1")
        env.pop("FAULTBPF_SOCKET", None)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "no:faultbpf",
                "-p",
                "faultbpf.pytest_plugin",
                "--faultbpf-socket",
                self.socket,
                test_file,
            ],
            cwd=self.dir.name,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
        text = out.stdout.decode(errors="replace")
        self.assertEqual(out.returncode, 1, text)
        self.assertIn("1 failed, 1 passed", text)
        self.assertEqual(self.daemon.rules, {}, text)
        self.assertEqual(len(self.daemon.posted()), 3, text)
        deleted = [p for (m, p, b) in self.daemon.requests if m == "DELETE"]
        self.assertEqual(len(deleted), 3, deleted)


if __name__ == "__main__":
    unittest.main()
