//! faultbpf as a library: load the kernel programs, attach them to
//! interfaces, put fault rules in their maps and read the counters back.
//!
//! The CLI (`main.rs`) is a thin layer over this; tests and other tools can
//! drive the same API.

pub mod api;
pub mod child;
pub mod claims;
pub mod config;
pub mod daemon;
pub mod delaydev;
pub mod error;
pub mod faults;
pub mod guard;
pub mod http;
pub mod iface;
pub mod load;
pub mod loader;
pub mod mapwrite;
mod mountns;
mod port_filter;
pub mod reaper;
pub mod report;
pub mod rules;
pub mod scenario;
pub mod session;
mod span;
pub mod spec;
pub mod target;
pub mod tls;
pub mod trace;

pub use api::client;
pub use error::Error;
pub use faults::Fault;
pub use loader::{AttachMode, Hooks, Injector, XdpMode};
pub use rules::{Direction, Proto, Rule};
