//! Issue 14, "remote daemons, safely": `--listen` over TLS
//! (`--tls-cert`, `--tls-key`, `--tls-client-ca`), the bearer token still
//! required, and the typed client (`faultbpf::api::Client::remote`)
//! speaking it. Certificates are made by the test with Debian's openssl:
//! a CA, a second unrelated CA, a server certificate for 127.0.0.1 and a
//! client certificate from each CA. Each wrong credential is refused and
//! adds nothing; the right ones add a rule.

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use faultbpf::api::{Client, client::ClientError};
use faultbpf_tests::{SERVER_IF, Topology, daemon::Daemon, run_bounded, temp::TempDir};
use serde_json::json;

const TOKEN: &str = "tls-test-token-0123456789abcdef";
const ADDR: &str = "127.0.0.1:7443";

fn openssl(dir: &Path, args: &[&str]) {
    let exit = run_bounded(
        Command::new("openssl").current_dir(dir).args(args),
        Duration::from_secs(60),
    );
    exit.assert_success();
}

/// `NAME.key` and a self-signed CA `NAME.crt`.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
}

/// `NAME.key` and `NAME.crt` signed by `ca`, with extensions `ext`.
fn leaf(dir: &Path, name: &str, ca: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn pki(dir: &Path) {
    ca(dir, "ca");
    ca(dir, "other-ca");
    leaf(
        dir,
        "server",
        "ca",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    for (name, issuer) in [("client", "ca"), ("stranger", "other-ca")] {
        leaf(
            dir,
            name,
            issuer,
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        );
    }
}

/// A client trusting `ca`, presenting `cert` (its `.crt` and `.key`).
fn client(dir: &Path, ca: &str, cert: Option<&str>, token: &str) -> Client {
    let crt = cert.map(|c| (dir.join(format!("{c}.crt")), dir.join(format!("{c}.key"))));
    let config = faultbpf::tls::client_config(
        &dir.join(format!("{ca}.crt")),
        crt.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )
    .unwrap();
    Client::remote(ADDR, token, Some(Arc::clone(&config)))
}

fn spec() -> faultbpf::spec::RuleSpec {
    serde_json::from_value(json!({ "fault": "blackhole", "port": [7001] })).unwrap()
}

#[test]
fn tls_listener_refuses_wrong_ca_missing_client_cert_and_wrong_token() {
    let topo = Topology::new("tls");
    let dir = TempDir::new("tls-pki");
    pki(dir.path());
    let token = dir.write("token", &format!("{TOKEN}\n"));
    let p = |n: &str| dir.path().join(n).display().to_string();
    let d = Daemon::start(
        &topo.server,
        "tls",
        &[
            "--iface",
            SERVER_IF,
            "--listen",
            ADDR,
            "--token-file",
            &token,
            "--tls-cert",
            &p("server.crt"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("ca.crt"),
        ],
    );
    let add = |c: Client| {
        let got = topo.server.run(move || c.add(&spec()));
        if let Err(e) = &got {
            eprintln!(
                "refused: {e} ({:?})",
                std::error::Error::source(e).map(|s| s.to_string())
            );
        }
        got
    };

    // The client does not trust the daemon's CA.
    let e = add(client(dir.path(), "other-ca", Some("client"), TOKEN)).unwrap_err();
    assert!(
        matches!(e, ClientError::Io { .. }),
        "wrong CA should fail the handshake: {e:?}"
    );
    // No client certificate, though the daemon requires one.
    let e = add(client(dir.path(), "ca", None, TOKEN)).unwrap_err();
    assert!(
        matches!(e, ClientError::Io { .. }),
        "no client cert should be refused: {e:?}"
    );
    // A client certificate from another CA.
    let e = add(client(dir.path(), "ca", Some("stranger"), TOKEN)).unwrap_err();
    assert!(
        matches!(e, ClientError::Io { .. }),
        "a stranger's cert should be refused: {e:?}"
    );
    // Plain HTTP on the TLS port: no answer.
    let plain = Client::remote(ADDR, TOKEN, None);
    let e = topo.server.run(move || plain.add(&spec())).unwrap_err();
    assert!(
        matches!(e, ClientError::Io { .. } | ClientError::Protocol(_)),
        "plain HTTP should get nothing: {e:?}"
    );
    // Right TLS, wrong token: the API refuses.
    let e = add(client(
        dir.path(),
        "ca",
        Some("client"),
        "wrong-token-0123456789abcdef",
    ))
    .unwrap_err();
    assert!(
        matches!(e, ClientError::Api { status: 401, .. }),
        "wrong token: {e:?}"
    );
    assert!(d.rules().is_empty(), "a refused caller added a rule");

    // Everything right: the rule is added, and listed over TLS too.
    let good = client(dir.path(), "ca", Some("client"), TOKEN);
    let (added, listed) = topo.server.run(move || {
        let added = good.add(&spec()).unwrap();
        (added, good.list().unwrap())
    });
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, added.id);
    assert_eq!(d.rules().len(), 1);
}

#[test]
fn tls_without_client_ca_takes_any_client_with_the_token() {
    let topo = Topology::new("tls-n");
    let dir = TempDir::new("tls-pki-n");
    pki(dir.path());
    let token = dir.write("token", &format!("{TOKEN}\n"));
    let p = |n: &str| dir.path().join(n).display().to_string();
    let d = Daemon::start(
        &topo.server,
        "tlsn",
        &[
            "--iface",
            SERVER_IF,
            "--listen",
            ADDR,
            "--token-file",
            &token,
            "--tls-cert",
            &p("server.crt"),
            "--tls-key",
            &p("server.key"),
        ],
    );
    let c = client(dir.path(), "ca", None, TOKEN);
    let added = topo.server.run(move || c.add(&spec())).unwrap();
    assert_eq!(d.rules().len(), 1, "{added:?}");
}

#[test]
fn a_daemon_given_a_file_without_a_certificate_exits_naming_it() {
    let topo = Topology::new("tls-bad");
    let dir = TempDir::new("tls-pki-bad");
    pki(dir.path());
    let token = dir.write("token", &format!("{TOKEN}\n"));
    let not_a_cert = dir.write("not-a-cert.pem", "hello\n");
    let key = dir.path().join("server.key").display().to_string();
    let socket = faultbpf_tests::temp::temp_path("tls-bad", ".sock");
    let exit = faultbpf_tests::Launch::new(
        &topo.server,
        [
            "daemon",
            "--iface",
            SERVER_IF,
            "--listen",
            ADDR,
            "--token-file",
            &token,
            "--tls-cert",
            &not_a_cert,
            "--tls-key",
            &key,
        ],
    )
    .socket(&socket)
    .run();
    assert_eq!(exit.status.code(), Some(1), "{exit:#?}");
    assert!(exit.stderr.contains(&not_a_cert), "{exit:#?}");
    assert!(exit.stderr.contains("BEGIN CERTIFICATE"), "{exit:#?}");
    assert!(
        !socket.exists(),
        "the daemon bound its socket before checking TLS"
    );
}

/// The Python client against the same daemon: each wrong credential is
/// refused (printed as `refused NAME`), the right ones add a rule.
const PY_TLS: &str = r#"
import json, sys
from faultbpf import Client, FaultbpfError
pki, token = sys.argv[1], sys.argv[2]
url = "https://127.0.0.1:7443"
def attempt(name, **kw):
    try:
        info = Client(url=url, **kw).add("blackhole", port=7002)
        print("added", name, info["id"])
    except FaultbpfError as e:
        print("refused", name, e.status)
attempt("wrong-ca", token=token, cafile=pki + "/other-ca.crt",
        certfile=pki + "/client.crt", keyfile=pki + "/client.key")
attempt("no-client-cert", token=token, cafile=pki + "/ca.crt")
attempt("wrong-token", token="wrong-token-0123456789abcdef", cafile=pki + "/ca.crt",
        certfile=pki + "/client.crt", keyfile=pki + "/client.key")
attempt("right", token=token, cafile=pki + "/ca.crt",
        certfile=pki + "/client.crt", keyfile=pki + "/client.key")
"#;

#[test]
fn the_python_client_speaks_tls_and_is_refused_the_same_way() {
    let topo = Topology::new("tls-py");
    let dir = TempDir::new("tls-pki-py");
    pki(dir.path());
    let token = dir.write("token", &format!("{TOKEN}\n"));
    let p = |n: &str| dir.path().join(n).display().to_string();
    let d = Daemon::start(
        &topo.server,
        "tlspy",
        &[
            "--iface",
            SERVER_IF,
            "--listen",
            ADDR,
            "--token-file",
            &token,
            "--tls-cert",
            &p("server.crt"),
            "--tls-key",
            &p("server.key"),
            "--tls-client-ca",
            &p("ca.crt"),
        ],
    );
    let clients = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/python");
    let pki_dir = dir.path().display().to_string();
    let mut py =
        faultbpf_tests::deps::python(&topo.server, PY_TLS, &[&pki_dir, TOKEN], Some(&clients));
    let exit = py.wait(Duration::from_secs(60));
    assert!(exit.status.success(), "{exit:#?}");
    let out = exit.stdout;
    for line in [
        "refused wrong-ca None",
        "refused no-client-cert None",
        "refused wrong-token 401",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(out.contains("added right"), "{out}");
    assert_eq!(d.rules().len(), 1, "{out}");
}
