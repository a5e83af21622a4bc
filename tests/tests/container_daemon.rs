//! Issues 13 and 14: faultbpf's own image, run in a real container engine
//! the way the README says (`--privileged --network host --pid host`, the
//! socket directory and the engine's socket mounted in). The engine is
//! Debian's dockerd in a namespace of the test's own (tests/src/engine.rs),
//! so "host network" is that namespace, never the machine's.
//! - The daemon in the container attaches to the engine's bridge ports; a
//!   rule added over its mounted socket cuts traffic between two other
//!   containers, and removing it heals.
//! - The faultbpf in that container faults another container by name:
//!   the image has no docker CLI, so the container is found through the
//!   engine's API on the mounted socket (target.rs), and entered through
//!   the host's /proc.

use std::{
    fs,
    io::{BufRead, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use faultbpf::{api::Client, spec::RuleSpec};
use faultbpf_tests::{
    engine::{self, Docker, HI_SERVER, wait_srv_answers},
    temp::TempDir,
    wait_within,
};

fn wait_answering(docker: &Docker) -> Duration {
    wait_srv_answers(|a| docker.run(a))
}

/// [`engine::assert_cut`] through `docker`.
fn assert_cut(docker: &Docker, control: Duration, what: &str) {
    engine::assert_cut(|a| docker.run(a), control, what);
}

/// Linux capability names by number, as docker's `--cap-drop` takes them.
const CAPS: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `--privileged`, as the README says, where this host can grant it. A
/// host that is itself a container may lack capabilities in its bounding
/// set (this CI sandbox lacks SYS_RESOURCE), and then runc refuses
/// `--privileged` ("unable to apply caps: operation not permitted"): the
/// closest equivalent is every capability the host has, and no seccomp
/// filter (which would refuse bpf(2)).
fn privileged() -> Vec<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let missing: Vec<&str> = CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding >> bit & 1 == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        return vec!["--privileged".into()];
    }
    eprintln!(
        "this host's bounding set lacks {missing:?}: --cap-add ALL without them instead of --privileged"
    );
    let mut flags = vec!["--cap-add".to_string(), "ALL".into()];
    for cap in missing {
        flags.extend(["--cap-drop".into(), cap.to_string()]);
    }
    flags.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
    flags
}

#[test]
fn the_image_runs_the_daemon_in_docker_and_faults_other_containers_by_name() {
    let (tar, version) = faultbpf_tests::dist::oci_image();
    let docker = Docker::start("ctr-img");
    let loaded = docker.ok(&["load", "-i", tar.to_str().unwrap()]);
    let reference = format!("faultbpf:{version}");
    assert!(loaded.contains(&reference), "docker load: {loaded}");

    docker.container("srv", HI_SERVER);
    docker.container("cli", "sleep 600");
    let control = wait_answering(&docker);

    let sockets = TempDir::new("ctr-img");
    let engine_socket = docker.host().trim_start_matches("unix://").to_string();
    let mut run: Vec<String> = ["run", "-d", "--name", "faultbpf"]
        .map(String::from)
        .to_vec();
    run.extend(privileged());
    run.extend([
        "--network".into(),
        "host".into(),
        "--pid".into(),
        "host".into(),
        "-v".into(),
        format!("{}:/run/faultbpf", sockets.path().display()),
        "-v".into(),
        format!("{engine_socket}:/var/run/docker.sock"),
        reference.clone(),
    ]);
    docker.ok(&run.iter().map(String::as_str).collect::<Vec<_>>());
    let client = Client::new(sockets.path().join("faultbpf.sock"));
    let start = Instant::now();
    while !client.is_up() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the daemon in the container never answered on its socket: {}",
            docker.run(&["logs", "faultbpf"]).stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A rule over the socket: the daemon sits on the bridge's ports in the
    // engine's namespace, between the two containers.
    let spec: RuleSpec = serde_json::from_value(serde_json::json!({
        "fault": "blackhole", "port": [5672], "for": "60s"
    }))
    .unwrap();
    let rule = client
        .add(&spec)
        .expect("add a rule over the mounted socket");
    assert_cut(&docker, control, "daemon rule");
    let stats = client
        .stats_of(rule.id)
        .unwrap()
        .expect("the rule's counters");
    assert!(
        stats.acted_packets > 0,
        "the daemon counted the dropped packets: {stats:?}"
    );
    client.remove(rule.id).unwrap();
    wait_answering(&docker);

    // The faultbpf in that container, by container name, through the
    // engine's socket (no docker CLI in the image).
    let which = docker.run(&["exec", "faultbpf", "/usr/bin/faultbpf", "--version"]);
    assert!(which.status.success(), "{which:#?}");
    let mut fault = docker
        .cli()
        .args([
            "exec",
            "faultbpf",
            "/usr/bin/faultbpf",
            "blackhole",
            "--standalone",
            "--container",
            "srv",
            "--port",
            "5672",
            "--for",
            "8s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = fault.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => {
                let active = line.starts_with(faultbpf_tests::ACTIVE_PREFIX);
                said.push(line);
                if active {
                    break;
                }
            }
            Err(_) => {
                panic!("faultbpf --container srv in the image never became active: {said:#?}")
            }
        }
    }
    assert!(
        said.iter().any(|l| l.contains("eth0")),
        "it should sit on srv's eth0: {said:#?}"
    );
    assert_cut(&docker, control, "--container srv from the image");
    let status =
        wait_within(&mut fault, Duration::from_secs(60)).expect("the 8 s fault ends on its own");
    assert!(status.success(), "{status} {said:#?}");
    wait_answering(&docker);
}
