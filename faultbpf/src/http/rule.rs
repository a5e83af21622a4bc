//! `http` as a rule of the daemon's API and TOML config: the `RuleSpec`
//! fields it takes, checked into [`Options`] before anything starts.
//!
//! Not a registry fault: it acts on sockets through a responder, not on
//! the tc programs' rule maps, so it has its own fields and its own check,
//! and a kernel fault refuses them (`spec.rs`).

use std::time::Duration;

use super::{DEFAULT_CGROUP, MAX_DELAY, Options, Per, Side, Status, When};
use crate::{
    rules::{self, PortRange},
    spec::{Policy, PortSpec, RuleSpec, SpecError, parse_bounded, parse_duration},
};

/// The fault's wire name.
pub const FAULT: &str = "http";

/// The spec fields only `http` takes.
pub const FIELDS: &[&str] = &[
    "status",
    "retry_after",
    "method",
    "path",
    "when",
    "delay_first_byte",
    "side",
    "cgroup",
];

/// The common spec fields `http` takes too; every other one is refused.
const COMMON: &[&str] = &[
    "name",
    "fault",
    "port",
    "pct",
    "per",
    "for",
    "force",
    "owner_pid",
];

/// A checked `http` rule.
#[derive(Clone, Debug)]
pub struct HttpRule {
    pub options: Options,
    /// `for`, or the policy's default.
    pub lasts: Option<Duration>,
}

impl HttpRule {
    /// The packet rule an http rule stands in for where a timeline needs
    /// one (scenario steps, session handles): its port's TCP keys, for the
    /// overlap checks, its length and its slot `id`. Never inserted: the
    /// fault is the responder.
    pub fn stand_in(&self, id: u32) -> rules::Rule {
        rules::Rule {
            proto: rules::Proto::Tcp,
            lasts: self.lasts,
            ..rules::Rule::new(
                id,
                crate::faults::Fault::Blackhole,
                vec![PortRange {
                    side: rules::Side::Either,
                    first: self.options.port,
                    last: self.options.port,
                }],
            )
        }
    }
}

fn bad(field: &'static str, message: impl Into<String>) -> SpecError {
    SpecError::new(field, message)
}

