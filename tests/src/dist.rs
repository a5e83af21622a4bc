//! The artifacts `cargo xtask dist` writes into `target/dist/`, which the
//! dist_* and container tests install and run (`cargo xtask test` builds
//! them before the e2e step).

use std::{fs, path::PathBuf};

/// `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// The file in `target/dist/` named `PREFIX*SUFFIX`; panics, saying how to
/// make it, if there is none.
pub fn artifact(prefix: &str, suffix: &str) -> PathBuf {
    let dist = target_dir().join("dist");
    fs::read_dir(&dist)
        .ok()
        .and_then(|entries| {
            entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with(prefix) && name.ends_with(suffix)
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "no {prefix}*{suffix} in {}: run `cargo xtask dist` (`cargo xtask test` does)",
                dist.display()
            )
        })
}

/// The daemon's OCI image, `faultbpf-oci-VERSION.tar`, and its VERSION
/// (the image's tag).
pub fn oci_image() -> (PathBuf, String) {
    let (prefix, suffix) = ("faultbpf-oci-", ".tar");
    let image = artifact(prefix, suffix);
    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    let version = name[prefix.len()..name.len() - suffix.len()].to_string();
    (image, version)
}
