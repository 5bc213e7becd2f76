//! Which executable serves as the xfer agent on a host of a given platform.
//!
//! The agent is an xfer binary. For a host of the platform xfer itself was built for, it is
//! the running executable. For other platforms it comes from the agent bundle: a directory
//! (`$XFER_AGENT_BUNDLE`, else `lib/xfer/agents` beside the `bin` directory holding xfer)
//! with one file per platform, `xfer-agent-VERSION-OS-ARCH`, and a manifest, `MANIFEST.b3`,
//! giving each file's BLAKE3 in `b3sum`'s format. `scripts/release.sh` makes both.
//!
//! The manifest is what xfer trusts: a bundle file is uploaded only when its bytes hash to the
//! manifest's value, and the agent started on the host must report that same hash of its own
//! executable. A bundle directory or manifest that another account could change (not owned by
//! root or the user, or writable by group or others) is not used, as ssh refuses such a
//! config file. Everything read from the bundle is capped: the manifest's size and lines, and
//! an agent's size.
//!
//! Platforms are named as Rust names them (`linux`, `macos`; `x86_64`, `aarch64`);
//! [`Platform::from_uname`] maps what a host's `uname -s` and `uname -m` print onto them.

use std::path::{Path, PathBuf};

/// The manifest's file name in the bundle directory.
pub const MANIFEST: &str = "MANIFEST.b3";
/// Larger manifests are refused: a bundle lists a handful of platforms.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;
const MAX_MANIFEST_LINES: usize = 256;
/// Larger agents are refused rather than read into memory to be uploaded.
pub const MAX_AGENT_BYTES: u64 = 512 * 1024 * 1024;

/// An operating system and a processor architecture, in Rust's names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

impl Platform {
    /// The platform this executable was built for.
    pub fn this() -> Platform {
        Platform {
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        }
    }

    /// The platform of a host whose `uname -s` and `uname -m` print these.
    pub fn from_uname(system: &str, machine: &str) -> Platform {
        let os = match system {
            "Darwin" => "macos".to_string(),
            other => other.to_ascii_lowercase(),
        };
        let arch = match machine {
            "amd64" | "x86_64" => "x86_64",
            "arm64" | "aarch64" => "aarch64",
            "i386" | "i486" | "i586" | "i686" | "i86pc" => "x86",
            "ppc64le" => "powerpc64le",
            other => other,
        };
        Platform {
            os,
            arch: arch.to_string(),
        }
    }

    /// What `uname -s` and `uname -m` print on a host of this platform, every spelling known.
    pub fn uname_spellings(&self) -> Vec<(String, String)> {
        let systems: Vec<String> = match self.os.as_str() {
            "macos" => vec!["Darwin".into()],
            "linux" => vec!["Linux".into()],
            "freebsd" => vec!["FreeBSD".into()],
            "netbsd" => vec!["NetBSD".into()],
            "openbsd" => vec!["OpenBSD".into()],
            other => vec![other.to_string()],
        };
        let machines: Vec<&str> = match self.arch.as_str() {
            "x86_64" => vec!["x86_64", "amd64"],
            "aarch64" => vec!["aarch64", "arm64"],
            "x86" => vec!["i686", "i586", "i486", "i386", "i86pc"],
            "powerpc64le" => vec!["ppc64le"],
            other => vec![other],
        };
        systems
            .iter()
            .flat_map(|system| {
                machines
                    .iter()
                    .map(move |machine| (system.clone(), machine.to_string()))
            })
            .collect()
    }

    /// `OS-ARCH`, as in bundle file names: `linux-aarch64`.
    pub fn key(&self) -> String {
        format!("{}-{}", self.os, self.arch)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{} {}", self.os, self.arch)
    }
}

/// Where an agent's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The running xfer executable.
    ThisExecutable,
    /// A file of the agent bundle, checked against the manifest.
    Bundle,
}

/// One deployable agent.
#[derive(Debug, Clone)]
pub struct Agent {
    pub platform: Platform,
    /// The BLAKE3 of its bytes: the running executable's, or the manifest's for a bundle file.
    pub blake3: [u8; 32],
    pub path: PathBuf,
    pub source: Source,
    /// Its file name in a host's cache (see [`cache_name`]).
    pub name: String,
}

