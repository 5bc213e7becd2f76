//! The release build of xfer for x86_64 Linux, as `scripts/release.sh` makes it (glibc 2.17,
//! zig as the linker), built once per checkout for the tests that deploy it as the agent.
//!
//! The build goes to `target/test-release` (cargo's own target directory for it stays
//! `target/release-build`, so a later build only relinks what changed). A file lock makes
//! concurrent test processes wait for one build. The script fetches zig and cargo-zigbuild
//! from the Python package registry into `target/release-tools` the first time; without them
//! these tests fail saying so, as `.ci/run` installs what the suite needs.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The portable client (also the agent it deploys): `target/test-release/.../bin/xfer`.
pub fn portable_xfer() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build)
}

fn build() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target");
    fs::create_dir_all(&target).expect("target directory");
    let _lock = lock(&target.join("test-release.lock"));
    let out = target.join("test-release");
    let status = Command::new(root.join("scripts/release.sh"))
        .args(["--targets", "x86_64-unknown-linux-gnu", "--out"])
        .arg(&out)
        .current_dir(root)
        .status()
        .unwrap_or_else(|error| panic!("cannot run scripts/release.sh: {error}"));
    assert!(
        status.success(),
        "scripts/release.sh failed ({status}): it needs python3 with venv and the Python package registry for zig, as .ci/run provides"
    );
    let binary = out
        .join(format!("xfer-{}-x86_64-linux", env!("CARGO_PKG_VERSION")))
        .join("bin/xfer");
    assert!(binary.is_file(), "no {}", binary.display());
    binary
}

/// An exclusive flock(2) on `path`, created if missing; released when the file is dropped.
fn lock(path: &Path) -> File {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap_or_else(|error| panic!("cannot open {}: {error}", path.display()));
    file.lock()
        .unwrap_or_else(|error| panic!("cannot lock {}: {error}", path.display()));
    file
}

/// The highest `GLIBC_x.y` symbol version `binary` needs, read by `objdump -T` (binutils).
pub fn highest_glibc_version(binary: &Path) -> (u32, u32) {
    let output = Command::new("objdump")
        .arg("-T")
        .arg(binary)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run objdump (package binutils, which .ci/run installs): {error}")
        });
    assert!(
        output.status.success(),
        "objdump -T {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let versions: Vec<(u32, u32)> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|version| {
            let mut parts = version.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next().unwrap_or("0").parse().ok()?;
            Some((major, minor))
        })
        .collect();
    assert!(
        !versions.is_empty(),
        "{} names no GLIBC_ symbol version: not a glibc executable?",
        binary.display()
    );
    versions.into_iter().max().expect("not empty")
}
