//! Finds the guest kernel: Debian's 6.1 LTS cloud kernel that `cargo xtask
//! setup` installs on the host (package linux-image-cloud-amd64), i.e.
//! `/boot/vmlinuz-6.1.*` with its modules under `/lib/modules/<version>`.
//! The guest's root is the host's, so those same module files are what the
//! guest's `modprobe` loads once booted; only the few needed to mount that
//! root go into the initramfs.

use std::{
    cmp::Ordering,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

use crate::cmd::{self, command};

/// The kernel series the VM lane tests on.
pub const SERIES: &str = "6.1";

/// What the initramfs must load, in `modprobe` names, to mount the host's
/// root: PCI virtio transport, then virtiofs (which pulls in fuse).
const ROOT_MODULES: &[&str] = &["virtio_pci", "virtiofs"];

/// A bootable kernel and where its modules are.
#[derive(Debug)]
pub struct Kernel {
    /// `6.1.0-56-cloud-amd64`, as `uname -r` prints it in the guest.
    pub version: String,
    pub image: PathBuf,
}

impl Kernel {
    /// The newest `/boot/vmlinuz-6.1.*` that has its modules installed.
    pub fn find() -> Result<Self> {
        let boot = Path::new("/boot");
        let prefix = format!("vmlinuz-{SERIES}.");
        let mut versions: Vec<String> = fs::read_dir(boot)
            .with_context(|| format!("listing {}", boot.display()))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                name.starts_with(&prefix)
                    .then(|| name["vmlinuz-".len()..].to_owned())
            })
            .filter(|version| Path::new("/lib/modules").join(version).is_dir())
            .collect();
        versions.sort_by(|a, b| compare_versions(a, b));
        let Some(version) = versions.pop() else {
            bail!(
                "no /boot/vmlinuz-{SERIES}.* with modules in /lib/modules: the VM lane boots \
                 Debian's {SERIES} kernel; `cargo xtask setup` installs it \
                 (linux-image-cloud-amd64)"
            );
        };
        Ok(Self {
            image: boot.join(format!("vmlinuz-{version}")),
            version,
        })
    }

    /// The module files (with their parameters, usually none) that mount the
    /// root, in load order, from `modprobe -S <version> --show-depends`.
    pub fn root_modules(&self) -> Result<Vec<ModuleLoad>> {
        let mut loads: Vec<ModuleLoad> = Vec::new();
        for module in ROOT_MODULES {
            let out = cmd::stdout_of(command("modprobe").args([
                "-S",
                &self.version,
                "--show-depends",
                module,
            ]))
            .with_context(|| format!("resolving module {module} of kernel {}", self.version))?;
            for load in parse_show_depends(&out) {
                if !loads.iter().any(|known| known.path == load.path) {
                    loads.push(load);
                }
            }
        }
        if loads.is_empty() {
            bail!(
                "`modprobe --show-depends` lists no module file for {ROOT_MODULES:?}; \
                 kernel {} cannot mount its root over virtiofs",
                self.version
            );
        }
        Ok(loads)
    }
}

/// One `insmod` of `modprobe --show-depends`.
#[derive(Debug, PartialEq, Eq)]
pub struct ModuleLoad {
    pub path: PathBuf,
    /// Module parameters, as modprobe would pass them (usually empty).
    pub params: String,
}

/// The `insmod PATH [PARAMS]` lines of `modprobe --show-depends`; `builtin
/// NAME` lines need nothing loaded.
fn parse_show_depends(out: &str) -> Vec<ModuleLoad> {
    out.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("insmod ")?;
            let (path, params) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(ModuleLoad {
                path: PathBuf::from(path),
                params: params.trim().to_owned(),
            })
        })
        .collect()
}

/// Orders kernel versions by their numeric parts (`6.1.0-56` > `6.1.0-9`).
fn compare_versions(a: &str, b: &str) -> Ordering {
    let numbers = |v: &str| -> Vec<u64> {
        v.split(|c: char| !c.is_ascii_digit())
            .filter(|part| !part.is_empty())
            .filter_map(|part| part.parse().ok())
            .collect()
    };
    numbers(a).cmp(&numbers(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_depends_keeps_insmods_in_order() {
        let out = "builtin crc32c\ninsmod /lib/modules/k/kernel/fs/fuse/fuse.ko \n\
                   insmod /lib/modules/k/virtio.ko opt=1 b=2\n";
        assert_eq!(
            parse_show_depends(out),
            [
                ModuleLoad {
                    path: "/lib/modules/k/kernel/fs/fuse/fuse.ko".into(),
                    params: String::new()
                },
                ModuleLoad {
                    path: "/lib/modules/k/virtio.ko".into(),
                    params: "opt=1 b=2".into()
                },
            ]
        );
    }

    #[test]
    fn newest_version_sorts_last() {
        let mut v = [
            "6.1.0-9-cloud-amd64",
            "6.1.0-56-cloud-amd64",
            "6.1.0-13-cloud-amd64",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(v.last(), Some(&"6.1.0-56-cloud-amd64"));
    }
}
