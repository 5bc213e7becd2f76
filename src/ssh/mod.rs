//! Reaching a host the way `ssh alias` does: configuration resolution (`config`, with OpenSSH's
//! own glob for `Include` in `glob`), host key checking (`known_hosts`), authentication
//! (`auth`), and the connection itself with proxies, keepalive and timeouts (`connect`).

pub mod auth;
pub mod config;
pub mod connect;
pub mod exec;
mod glob;
pub mod known_hosts;
