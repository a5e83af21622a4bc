//! A system user for the tests that check what an unprivileged process may
//! do with the daemon's socket.

use std::process::Command;

use crate::{Netns, root_is_read_only};

/// A system user made for one test (`useradd --system --no-create-home`),
/// deleted on drop. Where /etc cannot be written (the VM lane mounts the
/// host's root read-only) it is only a uid and gid that no account uses,
/// which is all `setpriv` needs.
pub struct TestUser {
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    pub fn create() -> Self {
        if root_is_read_only() {
            // An id no account in /etc/passwd has.
            let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            let used: Vec<u32> = passwd
                .lines()
                .filter_map(|l| l.split(':').nth(2)?.parse().ok())
                .collect();
            let uid = (61_000..62_000)
                .find(|u| !used.contains(u))
                .expect("a free uid");
            return TestUser {
                name: None,
                uid,
                gid: uid,
            };
        }
        let name = format!("fbtest-{}", std::process::id());
        crate::run_checked(
            Command::new("useradd")
                .args([
                    "--system",
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                ])
                .arg(&name),
        );
        // The guard first, so a failure below still deletes the user.
        let mut user = TestUser {
            name: Some(name.clone()),
            uid: 0,
            gid: 0,
        };
        let id = |flag: &str| -> u32 {
            crate::run_checked(Command::new("id").args([flag, &name]))
                .trim()
                .parse()
                .unwrap()
        };
        user.uid = id("-u");
        user.gid = id("-g");
        assert_ne!(user.uid, 0, "useradd made a root user");
        user
    }

    /// A command that runs `program` as this user, with no supplementary
    /// groups, inside `ns`.
    pub fn command(&self, ns: &Netns, program: &str) -> Command {
        let mut cmd = ns.command("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--"])
            .arg(program);
        cmd
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Some(name) = &self.name {
            match Command::new("userdel").arg(name).output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "warning: userdel {name}: {}",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("warning: userdel {name}: {e}"),
            }
        }
    }
}