/// The agent's file name in a host's cache: `agent-VERSION-OS-ARCH-HASH`, HASH the first 16
/// hex digits of its BLAKE3. The platform is in the name because a home shared between hosts
/// of different architectures (one NFS home for a cluster's login and GPU nodes) holds one
/// agent for each, and an upload removes only older agents of its own platform.
pub fn cache_name(version: &str, platform: &Platform, blake3: &[u8; 32]) -> String {
    let hash = crate::blocks::to_hex(blake3);
    format!("agent-{version}-{}-{}", platform.key(), &hash[..16])
}

/// The bundle file holding this version's agent for `platform`.
pub fn bundle_file_name(platform: &Platform) -> String {
    format!(
        "xfer-agent-{}-{}",
        env!("CARGO_PKG_VERSION"),
        platform.key()
    )
}

/// The bundle's default place for an xfer at `executable`: `../lib/xfer/agents` from the
/// directory holding the executable (after symlinks), as `make install` lays things out.
pub fn default_bundle_dir(executable: &Path) -> Option<PathBuf> {
    let executable = std::fs::canonicalize(executable).ok()?;
    Some(executable.parent()?.parent()?.join("lib/xfer/agents"))
}

/// The agents xfer can deploy: its own executable, and the bundle's files.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    agents: Vec<Agent>,
    /// The bundle directory looked in, when there is one.
    bundle: Option<PathBuf>,
    /// Why the bundle is not used, when it exists but is not usable.
    bundle_problem: Option<String>,
}

impl Catalog {
    /// The running executable (`own`: its path and BLAKE3) and the bundle in `bundle_dir`.
    /// A missing bundle directory is no bundle; an unusable one is remembered with its
    /// reason, which is given when a host needs an agent from it.
    pub fn load(own: Option<(PathBuf, [u8; 32])>, bundle_dir: Option<PathBuf>) -> Catalog {
        let mut catalog = Catalog {
            bundle: bundle_dir.clone(),
            ..Catalog::default()
        };
        let this = Platform::this();
        if let Some((path, blake3)) = own {
            catalog.agents.push(Agent {
                name: cache_name(env!("CARGO_PKG_VERSION"), &this, &blake3),
                platform: this.clone(),
                blake3,
                path,
                source: Source::ThisExecutable,
            });
        }
        let Some(dir) = bundle_dir else {
            return catalog;
        };
        match read_manifest(&dir) {
            Ok(None) => {}
            Ok(Some(entries)) => {
                for (blake3, file) in entries {
                    let Some(platform) = platform_of_file(&file) else {
                        continue;
                    };
                    // The first agent of a platform stands: the local executable for its own,
                    // the manifest's first line for the others.
                    if catalog.agents.iter().any(|a| a.platform == platform) {
                        continue;
                    }
                    catalog.agents.push(Agent {
                        name: cache_name(env!("CARGO_PKG_VERSION"), &platform, &blake3),
                        path: dir.join(&file),
                        platform,
                        blake3,
                        source: Source::Bundle,
                    });
                }
            }
            Err(problem) => catalog.bundle_problem = Some(problem),
        }
        catalog
    }

    /// Whether an agent reporting this BLAKE3 of its executable is one of ours.
    pub fn holds(&self, blake3: &[u8; 32]) -> bool {
        self.agents.iter().any(|agent| &agent.blake3 == blake3)
    }

    /// The agent for a host of `platform`, or why there is none, in one line naming the file
    /// that would be needed.
    pub fn for_platform(&self, platform: &Platform) -> Result<&Agent, String> {
        if let Some(agent) = self.agents.iter().find(|a| &a.platform == platform) {
            return Ok(agent);
        }
        let file = bundle_file_name(platform);
        let reason = match (&self.bundle, &self.bundle_problem) {
            (Some(_), Some(problem)) => {
                format!("the host is {platform}, and the agent bundle is not usable: {problem}")
            }
            (Some(dir), None) => format!(
                "the host is {platform}: no xfer agent for it, which would be {} (with its line in {})",
                dir.join(&file).display(),
                dir.join(MANIFEST).display()
            ),
            (None, _) => format!(
                "the host is {platform}: no xfer agent for it, which would be {file} in an agent bundle ({})",
                crate::env::XFER_AGENT_BUNDLE
            ),
        };
        Err(crate::terminal::printable(&reason))
    }

    /// The start script's table: for each agent, one line `SYSTEM MACHINE NAME` per way its
    /// platform's `uname` spells itself, then an empty line. The script runs the cached agent
    /// whose line matches the host, so a host of any platform in the catalog costs one round
    /// trip when its agent is cached.
    pub fn start_table(&self) -> String {
        let mut table = String::new();
        for agent in &self.agents {
            for (system, machine) in agent.platform.uname_spellings() {
                table.push_str(&format!("{system} {machine} {}\n", agent.name));
            }
        }
        table
    }

