use super::*;
use std::os::unix::fs::PermissionsExt;

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn hash(bytes: &[u8]) -> [u8; 32] {
    crate::blocks::file_hash_of(bytes)
}

fn hex(bytes: &[u8]) -> String {
    crate::blocks::to_hex(&hash(bytes))
}

fn linux(arch: &str) -> Platform {
    Platform {
        os: "linux".into(),
        arch: arch.into(),
    }
}

/// A bundle directory with the given files and a manifest listing them with their hashes.
fn bundle(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut manifest = String::new();
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
        manifest.push_str(&format!("{}  {name}\n", hex(bytes)));
    }
    std::fs::write(dir.path().join(MANIFEST), manifest).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn uname_answers_map_onto_rust_platform_names() {
    assert_eq!(Platform::from_uname("Linux", "x86_64"), linux("x86_64"));
    assert_eq!(Platform::from_uname("Linux", "amd64"), linux("x86_64"));
    assert_eq!(Platform::from_uname("Linux", "aarch64"), linux("aarch64"));
    assert_eq!(
        Platform::from_uname("Darwin", "arm64"),
        Platform {
            os: "macos".into(),
            arch: "aarch64".into()
        }
    );
    assert_eq!(Platform::from_uname("Linux", "i686"), linux("x86"));
    // A 32-bit ARM userland is not an aarch64 host.
    assert_eq!(Platform::from_uname("Linux", "armv7l"), linux("armv7l"));
    assert_eq!(Platform::from_uname("Linux", "armv8l"), linux("armv8l"));
}

#[test]
fn every_spelling_of_a_platform_maps_back_to_it() {
    for platform in [
        linux("x86_64"),
        linux("aarch64"),
        linux("x86"),
        Platform {
            os: "macos".into(),
            arch: "aarch64".into(),
        },
        Platform {
            os: "freebsd".into(),
            arch: "x86_64".into(),
        },
    ] {
        let spellings = platform.uname_spellings();
        assert!(!spellings.is_empty());
        for (system, machine) in spellings {
            assert_eq!(
                Platform::from_uname(&system, &machine),
                platform,
                "{system} {machine}"
            );
        }
    }
}

#[test]
fn the_running_executable_serves_its_own_platform_and_the_bundle_the_others() {
    let aarch64 = format!("xfer-agent-{VERSION}-linux-aarch64");
    let own_platform = format!("xfer-agent-{VERSION}-{}", Platform::this().key());
    let dir = bundle(&[
        (aarch64.as_str(), b"an aarch64 agent"),
        (own_platform.as_str(), b"a bundle copy for this platform"),
    ]);
    let own = (PathBuf::from("/usr/bin/xfer"), hash(b"this executable"));
    let catalog = Catalog::load(Some(own), Some(dir.path().to_path_buf()));

    let this = catalog.for_platform(&Platform::this()).unwrap();
    assert_eq!(this.source, Source::ThisExecutable);
    assert_eq!(this.blake3, hash(b"this executable"));

    let other = catalog.for_platform(&linux("aarch64")).unwrap();
    assert_eq!(other.source, Source::Bundle);
    assert_eq!(other.path, dir.path().join(&aarch64));
    assert_eq!(
        other.name,
        format!(
            "agent-{VERSION}-linux-aarch64-{}",
            &hex(b"an aarch64 agent")[..16]
        )
    );
    assert_eq!(catalog.read(other).unwrap(), b"an aarch64 agent");
    assert!(catalog.holds(&hash(b"an aarch64 agent")));
    assert!(!catalog.holds(&hash(b"a bundle copy for this platform")));
}

#[test]
fn a_missing_platform_names_the_file_it_would_need() {
    let dir = bundle(&[]);
    let catalog = Catalog::load(None, Some(dir.path().to_path_buf()));
    let reason = catalog.for_platform(&linux("riscv64")).unwrap_err();
    let file = dir
        .path()
        .join(format!("xfer-agent-{VERSION}-linux-riscv64"));
    assert!(reason.contains(&file.display().to_string()), "{reason}");
    assert!(reason.contains("linux riscv64"), "{reason}");
    assert!(!reason.contains('\n'));

    let catalog = Catalog::load(None, None);
    let reason = catalog.for_platform(&linux("riscv64")).unwrap_err();
    assert!(reason.contains("XFER_AGENT_BUNDLE"), "{reason}");
}

