//! Issue 14, "Kubernetes, as far as this machine allows": no API server
//! runs here, so the manifests in `deploy/kubernetes/` and the Helm chart
//! are checked against the Kubernetes schemas by `kubernetes-validate`
//! (PyPI, strict: unknown fields fail), and the daemon TOML they carry by
//! `faultbpf check`. Helm itself is not packaged in Debian 12, so the
//! chart is rendered by a stand-in that knows exactly the template
//! expressions the chart uses and fails on any other; `helm template` and
//! `helm lint` are not run (the README says so).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use faultbpf_tests::{Launch, prometheus::SYSTEM_PYTHON, run_bounded, temp::TempDir};

fn deploy() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// `kubernetes-validate`, from `cargo xtask test` (its virtualenv under
/// target/tools); missing is a failure, not a skip.
fn validator() -> PathBuf {
    let path = std::env::var_os("FAULTBPF_KUBERNETES_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/tools/kubernetes-validate/bin/kubernetes-validate")
        });
    assert!(
        path.is_file(),
        "kubernetes-validate is not installed at {} (cargo xtask test installs it)",
        path.display()
    );
    path
}

fn validate(files: &[PathBuf]) -> faultbpf_tests::Exit {
    run_bounded(
        Command::new(validator()).arg("--strict").args(files),
        Duration::from_secs(120),
    )
}

fn manifests() -> Vec<PathBuf> {
    ["namespace.yaml", "configmap.yaml", "daemonset.yaml"]
        .iter()
        .map(|f| deploy().join(f))
        .collect()
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let exit = validate(&manifests());
    assert!(exit.status.success(), "{exit:#?}");
    for kind in [
        "namespace/faultbpf",
        "configmap/faultbpf-config",
        "daemonset/faultbpf",
    ] {
        assert!(
            exit.stdout.contains(kind) || exit.stderr.contains(kind),
            "{kind}: {exit:#?}"
        );
    }
}

#[test]
fn a_manifest_with_an_unknown_field_is_rejected() {
    // The control: the validator does fail, on the same file with one
    // misspelt field.
    let dir = TempDir::new("k8s-typo");
    let text = std::fs::read_to_string(deploy().join("daemonset.yaml")).unwrap();
    assert!(text.contains("hostNetwork: true"));
    let bad = dir.write(
        "daemonset.yaml",
        &text.replace("hostNetwork:", "hostNetwrk:"),
    );
    let exit = validate(&[PathBuf::from(bad)]);
    assert!(!exit.status.success(), "{exit:#?}");
    let all = format!("{}{}", exit.stdout, exit.stderr);
    assert!(all.contains("hostNetwrk"), "{all}");
}

/// A YAML value at `path` (a Python subscript chain) of `file`, via
/// Debian's python3-yaml.
fn yaml_value(file: &Path, path: &str) -> String {
    let script =
        format!("import sys, yaml\nprint(yaml.safe_load(open(sys.argv[1])){path}, end='')\n");
    let exit = run_bounded(
        Command::new(SYSTEM_PYTHON).args(["-c", &script]).arg(file),
        Duration::from_secs(30),
    );
    exit.assert_success();
    exit.stdout
}

/// The DaemonSet's container arguments in `file` are ones this faultbpf
/// takes: clap parses each of them (an unknown flag or a bad value fails)
/// before `--help`, appended, stops it; nothing runs.
fn assert_daemonset_args_parse(file: &Path) {
    let script = "import json, sys, yaml\n\
                  d = yaml.safe_load(open(sys.argv[1]))\n\
                  print(json.dumps(d['spec']['template']['spec']['containers'][0]['args']))\n";
    let exit = run_bounded(
        Command::new(SYSTEM_PYTHON).args(["-c", script]).arg(file),
        Duration::from_secs(30),
    );
    exit.assert_success();
    let args: Vec<String> = serde_json::from_str(&exit.stdout)
        .unwrap_or_else(|e| panic!("{}: args {}: {e}", file.display(), exit.stdout));
    assert!(args.iter().any(|a| a == "daemon"), "{args:?}");
    let exit = run_bounded(
        Command::new(faultbpf_tests::faultbpf_bin())
            .args(&args)
            .arg("--help"),
        Duration::from_secs(30),
    );
    assert_eq!(
        exit.status.code(),
        Some(0),
        "{}: faultbpf does not take {args:?}: {exit:#?}",
        file.display()
    );
}