    /// Reads `agent`'s bytes to upload them: a bundle file must hash to its manifest's BLAKE3.
    pub fn read(&self, agent: &Agent) -> Result<Vec<u8>, String> {
        let bytes = read_capped(&agent.path, MAX_AGENT_BYTES)
            .map_err(|error| format!("cannot read {}: {error}", agent.path.display()))?;
        if crate::blocks::file_hash_of(&bytes) != agent.blake3 {
            return Err(match agent.source {
                Source::ThisExecutable => {
                    "xfer's own executable changed on disk while running (an upgrade?)".into()
                }
                Source::Bundle => format!(
                    "{} does not match its BLAKE3 in {}: rebuild the bundle (scripts/release.sh)",
                    agent.path.display(),
                    self.bundle
                        .as_deref()
                        .map(|dir| dir.join(MANIFEST).display().to_string())
                        .unwrap_or_else(|| MANIFEST.into())
                ),
            });
        }
        Ok(bytes)
    }
}

/// The platform a bundle file of this version is for, None for other names (other versions
/// are not ours to start: their protocol may differ).
fn platform_of_file(file: &str) -> Option<Platform> {
    let rest = file.strip_prefix(&format!("xfer-agent-{}-", env!("CARGO_PKG_VERSION")))?;
    let (os, arch) = rest.split_once('-')?;
    let word = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    };
    (word(os) && word(arch)).then(|| Platform {
        os: os.to_string(),
        arch: arch.to_string(),
    })
}

/// A manifest line: a file's BLAKE3 and its name in the bundle directory.
pub type Entry = ([u8; 32], String);

/// The manifest's entries, None when the directory or the manifest does not exist.
fn read_manifest(dir: &Path) -> Result<Option<Vec<Entry>>, String> {
    match std::fs::metadata(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: {error}", dir.display())),
        Ok(metadata) if !metadata.is_dir() => {
            return Err(format!("{} is not a directory", dir.display()));
        }
        Ok(metadata) => trusted(dir, &metadata)?,
    }
    let path = dir.join(MANIFEST);
    let metadata = match std::fs::symlink_metadata(&path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("{}: {error}", path.display())),
        Ok(metadata) => metadata,
    };
    if !metadata.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    trusted(&path, &metadata)?;
    let text = read_capped(&path, MAX_MANIFEST_BYTES)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| format!("{} is not text", path.display()))?;
    parse_manifest(&text)
        .map(Some)
        .map_err(|problem| format!("{}: {problem}", path.display()))
}

/// Refuses what an account other than root and the user could change.
fn trusted(path: &Path, metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let user = nix::unistd::geteuid().as_raw();
    if metadata.uid() != 0 && metadata.uid() != user {
        return Err(format!(
            "{} belongs to another account (uid {})",
            path.display(),
            metadata.uid()
        ));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (chmod go-w)",
            path.display()
        ));
    }
    Ok(())
}

/// `b3sum` lines: 64 hex digits, two spaces (or a space and `*`), a file name in the bundle
/// directory. Blank lines and `#` comments are skipped.
pub fn parse_manifest(text: &str) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if number >= MAX_MANIFEST_LINES {
            return Err(format!("more than {MAX_MANIFEST_LINES} lines"));
        }
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let malformed = || format!("line {} is not `BLAKE3  FILE`", number + 1);
        let (hex, file) = line.split_once(' ').ok_or_else(malformed)?;
        let file = file
            .strip_prefix(' ')
            .or_else(|| file.strip_prefix('*'))
            .ok_or_else(malformed)?;
        let blake3 = parse_hex(hex).ok_or_else(malformed)?;
        let plain = !file.is_empty()
            && !file.starts_with('.')
            && file
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._-".contains(&byte));
        if !plain {
            return Err(format!(
                "line {}: a file name with a path or unusual characters",
                number + 1
            ));
        }
        entries.push((blake3, file.to_string()));
    }
    Ok(entries)
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut bytes = [0u8; 32];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * index..2 * index + 2], 16).ok()?;
    }
    Some(bytes)
}

/// Reads a whole regular file of at most `limit` bytes, without following a symlink at its
/// name's last component.
fn read_capped(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if metadata.len() > limit {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            limit / (1024 * 1024)
        )));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other("grew while read"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