#[test]
fn a_bundle_file_that_does_not_match_its_manifest_is_not_read() {
    let name = format!("xfer-agent-{VERSION}-linux-aarch64");
    let dir = bundle(&[(name.as_str(), b"the agent as released")]);
    std::fs::write(dir.path().join(&name), b"the agent replaced").unwrap();
    let catalog = Catalog::load(None, Some(dir.path().to_path_buf()));
    let agent = catalog.for_platform(&linux("aarch64")).unwrap();
    let reason = catalog.read(agent).unwrap_err();
    assert!(reason.contains("does not match its BLAKE3"), "{reason}");
}

#[test]
fn a_bundle_others_can_change_is_not_used() {
    let name = format!("xfer-agent-{VERSION}-linux-aarch64");
    let dir = bundle(&[(name.as_str(), b"agent")]);
    std::fs::set_permissions(
        dir.path().join(MANIFEST),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let catalog = Catalog::load(None, Some(dir.path().to_path_buf()));
    let reason = catalog.for_platform(&linux("aarch64")).unwrap_err();
    assert!(reason.contains("writable by group or others"), "{reason}");

    std::fs::set_permissions(
        dir.path().join(MANIFEST),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let catalog = Catalog::load(None, Some(dir.path().to_path_buf()));
    assert!(catalog.for_platform(&linux("aarch64")).is_err());
}

#[test]
fn a_symlinked_manifest_is_refused() {
    let name = format!("xfer-agent-{VERSION}-linux-aarch64");
    let dir = bundle(&[(name.as_str(), b"agent")]);
    let elsewhere = dir.path().join("elsewhere.b3");
    std::fs::rename(dir.path().join(MANIFEST), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.path().join(MANIFEST)).unwrap();
    let catalog = Catalog::load(None, Some(dir.path().to_path_buf()));
    let reason = catalog.for_platform(&linux("aarch64")).unwrap_err();
    assert!(reason.contains("not a regular file"), "{reason}");
}

#[test]
fn agents_of_other_versions_are_not_ours_to_start() {
    let dir = bundle(&[("xfer-agent-0.0.1-linux-aarch64", b"old agent")]);
    let catalog = Catalog::load(None, Some(dir.path().to_path_buf()));
    assert!(catalog.for_platform(&linux("aarch64")).is_err());
}

#[test]
fn manifests_are_read_as_b3sum_writes_them_and_nothing_else() {
    let hash = "ab".repeat(32);
    let entries = parse_manifest(&format!(
        "# made by scripts/release.sh\n{hash}  xfer-agent-1-linux-x86_64\n\n{hash} *binary-mode\n"
    ))
    .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].1, "xfer-agent-1-linux-x86_64");
    assert_eq!(entries[1].1, "binary-mode");
    for bad in [
        format!("{hash}  ../escape"),
        format!("{hash}  dir/file"),
        format!("{hash}  .hidden"),
        format!("{hash}  name\u{1b}[31m"),
        format!("{hash}name"),
        format!("{}  name", "zz".repeat(32)),
        format!("{}  name", "ab".repeat(31)),
        "just text".to_string(),
    ] {
        assert!(parse_manifest(&bad).is_err(), "{bad:?}");
    }
    let long = format!("{hash}  name\n").repeat(MAX_MANIFEST_LINES + 1);
    assert!(parse_manifest(&long).is_err());
}

#[test]
fn the_start_table_lists_every_spelling_of_every_agent() {
    let name = format!("xfer-agent-{VERSION}-linux-aarch64");
    let dir = bundle(&[(name.as_str(), b"agent")]);
    let own = (PathBuf::from("/usr/bin/xfer"), hash(b"this executable"));
    let catalog = Catalog::load(Some(own), Some(dir.path().to_path_buf()));
    let table = catalog.start_table();
    let aarch64 = catalog.for_platform(&linux("aarch64")).unwrap();
    assert!(table.contains(&format!("Linux aarch64 {}\n", aarch64.name)));
    assert!(table.contains(&format!("Linux arm64 {}\n", aarch64.name)));
    for line in table.lines() {
        assert_eq!(line.split(' ').count(), 3, "{line}");
    }
}
