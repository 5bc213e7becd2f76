//! Reaching a host the way `ssh alias` does: configuration resolution (`config`, with OpenSSH's
//! own glob for `Include` in `glob`), host key checking (`known_hosts`), the wildcard patterns
//! both match names with (`pattern`), authentication (`auth`) and the questions it asks the
//! person at the terminal (`prompt`), the connection itself with proxies, keepalive and timeouts
//! (`connect`), and the pace at which one run opens connections to a host (`startups`).

pub mod auth;
pub mod channel;
pub mod config;
pub mod connect;
pub mod exec;
mod glob;
pub mod greeting;
pub mod known_hosts;
mod pattern;
pub mod prompt;
pub mod startups;
pub mod system;
