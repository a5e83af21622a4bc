//! What the bench writes: `report.md` (the machine and method, a summary of
//! every goal, one section per scenario with its tables), `summary.md` (the
//! summary alone, with date and machine, for the README to link), and the
//! CSV files the scenarios produce. Scenarios only build [`Section`]s; this
//! file owns the formats.

use std::{fmt::Write as _, fs, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};

use super::{Ctx, Scenario, stats::Spread, topo};
use crate::cmd::{self, command};

/// How a goal came out.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Pass,
    Fail,
    /// Not measured, with the reason shown in place of a number.
    Na(String),
    /// A reference figure, no goal attached.
    Info,
}

impl Verdict {
    fn cell(&self) -> String {
        match self {
            Verdict::Pass => "PASS".into(),
            Verdict::Fail => "FAIL".into(),
            Verdict::Na(why) => why.clone(),
            Verdict::Info => "(reference)".into(),
        }
    }

    /// Pass when `ok`, else Fail.
    pub fn check(ok: bool) -> Self {
        if ok { Verdict::Pass } else { Verdict::Fail }
    }
}

/// One line of the summary: a goal of the issue and what this run found.
#[derive(Debug, Clone)]
pub struct Goal {
    pub measure: String,
    pub goal: String,
    pub result: String,
    pub verdict: Verdict,
}

impl Goal {
    pub fn new(measure: &str, goal: &str, result: String, verdict: Verdict) -> Self {
        Self {
            measure: measure.into(),
            goal: goal.into(),
            result,
            verdict,
        }
    }

    pub fn na(measure: &str, goal: &str, why: &str) -> Self {
        Self::new(measure, goal, "-".into(), Verdict::Na(why.into()))
    }
}

/// A table, for Markdown and CSV alike.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub caption: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(caption: &str, headers: &[&str]) -> Self {
        Self {
            caption: caption.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        if !self.caption.is_empty() {
            let _ = writeln!(s, "{}\n", self.caption);
        }
        let esc = |c: &str| c.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(
            s,
            "| {} |",
            self.headers
                .iter()
                .map(|h| esc(h))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(s, "|{}", "---|".repeat(self.headers.len()));
        for row in &self.rows {
            let _ = writeln!(
                s,
                "| {} |",
                row.iter().map(|c| esc(c)).collect::<Vec<_>>().join(" | ")
            );
        }
        s
    }

    fn csv(&self) -> String {
        let quote = |c: &str| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.to_owned()
            }
        };
        let mut s = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let _ = writeln!(
                s,
                "{}",
                line.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",")
            );
        }
        s
    }
}

/// One scenario's part of the report.
#[derive(Debug, Clone, Default)]
pub struct Section {
    pub title: String,
    /// The scenario's name in the summary table.
    pub short: String,
    /// Paragraphs before the tables: what was measured and how.
    pub notes: Vec<String>,
    pub tables: Vec<Table>,
    /// CSV files written beside the report: (file name, table).
    pub csvs: Vec<(String, Table)>,
    pub goals: Vec<Goal>,
    /// Images in target/bench/ to show in the section.
    pub images: Vec<String>,
}

impl Section {
    pub fn new(title: &str) -> Self {
        Self {
            title: title.into(),
            ..Default::default()
        }
    }

    /// The section of a scenario that failed to run.
    pub fn failed(scenario: Scenario, err: &anyhow::Error) -> Self {
        let mut s = Self::new(&format!("{scenario:?} (failed)"));
        s.short = scenario.name().into();
        let text = format!("{err:#}");
        s.notes
            .push(format!("This scenario could not run:\n\n```\n{text}\n```"));
        let short: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let short = match short.char_indices().nth(300) {
            Some((i, _)) => format!("{}...", &short[..i]),
            None => short,
        };
        s.goals.push(Goal::new(
            &format!("{scenario:?}"),
            "runs",
            format!("error: {short}"),
            Verdict::Fail,
        ));
        s
    }
}

