//! known_hosts files, read and written exactly as OpenSSH 9.2 does (hostfile.c, match.c,
//! sshkey.c): host patterns with `*`, `?` and `!`, `[host]:port` names, hashed `|1|salt|hash`
//! names, `@cert-authority` and `@revoked` markers, blank-or-tab separated fields and CRLF line
//! ends. This module owns looking a server's key up (`check`, and `check_host` for ssh's whole
//! lookup: HostKeyAlias, the port-less name, host certificates and their `@cert-authority`),
//! recording a new key, hashed (`add_hashed`), and removing a host the way `ssh-keygen -R`
//! does (`forget`). russh's own known_hosts helpers are not used because they understand none of
//! the above.

use crate::error::{Error, Result};
use crate::ssh::pattern::{self, Case, ListMatch};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::public::KeyData;
use russh::keys::{Algorithm, Certificate, EcdsaCurve, HashAlg, PublicKey};
use sha1::Sha1;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Files larger than this are refused rather than read: a real known_hosts file is a few
/// kilobytes, and a runaway one should not exhaust memory.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Lines longer than this are not parsed as keys. The largest RSA key OpenSSH accepts encodes to
/// about 3 KiB, so nothing legitimate comes near it; it bounds base64 and key decoding work.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Prefix of a hashed host name (hostfile.c HASH_MAGIC).
const HASH_MAGIC: &str = "|1|";

/// Length of an HMAC-SHA1 salt and digest.
const SHA1_BYTES: usize = 20;

/// extract_salt refuses a base64 salt longer than this.
const MAX_SALT_TEXT_BYTES: usize = 1024;

/// hostkeys_foreach_file reads the key type into a 128-byte buffer.
const MAX_KEY_TYPE_NAME_BYTES: usize = 127;

/// OpenSSH refuses RSA keys with a smaller modulus (SSH_RSA_MINIMUM_MODULUS_SIZE).
const MIN_RSA_BITS: usize = 1024;

/// The name ssh files a host's keys under in known_hosts, looks them up by, and `ssh-keygen -R`
/// removes: the `HostKeyAlias` when one is set (lowercased as ssh lowercases it; ssh then uses
/// nothing else, not even the port), otherwise [`host_pattern_name`] of the host and port.
pub fn host_key_name(host: &str, port: u16, alias: Option<&str>) -> String {
    match alias {
        Some(alias) => alias.to_ascii_lowercase(),
        None => host_pattern_name(host, port),
    }
}

/// How OpenSSH names a host in known_hosts: "host" for port 22, "\[host\]:port" otherwise.
///
/// The name is lowercased, as ssh lowercases the host it connects to before looking it up and
/// before recording it, so that the case-insensitive pattern match of OpenSSH applies.
pub fn host_pattern_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    // put_host_port treats port 0 like the default port.
    if port == 22 || port == 0 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// The marker that may start a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// A plain host key.
    None,
    /// `@cert-authority`: the key is a CA whose host certificates are trusted.
    CertAuthority,
    /// `@revoked`: the key must never be accepted.
    Revoked,
}

/// The host field of a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostField {
    /// Comma-separated patterns as written, e.g. `*.example.com,!bad.example.com`.
    Patterns(String),
    /// `|1|salt|hash`: HMAC-SHA1 of the host name keyed with the salt.
    Hashed {
        salt: [u8; SHA1_BYTES],
        hash: [u8; SHA1_BYTES],
    },
}

impl HostField {
    /// Whether `name` (as produced by [`host_pattern_name`]) is selected by this field.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostField::Patterns(patterns) => {
                pattern::match_list(name.as_bytes(), patterns.as_bytes(), Case::FoldPatterns)
                    == ListMatch::Positive
            }
            HostField::Hashed { salt, hash } => hmac_sha1(salt, name.as_bytes()) == Some(*hash),
        }
    }

    /// `None` for a hashed field OpenSSH rejects, and for one it accepts but can never match
    /// (it compares the field with a freshly encoded hash as text, so any non-canonical base64
    /// never compares equal).
    fn parse(field: &[u8]) -> Option<HostField> {
        if field.first() == Some(&b'|') {
            match parse_hashed(field) {
                Ok(Some((salt, hash))) => Some(HostField::Hashed { salt, hash }),
                _ => None,
            }
        } else {
            std::str::from_utf8(field)
                .ok()
                .map(|patterns| HostField::Patterns(patterns.to_owned()))
        }
    }
}

/// One usable line of a known_hosts file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub marker: Marker,
    pub hosts: HostField,
    pub key: PublicKey,
    pub comment: Option<String>,
}

/// Reads one line the way ssh does when it looks keys up.
///
/// `None` for blank lines, comments and anything ssh would skip: a bad marker, a bad hashed
/// name, an unknown key type, a key type that disagrees with the key, an RSA key under 1024
/// bits, or a line over [`MAX_LINE_BYTES`]. Never panics.
pub fn parse_line(line: &str) -> Option<Entry> {
    let line = line.as_bytes();
    if line.len() > MAX_LINE_BYTES {
        return None;
    }
    let Shape::Record {
        marker,
        hosts,
        after_hosts,
    } = shape(line)
    else {
        return None;
    };
    let hosts = HostField::parse(hosts)?;
    let (key, comment) = parse_key_field(after_hosts)?;
    let comment = String::from_utf8_lossy(comment);
    let comment = comment.trim_end_matches([' ', '\t', '\r']);
    Some(Entry {
        marker,
        hosts,
        key,
        comment: (!comment.is_empty()).then(|| comment.to_owned()),
    })
}

/// What the known_hosts files say about a host's key.
#[derive(Debug, Clone, PartialEq)]
pub enum HostKeyStatus {
    /// A plain entry for this host holds exactly this key.
    Known { file: PathBuf, line: usize },
    /// No entry for this host with this key type.
    Unknown,
    /// The host is known with a different key of the same type, and no entry holds this key.
    Changed {
        file: PathBuf,
        line: usize,
        old_fingerprint: String,
        key_type: String,
    },
    /// An `@revoked` line for this host names this key. Takes precedence over everything else.
    Revoked { file: PathBuf, line: usize },
    /// The key is a host certificate signed by the `@cert-authority` at this line, valid now
    /// and issued for this host (see [`check_host`]).
    Certified { file: PathBuf, line: usize },
}

/// Where ssh looks up the key a server presents (sshconnect.c `check_host_key`): under `name`
/// ([`host_key_name`]); then, when no plain entry of any type is filed under it, under the host
/// name without the port (`port_less_name`: only on a port other than 22 and without
/// HostKeyAlias, as ssh's "found matching key w/out port"). A host certificate must list
/// `principal` (the host name, or the HostKeyAlias) unless it lists no principal at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyLookup {
    pub name: String,
    pub port_less_name: Option<String>,
    pub principal: String,
}

impl HostKeyLookup {
    /// `host` as ssh connects to it (lowercased unless it is an address), its port, and
    /// `HostKeyAlias`.
    pub fn new(host: &str, port: u16, alias: Option<&str>) -> Self {
        HostKeyLookup {
            name: host_key_name(host, port, alias),
            port_less_name: (alias.is_none() && port != 22 && port != 0)
                .then(|| host_pattern_name(host, 22)),
            principal: match alias {
                Some(alias) => alias.to_ascii_lowercase(),
                None => host.to_owned(),
            },
        }
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.port_less_name.as_deref())
    }
}

/// What [`check_host`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct HostKeyCheck {
    pub status: HostKeyStatus,
    /// Why a host certificate from a trusted `@cert-authority` was not accepted, when the
    /// server showed one and, as ssh does, its plain key was judged instead.
    pub certificate_refusal: Option<String>,
}

/// The known_hosts side of ssh's `check_host_key`: what the files say about the key a server
/// presented, looked up as [`HostKeyLookup`] describes.
///
/// A host certificate is checked against the `@cert-authority` lines (under `name`, then the
/// port-less name when no authority is filed under `name`): the authority's key must have
/// signed it, it must be a host certificate, valid at `now` (Unix seconds), issued for the
/// principal, without critical options, and signed with an algorithm ssh's default
/// CASignatureAlgorithms allows. When no authority accepts it, its plain key is judged like
/// any other, as ssh does. A certificate whose authority's signature does not verify is an
/// error: ssh refuses such a key before it looks anything up.
///
/// Where this is stricter than ssh: a key `@revoked` under the port-less name is refused (ssh
/// goes on as for an unknown host); and for a certificate no authority under `name` signed,
/// ssh tries the port-less name (plain key included) before the plain key under `name`, so a
/// different key under `name` with the right one under the port-less name is accepted by ssh
/// and counts as changed here. `CASignatureAlgorithms` is not read: ssh's default list applies.
pub fn check_host(
    files: &[PathBuf],
    lookup: &HostKeyLookup,
    presented: &PublicKey,
    now: u64,
) -> Result<HostKeyCheck> {
    let mut certificate_refusal = None;
    if let KeyData::Certificate(certificate) = presented.key_data() {
        for name in lookup.names() {
            let records = load_records(files, name)?;
            match judge_certificate(&records, certificate, &lookup.principal, now)? {
                CertificateVerdict::Accepted { file, line } => {
                    return Ok(HostKeyCheck {
                        status: HostKeyStatus::Certified { file, line },
                        certificate_refusal: None,
                    });
                }
                CertificateVerdict::Revoked { file, line } => {
                    return Ok(HostKeyCheck {
                        status: HostKeyStatus::Revoked { file, line },
                        certificate_refusal: None,
                    });
                }
                // ssh goes on with the plain key, not with another name.
                CertificateVerdict::Refused(reason) => {
                    certificate_refusal = Some(reason);
                    break;
                }
                CertificateVerdict::NoAuthority => {}
            }
        }
    }
    let plain = PublicKey::new(plain_key_data(presented.key_data()).clone(), "");
    let records = load_records(files, &lookup.name)?;
    let mut status = decide(&records, &plain);
    let nothing_filed = !records.iter().any(|record| record.marker == Marker::None);
    if status == HostKeyStatus::Unknown
        && nothing_filed
        && let Some(port_less_name) = &lookup.port_less_name
    {
        let port_less_records = load_records(files, port_less_name)?;
        // Only a match counts (ssh looks there read-only and quietly); a revoked key is
        // refused, where ssh would go on as if nothing were on file.
        if let found @ (HostKeyStatus::Known { .. } | HostKeyStatus::Revoked { .. }) =
            decide(&port_less_records, &plain)
        {
            status = found;
        }
    }
    Ok(HostKeyCheck {
        status,
        certificate_refusal,
    })
}

