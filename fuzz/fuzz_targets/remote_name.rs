//! Remote names and relative paths, as a hostile server would send them: validation, parsing,
//! terminal rendering (whole and cut short) and the symlink policy never panic, and whatever
//! they accept is safe. The
//! whole input is tried as one name and as one path; when it holds " -> ", the left side is
//! tried as a link location and the right side as that link's target.

#![no_main]

use xfer::local::{
    RelativePath, printable, printable_cut, symlink_target_is_contained, validate_component,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let shown = printable(data);
    assert!(
        !shown.chars().any(char::is_control),
        "printable let a control through"
    );
    // Cut for a warning: a prefix of the whole rendering, never longer than asked plus the mark.
    let cut = printable_cut(data, 80);
    assert!(cut.chars().count() <= 83);
    assert!(cut == shown || (cut.ends_with("...") && shown.starts_with(&cut[..cut.len() - 3])));

    if let Ok(name) = validate_component(data) {
        assert_eq!(name.as_bytes(), data);
        assert!(name != "." && name != "..");
        assert!(!name.contains(['/', '\\', '\0']));
        assert!(!name.chars().any(char::is_control));
        assert!(!name.trim().is_empty() && name.len() <= xfer::local::MAX_NAME_BYTES);
        assert!(RelativePath::root().join(data).is_ok());
    }

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(path) = RelativePath::parse(text) {
        // A parsed path is exactly its validated components, and prints without controls.
        assert_eq!(path.to_raw_string(), text);
        for component in path.components() {
            assert!(validate_component(component.as_bytes()).is_ok());
        }
        assert!(!path.to_string().chars().any(char::is_control));
        assert_eq!(RelativePath::parse(&path.to_raw_string()).ok(), Some(path));
    }

    if let Some((location, target)) = text.split_once(" -> ")
        && let Ok(location) = RelativePath::parse(location)
        && symlink_target_is_contained(&location, target)
    {
        // Resolved by hand from the link's directory, a contained target never climbs above
        // the root.
        assert!(!target.is_empty() && !target.starts_with('/'));
        let mut depth = location
            .components()
            .len()
            .checked_sub(1)
            .expect("a contained link is not the root itself");
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => depth = depth.checked_sub(1).expect("contained targets stay inside"),
                _ => depth += 1,
            }
        }
    }
});
