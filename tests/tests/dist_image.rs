//! Issue 13: the daemon's OCI image `cargo xtask dist` wrote by hand
//! (no engine, nothing pulled) is a valid image under both names engines
//! load it by: skopeo reads it as an OCI archive (tag = the version) and as
//! a docker archive (`faultbpf:VERSION`), copies it (which checks every
//! blob's digest), and the binary in its one layer runs, as do the `ip`
//! and `tc` it carries (chrooted into the layer: nothing from the host).

use std::{fs, process::Command};

fn sh(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn oci_image_loads_under_its_version_tag_and_its_binary_runs() {
    let (image, version) = faultbpf_tests::dist::oci_image();
    let version = version.as_str();

    let oci = format!("oci-archive:{}:{version}", image.display());
    let inspect: serde_json::Value = serde_json::from_str(&sh(
        Command::new("skopeo").args(["inspect", "--config", &oci])
    ))
    .unwrap();
    assert_eq!(
        inspect["config"]["Entrypoint"],
        serde_json::json!(["/usr/bin/faultbpf"]),
        "{inspect}"
    );
    assert_eq!(inspect["config"]["Cmd"][0], "daemon", "{inspect}");
    assert_eq!(
        inspect["config"]["Labels"]["org.opencontainers.image.version"],
        version
    );

    let docker = format!("docker-archive:{}:faultbpf:{version}", image.display());
    let inspect: serde_json::Value =
        serde_json::from_str(&sh(Command::new("skopeo").args(["inspect", &docker]))).unwrap();
    assert_eq!(inspect["Os"], "linux");
    assert_eq!(inspect["Architecture"], "amd64");

    // The control: skopeo picks the image by its tag, so another tag fails.
    let wrong = format!("docker-archive:{}:faultbpf:no-such-tag", image.display());
    let out = Command::new("skopeo")
        .args(["inspect", &wrong])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "skopeo found a tag the image does not have"
    );

    let dir = std::env::temp_dir().join(format!("faultbpf-image-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("copy");
    sh(Command::new("skopeo")
        .args(["copy", "--quiet", &oci])
        .arg(format!("dir:{}", copy.display())));
    let manifest: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(copy.join("manifest.json")).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let digest = layers[0]["digest"].as_str().unwrap();
    let blob = copy.join(digest.trim_start_matches("sha256:"));
    let rootfs = dir.join("rootfs");
    fs::create_dir_all(&rootfs).unwrap();
    sh(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-xf")
        .arg(&blob));
    let said = sh(Command::new(rootfs.join("usr/bin/faultbpf")).arg("--version"));
    assert_eq!(said.trim(), format!("faultbpf {version}"));
    let check = sh(Command::new(rootfs.join("usr/bin/faultbpf"))
        .args(["check"])
        .arg(rootfs.join("etc/faultbpf/faultbpf.toml")));
    assert!(check.contains("OK"), "{check}");
    // ip and tc run from the image alone (their libraries and loader are
    // in it), as the delay device and the reaper run them.
    for (tool, says) in [
        ("/usr/sbin/ip", "ip utility"),
        ("/usr/sbin/tc", "tc utility"),
    ] {
        let out = sh(Command::new("chroot").arg(&rootfs).args([tool, "-V"]));
        assert!(out.contains(says), "{tool} -V in the image: {out}");
    }
    fs::remove_dir_all(&dir).unwrap();
}