/// Whether an `@cert-authority` line applies to the host under any name ssh would look it up
/// by: ssh then asks the server for its certificate first (order_hostkeyalgs).
pub fn has_certificate_authority(files: &[PathBuf], lookup: &HostKeyLookup) -> Result<bool> {
    for name in lookup.names() {
        let records = load_records(files, name)?;
        if records
            .iter()
            .any(|record| record.marker == Marker::CertAuthority)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Looks `key` up under `name` (see [`host_key_name`]) in `files`, in order (user files first,
/// then system files, as ssh does).
///
/// Missing files count as empty; an existing file that cannot be read is an error naming it.
/// "Changed" reports the last differing entry, which is the one ssh calls the offending key.
pub fn check(files: &[PathBuf], name: &str, key: &PublicKey) -> Result<HostKeyStatus> {
    let records = load_records(files, name)?;
    Ok(decide(&records, key))
}

/// The algorithms of the plain keys recorded under `name`, in file order, without
/// repeats. ssh puts these first in its host key algorithm preference (order_hostkeyalgs) so a
/// server that has several keys shows the one already known; a connection should do the same,
/// because `check` reports a key of a type not on file as `Unknown`, not `Changed`.
pub fn known_key_algorithms(files: &[PathBuf], name: &str) -> Result<Vec<Algorithm>> {
    let records = load_records(files, name)?;
    let mut algorithms: Vec<Algorithm> = Vec::new();
    for record in records
        .iter()
        .filter(|record| record.marker == Marker::None)
    {
        let algorithm = record.key.algorithm();
        if !algorithms.contains(&algorithm) {
            algorithms.push(algorithm);
        }
    }
    Ok(algorithms)
}

/// The fingerprint as ssh prints it: `SHA256:` and unpadded base64.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Appends `|1|salt|hash algorithm base64` for `name` (see [`host_key_name`]), with a fresh
/// random salt, as ssh does under HashKnownHosts yes. Creates the parent directory (0700) and
/// the file (0600) if missing.
pub fn add_hashed(file: &Path, name: &str, key: &PublicKey) -> Result<()> {
    check_recordable(name)?;
    let mut salt = [0u8; SHA1_BYTES];
    rand::thread_rng().fill_bytes(&mut salt);
    let hash = hmac_sha1(&salt, name.as_bytes())
        .ok_or_else(|| Error::host_key(format!("cannot hash the host name {name}")))?;
    let field = format!(
        "{HASH_MAGIC}{}|{}",
        BASE64.encode(salt),
        BASE64.encode(hash)
    );
    append_entry(file, &field, key)
}

/// What `forget` did to one existing file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forgotten {
    pub file: PathBuf,
    /// Lines removed; 0 leaves the file untouched.
    pub removed: usize,
    /// `<file>.old`, holding the previous content, when something was removed.
    pub backup: Option<PathBuf>,
}

/// Removes `name` (see [`host_key_name`]) from each file like `ssh-keygen -R` (9.2) does.
///
/// Every line whose host field selects the name goes, whole, even when it lists other hosts
/// too; `@cert-authority` and `@revoked` lines stay, as do comments and every other line, byte
/// for byte (a last line without a newline gains one, as with ssh-keygen). The new file replaces
/// the old one atomically with the old mode masked by 0644, and the old content is kept as
/// `<file>.old`. Like ssh-keygen, a file with a line ssh-keygen calls invalid is not rewritten:
/// that is an error naming the line, and no file is changed. Missing files are skipped and do
/// not appear in the result.
pub fn forget(files: &[PathBuf], name: &str) -> Result<Vec<Forgotten>> {
    let mut unique: Vec<&PathBuf> = Vec::new();
    for file in files {
        if !unique.contains(&file) {
            unique.push(file);
        }
    }
    // Plan every file before writing any, so an invalid line in one leaves all untouched.
    let mut plans = Vec::new();
    for file in unique {
        if let Some(content) = read_capped(file)? {
            let plan = plan_forget(file, &content, name.as_bytes())?;
            plans.push((file, content, plan));
        }
    }
    let mut results = Vec::new();
    for (file, content, plan) in plans {
        if plan.removed == 0 {
            results.push(Forgotten {
                file: file.clone(),
                removed: 0,
                backup: None,
            });
            continue;
        }
        let (removed, backup) = rewrite_forgetting(file, content, plan, name.as_bytes())?;
        results.push(Forgotten {
            file: file.clone(),
            removed,
            backup,
        });
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------------
// Line structure, shared by lookups and forget.

/// The first reading of a line, before the host is matched (hostkeys_foreach_file).
enum Shape<'a> {
    /// Blank, or `#` after optional blanks.
    Comment,
    /// A marker OpenSSH rejects: unknown, repeated, or not followed by a blank.
    BadMarker,
    Record {
        marker: Marker,
        hosts: &'a [u8],
        /// Everything after the host field, starting at the blank that ended it (or empty).
        after_hosts: &'a [u8],
    },
}

fn is_blank(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

fn skip_blanks(text: &[u8]) -> &[u8] {
    let blanks = text.iter().take_while(|byte| is_blank(**byte)).count();
    &text[blanks..]
}

/// Splits at the first blank: the token, and the rest starting at that blank.
fn split_token(text: &[u8]) -> (&[u8], &[u8]) {
    let end = text
        .iter()
        .position(|byte| is_blank(*byte))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// OpenSSH handles lines as C strings: nothing after a NUL byte (or a newline) is seen.
fn c_string(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .position(|byte| *byte == 0 || *byte == b'\n')
        .unwrap_or(line.len());
    &line[..end]
}

fn shape(line: &[u8]) -> Shape<'_> {
    let text = skip_blanks(c_string(line));
    if text.is_empty() || text[0] == b'#' {
        return Shape::Comment;
    }
    let Some((marker, text)) = read_marker(text) else {
        return Shape::BadMarker;
    };
    let (hosts, after_hosts) = split_token(text);
    Shape::Record {
        marker,
        hosts,
        after_hosts,
    }
}

/// check_markers: at most one `@cert-authority` or `@revoked`, case-sensitive.
fn read_marker(mut text: &[u8]) -> Option<(Marker, &[u8])> {
    let mut marker = Marker::None;
    while text.first() == Some(&b'@') {
        if marker != Marker::None {
            return None;
        }
        // OpenSSH ends the marker at the first space anywhere in the rest of the line and looks
        // for a tab only when there is no space at all, so "@revoked<TAB>host key" is rejected
        // when a space comes later. ssh-keygen -R agrees, so this quirk is kept.
        let end = text
            .iter()
            .position(|byte| *byte == b' ')
            .or_else(|| text.iter().position(|byte| *byte == b'\t'))?;
        if end <= 1 || end >= 32 {
            return None;
        }
        marker = match &text[..end] {
            b"@cert-authority" => Marker::CertAuthority,
            b"@revoked" => Marker::Revoked,
            _ => return None,
        };
        text = skip_blanks(&text[end..]);
    }
    Some((marker, text))
}

// ---------------------------------------------------------------------------------------------
// Host matching.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostMatch {
    Matched,
    NotMatched,
    /// A `|`-prefixed field whose salt OpenSSH cannot read: the line is invalid.
    BadHash,
}

/// match_maybe_hashed.
fn match_hosts(name: &[u8], hosts: &[u8]) -> HostMatch {
    if hosts.first() == Some(&b'|') {
        match parse_hashed(hosts) {
            Err(()) => HostMatch::BadHash,
            Ok(Some((salt, hash))) if hmac_sha1(&salt, name) == Some(hash) => HostMatch::Matched,
            Ok(_) => HostMatch::NotMatched,
        }
    } else if pattern::match_list(name, hosts, Case::FoldPatterns) == ListMatch::Positive {
        HostMatch::Matched
    } else {
        HostMatch::NotMatched
    }
}

type SaltAndHash = ([u8; SHA1_BYTES], [u8; SHA1_BYTES]);

/// Reads `|1|salt|hash`. `Err` when OpenSSH's extract_salt fails (the line is invalid);
/// `Ok(None)` when the salt is readable but the field is not exactly what host_hash would
/// print, since OpenSSH compares the text and such a field never matches any name.
fn parse_hashed(field: &[u8]) -> std::result::Result<Option<SaltAndHash>, ()> {
    let body = field.strip_prefix(HASH_MAGIC.as_bytes()).ok_or(())?;
    let salt_end = body.iter().position(|byte| *byte == b'|').ok_or(())?;
    let salt_text = &body[..salt_end];
    if salt_text.is_empty() || salt_text.len() > MAX_SALT_TEXT_BYTES {
        return Err(());
    }
    let salt: [u8; SHA1_BYTES] = decode_base64_like_openssh(salt_text)
        .and_then(|salt| salt.try_into().ok())
        .ok_or(())?;
    let hash_text = &body[salt_end + 1..];
    if BASE64.encode(salt).as_bytes() != salt_text {
        return Ok(None);
    }
    let hash = BASE64
        .decode(hash_text)
        .ok()
        .and_then(|hash| <[u8; SHA1_BYTES]>::try_from(hash).ok())
        .filter(|hash| BASE64.encode(hash).as_bytes() == hash_text);
    Ok(hash.map(|hash| (salt, hash)))
}

fn hmac_sha1(salt: &[u8], name: &[u8]) -> Option<[u8; SHA1_BYTES]> {
    // HMAC accepts keys of any length; the error arm exists only because the trait allows one.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(salt).ok()?;
    mac.update(name);
    mac.finalize().into_bytes().as_slice().try_into().ok()
}

/// b64_pton, as OpenSSH decodes salts and key blobs: whitespace anywhere is skipped, padding is
/// required and trailing bits must be zero.
fn decode_base64_like_openssh(text: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|byte| !byte.is_ascii_whitespace() && *byte != 0x0b)
        .collect();
    BASE64.decode(compact).ok()
}

// ---------------------------------------------------------------------------------------------
// Key types and keys.

/// A key type as OpenSSH distinguishes them: ECDSA curves differ, RSA signature algorithms
/// do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Dsa,
    Ecdsa(EcdsaCurve),
    Ed25519,
    SkEcdsa,
    SkEd25519,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyType {
    family: KeyFamily,
    certificate: bool,
}

/// peek_type_nid: the full names sshkey_read accepts at the start of a key (no short names).
fn key_type_from_name(name: &[u8]) -> Option<KeyType> {
    let plain = |family| KeyType {
        family,
        certificate: false,
    };
    let certificate = |family| KeyType {
        family,
        certificate: true,
    };
    Some(match name {
        b"ssh-ed25519" => plain(KeyFamily::Ed25519),
        b"ssh-ed25519-cert-v01@openssh.com" => certificate(KeyFamily::Ed25519),
        b"sk-ssh-ed25519@openssh.com" => plain(KeyFamily::SkEd25519),
        b"sk-ssh-ed25519-cert-v01@openssh.com" => certificate(KeyFamily::SkEd25519),
        b"ecdsa-sha2-nistp256" => plain(KeyFamily::Ecdsa(EcdsaCurve::NistP256)),
        b"ecdsa-sha2-nistp256-cert-v01@openssh.com" => {
            certificate(KeyFamily::Ecdsa(EcdsaCurve::NistP256))
        }
        b"ecdsa-sha2-nistp384" => plain(KeyFamily::Ecdsa(EcdsaCurve::NistP384)),
        b"ecdsa-sha2-nistp384-cert-v01@openssh.com" => {
            certificate(KeyFamily::Ecdsa(EcdsaCurve::NistP384))
        }
        b"ecdsa-sha2-nistp521" => plain(KeyFamily::Ecdsa(EcdsaCurve::NistP521)),
        b"ecdsa-sha2-nistp521-cert-v01@openssh.com" => {
            certificate(KeyFamily::Ecdsa(EcdsaCurve::NistP521))
        }
        b"sk-ecdsa-sha2-nistp256@openssh.com" | b"webauthn-sk-ecdsa-sha2-nistp256@openssh.com" => {
            plain(KeyFamily::SkEcdsa)
        }
        b"sk-ecdsa-sha2-nistp256-cert-v01@openssh.com" => certificate(KeyFamily::SkEcdsa),
        b"ssh-dss" => plain(KeyFamily::Dsa),
        b"ssh-dss-cert-v01@openssh.com" => certificate(KeyFamily::Dsa),
        b"ssh-rsa" | b"rsa-sha2-256" | b"rsa-sha2-512" => plain(KeyFamily::Rsa),
        b"ssh-rsa-cert-v01@openssh.com"
        | b"rsa-sha2-256-cert-v01@openssh.com"
        | b"rsa-sha2-512-cert-v01@openssh.com" => certificate(KeyFamily::Rsa),
        _ => return None,
    })
}

/// sshkey_type_from_name, which ssh-keygen -R uses to judge a line: the full names, or the
/// short names of plain types in any case.
fn key_type_name_known_to_keygen(name: &[u8]) -> bool {
    const SHORT_NAMES: [&[u8]; 6] = [
        b"ED25519",
        b"ED25519-SK",
        b"ECDSA",
        b"ECDSA-SK",
        b"DSA",
        b"RSA",
    ];
    key_type_from_name(name).is_some()
        || SHORT_NAMES
            .iter()
            .any(|short| short.eq_ignore_ascii_case(name))
}

fn key_family(data: &KeyData) -> Option<KeyFamily> {
    Some(match data {
        KeyData::Rsa(_) => KeyFamily::Rsa,
        KeyData::Dsa(_) => KeyFamily::Dsa,
        KeyData::Ecdsa(key) => KeyFamily::Ecdsa(key.curve()),
        KeyData::Ed25519(_) => KeyFamily::Ed25519,
        KeyData::SkEcdsaSha2NistP256(_) => KeyFamily::SkEcdsa,
        KeyData::SkEd25519(_) => KeyFamily::SkEd25519,
        _ => return None,
    })
}

fn key_type(data: &KeyData) -> Option<KeyType> {
    match data {
        KeyData::Certificate(certificate) => Some(KeyType {
            family: key_family(certificate.public_key())?,
            certificate: true,
        }),
        other => Some(KeyType {
            family: key_family(other)?,
            certificate: false,
        }),
    }
}

/// The key without its certificate, as sshkey_equal_public compares keys.
fn plain_key_data(data: &KeyData) -> &KeyData {
    match data {
        KeyData::Certificate(certificate) => certificate.public_key(),
        other => other,
    }
}

fn rsa_too_small(data: &KeyData) -> bool {
    let KeyData::Rsa(rsa) = plain_key_data(data) else {
        return false;
    };
    let Some(modulus) = rsa.n().as_positive_bytes() else {
        return true;
    };
    let modulus = &modulus[modulus.iter().take_while(|byte| **byte == 0).count()..];
    let bits = match modulus.first() {
        Some(top) => (modulus.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    bits < MIN_RSA_BITS
}

/// hostfile_read_key / sshkey_read on what follows the host field: the key and the comment.
fn parse_key_field(after_hosts: &[u8]) -> Option<(PublicKey, &[u8])> {
    let text = skip_blanks(after_hosts);
    if text.is_empty() || text[0] == b'#' {
        return None;
    }
    let (type_name, rest) = split_token(text);
    if rest.is_empty() {
        return None;
    }
    let named = key_type_from_name(type_name)?;
    let rest = skip_blanks(rest);
    if rest.is_empty() {
        return None;
    }
    let (blob_text, rest) = split_token(rest);
    let blob = decode_base64_like_openssh(blob_text)?;
    let key = PublicKey::from_bytes(&blob).ok()?;
    if key_type(key.key_data()) != Some(named) || rsa_too_small(key.key_data()) {
        return None;
    }
    Some((key, skip_blanks(rest)))
}

// ---------------------------------------------------------------------------------------------
// Lookup.

/// A usable line naming the host, as record_hostkey keeps it.
struct Record<'a> {
    file: &'a Path,
    line: usize,
    marker: Marker,
    key: PublicKey,
}

/// The lines of a file as getline returns them: split at `\n`, a last line without one
/// included, no empty line after a final newline.
fn lines(content: &[u8]) -> impl Iterator<Item = &[u8]> {
    let body = content.strip_suffix(b"\n").unwrap_or(content);
    (!content.is_empty())
        .then(|| body.split(|byte| *byte == b'\n'))
        .into_iter()
        .flatten()
}

/// Every usable line naming `name` in `files`, in order.
fn load_records<'a>(files: &'a [PathBuf], name: &str) -> Result<Vec<Record<'a>>> {
    let mut records = Vec::new();
    for file in files {
        if let Some(content) = read_capped(file)? {
            collect_records(file, &content, name.as_bytes(), &mut records);
        }
    }
    Ok(records)
}

fn collect_records<'a>(file: &'a Path, content: &[u8], name: &[u8], records: &mut Vec<Record<'a>>) {
    for (index, line) in lines(content).enumerate() {
        let line_number = index + 1;
        let Shape::Record {
            marker,
            hosts,
            after_hosts,
        } = shape(line)
        else {
            continue;
        };
        match match_hosts(name, hosts) {
            HostMatch::Matched => {}
            HostMatch::NotMatched => continue,
            HostMatch::BadHash => {
                tracing::debug!("{}:{line_number}: bad host hash", file.display());
                continue;
            }
        }
        if line.len() > MAX_LINE_BYTES {
            tracing::warn!(
                "{}:{line_number}: line longer than {MAX_LINE_BYTES} bytes names this host; ignored",
                file.display()
            );
            continue;
        }
        match parse_key_field(after_hosts) {
            Some((key, _comment)) => records.push(Record {
                file,
                line: line_number,
                marker,
                key,
            }),
            None => tracing::debug!(
                "{}:{line_number}: parse error in known_hosts",
                file.display()
            ),
        }
    }
}

