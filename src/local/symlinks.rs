//! Whether a symbolic link a server sends stays inside the transferred tree.
//!
//! xfer copies symbolic links as links and never follows them while writing, so a link cannot
//! make xfer itself write outside the destination. A link that points outside is still a trap
//! for whoever uses the tree afterwards (and was the first half of rsync CVE-2024-12087), so the
//! engine asks [`symlink_target_is_contained`] and, like rsync's `--safe-links`, warns about and
//! by default skips links that are not contained.

use crate::local::names::RelativePath;

/// True only when `target`, read as the target of a link stored at `link_location`, stays
/// inside the destination root.
///
/// The check is lexical (nothing is read from disk) and deliberately stricter than resolving the
/// text by hand:
/// - the target must be relative and non-empty, without NUL;
/// - `..` may only appear before the first ordinary component (`../../a/b`, never `a/../b`);
/// - those leading `..` may not climb above the root from the link's directory.
///
/// The second rule is the one rsync 3.4 added after CVE-2024-12088: the kernel resolves `s/..`
/// from wherever `s` really points, not from the directory `s` sits in. With a contained link
/// `s -> .` at the root, `a -> s/../x` looks contained as text but resolves to the root's parent.
/// With only leading `..`, every climb happens through real directories (xfer never creates
/// anything through a link), and the remaining components only descend; descending through a
/// link that passed this same check cannot leave the tree.
pub fn symlink_target_is_contained(link_location: &RelativePath, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    // The root itself is never a link; otherwise the link lives in its parent directory, whose
    // depth below the root is how far a target may climb.
    let Some(mut depth) = link_location.components().len().checked_sub(1) else {
        return false;
    };
    let mut descended = false;
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if descended {
                    return false;
                }
                let Some(above) = depth.checked_sub(1) else {
                    return false;
                };
                depth = above;
            }
            _ => descended = true,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn contained(link: &str, target: &str) -> bool {
        let location = RelativePath::parse(link).expect("test link locations are valid");
        symlink_target_is_contained(&location, target)
    }

    #[test]
    fn targets_inside_the_tree_are_contained() {
        assert!(contained("a", "b"));
        assert!(contained("a", "./b"));
        assert!(contained("d/a", "../b"));
        assert!(contained("d/e/a", "../../b/c"));
        assert!(contained("d/a", ".."));
        assert!(contained("a", "."));
        assert!(contained("a", "b//c/"));
        assert!(contained("a", "b/./c"));
    }

    #[test]
    fn targets_leaving_the_tree_are_not() {
        assert!(!contained("a", "../x"));
        assert!(!contained("a", ".."));
        assert!(!contained("a", "/etc/passwd"));
        assert!(!contained("a", "//etc"));
        assert!(!contained("d/a", "../../x"));
        assert!(!contained("a", "b/../../x"));
        assert!(!contained("a", ""));
        assert!(!contained("a", "b\0c"));
        assert!(!symlink_target_is_contained(&RelativePath::root(), "b"));
    }

    #[test]
    fn a_climb_after_a_descent_is_refused_even_when_it_looks_harmless() {
        // `s` may itself be a link (for example `s -> .`), so `s/..` is not `.`.
        assert!(!contained("a", "s/../x"));
        assert!(!contained("d/a", "s/.."));
    }

    /// A plain lexical resolver: where the target lands if no component is a link.
    fn lexical_depth(link: &[String], target: &str) -> Option<usize> {
        let mut depth = link.len().checked_sub(1)?;
        for part in target.split('/') {
            match part {
                "" | "." => {}
                ".." => depth = depth.checked_sub(1)?,
                _ => depth += 1,
            }
        }
        Some(depth)
    }

    proptest! {
        #[test]
        fn contained_targets_never_climb_above_the_root(
            link in "[ab]{1,2}(/[ab]{1,2}){0,3}",
            target in "/?((\\.\\.|\\.|[ab]|)/){0,6}(\\.\\.|\\.|[ab])",
        ) {
            let location = RelativePath::parse(&link).expect("generated locations are valid");
            if symlink_target_is_contained(&location, &target) {
                prop_assert!(!target.starts_with('/'));
                prop_assert!(lexical_depth(location.components(), &target).is_some());
            }
        }
    }
}
