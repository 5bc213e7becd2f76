//! An ssh-agent of the test's own, listening on a socket in a temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::{read_lossy, run_with_timeout};

const START_LIMIT: Duration = Duration::from_secs(10);
const ADD_LIMIT: Duration = Duration::from_secs(30);

/// `ssh-agent -D -a <socket>` as a child process; dropping it stops the agent.
pub struct Agent {
    child: Child,
    socket: PathBuf,
    // Declared last so that it is removed after the agent is gone.
    dir: TempDir,
}

impl Agent {
    /// Starts an empty agent and waits until its socket accepts connections.
    pub fn start() -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("xfer-agent-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for ssh-agent: {error}"));
        let socket = dir.path().join("agent.sock");
        let stderr = fs::File::create(dir.path().join("agent.stderr"))
            .unwrap_or_else(|error| panic!("cannot create the agent's stderr file: {error}"));
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run ssh-agent: {error}"));
        let mut agent = Agent { child, socket, dir };
        let deadline = Instant::now() + START_LIMIT;
        while UnixStream::connect(&agent.socket).is_err() {
            let exited = matches!(agent.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                panic!(
                    "ssh-agent did not open {}: {}",
                    agent.socket.display(),
                    read_lossy(&agent.dir.path().join("agent.stderr"))
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
        agent
    }

    /// The socket to use as `SSH_AUTH_SOCK` (or `IdentityAgent`).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Adds an unencrypted private key to the agent with `ssh-add`.
    pub fn add(&self, private_key: &Path) {
        let mut command = self.ssh_add(private_key);
        self.run_ssh_add(&mut command, private_key);
    }

    /// Adds a passphrase-protected private key, answering ssh-add's question through
    /// `SSH_ASKPASS` since there is no terminal.
    pub fn add_with_passphrase(&self, private_key: &Path, passphrase: &str) {
        let answer = self.dir.path().join("passphrase");
        let script = self.dir.path().join("askpass");
        fs::write(&answer, format!("{passphrase}\n"))
            .unwrap_or_else(|error| panic!("cannot write the passphrase file: {error}"));
        fs::write(&script, format!("#!/bin/sh\ncat '{}'\n", answer.display()))
            .and_then(|()| fs::set_permissions(&script, fs::Permissions::from_mode(0o700)))
            .unwrap_or_else(|error| panic!("cannot write the askpass script: {error}"));
        let mut command = self.ssh_add(private_key);
        command
            .env("SSH_ASKPASS", &script)
            .env("SSH_ASKPASS_REQUIRE", "force");
        self.run_ssh_add(&mut command, private_key);
    }

    fn ssh_add(&self, private_key: &Path) -> Command {
        let mut command = Command::new("ssh-add");
        command
            .arg(private_key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .env_remove("SSH_ASKPASS")
            .env_remove("SSH_ASKPASS_REQUIRE")
            .stdin(Stdio::null());
        command
    }

    fn run_ssh_add(&self, command: &mut Command, private_key: &Path) {
        let output = run_with_timeout(command, ADD_LIMIT);
        assert!(
            output.status.success(),
            "ssh-add {} failed: {}",
            private_key.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() >= deadline {
                    let _ = self.child.kill();
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.child.wait();
    }
}
