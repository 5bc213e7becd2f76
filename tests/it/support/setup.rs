//! [`Setup`]: one sshd, a client config that reaches it as `box`, a state directory and a
//! working directory, for tests that run xfer against one host.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use tempfile::TempDir;

use super::{Proxy, Sshd, run_with_timeout, xfer_command_in};

/// How long one xfer run of a [`Setup`] may take.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// An sshd reached as `box` through `config`, a state directory kept across the runs of a
/// test (so they resume), and a working directory for both sides' files (the host is local).
pub struct Setup {
    pub sshd: Sshd,
    pub config: PathBuf,
    pub state: TempDir,
    pub work: TempDir,
    /// The remote's home when the test gave sshd one of its own.
    pub home: Option<PathBuf>,
}

impl Setup {
    /// An sshd with the harness's defaults.
    pub fn start() -> Setup {
        Setup::with(Sshd::start(), tempfile::tempdir().unwrap(), None)
    }

    /// `sshd`, with `work` as the working directory and `home` as the remote's home if the
    /// test gave it one.
    pub fn with(sshd: Sshd, work: TempDir, home: Option<PathBuf>) -> Setup {
        let config = sshd.write_client_config("box", &[]);
        Setup {
            sshd,
            config,
            state: tempfile::tempdir().unwrap(),
            work,
            home,
        }
    }

    /// `xfer ARGUMENTS -F CONFIG` with the setup's state directory.
    pub fn xfer(&self, arguments: &[&str]) -> Command {
        let mut command = xfer_command_in(self.state.path());
        command.args(arguments).arg("-F").arg(&self.config);
        command
    }

    /// Runs [`Setup::xfer`] within [`RUN_LIMIT`].
    pub fn run(&self, arguments: &[&str]) -> Output {
        run_with_timeout(&mut self.xfer(arguments), RUN_LIMIT)
    }

    /// `name` in the working directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    /// `name` in the working directory as the host `box` names it.
    pub fn remote(&self, name: &str) -> String {
        format!("box:{}", self.path(name).display())
    }

    /// The agent cache of the remote's own home.
    pub fn cache(&self) -> PathBuf {
        self.home.as_ref().expect("own home").join(".cache/xfer")
    }

    /// What is in the agent cache of the remote's own home.
    pub fn cached_agents(&self) -> Vec<PathBuf> {
        match fs::read_dir(self.cache()) {
            Ok(entries) => entries.map(|entry| entry.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A counting proxy in front of the sshd, and a client config (in the working directory)
    /// that reaches the host through it as `via`.
    pub fn via_proxy(&self) -> (Proxy, PathBuf) {
        let proxy = Proxy::start(self.sshd.port());
        let config = self.work.path().join("proxy_config");
        self.sshd
            .append_client_config(&config, "via", &[&format!("Port {}", proxy.port())]);
        (proxy, config)
    }
}