enum CertificateVerdict {
    Accepted {
        file: PathBuf,
        line: usize,
    },
    Revoked {
        file: PathBuf,
        line: usize,
    },
    /// An authority on file signed it, but it does not hold for this host now.
    Refused(String),
    NoAuthority,
}

/// check_hostkeys_by_key_or_type for a certificate, check_key_not_revoked, then
/// sshkey_cert_check_host.
fn judge_certificate(
    records: &[Record<'_>],
    certificate: &Certificate,
    principal: &str,
    now: u64,
) -> Result<CertificateVerdict> {
    let revoked = records.iter().find(|record| {
        let revoked = plain_key_data(record.key.key_data());
        record.marker == Marker::Revoked
            && (revoked == certificate.public_key() || revoked == certificate.signature_key())
    });
    if let Some(record) = revoked {
        return Ok(CertificateVerdict::Revoked {
            file: record.file.to_path_buf(),
            line: record.line,
        });
    }
    let Some(authority) = records.iter().find(|record| {
        record.marker == Marker::CertAuthority
            && plain_key_data(record.key.key_data()) == certificate.signature_key()
    }) else {
        return Ok(CertificateVerdict::NoAuthority);
    };
    let file = authority.file.to_path_buf();
    let line = authority.line;
    if let Some(reason) = certificate_problem(certificate, principal, now) {
        return Ok(CertificateVerdict::Refused(format!(
            "the server's host certificate (signed by the CA at {}:{line}) {reason}",
            file.display()
        )));
    }
    // The validity window was checked above; what can still fail here is the signature.
    let authority_fingerprint = authority.key.fingerprint(HashAlg::Sha256);
    if certificate
        .validate_at(now, [&authority_fingerprint])
        .is_err()
    {
        return Err(Error::host_key(format!(
            "the server's host certificate claims the CA at {}:{line}, but that CA's signature \
             on it does not verify",
            file.display()
        ))
        .with_hint("someone may be intercepting the connection; ask the host's administrator")
        .transient(false));
    }
    Ok(CertificateVerdict::Accepted { file, line })
}

/// What makes a correctly signed certificate unacceptable as this host's key, in the order
/// sshkey_cert_check_host looks, said as the end of a sentence.
fn certificate_problem(certificate: &Certificate, principal: &str, now: u64) -> Option<String> {
    if certificate.cert_type() != CertType::Host {
        return Some("is a user certificate, not a host certificate".to_owned());
    }
    if now < certificate.valid_after() {
        return Some("is not valid yet".to_owned());
    }
    if now >= certificate.valid_before() {
        return Some("has expired".to_owned());
    }
    let principals = certificate.valid_principals();
    if !principals.is_empty() && !principals.iter().any(|listed| listed == principal) {
        return Some(format!(
            "is not issued for \"{}\" (it names {})",
            crate::terminal::printable(principal),
            crate::terminal::printable(principals.join(", "))
        ));
    }
    if !certificate.critical_options().is_empty() {
        return Some(
            "carries critical options, which ssh refuses in a host certificate".to_owned(),
        );
    }
    let algorithm = certificate.signature().algorithm();
    let allowed = match &algorithm {
        Algorithm::Ed25519
        | Algorithm::Ecdsa { .. }
        | Algorithm::SkEd25519
        | Algorithm::SkEcdsaSha2NistP256 => true,
        Algorithm::Rsa { hash } => matches!(hash, Some(HashAlg::Sha256 | HashAlg::Sha512)),
        _ => false,
    };
    if !allowed {
        return Some(format!(
            "is signed with {}, which ssh's CASignatureAlgorithms does not allow",
            algorithm.as_str()
        ));
    }
    None
}

/// check_hostkeys_by_key_or_type and check_key_not_revoked, with "changed" limited to keys of
/// the same type.
fn decide(records: &[Record<'_>], key: &PublicKey) -> HostKeyStatus {
    let presented = key.key_data();
    let revokes = |revoked: &KeyData| {
        let revoked = plain_key_data(revoked);
        plain_key_data(presented) == revoked
            || matches!(presented, KeyData::Certificate(certificate) if certificate.signature_key() == revoked)
    };
    if let Some(record) = records
        .iter()
        .find(|record| record.marker == Marker::Revoked && revokes(record.key.key_data()))
    {
        return HostKeyStatus::Revoked {
            file: record.file.to_path_buf(),
            line: record.line,
        };
    }
    let plain = || {
        records
            .iter()
            .filter(|record| record.marker == Marker::None)
    };
    if let Some(record) = plain().find(|record| record.key.key_data() == presented) {
        return HostKeyStatus::Known {
            file: record.file.to_path_buf(),
            line: record.line,
        };
    }
    let presented_type = key_type(presented);
    if presented_type.is_some()
        && let Some(record) = plain()
            .rev()
            .find(|record| key_type(record.key.key_data()) == presented_type)
    {
        return HostKeyStatus::Changed {
            file: record.file.to_path_buf(),
            line: record.line,
            old_fingerprint: fingerprint(&record.key),
            key_type: record.key.algorithm().as_str().to_owned(),
        };
    }
    HostKeyStatus::Unknown
}

/// The whole file, or `None` when it does not exist.
fn read_capped(file: &Path) -> Result<Option<Vec<u8>>> {
    let context = || format!("reading {}", file.display());
    // Non-blocking, so that a FIFO left at the path cannot hang the connection; it changes
    // nothing for regular files or /dev/null (UserKnownHostsFile /dev/null is common).
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(file);
    let handle = match opened {
        Ok(handle) => handle,
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(error) => return Err(Error::local_io(context(), error)),
    };
    let too_large = || {
        Error::config(format!(
            "{} is larger than {} MiB; refusing to read it as a known_hosts file",
            file.display(),
            MAX_FILE_BYTES / (1024 * 1024)
        ))
        .with_hint("check that the path really is a known_hosts file")
    };
    let length = handle
        .metadata()
        .map_err(|error| Error::local_io(context(), error))?
        .len();
    if length > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut content = Vec::with_capacity(usize::try_from(length).unwrap_or(0));
    // The size check above can be outrun by a growing file or a device; the limit here cannot.
    handle
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut content)
        .map_err(|error| Error::local_io(context(), error))?;
    if content.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    Ok(Some(content))
}

// ---------------------------------------------------------------------------------------------
// Adding.

/// Refuses a name that would make a line mean something else: blanks end the host field,
/// commas and wildcards would turn the name into patterns, and `|`, `@`, `#` at the start would
/// read as a hash, a marker or a comment.
fn check_recordable(name: &str) -> Result<()> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.bytes().any(|byte| byte <= b' ' || byte == 0x7f) {
        Some("it contains blanks or control characters")
    } else if name
        .bytes()
        .any(|byte| matches!(byte, b',' | b'*' | b'?' | b'!'))
    {
        Some("it contains one of , * ? !")
    } else if name.starts_with(['|', '@', '#']) {
        Some("it starts with |, @ or #")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(Error::config(format!(
            "cannot record a host key for \"{}\" in known_hosts: {problem}",
            crate::terminal::printable(name)
        ))
        .with_hint("use the host's DNS name or address, or a plain HostKeyAlias")),
        None => Ok(()),
    }
}