#[test]
fn the_daemonsets_arguments_are_ones_faultbpf_takes() {
    assert_daemonset_args_parse(&deploy().join("daemonset.yaml"));
    // The control: a flag faultbpf does not have fails the same check.
    let dir = TempDir::new("k8s-args");
    let bad = dir.write(
        "daemonset.yaml",
        &std::fs::read_to_string(deploy().join("daemonset.yaml"))
            .unwrap()
            .replace("--watch-config", "--watch-konfig"),
    );
    let caught = std::panic::catch_unwind(|| assert_daemonset_args_parse(Path::new(&bad)));
    assert!(caught.is_err(), "a misspelt flag must fail the check");
}

#[test]
fn the_daemon_config_in_the_configmap_and_the_chart_passes_check() {
    let dir = TempDir::new("k8s-toml");
    for (file, path) in [
        (deploy().join("configmap.yaml"), "['data']['faultbpf.toml']"),
        (deploy().join("chart/faultbpf/values.yaml"), "['config']"),
    ] {
        let toml = dir.write("faultbpf.toml", &yaml_value(&file, path));
        let exit = Launch::offline(["check", &toml]).run();
        assert_eq!(exit.status.code(), Some(0), "{}: {exit:#?}", file.display());
    }
}

/// Renders the chart's templates with values.yaml, release `faultbpf` in
/// namespace `faultbpf`, knowing only the expressions the chart uses.
const RENDER: &str = r#"
import hashlib, os, re, sys, yaml
chart, out = sys.argv[1], sys.argv[2]
values = yaml.safe_load(open(os.path.join(chart, "values.yaml")))
meta = yaml.safe_load(open(os.path.join(chart, "Chart.yaml")))
assert meta["apiVersion"] == "v2" and meta["name"] and meta["version"], meta
def lookup(path):
    v = {"Values": values, "Release": {"Name": "faultbpf", "Namespace": "faultbpf"}}
    for part in path.lstrip(".").split("."):
        v = v[part]
    return v
def indent(n, s):
    return "\n".join(" " * n + line if line else line for line in s.rstrip("\n").split("\n"))
def expr(m):
    e = m.group(1).strip()
    if re.fullmatch(r"\.[A-Za-z.]+", e):
        return str(lookup(e))
    m2 = re.fullmatch(r"(\.[A-Za-z.]+) \| indent (\d+)", e)
    if m2:
        return indent(int(m2.group(2)), str(lookup(m2.group(1))))
    m2 = re.fullmatch(r"(\.[A-Za-z.]+) \| sha256sum", e)
    if m2:
        return hashlib.sha256(str(lookup(m2.group(1))).encode()).hexdigest()
    m2 = re.fullmatch(r"toYaml (\.[A-Za-z.]+) \| indent (\d+)", e)
    if m2:
        return indent(int(m2.group(2)), yaml.safe_dump(lookup(m2.group(1)), default_flow_style=False))
    sys.exit("unknown template expression {{ %s }}: teach this stand-in or use helm" % e)
tdir = os.path.join(chart, "templates")
for name in sorted(os.listdir(tdir)):
    text = open(os.path.join(tdir, name)).read()
    open(os.path.join(out, name), "w").write(re.sub(r"\{\{(.*?)\}\}", expr, text))
    print(name)
"#;

#[test]
fn the_helm_chart_renders_to_manifests_that_validate() {
    let dir = TempDir::new("k8s-chart");
    let exit = run_bounded(
        Command::new(SYSTEM_PYTHON)
            .args(["-c", RENDER])
            .arg(deploy().join("chart/faultbpf"))
            .arg(dir.path()),
        Duration::from_secs(30),
    );
    exit.assert_success();
    let files: Vec<PathBuf> = exit.stdout.lines().map(|n| dir.path().join(n)).collect();
    assert_eq!(files.len(), 2, "{exit:#?}");
    let exit = validate(&files);
    assert!(exit.status.success(), "{exit:#?}");
    assert_daemonset_args_parse(&dir.path().join("daemonset.yaml"));
    // The rendered config is the one values.yaml carries, and it checks.
    let toml = dir.write(
        "faultbpf.toml",
        &yaml_value(
            &dir.path().join("configmap.yaml"),
            "['data']['faultbpf.toml']",
        ),
    );
    let exit = Launch::offline(["check", &toml]).run();
    assert_eq!(exit.status.code(), Some(0), "{exit:#?}");
}
