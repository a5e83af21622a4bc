//! The daemon's TOML file: interfaces, defaults and named rules.
//!
//! Every mistake is reported as `FILE:LINE:COLUMN: what was expected`:
//! syntax, unknown keys and wrong types by the TOML parser's own span;
//! impossible values (pct 101, port 0) at the key that holds them.
//!
//! ```toml
//! interfaces = ["eth0"]   # default: every interface that is up, and new ones
//! lease = "5s"            # dead man's switch
//! socket_group = "faultbpf"  # members may use the daemon's socket
//! socket_mode = "0660"       # default "0600" (root only)
//! [defaults]
//! ttl = "10m"             # rules without `ttl` last this long
//! [[rule]]
//! name = "rabbit-down"
//! fault = "blackhole"
//! port = [5672]
//! ```

use std::{
    collections::{HashMap, HashSet},
    ops::Range,
    path::Path,
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use crate::{
    rules::Rule,
    span::key_span,
    spec::{Policy, RuleSpec, parse_duration},
};

/// Rules without a `ttl` last this long, unless the config says otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// How long the programs keep faulting without a heartbeat.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interfaces: Option<Vec<String>>,
    lease: Option<Spanned<String>>,
    socket_group: Option<String>,
    socket_mode: Option<Spanned<String>>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    rule: Vec<Spanned<RuleSpec>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    ttl: Option<Spanned<String>>,
}

/// A validated config.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `None`: every interface that is up, and those that appear later.
    pub interfaces: Option<Vec<String>>,
    pub lease: Duration,
    pub default_ttl: Duration,
    /// The group that owns the daemon's socket (`None`: root's).
    pub socket_group: Option<String>,
    /// The socket's permission bits (`None`: 0600).
    pub socket_mode: Option<u32>,
    /// Named rules; ids are assigned by the daemon.
    pub rules: Vec<NamedRule>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            interfaces: None,
            lease: DEFAULT_LEASE,
            default_ttl: DEFAULT_TTL,
            socket_group: None,
            socket_mode: None,
            rules: Vec::new(),
        }
    }
}

/// A config rule: its spec (to compare across reloads) and the checked
/// rule (with a placeholder id).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedRule {
    pub name: String,
    pub spec: RuleSpec,
    /// The packet rule; `None` for `http`, which is a responder.
    pub rule: Option<Rule>,
    /// One line for humans (`faultbpf check`).
    pub description: String,
}

/// A mistake in the file, with its position.
pub type ConfigError = crate::span::FileError;

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = crate::span::read(path)?;
    parse(&path.display().to_string(), &text)
}

