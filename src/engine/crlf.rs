//! Shell scripts with Windows (CRLF) line endings, which break on Linux with
//! `$'\r': command not found`: telling one from other files, and converting it. No IO.
//!
//! A file is taken for a script when its name ends in a shell extension or it starts with a
//! `#!` line naming a shell; only those are ever looked at or changed, so binary data that
//! happens to contain `\r\n` is never touched.

/// Scripts larger than this are not examined (nobody writes a 4 MiB shell script by hand).
pub const MAX_SCRIPT_SIZE: u64 = 4 << 20;

const SHELL_EXTENSIONS: [&str; 5] = [".sh", ".bash", ".zsh", ".ksh", ".dash"];
const SHELLS: [&str; 6] = ["sh", "bash", "zsh", "ksh", "dash", "ash"];

/// Whether a file named `name` may be a shell script worth reading (by name or because it is
/// executable).
pub fn may_be_script(name: &str, mode: u32, size: u64) -> bool {
    size > 0
        && size <= MAX_SCRIPT_SIZE
        && (mode & 0o111 != 0 || SHELL_EXTENSIONS.iter().any(|ext| name.ends_with(ext)))
}

/// Whether `content` of a file named `name` is a shell script with CRLF line endings.
pub fn is_crlf_script(name: &str, content: &[u8]) -> bool {
    let script =
        SHELL_EXTENSIONS.iter().any(|ext| name.ends_with(ext)) || shebang_names_a_shell(content);
    script && content.windows(2).any(|pair| pair == b"\r\n")
}

fn shebang_names_a_shell(content: &[u8]) -> bool {
    let Some(rest) = content.strip_prefix(b"#!") else {
        return false;
    };
    let line = rest.split(|&byte| byte == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let Some(program) = words.next() else {
        return false;
    };
    let program = program.rsplit('/').next().unwrap_or(program);
    // `#!/usr/bin/env bash` names the shell in its first argument.
    let program = if program == "env" {
        words
            .find(|word| !word.starts_with('-'))
            .unwrap_or_default()
    } else {
        program
    };
    let program = program.trim_end_matches('\r');
    SHELLS.contains(&program)
}

/// `content` with every CRLF turned into LF (a lone CR is left alone).
pub fn to_lf(content: &[u8]) -> Vec<u8> {
    let mut converted = Vec::with_capacity(content.len());
    let mut bytes = content.iter().peekable();
    while let Some(&byte) = bytes.next() {
        if byte == b'\r' && bytes.peek() == Some(&&b'\n') {
            continue;
        }
        converted.push(byte);
    }
    converted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_told_by_name_or_shebang() {
        assert!(is_crlf_script("train.sh", b"echo hi\r\n"));
        assert!(is_crlf_script("run", b"#!/bin/bash\r\necho hi\r\n"));
        assert!(is_crlf_script("run", b"#!/usr/bin/env bash\r\necho hi\r\n"));
        assert!(is_crlf_script(
            "run",
            b"#!/usr/bin/env -S bash -e\r\necho\r\n"
        ));
        assert!(!is_crlf_script(
            "run",
            b"#!/usr/bin/env python3\r\nprint()\r\n"
        ));
        assert!(!is_crlf_script("train.sh", b"echo hi\n"));
        assert!(!is_crlf_script("model.bin", b"\x00\r\n\x01"));
        assert!(!is_crlf_script("run", b"#!/bin/sh\necho hi\n"));
    }

    #[test]
    fn only_crlf_pairs_are_converted() {
        assert_eq!(to_lf(b"a\r\nb\rc\r\n\r\n"), b"a\nb\rc\n\n");
        assert_eq!(to_lf(b""), b"");
        assert_eq!(to_lf(b"\r"), b"\r");
    }

    #[test]
    fn candidates_are_small_and_executable_or_named() {
        assert!(may_be_script("x.sh", 0o644, 10));
        assert!(may_be_script("run", 0o755, 10));
        assert!(!may_be_script("data.bin", 0o644, 10));
        assert!(!may_be_script("x.sh", 0o755, MAX_SCRIPT_SIZE + 1));
        assert!(!may_be_script("x.sh", 0o755, 0));
    }
}
