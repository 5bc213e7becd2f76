//! [`Fleet`]: several real sshds on 127.0.0.1 standing for the machines of a cluster, reached
//! as `node-1` .. `node-N` through one ssh_config and one known_hosts, for tests of transfers
//! to and from many hosts at once.
//!
//! Every host is an [`Sshd`] of its own (its own host key, port and client key). A host can be
//! stopped and started again on the same port with the same host key, as a machine that goes
//! down and comes back, and can be reached through a [`Proxy`] that counts, cuts or stalls its
//! connections.
//!
//! On a real fleet `/data` on node-1 and `/data` on node-2 are different directories; here all
//! hosts share one filesystem. With [`FleetBuilder::private_dirs`] every sshd runs in a mount
//! namespace of its own in which a per-host directory is bind-mounted over one common path
//! ([`Fleet::common_path`]), so `node-[1-4]:COMMON/data` names four real directories
//! ([`Fleet::host_dir`]), each seen by its host alone. That needs root, as CI has.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::sshd::{ClientEnd, append, client_config_block};
use super::{Proxy, Sshd, run_with_timeout, running_as_root};

/// How long one `ssh` command of [`Fleet::ssh`] may take.
const SSH_LIMIT: Duration = Duration::from_secs(30);

/// Options for a [`Fleet`]; start one with [`FleetBuilder::start`].
#[derive(Clone, Debug)]
pub struct FleetBuilder {
    hosts: usize,
    private_dirs: bool,
    /// Hosts (numbered from 1) reached through a proxy.
    proxied: Vec<usize>,
}

impl FleetBuilder {
    /// Gives every host its own directory at [`Fleet::common_path`] (see the module
    /// documentation). Needs root.
    pub fn private_dirs(mut self) -> Self {
        self.private_dirs = true;
        self
    }

    /// Puts a [`Proxy`] (in [`super::ProxyMode::Pass`]) in front of host `index` (from 1):
    /// its alias reaches the sshd through the proxy, which [`Fleet::proxy`] controls.
    pub fn proxy_in_front(mut self, index: usize) -> Self {
        assert!(
            (1..=self.hosts).contains(&index),
            "no host {index} in a fleet of {}",
            self.hosts
        );
        self.proxied.push(index);
        self
    }

    pub fn start(self) -> Fleet {
        Fleet::launch(self)
    }
}

/// One machine of the fleet.
struct Node {
    // Dropped in this order: the proxy, then the server, then the directory it showed.
    proxy: Option<Proxy>,
    sshd: Sshd,
    host_dir: Option<TempDir>,
}

/// Running sshds reached as `node-1` .. `node-N` through [`Fleet::config`]. Dropping it stops
/// every proxy and server and removes their directories.
pub struct Fleet {
    nodes: Vec<Node>,
    /// The path every host's own directory is mounted over, when the hosts have private dirs.
    common: Option<TempDir>,
    /// Holds ssh_config and known_hosts.
    dir: TempDir,
}

impl Fleet {
    /// `hosts` sshds sharing the machine's filesystem, none behind a proxy, until the builder
    /// says otherwise.
    pub fn builder(hosts: usize) -> FleetBuilder {
        assert!(hosts > 0, "a fleet needs at least one host");
        FleetBuilder {
            hosts,
            private_dirs: false,
            proxied: Vec::new(),
        }
    }