/// `algorithm base64` as sshkey_write prints a plain key.
fn key_text(key: &PublicKey) -> Result<String> {
    let refuse = || {
        Error::host_key(format!(
            "cannot record a {} key in known_hosts: only plain host keys can be recorded",
            key.algorithm().as_str()
        ))
    };
    match key_type(key.key_data()) {
        Some(KeyType {
            certificate: false, ..
        }) => {}
        _ => return Err(refuse()),
    }
    let blob = key.to_bytes().map_err(|_| refuse())?;
    Ok(format!(
        "{} {}",
        key.algorithm().as_str(),
        BASE64.encode(blob)
    ))
}

fn append_entry(file: &Path, host_field: &str, key: &PublicKey) -> Result<()> {
    let entry = format!("{host_field} {}\n", key_text(key)?);
    if let Some(parent) = file
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        && !parent.exists()
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|error| Error::local_io(format!("creating {}", parent.display()), error))?;
    }
    let context = || format!("writing {}", file.display());
    let handle = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .map_err(|error| Error::local_io(context(), error))?;
    let length = handle
        .metadata()
        .map_err(|error| Error::local_io(context(), error))?
        .len();
    let mut buffer = Vec::with_capacity(entry.len() + 1);
    if length > 0 {
        let mut last = [0u8; 1];
        handle
            .read_exact_at(&mut last, length - 1)
            .map_err(|error| Error::local_io(context(), error))?;
        // Otherwise the new entry would be glued to the last line (add_host_to_hostfile).
        if last[0] != b'\n' {
            buffer.push(b'\n');
        }
    }
    buffer.extend_from_slice(entry.as_bytes());
    // One write, so that two processes appending at once do not interleave within a line.
    (&handle)
        .write_all(&buffer)
        .map_err(|error| Error::local_io(context(), error))
}

// ---------------------------------------------------------------------------------------------
// Forgetting.

struct ForgetPlan {
    kept: Vec<u8>,
    removed: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Keep,
    Remove,
    /// ssh-keygen -R calls the line invalid and refuses to rewrite the file.
    Invalid,
}

/// How ssh-keygen -R treats one line: hostkeys_foreach_file without key parsing, then
/// known_hosts_find_delete.
fn forget_verdict(name: &[u8], line: &[u8]) -> Verdict {
    let (marker, hosts, after_hosts) = match shape(line) {
        Shape::Comment => return Verdict::Keep,
        Shape::BadMarker => return Verdict::Invalid,
        Shape::Record {
            marker,
            hosts,
            after_hosts,
        } => (marker, hosts, after_hosts),
    };
    let matched = match match_hosts(name, hosts) {
        HostMatch::Matched => true,
        HostMatch::NotMatched => false,
        HostMatch::BadHash => return Verdict::Invalid,
    };
    let text = skip_blanks(after_hosts);
    if text.is_empty() || text[0] == b'#' {
        return Verdict::Invalid;
    }
    let (type_name, rest) = split_token(text);
    if type_name.len() <= 1
        || type_name.len() > MAX_KEY_TYPE_NAME_BYTES
        || rest.is_empty()
        || !key_type_name_known_to_keygen(type_name)
    {
        return Verdict::Invalid;
    }
    let rest = skip_blanks(rest);
    if rest.is_empty() || rest[0] == b'#' {
        return Verdict::Invalid;
    }
    if matched && marker == Marker::None {
        Verdict::Remove
    } else {
        Verdict::Keep
    }
}

fn plan_forget(file: &Path, content: &[u8], name: &[u8]) -> Result<ForgetPlan> {
    let mut kept = Vec::with_capacity(content.len() + 1);
    let mut removed = 0;
    let mut invalid = Vec::new();
    for (index, line) in lines(content).enumerate() {
        match forget_verdict(name, line) {
            Verdict::Remove => removed += 1,
            Verdict::Keep => {
                kept.extend_from_slice(line);
                kept.push(b'\n');
            }
            Verdict::Invalid => invalid.push(index + 1),
        }
    }
    if let Some(first) = invalid.first() {
        let others = match invalid.len() - 1 {
            0 => String::new(),
            more => format!(" (and {more} more)"),
        };
        return Err(Error::config(format!(
            "{}:{first}{others}: not a valid known_hosts line; not rewriting {}",
            file.display(),
            file.display()
        ))
        .with_hint(
            "fix or delete that line (ssh-keygen -R refuses such files too), then try again",
        ));
    }
    Ok(ForgetPlan { kept, removed })
}

/// Replaces the file with the plan's content and keeps the old content as `<file>.old`, as
/// ssh-keygen -R does. If the file changes while the new one is written (ssh appending a key),
/// the plan is made again from the new content, so nothing appended is lost.
fn rewrite_forgetting(
    file: &Path,
    mut content: Vec<u8>,
    mut plan: ForgetPlan,
    name: &[u8],
) -> Result<(usize, Option<PathBuf>)> {
    const ATTEMPTS: usize = 5;
    for _ in 0..ATTEMPTS {
        if plan.removed == 0 {
            return Ok((0, None));
        }
        let temporary = write_temporary(file, &plan.kept)?;
        let current = match read_capped(file) {
            Ok(current) => current,
            Err(error) => {
                let _ = fs::remove_file(&temporary);
                return Err(error);
            }
        };
        if current.as_deref() != Some(content.as_slice()) {
            let _ = fs::remove_file(&temporary);
            let Some(current) = current else {
                return Ok((0, None));
            };
            plan = plan_forget(file, &current, name)?;
            content = current;
            continue;
        }
        let backup = backup_path(file);
        if let Err(error) = keep_backup(file, &backup) {
            let _ = fs::remove_file(&temporary);
            return Err(error);
        }
        if let Err(error) = fs::rename(&temporary, file) {
            let _ = fs::remove_file(&temporary);
            let _ = fs::remove_file(&backup);
            return Err(Error::local_io(
                format!("replacing {}", file.display()),
                error,
            ));
        }
        if let Some(directory) = file
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            // Make the rename durable; failing to is not worth failing the command over.
            let _ = fs::File::open(directory).and_then(|directory| directory.sync_all());
        }
        return Ok((plan.removed, Some(backup)));
    }
    Err(Error::local_io(
        format!("rewriting {}", file.display()),
        io::Error::other("the file kept changing while it was being rewritten"),
    )
    .transient(true))
}

