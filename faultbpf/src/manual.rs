//! `faultbpf completions SHELL` and `faultbpf manpages DIR`: the shell
//! completions and man pages, generated from the same clap definitions that
//! parse the arguments, so what a user reads and tab-completes is always
//! what this binary accepts. The packages (`cargo xtask dist`) ship the
//! output of these two commands; a user of the portable tarball runs them
//! to get the same files.

use std::{io, path::Path};

use anyhow::Context as _;
use clap::CommandFactory as _;

use crate::{cli::Cli, fault::Failure};

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "faultbpf", &mut io::stdout());
    Ok(())
}

/// Writes `faultbpf.1` and one page per visible subcommand
/// (`faultbpf-blackhole.1`, `faultbpf-scenario-run.1`, ...) into `dir`,
/// creating it, and prints each path written.
pub fn manpages(dir: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the man page directory {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write man pages into {}", dir.display()))?;
    let mut pages: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    for page in pages {
        println!("{}", page.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manpages_cover_every_visible_subcommand_and_no_hidden_one() {
        let dir = std::env::temp_dir().join(format!("faultbpf-man-{}", std::process::id()));
        assert!(
            manpages(&dir).is_ok(),
            "could not write man pages into {}",
            dir.display()
        );
        for page in [
            "faultbpf.1",
            "faultbpf-blackhole.1",
            "faultbpf-daemon.1",
            "faultbpf-scenario-run.1",
            "faultbpf-completions.1",
        ] {
            let text = std::fs::read_to_string(dir.join(page)).unwrap();
            assert!(text.starts_with(".ie"), "{page} is not roff: {text:.60}");
        }
        assert!(!dir.join("faultbpf-__reap.1").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