    fn launch(settings: FleetBuilder) -> Fleet {
        if settings.private_dirs {
            assert!(
                running_as_root(),
                "a fleet with private directories runs each sshd in a mount namespace of its own: run the tests as root, as CI does"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("xfer-fleet-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a directory for the fleet: {error}"));
        let common = settings.private_dirs.then(|| {
            tempfile::Builder::new()
                .prefix("xfer-fleet-common-")
                .tempdir()
                .unwrap_or_else(|error| panic!("cannot create the common directory: {error}"))
        });
        let mut fleet = Fleet {
            nodes: Vec::new(),
            common,
            dir,
        };
        append(
            &fleet.config_path(),
            "# Written by the xfer test harness.\n",
        );
        append(&fleet.known_hosts(), "");
        for index in 1..=settings.hosts {
            let host_dir = fleet.common.is_some().then(|| {
                tempfile::Builder::new()
                    .prefix(&format!("xfer-fleet-node-{index}-"))
                    .tempdir()
                    .unwrap_or_else(|error| {
                        panic!("cannot create the directory of host {index}: {error}")
                    })
            });
            let mut builder = Sshd::builder();
            if let (Some(host_dir), Some(common)) = (&host_dir, &fleet.common) {
                builder = builder.private_mount(host_dir.path(), common.path());
            }
            let sshd = builder.start();
            let proxy = settings
                .proxied
                .contains(&index)
                .then(|| Proxy::start(sshd.port()));
            let extra = proxy.as_ref().map(|proxy| format!("Port {}", proxy.port()));
            let block = client_config_block(
                &ClientEnd {
                    port: sshd.port(),
                    user: sshd.user(),
                    client_key: sshd.client_key(),
                    known_hosts: fleet.known_hosts(),
                    host_public_key: sshd.host_public_key(),
                },
                &Fleet::alias(index),
                &extra.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            append(&fleet.config_path(), &block);
            fleet.nodes.push(Node {
                proxy,
                sshd,
                host_dir,
            });
        }
        fleet
    }

    /// How many hosts there are.
    pub fn host_count(&self) -> usize {
        self.nodes.len()
    }

    /// The ssh_config alias of host `index` (from 1): `node-INDEX`.
    pub fn alias(index: usize) -> String {
        format!("node-{index}")
    }

    /// The aliases of every host, in order.
    pub fn aliases(&self) -> Vec<String> {
        (1..=self.host_count()).map(Fleet::alias).collect()
    }

    /// The ssh_config naming every host: `Host node-I` with HostName 127.0.0.1, its Port (the
    /// proxy's, for a proxied host), User, IdentityFile, IdentitiesOnly yes, one
    /// UserKnownHostsFile for all, StrictHostKeyChecking yes and BatchMode yes.
    pub fn config(&self) -> PathBuf {
        self.config_path()
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// The one known_hosts file of every host, as reached through the config.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// Host `index` (from 1).
    fn node(&self, index: usize) -> &Node {
        assert!(
            (1..=self.host_count()).contains(&index),
            "no host {index} in a fleet of {}",
            self.host_count()
        );
        &self.nodes[index - 1]
    }

    fn node_mut(&mut self, index: usize) -> &mut Node {
        self.node(index);
        &mut self.nodes[index - 1]
    }

    /// The sshd of host `index` (from 1).
    pub fn sshd(&self, index: usize) -> &Sshd {
        &self.node(index).sshd
    }

    /// Stops host `index`'s sshd (see [`Sshd::stop`]): its alias then finds the port closed
    /// (or, through a proxy, a connection closed at once).
    pub fn stop(&mut self, index: usize) {
        self.node_mut(index).sshd.stop();
    }

    /// Starts host `index`'s sshd again on the same port, with the same host key and the same
    /// private directory.
    pub fn start_again(&mut self, index: usize) {
        self.node_mut(index).sshd.start_again();
    }

    /// The proxy in front of host `index`: set its mode, read its counters.
    pub fn proxy(&self, index: usize) -> &Proxy {
        self.node(index).proxy.as_ref().unwrap_or_else(|| {
            panic!("host {index} has no proxy in front: use FleetBuilder::proxy_in_front")
        })
    }

    /// The path at which every host sees its own directory.
    pub fn common_path(&self) -> &Path {
        self.common
            .as_ref()
            .expect("the fleet has no private dirs: use FleetBuilder::private_dirs")
            .path()
    }

    /// The real directory that host `index` sees at [`Fleet::common_path`].
    pub fn host_dir(&self, index: usize) -> &Path {
        self.node(index)
            .host_dir
            .as_ref()
            .expect("the fleet has no private dirs: use FleetBuilder::private_dirs")
            .path()
    }

    /// `path` below the common path, as text for a command line.
    pub fn common(&self, path: &str) -> String {
        self.common_path().join(path).display().to_string()
    }

    /// Runs `script` on host `index` with OpenSSH's own client through [`Fleet::config`]
    /// (bounded by a timeout) and returns what it did.
    pub fn ssh(&self, index: usize, script: &str) -> Output {
        let mut command = Command::new("ssh");
        command
            .arg("-F")
            .arg(self.config_path())
            .arg(Fleet::alias(index))
            .arg(script)
            .stdin(Stdio::null());
        run_with_timeout(&mut command, SSH_LIMIT)
    }
}