fn backup_path(file: &Path) -> PathBuf {
    let mut backup = file.as_os_str().to_owned();
    backup.push(".old");
    PathBuf::from(backup)
}

/// A new file next to `file` holding `content`, with `file`'s mode masked by 0644 as
/// ssh-keygen sets it.
fn write_temporary(file: &Path, content: &[u8]) -> Result<PathBuf> {
    let context = |path: &Path| format!("writing {}", path.display());
    let mode = fs::metadata(file)
        .map_err(|error| Error::local_io(format!("reading {}", file.display()), error))?
        .permissions()
        .mode()
        & 0o644;
    let mut attempt = 0;
    let (temporary, mut handle) = loop {
        let suffix: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(10)
            .map(char::from)
            .collect();
        let mut temporary = file.as_os_str().to_owned();
        temporary.push(format!(".{suffix}"));
        let temporary = PathBuf::from(temporary);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
        {
            Ok(handle) => break (temporary, handle),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempt < 10 => {
                attempt += 1;
            }
            Err(error) => return Err(Error::local_io(context(&temporary), error)),
        }
    };
    let written = handle
        .write_all(content)
        .and_then(|()| handle.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| handle.sync_all());
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(Error::local_io(context(&temporary), error));
    }
    Ok(temporary)
}

/// `<file>.old` becomes the current file: a hard link as ssh-keygen makes, or a copy where the
/// filesystem has no hard links.
fn keep_backup(file: &Path, backup: &Path) -> Result<()> {
    let context = || format!("keeping {} as {}", file.display(), backup.display());
    match fs::remove_file(backup) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::local_io(context(), error)),
    }
    if fs::hard_link(file, backup).is_ok() {
        return Ok(());
    }
    fs::copy(file, backup)
        .map(|_| ())
        .map_err(|error| Error::local_io(context(), error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::Command;

    const ED25519_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILHKUezSA59XxdIZu9cSzdCZa6ISRm4jLQ6AOM7D2SGC";
    const ED25519_A_FINGERPRINT: &str = "SHA256:sfrxCrNHA+xPjNIc/qeseuMAvedKJMiFYb020nkwySE";
    const ED25519_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIF2OsHjOqLrpYBznXvWUMKd3w/y4wrBLiE6aR8JJlMeq";
    const ECDSA_256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBKAh5ctii8PIbxAxApHqV3AfBO6NzXX8h39Fyjl2ogFQF/PFqI1uXqmVsU5INAGMCP/UIqFMJuKyyehuSyDHX5M=";
    const ECDSA_384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBKuEupcw9iFZoQTJ1UwpH0+qX6qfOsTiWpV/ZCMtqbpe8VAHBB2s3pcrM4y5JCWPcD+mw6wXmWEhm6hCBjev4/c4F10YzB0ZCi732PCHbRcWLp6dbLyGv4in1cja6oBixg==";
    const RSA_E: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQC9nqH69P7Qw+vktrRuMugK/lSJXG63sTD7CV12rtnhTXEHo5ygP1goDcbt64oG6fNlmbysEc9aVrwCDlKA7lfgbEH+WuRNgEIGtcBjl52+yHFwrTFfZmBgC7dwHmgdAm/VkUveJTcoSGPLCcVeUaSRRDxjTfVP6L3oB6JAle5hEQ==";
    const RSA_E_FINGERPRINT: &str = "SHA256:I94+PMx82LxMter/CK/NIWFF9p5qW64dDKj+CiWmPi0";
    const RSA_F: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDl+arISkvzFEMW3pJphnUD2wXp+yon2DFYxZ1HiorCcOvu9WewntldL44Vb0nOUuJjlivZMdsNIQ2lwZ0Wle+fc8AEawp9+407/Ux5WUN9pUJX1caITjrAjPI6+7tZZ4IELg9SFC9cGTQe+/vVugP4ZVmyALmWYGtz3hU9CANNSQ==";

    const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).expect("test key parses")
    }

    fn blob(text: &str) -> &str {
        text.split(' ').nth(1).expect("test key has a blob")
    }

    fn write(directory: &Path, name: &str, content: &str) -> PathBuf {
        let path = directory.join(name);
        fs::write(&path, content).expect("write test file");
        path
    }

    fn status(content: &str, host: &str, port: u16, presented: &str) -> HostKeyStatus {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = write(directory.path(), "known_hosts", content);
        check(&[file], &host_pattern_name(host, port), &key(presented)).expect("check")
    }

    fn known_at(line: usize) -> impl Fn(&HostKeyStatus) -> bool {
        move |status| matches!(status, HostKeyStatus::Known { line: found, .. } if *found == line)
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn names_hosts_like_openssh() {
        assert_eq!(host_pattern_name("Example.COM", 22), "example.com");
        assert_eq!(host_pattern_name("example.com", 2222), "[example.com]:2222");
        assert_eq!(host_pattern_name("::1", 2222), "[::1]:2222");
        assert_eq!(host_pattern_name("example.com", 0), "example.com");
        // A HostKeyAlias replaces host and port.
        assert_eq!(host_key_name("example.com", 2222, Some("Box-A")), "box-a");
        assert_eq!(
            host_key_name("example.com", 2222, None),
            "[example.com]:2222"
        );
    }

    #[test]
    fn fingerprints_like_ssh_keygen() {
        assert_eq!(fingerprint(&key(ED25519_A)), ED25519_A_FINGERPRINT);
        assert_eq!(fingerprint(&key(RSA_E)), RSA_E_FINGERPRINT);
    }

    #[test]
    fn plain_entry_is_known() {
        let content = format!(
            "# first\n\nother.example.com {ED25519_B}\nexample.com {ED25519_A} me@laptop\n"
        );
        let result = status(&content, "example.com", 22, ED25519_A);
        assert!(known_at(4)(&result), "{result:?}");
        assert!(known_at(4)(&status(&content, "EXAMPLE.com", 22, ED25519_A)));
        assert_eq!(
            status(&content, "nowhere.example.com", 22, ED25519_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn port_names_use_brackets() {
        let content = format!("[example.com]:2222 {ED25519_A}\nexample.com {ED25519_B}\n");
        assert!(known_at(1)(&status(
            &content,
            "example.com",
            2222,
            ED25519_A
        )));
        // A plain name does not cover other ports, and the bracketed one does not cover 22.
        assert!(matches!(
            status(&content, "example.com", 2222, ED25519_B),
            HostKeyStatus::Changed { line: 1, .. }
        ));
        assert!(matches!(
            status(&content, "example.com", 22, ED25519_A),
            HostKeyStatus::Changed { line: 2, .. }
        ));
        let wildcard = format!("[*.example.com]:22?? {ED25519_A}\n");
        assert!(known_at(1)(&status(
            &wildcard,
            "a.example.com",
            2222,
            ED25519_A
        )));
        assert_eq!(
            status(&wildcard, "a.example.com", 22, ED25519_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn wildcards_match_like_openssh() {
        let content = format!("*.example.com,host?.test {ED25519_A}\n");
        assert!(known_at(1)(&status(
            &content,
            "a.b.example.com",
            22,
            ED25519_A
        )));
        assert!(known_at(1)(&status(&content, "host1.test", 22, ED25519_A)));
        assert_eq!(
            status(&content, "example.com", 22, ED25519_A),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            status(&content, "host12.test", 22, ED25519_A),
            HostKeyStatus::Unknown
        );
        let everything = format!("* {ED25519_A}\n");
        assert!(known_at(1)(&status(
            &everything,
            "10.0.0.1",
            2222,
            ED25519_A
        )));
    }

    #[test]
    fn negation_excludes_the_line() {
        for content in [
            format!("*.example.com,!bad.example.com {ED25519_A}\n"),
            format!("!bad.example.com,*.example.com {ED25519_A}\n"),
        ] {
            assert!(known_at(1)(&status(
                &content,
                "good.example.com",
                22,
                ED25519_A
            )));
            assert_eq!(
                status(&content, "bad.example.com", 22, ED25519_A),
                HostKeyStatus::Unknown
            );
        }
        // A negation alone selects nothing.
        assert_eq!(
            status(&format!("!bad {ED25519_A}\n"), "good", 22, ED25519_A),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn several_files_are_read_in_order() {
        let directory = tempfile::tempdir().expect("tempdir");
        let first = write(
            directory.path(),
            "user",
            &format!("example.com {ED25519_B}\n"),
        );
        let second = write(
            directory.path(),
            "global",
            &format!("# global\nexample.com {ED25519_A}\n"),
        );
        let missing = directory.path().join("missing");
        let files = vec![missing, first.clone(), second.clone()];
        assert_eq!(
            check(
                &files,
                &host_pattern_name("example.com", 22),
                &key(ED25519_A)
            )
            .expect("check"),
            HostKeyStatus::Known {
                file: second,
                line: 2
            }
        );
        assert_eq!(
            check(
                &files,
                &host_pattern_name("example.com", 22),
                &key(ED25519_B)
            )
            .expect("check"),
            HostKeyStatus::Known {
                file: first,
                line: 1
            }
        );
    }

    #[test]
    fn tabs_separate_fields() {
        let content = format!(
            "example.com\t \t{}\t{}\tmy comment\t\n",
            "ssh-ed25519",
            blob(ED25519_A)
        );
        assert!(known_at(1)(&status(&content, "example.com", 22, ED25519_A)));
        let entry = parse_line(content.trim_end_matches('\n')).expect("parses");
        assert_eq!(entry.comment.as_deref(), Some("my comment"));
        assert_eq!(entry.hosts, HostField::Patterns("example.com".into()));
    }

    #[test]
    fn crlf_lines_work() {
        let content = format!("# comment\r\nother {ED25519_B}\r\nexample.com {ED25519_A} note\r\n");
        assert!(known_at(3)(&status(&content, "example.com", 22, ED25519_A)));
        let entry = parse_line(&format!("example.com {ED25519_A} note\r")).expect("parses");
        assert_eq!(entry.comment.as_deref(), Some("note"));
        assert!(parse_line(&format!("example.com {ED25519_A}\r")).is_some());
    }

    #[test]
    fn comments_and_junk_are_skipped() {
        let content = format!(
            "# example.com {ED25519_A}\n   # example.com {ED25519_A}\n\n\t\nexample.com\nexample.com ssh-ed25519\nexample.com # {ED25519_A}\nexample.com ssh-ed25519 !!!!\nexample.com {ED25519_A}\n"
        );
        assert!(known_at(9)(&status(&content, "example.com", 22, ED25519_A)));
        assert!(parse_line("# example.com").is_none());
        assert!(parse_line("").is_none());
        assert!(parse_line("   ").is_none());
        // The key type named must be the key's own.
        assert!(parse_line(&format!("example.com ssh-rsa {}", blob(ED25519_A))).is_none());
        assert!(
            parse_line(&format!(
                "example.com ecdsa-sha2-nistp384 {}",
                blob(ECDSA_256)
            ))
            .is_none()
        );
        // sshkey_read accepts no short names.
        assert!(parse_line(&format!("example.com ED25519 {}", blob(ED25519_A))).is_none());
        // RSA signature algorithm names are accepted for an RSA key.
        assert!(parse_line(&format!("example.com rsa-sha2-512 {}", blob(RSA_E))).is_some());
    }

    fn check_host_in(content: &str, lookup: &HostKeyLookup, presented: &PublicKey) -> HostKeyCheck {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = write(directory.path(), "known_hosts", content);
        check_host(&[file], lookup, presented, now()).expect("check")
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    #[test]
    fn a_plain_host_entry_serves_another_port_when_nothing_is_filed_under_it() {
        let on_2222 = HostKeyLookup::new("example.com", 2222, None);
        assert_eq!(on_2222.port_less_name.as_deref(), Some("example.com"));
        let found = check_host_in(
            &format!("example.com {ED25519_A}\n"),
            &on_2222,
            &key(ED25519_A),
        );
        assert!(known_at(1)(&found.status), "{found:?}");
        // A different key there is no change: ssh goes on as for an unknown host.
        let other = check_host_in(
            &format!("example.com {ED25519_B}\n"),
            &on_2222,
            &key(ED25519_A),
        );
        assert_eq!(other.status, HostKeyStatus::Unknown);
        // Anything filed under [host]:port, of any type, and the plain entry is not consulted.
        let filed = format!("[example.com]:2222 {ECDSA_256}\nexample.com {ED25519_A}\n");
        assert_eq!(
            check_host_in(&filed, &on_2222, &key(ED25519_A)).status,
            HostKeyStatus::Unknown
        );
        // A revoked key stays refused there too.
        let revoked = format!("@revoked example.com {ED25519_A}\n");
        assert!(matches!(
            check_host_in(&revoked, &on_2222, &key(ED25519_A)).status,
            HostKeyStatus::Revoked { line: 1, .. }
        ));
        // With HostKeyAlias only the alias counts, and port 22 has nothing else to try.
        let aliased = HostKeyLookup::new("example.com", 2222, Some("Box"));
        assert_eq!(aliased.name, "box");
        assert_eq!(aliased.port_less_name, None);
        assert_eq!(
            check_host_in(
                &format!("example.com {ED25519_A}\n"),
                &aliased,
                &key(ED25519_A)
            )
            .status,
            HostKeyStatus::Unknown
        );
        assert_eq!(
            HostKeyLookup::new("example.com", 22, None).port_less_name,
            None
        );
    }

    /// A CA and a host key made by ssh-keygen, and host certificates signed with `options`.
    struct Authority {
        directory: tempfile::TempDir,
    }

    impl Authority {
        fn new() -> Self {
            let directory = tempfile::tempdir().expect("tempdir");
            for name in ["ca", "other_ca", "host"] {
                let output = Command::new(SSH_KEYGEN)
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(directory.path().join(name))
                    .output()
                    .expect("run ssh-keygen");
                assert!(output.status.success(), "{output:?}");
            }
            Authority { directory }
        }

        fn public(&self, name: &str) -> String {
            fs::read_to_string(self.directory.path().join(format!("{name}.pub")))
                .expect("read public key")
                .trim()
                .to_owned()
        }

        fn certificate(&self, ca: &str, options: &[&str]) -> PublicKey {
            let output = Command::new(SSH_KEYGEN)
                .args(["-q", "-I", "test", "-s"])
                .arg(self.directory.path().join(ca))
                .args(options)
                .arg(self.directory.path().join("host.pub"))
                .output()
                .expect("run ssh-keygen -s");
            assert!(output.status.success(), "{output:?}");
            let text = fs::read_to_string(self.directory.path().join("host-cert.pub"))
                .expect("read certificate");
            let certificate = Certificate::from_openssh(text.trim()).expect("certificate parses");
            PublicKey::new(KeyData::Certificate(Box::new(certificate)), "")
        }
    }

    #[test]
    fn host_certificates_are_judged_like_ssh() {
        let authority = Authority::new();
        let trusted = format!("@cert-authority *.example.com {}\n", authority.public("ca"));
        let lookup = HostKeyLookup::new("gpu.example.com", 22, None);
        let certified = |options: &[&str]| {
            check_host_in(&trusted, &lookup, &authority.certificate("ca", options))
        };
        let valid = certified(&["-h", "-n", "gpu.example.com", "-V", "-5m:+5m"]);
        assert_eq!(
            valid.status,
            HostKeyStatus::Certified {
                file: valid_file(&valid),
                line: 1
            }
        );
        // No principals at all is accepted for a host, as ssh accepts it.
        assert!(matches!(
            certified(&["-h"]).status,
            HostKeyStatus::Certified { .. }
        ));
        for (options, reason) in [
            (
                &["-h", "-n", "cpu.example.com"][..],
                "is not issued for \"gpu.example.com\"",
            ),
            (&["-n", "gpu.example.com"][..], "is a user certificate"),
            (&["-h", "-V", "-2h:-1h"][..], "has expired"),
            (&["-h", "-V", "+1h:+2h"][..], "is not valid yet"),
        ] {
            let refused = certified(options);
            // Its plain key is then judged, and is not on file.
            assert_eq!(refused.status, HostKeyStatus::Unknown, "{options:?}");
            let refusal = refused.certificate_refusal.unwrap_or_default();
            assert!(refusal.contains(reason), "{options:?}: {refusal}");
        }
        // Another CA's certificate, with the plain key on file: judged as the plain key.
        let plain_on_file = format!("{trusted}gpu.example.com {}\n", authority.public("host"));
        let other = check_host_in(
            &plain_on_file,
            &lookup,
            &authority.certificate("other_ca", &["-h"]),
        );
        assert!(known_at(2)(&other.status), "{other:?}");
        assert_eq!(other.certificate_refusal, None);
        // A revoked authority or host key refuses the certificate.
        for revoked_name in ["ca", "host"] {
            let content = format!("{trusted}@revoked * {}\n", authority.public(revoked_name));
            assert!(matches!(
                check_host_in(&content, &lookup, &authority.certificate("ca", &["-h"])).status,
                HostKeyStatus::Revoked { line: 2, .. }
            ));
        }
        // The authority filed for the host without its port serves another port.
        let on_2222 = HostKeyLookup::new("gpu.example.com", 2222, None);
        let by_host = check_host_in(&trusted, &on_2222, &authority.certificate("ca", &["-h"]));
        assert!(matches!(by_host.status, HostKeyStatus::Certified { .. }));
        // HostKeyAlias is the name a certificate must be issued for.
        let aliased = HostKeyLookup::new("10.0.0.5", 22, Some("GPU.example.com"));
        let by_alias = check_host_in(
            &trusted,
            &aliased,
            &authority.certificate("ca", &["-h", "-n", "gpu.example.com"]),
        );
        assert!(matches!(by_alias.status, HostKeyStatus::Certified { .. }));
    }

    fn valid_file(checked: &HostKeyCheck) -> PathBuf {
        match &checked.status {
            HostKeyStatus::Certified { file, .. } => file.clone(),
            other => panic!("not certified: {other:?}"),
        }
    }

    #[test]
    fn a_certificate_whose_signature_does_not_verify_is_an_error() {
        let authority = Authority::new();
        let certificate = authority.certificate("ca", &["-h"]);
        let KeyData::Certificate(certificate) = certificate.key_data() else {
            panic!("not a certificate");
        };
        let mut blob = certificate.to_bytes().expect("encode");
        // The signature is the last field; its last byte belongs to the signature proper.
        let last = blob.len() - 1;
        blob[last] ^= 0x01;
        let forged = Certificate::from_bytes(&blob).expect("still parses");
        let forged = PublicKey::new(KeyData::Certificate(Box::new(forged)), "");
        let directory = tempfile::tempdir().expect("tempdir");
        let file = write(
            directory.path(),
            "known_hosts",
            &format!("@cert-authority * {}\n", authority.public("ca")),
        );
        let lookup = HostKeyLookup::new("gpu.example.com", 22, None);
        let error = check_host(&[file], &lookup, &forged, now()).expect_err("forged");
        assert_eq!(error.kind(), crate::ErrorKind::HostKey);
        assert!(error.to_string().contains("does not verify"), "{error}");
    }

    #[test]
    fn revoked_takes_precedence() {
        let content = format!("example.com {ED25519_A}\n@revoked * {ED25519_A}\n");
        assert!(matches!(
            status(&content, "example.com", 22, ED25519_A),
            HostKeyStatus::Revoked { line: 2, .. }
        ));
        // A revocation for other hosts does not apply.
        let elsewhere =
            format!("example.com {ED25519_A}\n@revoked other.example.com {ED25519_A}\n");
        assert!(known_at(1)(&status(
            &elsewhere,
            "example.com",
            22,
            ED25519_A
        )));
        // Revoking another key changes nothing.
        let other_key = format!("example.com {ED25519_A}\n@revoked * {ED25519_B}\n");
        assert!(known_at(1)(&status(
            &other_key,
            "example.com",
            22,
            ED25519_A
        )));
        let entry =
            parse_line(&format!("@revoked\t*\t{}", ED25519_A.replace(' ', "\t"))).expect("tabs");
        assert_eq!(entry.marker, Marker::Revoked);
    }

    #[test]
    fn markers_are_checked_like_openssh() {
        // check_markers ends a marker at the first space anywhere, so a tab after the marker
        // only works when the rest of the line has no space.
        assert!(parse_line(&format!("@revoked\t* {ED25519_A}")).is_none());
        assert!(parse_line(&format!("@Revoked * {ED25519_A}")).is_none());
        assert!(parse_line(&format!("@revoked @revoked * {ED25519_A}")).is_none());
        assert!(parse_line(&format!("@ * {ED25519_A}")).is_none());
        let entry =
            parse_line(&format!("  @cert-authority  *.example.com {ED25519_A}")).expect("ca");
        assert_eq!(entry.marker, Marker::CertAuthority);
    }

    #[test]
    fn cert_authority_lines_are_not_host_keys() {
        let content = format!("@cert-authority *.example.com {ED25519_A}\n");
        assert_eq!(
            status(&content, "a.example.com", 22, ED25519_A),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            status(&content, "a.example.com", 22, ED25519_B),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn different_key_of_same_type_is_changed() {
        let content =
            format!("example.com {ED25519_B}\nexample.com {ECDSA_256}\n*.com {ED25519_B}\n");
        // ssh reports the last differing entry as the offending one.
        match status(&content, "example.com", 22, ED25519_A) {
            HostKeyStatus::Changed {
                line,
                old_fingerprint,
                key_type,
                ..
            } => {
                assert_eq!(line, 3);
                assert_eq!(old_fingerprint, fingerprint(&key(ED25519_B)));
                assert_eq!(key_type, "ssh-ed25519");
            }
            other => panic!("expected Changed, got {other:?}"),
        }
        // Known wins over a differing key elsewhere.
        let both = format!("example.com {ED25519_B}\nexample.com {ED25519_A}\n");
        assert!(known_at(2)(&status(&both, "example.com", 22, ED25519_A)));
        // Any RSA signature algorithm is the same type as ssh-rsa.
        let rsa = format!("example.com rsa-sha2-256 {}\n", blob(RSA_F));
        assert!(matches!(
            status(&rsa, "example.com", 22, RSA_E),
            HostKeyStatus::Changed { ref key_type, line: 1, .. } if key_type == "ssh-rsa"
        ));
    }

    #[test]
    fn other_algorithm_only_is_unknown() {
        let content = format!("example.com {ECDSA_256}\nexample.com {RSA_E}\n");
        assert_eq!(
            status(&content, "example.com", 22, ED25519_A),
            HostKeyStatus::Unknown
        );
        // ECDSA curves are different algorithms.
        assert_eq!(
            status(&content, "example.com", 22, ECDSA_384),
            HostKeyStatus::Unknown
        );
        let directory = tempfile::tempdir().expect("tempdir");
        let file = write(directory.path(), "known_hosts", &content);
        let algorithms = known_key_algorithms(&[file], "example.com").expect("algorithms");
        assert_eq!(
            algorithms,
            vec![key(ECDSA_256).algorithm(), key(RSA_E).algorithm()]
        );
    }

    #[test]
    fn small_rsa_keys_are_ignored() {
        use russh::keys::ssh_encoding::Mpint;
        use russh::keys::ssh_key::public::RsaPublicKey;
        let mut modulus = vec![0xc5u8; 64];
        modulus[63] |= 1;
        let small = RsaPublicKey::new(
            Mpint::from_positive_bytes(&[1, 0, 1]),
            Mpint::from_positive_bytes(&modulus),
        )
        .expect("rsa key");
        let small = PublicKey::from(KeyData::Rsa(small));
        let line = format!(
            "example.com ssh-rsa {}",
            BASE64.encode(small.to_bytes().expect("encode"))
        );
        assert!(parse_line(&line).is_none());
        assert!(parse_line(&format!("example.com {RSA_E}")).is_some());
    }

    #[test]
    fn hashed_names_from_ssh_keygen_are_found() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = write(
            directory.path(),
            "known_hosts",
            &format!("example.com {ED25519_A}\n[127.0.0.1]:2222 {ECDSA_256}\n"),
        );
        let output = Command::new(SSH_KEYGEN)
            .arg("-H")
            .arg("-f")
            .arg(&file)
            .output()
            .expect("run ssh-keygen -H");
        assert!(output.status.success(), "{output:?}");
        let hashed = fs::read_to_string(&file).expect("read");
        assert!(
            hashed.lines().all(|line| line.starts_with("|1|")),
            "{hashed}"
        );
        for line in hashed.lines() {
            assert!(matches!(
                parse_line(line).map(|entry| entry.hosts),
                Some(HostField::Hashed { .. })
            ));
        }
        let files = [file];
        assert!(known_at(1)(
            &check(
                &files,
                &host_pattern_name("example.com", 22),
                &key(ED25519_A)
            )
            .expect("check")
        ));
        assert!(known_at(2)(
            &check(
                &files,
                &host_pattern_name("127.0.0.1", 2222),
                &key(ECDSA_256)
            )
            .expect("check")
        ));
        assert_eq!(
            check(&files, &host_pattern_name("127.0.0.1", 22), &key(ECDSA_256)).expect("check"),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn hashed_fields_are_read_like_openssh() {
        let salt = [7u8; SHA1_BYTES];
        let hash = hmac_sha1(&salt, b"example.com").expect("hmac");
        let field = format!("|1|{}|{}", BASE64.encode(salt), BASE64.encode(hash));
        let entry = parse_line(&format!("{field} {ED25519_A}")).expect("parses");
        assert!(entry.hosts.matches("example.com"));
        assert!(!entry.hosts.matches("example.org"));
        // OpenSSH compares text: a non-canonical encoding never matches.
        assert!(parse_line(&format!("{field}== {ED25519_A}")).is_none());
        assert_eq!(
            match_hosts(b"example.com", format!("{field}x").as_bytes()),
            HostMatch::NotMatched
        );
        // A salt OpenSSH cannot read makes the line invalid.
        assert_eq!(
            match_hosts(b"example.com", b"|1|abc|def"),
            HostMatch::BadHash
        );
        assert_eq!(
            match_hosts(b"example.com", b"|2|abc|def"),
            HostMatch::BadHash
        );
        assert_eq!(match_hosts(b"example.com", b"|1|"), HostMatch::BadHash);
    }

    fn ssh_keygen_finds(file: &Path, name: &str) -> bool {
        let output = Command::new(SSH_KEYGEN)
            .arg("-F")
            .arg(name)
            .arg("-f")
            .arg(file)
            .output()
            .expect("run ssh-keygen -F");
        output.status.success() && String::from_utf8_lossy(&output.stdout).contains("found")
    }

    #[test]
    fn added_lines_are_found_by_ssh_keygen() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("fresh/.ssh/known_hosts");
        add_hashed(
            &file,
            &host_pattern_name("127.0.0.1", 2222),
            &key(ED25519_A),
        )
        .expect("add hashed");
        append_entry(&file, &host_pattern_name("Example.COM", 22), &key(RSA_E)).expect("add plain");
        add_hashed(&file, &host_pattern_name("::1", 22), &key(ECDSA_384)).expect("add hashed");
        assert_eq!(mode_of(&file), 0o600);
        assert_eq!(mode_of(file.parent().expect("parent")), 0o700);
        let content = fs::read_to_string(&file).expect("read");
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(lines.len(), 3, "{content}");
        assert!(
            lines[0].starts_with("|1|") && lines[0].ends_with(ED25519_A),
            "{content}"
        );
        assert_eq!(lines[1], format!("example.com {RSA_E}"));
        assert!(ssh_keygen_finds(&file, "[127.0.0.1]:2222"));
        assert!(ssh_keygen_finds(&file, "example.com"));
        assert!(ssh_keygen_finds(&file, "::1"));
        assert!(!ssh_keygen_finds(&file, "127.0.0.1"));
        let files = [file];
        assert!(known_at(1)(
            &check(
                &files,
                &host_pattern_name("127.0.0.1", 2222),
                &key(ED25519_A)
            )
            .expect("check")
        ));
        assert!(known_at(2)(
            &check(&files, &host_pattern_name("example.com", 22), &key(RSA_E)).expect("check")
        ));
        assert!(known_at(3)(
            &check(&files, &host_pattern_name("::1", 22), &key(ECDSA_384)).expect("check")
        ));
    }

    #[test]
    fn adding_ends_an_unterminated_last_line_first() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = write(
            directory.path(),
            "known_hosts",
            &format!("other {ED25519_B}"),
        );
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        append_entry(
            &file,
            &host_pattern_name("example.com", 22),
            &key(ED25519_A),
        )
        .expect("add");
        assert_eq!(
            fs::read_to_string(&file).expect("read"),
            format!("other {ED25519_B}\nexample.com {ED25519_A}\n")
        );
        // An existing file keeps its mode.
        assert_eq!(mode_of(&file), 0o644);
    }

    #[test]
    fn adding_refuses_names_that_would_be_patterns() {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = directory.path().join("known_hosts");
        for host in [
            "", "*", "a,b", "a b", "!a", "|1|x", "@revoked", "#x", "a\tb",
        ] {
            assert!(
                add_hashed(&file, &host_pattern_name(host, 22), &key(ED25519_A)).is_err(),
                "{host:?}"
            );
        }
        assert!(!file.exists());
    }

    #[test]
    fn dev_null_and_fifos_read_as_empty() {
        let null = PathBuf::from("/dev/null");
        assert_eq!(
            check(
                std::slice::from_ref(&null),
                &host_pattern_name("example.com", 22),
                &key(ED25519_A)
            )
            .expect("check"),
            HostKeyStatus::Unknown
        );
        add_hashed(
            &null,
            &host_pattern_name("example.com", 22),
            &key(ED25519_A),
        )
        .expect("add to /dev/null");
        let directory = tempfile::tempdir().expect("tempdir");
        let fifo = directory.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert_eq!(
            check(
                &[fifo],
                &host_pattern_name("example.com", 22),
                &key(ED25519_A)
            )
            .expect("check"),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn unreadable_and_oversized_files_are_errors_naming_them() {
        let directory = tempfile::tempdir().expect("tempdir");
        let error = check(
            &[directory.path().to_path_buf()],
            &host_pattern_name("example.com", 22),
            &key(ED25519_A),
        )
        .expect_err("a directory is not readable as a file");
        assert!(
            error
                .to_string()
                .contains(&directory.path().display().to_string()),
            "{error}"
        );
        let big = directory.path().join("big");
        fs::File::create(&big)
            .and_then(|handle| handle.set_len(MAX_FILE_BYTES + 1))
            .expect("sparse file");
        let error = check(
            std::slice::from_ref(&big),
            &host_pattern_name("example.com", 22),
            &key(ED25519_A),
        )
        .expect_err("too large");
        assert!(
            error.to_string().contains(&big.display().to_string()),
            "{error}"
        );
        assert!(forget(&[big], "example.com").is_err());
        // A file below a regular file, like a missing one, is simply absent.
        let below_file = directory.path().join("big/known_hosts");
        assert_eq!(
            check(
                &[below_file],
                &host_pattern_name("example.com", 22),
                &key(ED25519_A)
            )
            .expect("check"),
            HostKeyStatus::Unknown
        );
    }

    /// Runs `ssh-keygen -R name` on one copy of `content` and `forget` on another, and checks
    /// both leave the same bytes, the same `.old` and the same mode.
    fn forget_like_ssh_keygen(content: &[u8], host: &str, port: u16, mode: u32) -> Vec<Forgotten> {
        let directory = tempfile::tempdir().expect("tempdir");
        let theirs = directory.path().join("theirs");
        let ours = directory.path().join("ours");
        for path in [&theirs, &ours] {
            fs::write(path, content).expect("write");
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let output = Command::new(SSH_KEYGEN)
            .arg("-R")
            .arg(host_pattern_name(host, port))
            .arg("-f")
            .arg(&theirs)
            .output()
            .expect("run ssh-keygen -R");
        let result = forget(std::slice::from_ref(&ours), &host_pattern_name(host, port));
        assert_eq!(
            output.status.success(),
            result.is_ok(),
            "{output:?} {result:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&fs::read(&ours).expect("ours")),
            String::from_utf8_lossy(&fs::read(&theirs).expect("theirs"))
        );
        assert_eq!(mode_of(&ours), mode_of(&theirs));
        let ours_old = backup_path(&ours);
        let theirs_old = backup_path(&theirs);
        assert_eq!(ours_old.exists(), theirs_old.exists());
        if theirs_old.exists() {
            assert_eq!(
                fs::read(&ours_old).expect("old"),
                fs::read(&theirs_old).expect("old")
            );
            assert_eq!(fs::read(&ours_old).expect("old"), content);
        }
        let leftovers: Vec<_> = fs::read_dir(directory.path())
            .expect("list")
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("ours."))
            .filter(|name| name != "ours.old")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        result.unwrap_or_default()
    }

    fn hashed_line(name: &str, key_text: &str) -> String {
        let directory = tempfile::tempdir().expect("tempdir");
        let file = write(
            directory.path(),
            "known_hosts",
            &format!("{name} {key_text}\n"),
        );
        let output = Command::new(SSH_KEYGEN)
            .arg("-H")
            .arg("-f")
            .arg(&file)
            .output()
            .expect("run ssh-keygen -H");
        assert!(output.status.success(), "{output:?}");
        fs::read_to_string(&file).expect("read")
    }

    #[test]
    fn forget_matches_ssh_keygen() {
        let content = format!(
            "# keep this comment\n\
             \n\
             example.com {ED25519_A}\n\
             other.example.com {ED25519_B}\n\
             a.test,example.com,b.test {ECDSA_256} shared line\n\
             {hashed}\
             {hashed_other}\
             [example.com]:2222 {ED25519_A}\n\
             @revoked example.com {ED25519_B}\n\
             @cert-authority example.com {ED25519_B}\n\
             !example.com,* {RSA_E}\n\
             *.com {RSA_F}\n\
             EXAMPLE.COM\t{}\t{}\ttabbed\n\
             other\t{ED25519_A}\r\n\
             example.com {ED25519_B} crlf\r\n\
             \t# indented comment\n\
             example.com {ED25519_B} last line without newline",
            "ssh-ed25519",
            blob(ED25519_A),
            hashed = hashed_line("example.com", ED25519_B),
            hashed_other = hashed_line("other.example.com", ED25519_B),
        );
        let result = forget_like_ssh_keygen(content.as_bytes(), "example.com", 22, 0o640);
        assert_eq!(result.len(), 1);
        assert_eq!(result[0].removed, 7);
        assert!(result[0].backup.is_some());

        let result = forget_like_ssh_keygen(content.as_bytes(), "example.com", 2222, 0o600);
        assert_eq!(result[0].removed, 2);
        // The `!example.com,*` line selects every other name, so use a file without it.
        let without_wildcards =
            format!("# comment\nother {ED25519_A}\n@revoked nothing.org {ED25519_B}\n");
        let result = forget_like_ssh_keygen(without_wildcards.as_bytes(), "nothing.org", 22, 0o644);
        assert_eq!(
            result,
            vec![Forgotten {
                file: result[0].file.clone(),
                removed: 0,
                backup: None
            }]
        );
        // ssh-keygen masks the mode with 0644.
        forget_like_ssh_keygen(content.as_bytes(), "example.com", 22, 0o664);
    }

    #[test]
    fn forget_refuses_files_ssh_keygen_calls_invalid() {
        for junk in [
            "example.com\n".to_owned(),
            "example.com ssh-ed25519\n".to_owned(),
            "example.com nonsense AAAA\n".to_owned(),
            "example.com 1024 35 12345\n".to_owned(),
            "@bogus example.com ssh-ed25519 AAAA\n".to_owned(),
            format!("@revoked\texample.com {ED25519_A}\n"),
            "|1|abc|def ssh-ed25519 AAAA\n".to_owned(),
            "\r\n".to_owned(),
        ] {
            let content = format!("example.com {ED25519_A}\n{junk}");
            forget_like_ssh_keygen(content.as_bytes(), "example.com", 22, 0o600);
        }
        // ssh-keygen only looks at the key type name, so these are valid to it.
        for odd in [
            "other ed25519 AAAA\n",
            "other RSA garbage\n",
            "other ssh-ed25519 \r\n",
            "other ssh-ed25519-cert-v01@openssh.com AAAA\n",
        ] {
            let content = format!("example.com {ED25519_A}\n{odd}");
            let result = forget_like_ssh_keygen(content.as_bytes(), "example.com", 22, 0o600);
            assert_eq!(result[0].removed, 1, "{odd:?}");
        }
    }

    #[test]
    fn forget_keeps_a_backup_and_handles_several_files() {
        let directory = tempfile::tempdir().expect("tempdir");
        let first = write(
            directory.path(),
            "first",
            &format!("example.com {ED25519_A}\nother {ED25519_B}\n"),
        );
        let second = write(directory.path(), "second", &format!("other {ED25519_B}\n"));
        fs::set_permissions(&first, fs::Permissions::from_mode(0o600)).expect("chmod");
        fs::write(backup_path(&first), "stale").expect("stale backup");
        let missing = directory.path().join("missing");
        let result =
            forget(&[first.clone(), second.clone(), missing], "example.com").expect("forget");
        assert_eq!(
            result,
            vec![
                Forgotten {
                    file: first.clone(),
                    removed: 1,
                    backup: Some(backup_path(&first)),
                },
                Forgotten {
                    file: second.clone(),
                    removed: 0,
                    backup: None,
                },
            ]
        );
        assert_eq!(
            fs::read_to_string(&first).expect("read"),
            format!("other {ED25519_B}\n")
        );
        assert_eq!(
            fs::read_to_string(backup_path(&first)).expect("read"),
            format!("example.com {ED25519_A}\nother {ED25519_B}\n")
        );
        assert_eq!(mode_of(&first), 0o600);
        assert!(!backup_path(&second).exists());

        // An invalid line in any file leaves every file untouched.
        let third = write(directory.path(), "third", &format!("other {ED25519_B}\n"));
        fs::write(&second, format!("example.com {ED25519_A}\n")).expect("write");
        fs::write(&third, "broken\n").expect("write");
        let error = forget(&[second.clone(), third.clone()], "example.com").expect_err("invalid");
        assert!(
            error
                .to_string()
                .contains(&format!("{}:1", third.display())),
            "{error}"
        );
        assert_eq!(
            fs::read_to_string(&second).expect("read"),
            format!("example.com {ED25519_A}\n")
        );
    }

    proptest! {
        #[test]
        fn parse_line_never_panics(line in "\\PC{0,300}") {
            let _ = parse_line(&line);
        }

        #[test]
        fn parse_line_never_panics_on_near_misses(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just("@revoked".to_owned()), Just("@cert-authority".to_owned()), Just("@".to_owned()),
                    Just("|1|".to_owned()), Just("|".to_owned()), Just("*".to_owned()), Just("!".to_owned()),
                    Just(",".to_owned()), Just(" ".to_owned()), Just("\t".to_owned()), Just("\r".to_owned()),
                    Just("#".to_owned()), Just("\0".to_owned()), Just("ssh-ed25519".to_owned()),
                    Just("ssh-rsa".to_owned()), Just("ecdsa-sha2-nistp256".to_owned()),
                    Just(blob(ED25519_A).to_owned()), Just(blob(RSA_E).to_owned()),
                    Just("AAAA".to_owned()), Just("=".to_owned()), Just("[h]:22".to_owned()),
                    "[a-zA-Z0-9+/=.]{0,40}",
                ],
                0..12,
            )
        ) {
            let line = parts.concat();
            let _ = parse_line(&line);
            let _ = forget_verdict(b"h", line.as_bytes());
            if let Shape::Record { hosts, .. } = shape(line.as_bytes()) {
                let _ = match_hosts(b"[h]:22", hosts);
            }
        }

        #[test]
        fn added_names_are_found(host in "[a-z0-9.-]{1,30}", port in 1u16..) {
            let salt = [3u8; SHA1_BYTES];
            let name = host_pattern_name(&host, port);
            let hash = hmac_sha1(&salt, name.as_bytes()).expect("hmac");
            let hashed = format!("|1|{}|{} {ED25519_A}", BASE64.encode(salt), BASE64.encode(hash));
            let plain = format!("{name} {ED25519_A}");
            for line in [hashed, plain] {
                let entry = parse_line(&line).expect("parses");
                prop_assert!(entry.hosts.matches(&name));
            }
        }
    }
}
