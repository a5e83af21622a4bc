//! An unprivileged identity for the tests that check what a process that is
//! not root may do with the daemon's socket.
//!
//! It is only a uid and gid that no account in /etc/passwd or /etc/group
//! has, taken on by the child itself (`setpriv --reuid --regid
//! --clear-groups`): nothing is added to the host's account files, so a test
//! killed at any moment leaves nothing behind.

use std::process::Command;

use crate::Netns;

/// The range the ids are taken from: above Debian's dynamic system and
/// user ranges, below `nobody` (65534).
const IDS: std::ops::Range<u32> = 61_000..62_000;

/// A uid and gid that no account or group uses.
#[derive(Debug, Clone, Copy)]
pub struct TestUser {
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// Picks an id that neither /etc/passwd nor /etc/group names; writes
    /// nothing.
    pub fn create() -> Self {
        let used = |file: &str| -> Vec<u32> {
            std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("read {file}: {e}"))
                .lines()
                .filter_map(|l| l.split(':').nth(2)?.parse().ok())
                .collect()
        };
        let (users, groups) = (used("/etc/passwd"), used("/etc/group"));
        let id = IDS
            .clone()
            .find(|id| !users.contains(id) && !groups.contains(id))
            .unwrap_or_else(|| panic!("no free id in {IDS:?} in /etc/passwd and /etc/group"));
        TestUser { uid: id, gid: id }
    }

    /// A command that runs `program` as this uid and gid, with no
    /// supplementary groups, inside `ns`.
    pub fn command(&self, ns: &Netns, program: &str) -> Command {
        let mut cmd = ns.command("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--"])
            .arg(program);
        cmd
    }
}