/// Validates config `text`, naming it `file` in errors.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let at = |span: Range<usize>, message: String| crate::span::at(file, text, span, message);
    let raw: RawConfig = crate::span::parse_toml(file, text)?;

    let duration = |v: &Option<Spanned<String>>, default: Duration, what: &str| match v {
        None => Ok(default),
        Some(s) => parse_duration(s.get_ref()).map_err(|e| at(s.span(), format!("{what}: {e}"))),
    };
    let lease = duration(&raw.lease, DEFAULT_LEASE, "lease")?;
    let default_ttl = duration(&raw.defaults.ttl, DEFAULT_TTL, "defaults.ttl")?;
    let socket_mode = match &raw.socket_mode {
        None => None,
        Some(m) => Some(
            parse_socket_mode(m.get_ref())
                .map_err(|e| at(m.span(), format!("socket_mode: {e}")))?,
        ),
    };

    let mut names = HashSet::new();
    let mut owners = HashMap::new();
    let mut http_ports: HashMap<u16, String> = HashMap::new();
    let mut rules = Vec::new();
    for (i, r) in raw.rule.iter().enumerate() {
        let spec = r.get_ref();
        let name = spec.name.clone().ok_or_else(|| {
            at(
                r.span(),
                format!("rule #{}: every config rule needs a `name`", i + 1),
            )
        })?;
        if !names.insert(name.clone()) {
            return Err(at(
                r.span(),
                format!("rule `{name}`: the name is used twice"),
            ));
        }
        // The config spells `for` as `ttl`: point at, and name, what was written.
        let written = |field: &'static str| -> (&'static str, Range<usize>) {
            let names: &[&'static str] = if field == "for" {
                &["ttl", "for"]
            } else {
                &[field]
            };
            names
                .iter()
                .find_map(|k| key_span(text, r.span(), k).map(|s| (*k, s)))
                .unwrap_or((field, r.span()))
        };
        // The same validation and guard rails as the daemon's (which adds
        // its own ports), so `faultbpf check` and a reload agree with it.
        let port_key = ["port", "dport", "sport"]
            .into_iter()
            .find(|k| key_span(text, r.span(), k).is_some())
            .unwrap_or("port");
        let policy = Policy {
            default_ttl: Some(default_ttl),
            ..Policy::default()
        };
        let refused = |e: crate::spec::SpecError| {
            let (key, span) = written(if e.field == "port" { port_key } else { e.field });
            let message = e
                .message
                .replace("\"force\": true (--force)", "`force = true`");
            at(span, format!("rule `{name}`: `{key}`: {message}"))
        };
        if spec.fault == crate::http::rule::FAULT {
            let h = spec.http_rule(&policy).map_err(refused)?;
            if let Some(other) = http_ports.insert(h.options.port, name.clone()) {
                let (_, span) = written(port_key);
                return Err(at(
                    span,
                    format!(
                        "rule `{name}`: port {} is already steered by rule `{other}`",
                        h.options.port
                    ),
                ));
            }
            rules.push(NamedRule {
                name,
                spec: spec.clone(),
                rule: None,
                description: h.options.describe(),
            });
            continue;
        }
        let rule = spec.validate(0, &policy).map_err(refused)?;
        for k in rule.keys() {
            if let Some(other) = owners.insert(k, name.clone()) {
                let (_, span) = written(port_key);
                return Err(at(
                    span,
                    format!(
                        "rule `{name}`: port {} is already faulted by rule `{other}`",
                        k.port()
                    ),
                ));
            }
        }
        rules.push(NamedRule {
            name,
            spec: spec.clone(),
            description: rule.describe(),
            rule: Some(rule),
        });
    }
    Ok(Config {
        interfaces: raw.interfaces,
        lease,
        default_ttl,
        socket_group: raw.socket_group,
        socket_mode,
        rules,
    })
}

