//! Game-day scenario files: a timeline of faults and an optional random
//! pool, run against the daemon (or in-process), ending with a report.

use std::path::Path;

use crate::client::Client;

/// `faultbpf scenario run FILE`.
pub fn run(_file: &Path, _json: bool, _client: &Client) -> anyhow::Result<()> {
    anyhow::bail!("scenario files are not implemented yet")
}

/// `faultbpf scenario check FILE`.
pub fn check(_file: &Path) -> anyhow::Result<()> {
    anyhow::bail!("scenario files are not implemented yet")
}