/// The machine a report comes from.
pub struct Machine {
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory: String,
    pub virt: String,
    pub revision: String,
    pub binary: String,
    /// /proc/loadavg when the run started: how busy the machine was.
    pub load_at_start: String,
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

impl Machine {
    pub fn probe(ctx: &Ctx) -> Self {
        let out = |c: &mut std::process::Command| {
            topo::output_within(c, None, Duration::from_secs(10))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "unknown".into())
        };
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or("unknown".into(), |m| m.trim().to_owned());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or("unknown".into(), |kb| {
                format!("{:.1} GiB", kb as f64 / 1048576.0)
            });
        let root = cmd::workspace_root();
        let rev = out(command("git")
            .arg("-C")
            .arg(root)
            .args(["rev-parse", "--short", "HEAD"]));
        let dirty = out(command("git")
            .arg("-C")
            .arg(root)
            .args(["status", "--porcelain"]));
        Self {
            date: out(command("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            kernel: format!(
                "{} ({})",
                out(command("uname").arg("-r")),
                out(command("uname").arg("-v"))
            ),
            cpu,
            cpus: ctx.cpus,
            memory,
            virt: out(&mut command("systemd-detect-virt")),
            revision: if dirty.is_empty() || dirty == "unknown" {
                rev
            } else {
                format!("{rev} + uncommitted changes")
            },
            load_at_start: loadavg(),
            binary: format!(
                "{} (copied from {} at the start)",
                ctx.bin.display(),
                ctx.built.display()
            ),
        }
    }

    fn one_line(&self) -> String {
        format!(
            "{}, {} CPUs ({}), {}, kernel {}",
            self.virt_label(),
            self.cpus,
            self.cpu,
            self.memory,
            self.kernel
        )
    }

    fn virt_label(&self) -> String {
        match self.virt.as_str() {
            "none" => "bare metal".into(),
            "unknown" | "" => "machine".into(),
            v => format!("virtualized ({v}, per systemd-detect-virt)"),
        }
    }
}

fn summary_table(sections: &[Section]) -> Table {
    let mut t = Table::new("", &["Scenario", "Measure", "Goal", "Result", "Verdict"]);
    for s in sections {
        for g in &s.goals {
            t.row(vec![
                s.short.clone(),
                g.measure.clone(),
                g.goal.clone(),
                g.result.clone(),
                g.verdict.cell(),
            ]);
        }
    }
    t
}

/// Writes report.md, summary.md and the CSVs; returns the paths written.
pub fn write(
    ctx: &Ctx,
    machine: &Machine,
    sections: &[Section],
    took: Duration,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mode = if ctx.plan.quick {
        "`cargo xtask bench --quick`"
    } else {
        "`cargo xtask bench`"
    };
    let summary = summary_table(sections);
    // The http scenario counts its own (cheaper, more numerous) rounds.
    let mut rounds = format!("{} rounds", ctx.plan.rounds);
    if sections.iter().any(|s| s.short == Scenario::Http.name()) {
        rounds += &format!(" (http: {})", ctx.plan.http_rounds);
    }

    let mut md = String::new();
    let _ = writeln!(md, "# faultbpf benchmark report\n");
    let _ = writeln!(
        md,
        "Generated {} by {mode}: {rounds}, {:.1} min. Machine: {}.\n",
        machine.date,
        took.as_secs_f64() / 60.0,
        machine.one_line()
    );
    let _ = writeln!(md, "## Machine and method\n");
    let _ = writeln!(md, "- Kernel: {}", machine.kernel);
    let _ = writeln!(
        md,
        "- Load average (1/5/15 min) at the start: {}, at the end: {} ({} CPUs; other jobs \
         running on the machine show here and widen every [min, max])",
        machine.load_at_start,
        loadavg(),
        machine.cpus
    );
    let _ = writeln!(
        md,
        "- CPU: {} x {} ({}), memory {}",
        machine.cpus,
        machine.cpu,
        machine.virt_label(),
        machine.memory
    );
    let _ = writeln!(
        md,
        "- faultbpf: revision {}, binary {}",
        machine.revision, machine.binary
    );
    let _ = writeln!(
        md,
        "- Topology: two network namespaces joined by a veth pair (10.200.0.1 client, \
         10.200.0.2 server); every injector sits on the server's veth end."
    );
    let _ = writeln!(
        md,
        "- CPU pinning: client-side load (iperf3 client, the bench's own clients, trafgen) on \
         CPU {}, server side (iperf3 server, sinks, echo servers) on CPU {}; nothing is \
         isolated, other processes of the machine share both CPUs. On a veth pair the \
         receive path runs on the sender's CPU.",
        ctx.client_cpu(),
        ctx.server_cpu()
    );
    let _ = writeln!(
        md,
        "- Method: conditions are interleaved round by round (the order rotates each round); \
         each is reported as the median of its per-round ratio to the reference of the same \
         round, with [min, max] over rounds. Absolute numbers are medians over rounds and are \
         only comparable within this run.\n"
    );
    let _ = writeln!(md, "## Summary\n");
    md.push_str(&summary.markdown());
    md.push('\n');
    for (i, s) in sections.iter().enumerate() {
        let _ = writeln!(md, "## {}. {}\n", i + 1, s.title);
        for n in &s.notes {
            let _ = writeln!(md, "{n}\n");
        }
        for t in &s.tables {
            md.push_str(&t.markdown());
            md.push('\n');
        }
        for img in &s.images {
            let _ = writeln!(md, "![{img}]({img})\n");
        }
        if !s.csvs.is_empty() {
            let files: Vec<String> = s.csvs.iter().map(|(f, _)| format!("[{f}]({f})")).collect();
            let _ = writeln!(md, "Raw data: {}\n", files.join(", "));
        }
        for (file, table) in &s.csvs {
            let path = ctx.out.join(file);
            fs::write(&path, table.csv()).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
    }
    let path = ctx.out.join("report.md");
    fs::write(&path, md).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);

    let mut short = String::new();
    let _ = writeln!(short, "# faultbpf benchmark: latest summary\n");
    let _ = writeln!(
        short,
        "From {} by {mode} ({rounds}) on {}, load average {} at the start; faultbpf {}. \
         Full report: [report.md](report.md).\n",
        machine.date,
        machine.one_line(),
        machine.load_at_start,
        machine.revision
    );
    short.push_str(&summary.markdown());
    let path = ctx.out.join("summary.md");
    fs::write(&path, short).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(written)
}

/// `0.98 [0.95, 1.01]`, or `-` when there is no value.
pub fn ratio_cell(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:.3} [{:.3}, {:.3}]", s.median, s.min, s.max)
    })
}