/// Parses a socket mode in octal (`0660`, `660`): permission bits only,
/// and the owner (root) keeps read and write.
pub fn parse_socket_mode(s: &str) -> Result<u32, String> {
    let m = u32::from_str_radix(s.trim(), 8)
        .map_err(|_| format!("`{s}` is not an octal mode; write it like 0660"))?;
    if m > 0o777 {
        return Err(format!(
            "`{s}` has bits beyond 0777; a socket mode is permission bits only, like 0660"
        ));
    }
    if m & 0o600 != 0o600 {
        return Err(format!(
            "`{s}` takes read/write away from root, who owns the socket; use 06x0, like 0660"
        ));
    }
    if m & 0o002 != 0 {
        return Err(format!(
            "`{s}` lets every user on the host add faults; give a group access instead              (socket_group, mode 0660)"
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
interfaces = ["veth0"]
lease = "3s"
[defaults]
ttl = "1m"

[[rule]]
name = "rabbit"
fault = "blackhole"
port = [5672]

[[rule]]
name = "pg"
fault = "reset"
dport = ["5432"]
pct = 30
ttl = "10s"
"#;

    #[test]
    fn a_valid_file_applies() {
        let c = parse("f.toml", GOOD).unwrap();
        assert_eq!(c.interfaces.as_deref(), Some(&["veth0".to_string()][..]));
        assert_eq!(c.lease, Duration::from_secs(3));
        assert_eq!(c.rules.len(), 2);
        assert_eq!(
            c.rules[0].rule.as_ref().unwrap().lasts,
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            c.rules[1].rule.as_ref().unwrap().lasts,
            Some(Duration::from_secs(10))
        );
    }

    fn err(text: &str) -> String {
        parse("f.toml", text).unwrap_err().to_string()
    }

    #[test]
    fn socket_group_and_mode_are_read_and_checked() {
        let c = parse(
            "f.toml",
            "socket_group = \"faultbpf\"\nsocket_mode = \"0660\"\n",
        )
        .unwrap();
        assert_eq!(c.socket_group.as_deref(), Some("faultbpf"));
        assert_eq!(c.socket_mode, Some(0o660));
        assert_eq!(Config::default().socket_mode, None);
        let e = err("socket_mode = \"0666\"\n");
        assert!(
            e.starts_with("f.toml:1:15:") && e.contains("every user"),
            "{e}"
        );
        for (bad, says) in [
            ("rw", "not an octal mode"),
            ("01660", "beyond 0777"),
            ("0460", "takes read/write away from root"),
            ("0606", "every user"),
        ] {
            let e = parse_socket_mode(bad).unwrap_err();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
        assert_eq!(parse_socket_mode("660"), Ok(0o660));
    }

    #[test]
    fn a_rule_may_name_a_container() {
        let c = parse(
            "f.toml",
            "[[rule]]\nname = \"x\"\nfault = \"blackhole\"\nport = [5]\ncontainer = \"api\"\nengine = \"podman\"\n",
        )
        .unwrap();
        assert_eq!(c.rules[0].spec.container.as_deref(), Some("api"));
        assert_eq!(c.rules[0].spec.engine, Some(crate::target::Engine::Podman));
        let e =
            err("[[rule]]\nname = \"x\"\nfault = \"blackhole\"\nport = [5]\ncontainer = \"a b\"\n");
        assert!(e.starts_with("f.toml:5:1:"), "{e}");
        assert!(e.contains("`a b`"), "{e}");
    }

    #[test]
    fn errors_point_at_the_line() {
        let e = err("lease = \"5s\"\nbogus = 1\n");
        assert!(e.starts_with("f.toml:2:1:"), "{e}");
        assert!(e.contains("bogus"), "{e}");

        let e = err("[[rule]]\nname = \"x\"\nfault = \"blackhole\"\nport = [5]\npct = 101\n");
        assert!(e.starts_with("f.toml:5:1:"), "{e}");
        assert!(e.contains("pct") && e.contains("101"), "{e}");

        let e = err("[[rule]]\nname = \"x\"\nfault = \"blackhole\"\nport = \"five\"\n");
        assert!(e.starts_with("f.toml:4:"), "{e}");

        let e = err("[[rule]]\nname = \"x\"\nfault = \"explode\"\nport = [5]\n");
        assert!(e.starts_with("f.toml:3:"), "{e}");
        assert!(e.contains("explode") || e.contains("variant"), "{e}");

        let e = err("lease = \"forever\"\n");
        assert!(e.starts_with("f.toml:1:9:"), "{e}");

        let e = err("[[rule]]\nfault = \"blackhole\"\nport = [5]\n");
        assert!(e.contains("needs a `name`"), "{e}");
    }

    #[test]
    fn ttl_errors_point_at_ttl() {
        let e = err("[[rule]]\nname = \"x\"\nfault = \"blackhole\"\nport = [5]\nttl = \"soon\"\n");
        assert!(e.starts_with("f.toml:5:1:"), "{e}");
        assert!(e.contains("`ttl`") && !e.contains("`for`"), "{e}");
    }

    #[test]
    fn what_the_daemon_refuses_is_refused_here() {
        let e = err("[[rule]]\nname = \"x\"\nfault = \"blackhole\"\ndport = [\"20-30\"]\n");
        assert!(e.starts_with("f.toml:4:1:") && e.contains("port 22"), "{e}");
        let forced = "[[rule]]\nname = \"x\"\nfault = \"blackhole\"\nport = [22]\nforce = true\n";
        assert!(parse("f.toml", forced).is_ok());
        let e = err(
            "[[rule]]\nname = \"a\"\nfault = \"blackhole\"\nport = [5]\n\
             [[rule]]\nname = \"b\"\nfault = \"reset\"\nport = [\"4-6\"]\n",
        );
        assert!(
            e.starts_with("f.toml:8:1:") && e.contains("rule `a`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        let e = err("lease = 5\n");
        assert!(e.starts_with("f.toml:1:9:"), "{e}");
        assert!(e.contains("string"), "{e}");
    }
}
