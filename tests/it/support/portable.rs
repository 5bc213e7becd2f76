//! The release build of xfer for x86_64 and aarch64 Linux, as `scripts/release.sh` makes it
//! (glibc 2.17, zig as the linker), built once per checkout for the tests that deploy it as the
//! agent; and a Debian bullseye root for arm64, in which `qemu-aarch64` runs the aarch64 agent.
//!
//! The build goes to `target/test-release` (cargo's own target directory for it stays
//! `target/release-build`, so a later build only relinks what changed). A file lock makes
//! concurrent test processes wait for one build. The script fetches zig and cargo-zigbuild
//! from the Python package registry into `target/release-tools` the first time; without them
//! these tests fail saying so, as `.ci/run` installs what the suite needs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The portable client (also the agent it deploys): `target/test-release/.../bin/xfer`.
pub fn portable_xfer() -> &'static Path {
    &built().0
}

/// The aarch64 Linux agent of the same build.
pub fn aarch64_agent() -> &'static Path {
    &built().1
}

fn built() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(build)
}

fn build() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target");
    fs::create_dir_all(&target).expect("target directory");
    let _lock = super::lock_exclusively(&target.join("test-release.lock"));
    let out = target.join("test-release");
    let status = Command::new(root.join("scripts/release.sh"))
        .args([
            "--targets",
            "x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu",
            "--out",
        ])
        .arg(&out)
        .current_dir(root)
        .status()
        .unwrap_or_else(|error| panic!("cannot run scripts/release.sh: {error}"));
    assert!(
        status.success(),
        "scripts/release.sh failed ({status}): it needs python3 with venv and the Python package registry for zig, and the Rust target aarch64-unknown-linux-gnu (rustup target add), as .ci/run provides"
    );
    let binary = out
        .join(format!("xfer-{}-x86_64-linux", env!("CARGO_PKG_VERSION")))
        .join("bin/xfer");
    assert!(binary.is_file(), "no {}", binary.display());
    let aarch64 = out.join(format!(
        "agents/xfer-agent-{}-linux-aarch64",
        env!("CARGO_PKG_VERSION")
    ));
    assert!(aarch64.is_file(), "no {}", aarch64.display());
    (binary, aarch64)
}

/// Where the arm64 root is kept, beside the old-libc fixture's root.
const ARM64_ROOT: &str = "/var/cache/xfer-tests/bullseye-arm64";
const QEMU_AARCH64: &str = "/usr/bin/qemu-aarch64";

/// A Debian bullseye root for arm64 (glibc 2.31), unpacked once per machine by debootstrap's
/// first stage (`--foreign`: nothing in it runs while it is made), for `qemu-aarch64 -L` to
/// find the aarch64 loader and C library in; and the emulator, from the package qemu-user.
pub fn arm64_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        assert!(
            Path::new(QEMU_AARCH64).is_file(),
            "{QEMU_AARCH64} is missing: install the package qemu-user (.ci/run does)"
        );
        let root = PathBuf::from(ARM64_ROOT);
        let parent = root.parent().expect("a parent");
        fs::create_dir_all(parent).expect("the test cache directory");
        let _lock = super::lock_exclusively(&parent.join("bullseye-arm64.lock"));
        if !root.join("usr/lib/ld-linux-aarch64.so.1").exists() {
            let build = parent.join(format!("bullseye-arm64.build-{}", std::process::id()));
            let _ = fs::remove_dir_all(&build);
            // No mirror argument: debootstrap's default.
            let status = Command::new("/usr/sbin/debootstrap")
                .args(["--arch=arm64", "--foreign", "--variant=minbase", "bullseye"])
                .arg(&build)
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap_or_else(|error| {
                    panic!(
                        "cannot run debootstrap (package debootstrap, .ci/run installs it): {error}"
                    )
                });
            assert!(
                status.success(),
                "debootstrap --arch=arm64 --foreign failed: {status}"
            );
            let _ = fs::remove_dir_all(&root);
            fs::rename(&build, &root).expect("the arm64 root moved into place");
        }
        root
    })
}

/// A script that runs the aarch64 agent under the emulator, as a host's `--agent` would.
pub fn emulated_aarch64_agent(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("aarch64-agent");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {QEMU_AARCH64} -L {} {} \"$@\"\n",
            arm64_root().display(),
            aarch64_agent().display()
        ),
    )
    .expect("the wrapper");
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
    wrapper
}

/// The highest `GLIBC_x.y` symbol version `binary` needs, read by `readelf` (binutils), which
/// reads an ELF file of any architecture.
pub fn highest_glibc_version(binary: &Path) -> (u32, u32) {
    let output = Command::new("readelf")
        .args(["-W", "--dyn-syms", "-V"])
        .arg(binary)
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run readelf (package binutils, which .ci/run installs): {error}")
        });
    assert!(
        output.status.success(),
        "readelf {} failed: {}",
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