impl RuleSpec {
    /// Checks an `http` spec: one port, a status, and only the fields
    /// `http` takes; the guard rails as for any rule.
    pub fn http_rule(&self, policy: &Policy) -> Result<HttpRule, SpecError> {
        if self.fault != FAULT {
            return Err(bad("fault", format!("`{}` is not http", self.fault)));
        }
        let v = serde_json::to_value(self).map_err(|e| bad("fault", e.to_string()))?;
        if let Some(field) = v.as_object().and_then(|o| {
            o.keys()
                .find(|k| !COMMON.contains(&k.as_str()) && !FIELDS.contains(&k.as_str()))
        }) {
            return Err(bad(
                "fault",
                format!(
                    "http does not take `{field}` (it takes one `port`, `pct`, `per`, `for`, \
                     and {})",
                    FIELDS.join(", ")
                ),
            ));
        }
        let port = match self.port.as_slice() {
            [PortSpec::Number(p)] => u16::try_from(*p).ok().filter(|p| *p > 0),
            [PortSpec::Text(t)] => t.trim().parse::<u16>().ok().filter(|p| *p > 0),
            _ => None,
        }
        .ok_or_else(|| {
            bad(
                "port",
                "http takes exactly one port, the real server's, 1 to 65535 (no ranges)",
            )
        })?;
        let status = Status::parse(
            self.status
                .as_deref()
                .ok_or_else(|| bad("status", "http needs a `status`: 400 to 599, or abort"))?,
        )
        .map_err(|e| bad("status", e))?;
        let per = match self.per {
            None | Some(rules::Per::Request) => Per::Request,
            Some(rules::Per::Connection) => Per::Connection,
            Some(other) => {
                return Err(bad(
                    "per",
                    format!(
                        "http draws per request or connection, not `{}`",
                        serde_json::to_value(other)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    ),
                ));
            }
        };
        let duration = |field: &'static str, s: &Option<String>| {
            s.as_deref()
                .map(|s| parse_bounded(s, MAX_DELAY).map_err(|e| bad(field, e)))
                .transpose()
        };
        let mut options = Options {
            port,
            status,
            retry_after: duration("retry_after", &self.retry_after)?,
            pct: self.pct.unwrap_or(100.0),
            per,
            methods: self.method.clone(),
            paths: self.path.clone(),
            when: self.when.unwrap_or(When::Before),
            delay_first_byte: duration("delay_first_byte", &self.delay_first_byte)?
                .unwrap_or_default(),
            side: self.side.unwrap_or(Side::Auto),
            cgroup: self.cgroup.clone().unwrap_or_else(|| DEFAULT_CGROUP.into()),
        };
        options.validate().map_err(|e| {
            // The message names the flag; the field is the spec's.
            let field = FIELDS
                .iter()
                .chain(["pct", "port"].iter())
                .find(|f| e.contains(&format!("--{}", f.replace('_', "-"))))
                .copied()
                .unwrap_or("fault");
            bad(field, e)
        })?;
        let lasts = match &self.lasts {
            Some(s) => Some(parse_duration(s).map_err(|e| bad("for", e))?),
            None => policy.default_ttl,
        };
        if !self.force {
            let probe = rules::Rule::new(
                0,
                crate::faults::Fault::Blackhole,
                vec![PortRange {
                    side: rules::Side::Either,
                    first: port,
                    last: port,
                }],
            );
            policy.guards.check(&probe)?;
        }
        Ok(HttpRule { options, lasts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> RuleSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_http_spec_becomes_options() {
        let r = spec(
            r#"{"fault":"http","port":[8080],"status":503,"retry_after":"2s","per":"connection",
               "method":["post"],"path":["/api"],"when":"after","for":"1m"}"#,
        )
        .http_rule(&Policy::default())
        .unwrap();
        let o = r.options;
        assert_eq!(o.port, 8080);
        assert_eq!(o.status, Status::Code(503));
        assert_eq!(o.retry_after, Some(Duration::from_secs(2)));
        assert_eq!(o.per, Per::Connection);
        assert_eq!(o.methods, ["POST"]);
        assert_eq!(o.when, When::After);
        assert_eq!(r.lasts, Some(Duration::from_secs(60)));
    }

    #[test]
    fn http_refuses_what_it_does_not_take_and_names_it() {
        for (json, field, names) in [
            (
                r#"{"fault":"http","port":[8080]}"#,
                "status",
                "needs a `status`",
            ),
            (
                r#"{"fault":"http","port":["8000-8100"],"status":"503"}"#,
                "port",
                "one port",
            ),
            (
                r#"{"fault":"http","port":[8080,8081],"status":"503"}"#,
                "port",
                "one port",
            ),
            (
                r#"{"fault":"http","port":[8080],"status":"200"}"#,
                "status",
                "`200`",
            ),
            (
                r#"{"fault":"http","port":[8080],"status":"503","mark":1}"#,
                "fault",
                "`mark`",
            ),
            (
                r#"{"fault":"http","port":[8080],"status":"503","per":"flow"}"#,
                "per",
                "`flow`",
            ),
            (
                r#"{"fault":"http","port":[8080],"status":"503","pct":0}"#,
                "pct",
                "--pct 0",
            ),
            (
                r#"{"fault":"http","port":[8080],"status":"503","cgroup":"x"}"#,
                "cgroup",
                "`x`",
            ),
            (
                r#"{"fault":"http","port":[22],"status":"503"}"#,
                "port",
                "ssh",
            ),
        ] {
            let e = spec(json).http_rule(&Policy::default()).unwrap_err();
            assert_eq!(e.field, field, "{json}: {e}");
            assert!(e.message.contains(names), "{json}: {e}");
        }
    }

    #[test]
    fn kernel_faults_refuse_the_http_fields() {
        let e = spec(r#"{"fault":"blackhole","port":[80],"status":"503"}"#)
            .validate(0, &Policy::default())
            .unwrap_err();
        assert_eq!(e.field, "status");
        assert!(e.message.contains("only http"), "{e}");
        let e = spec(r#"{"fault":"blackhole","port":[80],"per":"request"}"#)
            .validate(0, &Policy::default())
            .unwrap_err();
        assert_eq!(e.field, "per");
    }
}