/// `+0.4 [-0.2, +1.1]` (a difference, e.g. in µs).
pub fn delta_cell(s: Option<Spread>) -> String {
    s.map_or("-".into(), |s| {
        format!("{:+.1} [{:+.1}, {:+.1}]", s.median, s.min, s.max)
    })
}

/// `12.3 [11.0, 13.1]` with `digits` decimals, or `-`.
pub fn value_cell(s: Option<Spread>, digits: usize) -> String {
    s.map_or("-".into(), |s| {
        format!(
            "{:.digits$} [{:.digits$}, {:.digits$}]",
            s.median, s.min, s.max
        )
    })
}

/// A median with its unit, scaled for reading: `12.3 Gbit/s`, `1.25 Mpps`.
pub fn si(value: f64, unit: &str) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    let (v, p) = if value >= 1e9 {
        (value / 1e9, "G")
    } else if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    format!("{v:.3} {p}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_as_markdown_and_csv() {
        let mut t = Table::new("cap", &["a", "b"]);
        t.row(vec!["1".into(), "x|y, \"z\"".into()]);
        assert_eq!(
            t.markdown(),
            "cap\n\n| a | b |\n|---|---|\n| 1 | x\\|y, \"z\" |\n"
        );
        assert_eq!(t.csv(), "a,b\n1,\"x|y, \"\"z\"\"\"\n");
    }

    #[test]
    fn cells() {
        let s = Spread {
            median: 0.98,
            min: 0.95,
            max: 1.01,
            n: 3,
        };
        assert_eq!(ratio_cell(Some(s)), "0.980 [0.950, 1.010]");
        assert_eq!(delta_cell(Some(s)), "+1.0 [+0.9, +1.0]");
        assert_eq!(ratio_cell(None), "-");
        assert_eq!(value_cell(Some(s), 1), "1.0 [0.9, 1.0]");
        assert_eq!(si(12.3e9, "bit/s"), "12.300 Gbit/s");
        assert_eq!(si(1_250_000.0, "pps"), "1.250 Mpps");
        assert_eq!(si(f64::NAN, "pps"), "-");
    }
}
