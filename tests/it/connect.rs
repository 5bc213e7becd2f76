//! The connection layer against a real OpenSSH sshd, through the `xfer doctor` and
//! `xfer forget-host` commands a user runs: key files of every type (and an encrypted one),
//! ssh-agent, IdentitiesOnly, ProxyJump, ProxyCommand, unknown and changed host keys,
//! forget-host, timeouts and doctor on healthy and broken aliases.

use crate::support::{
    Agent, Sshd, keygen, public_key_path, run_with_timeout, stderr, xfer_command,
};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn doctor(config: &Path, hosts: &[&str], extra: &[&str]) -> Output {
    let mut command = xfer_command();
    command.arg("doctor").arg("-F").arg(config).arg("--json");
    command.args(extra).args(hosts);
    run_with_timeout(&mut command, LIMIT)
}

fn reports(output: &Output) -> Vec<Value> {
    let text = String::from_utf8_lossy(&output.stdout);
    let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|error| {
        panic!(
            "doctor --json printed no JSON ({error}):\n{text}\nstderr:\n{}",
            stderr(output)
        )
    });
    parsed.as_array().cloned().expect("a JSON array of reports")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_passed(output: &Output) -> Value {
    let all = reports(output);
    assert_eq!(all.len(), 1);
    let report = all[0].clone();
    assert!(
        output.status.success() && report["passed"] == true,
        "doctor failed: {report:#}\nstderr:\n{}",
        stderr(output)
    );
    report
}

/// xfer without a controlling terminal, as under cron or CI: `setsid -w` starts it in a new
/// session (and waits for it), so opening /dev/tty fails as it would there.
fn xfer_without_terminal() -> Command {
    let template = xfer_command();
    let mut command = Command::new("setsid");
    command.arg("-w").arg(template.get_program());
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    command.stdin(std::process::Stdio::null());
    command
}

#[test]
fn doctor_reports_a_healthy_host() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    let output = doctor(&config, &["box"], &[]);
    let report = assert_passed(&output);
    assert_eq!(report["hostname"], "127.0.0.1");
    assert_eq!(report["port"], sshd.port());
    assert_eq!(report["user"], sshd.user());
    assert_eq!(report["exec"], "allowed");
    assert_eq!(report["sftp"], "allowed");
    assert_eq!(report["host_key_summary"], "known");
    assert_eq!(
        report["auth_summary"],
        "key client_ed25519".replace(
            "client_ed25519",
            sshd.client_key().file_name().unwrap().to_str().unwrap()
        )
    );
    let expected_name = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(report["remote_hostname"], expected_name.as_str());
    assert!(report["uname"].as_str().unwrap().starts_with("Linux"));
    assert!(report["free_bytes"].as_u64().unwrap() > 0);
    assert!(report["clock_skew_seconds"].as_i64().unwrap().abs() <= 2);
    assert!(report["latency_ms"].as_f64().unwrap() > 0.0);

    // The table form names the same facts.
    let mut command = xfer_command();
    command.arg("doctor").arg("-F").arg(&config).arg("box");
    let output = run_with_timeout(&mut command, LIMIT);
    assert!(output.status.success(), "{}", stderr(&output));
    let table = stdout(&output);
    assert!(table.starts_with("HOST"), "{table}");
    assert!(
        table.contains(&format!("127.0.0.1:{}", sshd.port())),
        "{table}"
    );
    assert!(table.contains(" ok"), "{table}");
}

#[test]
fn doctor_checks_several_hosts_and_fails_for_a_broken_one() {
    let sshd = Sshd::start();
    let config = sshd.write_client_config("good", &[]);
    // A port where nothing listens: bind one, then let it go.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    sshd.append_client_config(&config, "broken", &[&format!("Port {closed_port}")]);
    let output = doctor(&config, &["good", "broken"], &[]);
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    let all = reports(&output);
    assert_eq!(all[0]["host"], "good");
    assert_eq!(all[0]["passed"], true);
    assert_eq!(all[1]["host"], "broken");
    assert_eq!(all[1]["passed"], false);
    let problem = all[1]["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("broken") && problem.contains("connection refused"),
        "{problem}"
    );
    assert!(
        problem.contains(&format!("127.0.0.1:{closed_port}")),
        "{problem}"
    );
    assert!(
        stderr(&output).contains("1 of 2 host(s) failed"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn agent_authenticates_and_identities_only_limits_it() {
    let sshd = Sshd::start();
    let agent = Agent::start();
    agent.add(&sshd.client_key());
    let config = sshd.write_client_config(
        "via-agent",
        &["IdentitiesOnly no", "IdentityFile /nonexistent/key"],
    );
    let mut command = xfer_command();
    command
        .env("SSH_AUTH_SOCK", agent.socket())
        .args(["doctor", "--json", "-F"])
        .arg(&config)
        .arg("via-agent");
    let output = run_with_timeout(&mut command, LIMIT);
    let report = assert_passed(&output);
    assert_eq!(report["auth_summary"], "agent");

    // IdentitiesOnly: the agent's key is not named by IdentityFile, so it must not be offered.
    let other = keygen(sshd.dir(), "unauthorized", "ed25519", None);
    sshd.append_client_config(
        &config,
        "only-file",
        &[
            "IdentitiesOnly yes",
            &format!("IdentityFile {}", other.display()),
        ],
    );
    let mut command = xfer_command();
    command
        .env("SSH_AUTH_SOCK", agent.socket())
        .args(["doctor", "-F"])
        .arg(&config)
        .arg("only-file");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(7));
    let text = stdout(&output);
    assert!(text.contains("permission denied"), "{text}");
    assert!(text.contains(&other.display().to_string()), "{text}");
    assert!(
        !text.contains("agent key"),
        "the agent's key was offered: {text}"
    );
}

#[test]
fn key_types_rsa_ecdsa_and_an_rsa_host_key() {
    let sshd = Sshd::builder().host_key_type("rsa").start();
    let rsa = keygen(sshd.dir(), "user_rsa", "rsa", None);
    let ecdsa = keygen(sshd.dir(), "user_ecdsa", "ecdsa", None);
    sshd.authorize(&public_key_path(&rsa));
    sshd.authorize(&public_key_path(&ecdsa));
    let config = sshd.write_client_config("rsa", &[&format!("IdentityFile {}", rsa.display())]);
    sshd.append_client_config(
        &config,
        "ecdsa",
        &[&format!("IdentityFile {}", ecdsa.display())],
    );
    let output = doctor(&config, &["rsa"], &[]);
    let report = assert_passed(&output);
    assert_eq!(report["auth_summary"], "key user_rsa");
    assert!(
        report["host_key_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );
    let output = doctor(&config, &["ecdsa"], &[]);
    let report = assert_passed(&output);
    assert_eq!(report["auth_summary"], "key user_ecdsa");
    // The signature was rsa-sha2 (OpenSSH 9.2 refuses ssh-rsa SHA-1 signatures anyway).
    let log = sshd.log();
    assert!(log.contains("rsa-sha2-"), "{log}");
}

#[test]
fn encrypted_key_needs_an_agent_without_a_terminal() {
    let sshd = Sshd::start();
    let locked = keygen(sshd.dir(), "locked", "ed25519", Some("correct horse"));
    sshd.authorize(&public_key_path(&locked));
    let config = sshd.write_client_config(
        "locked",
        &[
            &format!("IdentityFile {}", locked.display()),
            "BatchMode no",
        ],
    );
    let mut command = xfer_without_terminal();
    command.args(["doctor", "-F"]).arg(&config).arg("locked");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(7));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("ssh-add {}", locked.display())),
        "{text}"
    );
    assert!(text.contains("no terminal"), "{text}");

    // Under BatchMode yes, on a terminal or not, it is BatchMode that keeps xfer from asking.
    sshd.append_client_config(
        &config,
        "locked-batch",
        &[
            &format!("IdentityFile {}", locked.display()),
            "BatchMode yes",
        ],
    );
    let mut command = xfer_without_terminal();
    command
        .args(["doctor", "-F"])
        .arg(&config)
        .arg("locked-batch");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(7));
    let text = stdout(&output);
    assert!(
        text.contains("BatchMode is yes, so xfer does not ask for its passphrase")
            && !text.contains("no terminal"),
        "{text}"
    );
    assert!(text.contains("BatchMode=no"), "{text}");

    // The same key through an agent works without any prompt.
    let agent = Agent::start();
    agent.add_with_passphrase(&locked, "correct horse");
    let mut command = xfer_without_terminal();
    command
        .env("SSH_AUTH_SOCK", agent.socket())
        .args(["doctor", "--json", "-F"])
        .arg(&config)
        .arg("locked");
    let report = assert_passed(&run_with_timeout(&mut command, LIMIT));
    assert_eq!(report["auth_summary"], "agent");
}

#[test]
fn a_key_readable_by_others_is_refused_with_the_fix() {
    let sshd = Sshd::start();
    let key = keygen(sshd.dir(), "loose", "ed25519", None);
    sshd.authorize(&public_key_path(&key));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let config = sshd.write_client_config("loose", &[&format!("IdentityFile {}", key.display())]);
    let mut command = xfer_command();
    command.args(["doctor", "-F"]).arg(&config).arg("loose");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(7));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("chmod 600 {}", key.display())),
        "{text}"
    );
}

#[test]
fn proxy_jump_from_config_and_command_line() {
    let jump = Sshd::start();
    let target = Sshd::start();
    // The target trusts the jump server's client key too, so one config serves both hops.
    target.authorize(&public_key_path(&jump.client_key()));
    let config = jump.write_client_config("jump", &[]);
    target.append_client_config(&config, "inner", &["ProxyJump jump"]);
    // Both hops' host keys must be known: the target's known_hosts file holds the target's key.
    let output = doctor(&config, &["inner"], &[]);
    let report = assert_passed(&output);
    assert_eq!(report["proxy_jump"], "jump");
    // sshd on the jump host logged the forwarding to the target's port.
    assert!(
        jump.log()
            .contains(&format!("127.0.0.1 port {}", target.port()))
            || jump.log().contains("direct-tcpip"),
        "jump log:\n{}",
        jump.log()
    );

    // The same through -J on the command line, with a two-hop chain (jump twice).
    target.append_client_config(&config, "inner-plain", &[]);
    let output = doctor(&config, &["inner-plain"], &["-J", "jump,jump"]);
    let report = assert_passed(&output);
    assert_eq!(report["proxy_jump"], "jump,jump");
}

#[test]
fn proxy_command_carries_the_session_and_its_failure_is_explained() {
    let jump = Sshd::start();
    let target = Sshd::start();
    target.authorize(&public_key_path(&jump.client_key()));
    let config = jump.write_client_config("jump", &[]);
    let proxy = format!("ProxyCommand ssh -F {} -W %h:%p jump", config.display());
    target.append_client_config(&config, "inner", &[&proxy]);
    let output = doctor(&config, &["inner"], &[]);
    let report = assert_passed(&output);
    assert!(
        report["proxy_command"]
            .as_str()
            .unwrap()
            .contains(&format!("-W 127.0.0.1:{}", target.port()))
    );

    target.append_client_config(
        &config,
        "bad-proxy",
        &["ProxyCommand sh -c 'echo proxy says no >&2; exit 3'"],
    );
    let mut command = xfer_command();
    command.args(["doctor", "-F"]).arg(&config).arg("bad-proxy");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(7));
    let text = stdout(&output);
    assert!(
        text.contains("ProxyCommand exited with exit status: 3"),
        "{text}"
    );
    assert!(text.contains("proxy says no"), "{text}");
}

#[test]
fn unknown_host_key_policies() {
    let sshd = Sshd::start();
    let empty = sshd.dir().join("empty_known_hosts");
    let config = sshd.write_client_config(
        "strict",
        &[&format!("UserKnownHostsFile {}", empty.display())],
    );
    let output = doctor(&config, &["strict"], &[]);
    assert_eq!(output.status.code(), Some(7));
    let report = &reports(&output)[0];
    let problem = report["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("not known") && problem.contains("SHA256:"),
        "{problem}"
    );
    let hint = report["hints"][0].as_str().unwrap();
    let advice = format!(
        "xfer doctor -o StrictHostKeyChecking=accept-new -F {} strict",
        config.display()
    );
    assert!(hint.ends_with(&advice), "{hint}");
    assert!(!empty.exists() || fs::read_to_string(&empty).unwrap().is_empty());

    // The command the hint gives, pasted, records a hashed entry, which OpenSSH then finds.
    let output = run_pasted(&format!("{advice} --json"));
    let report = assert_passed(&output);
    assert_eq!(report["host_key_summary"], "recorded");
    let recorded = fs::read_to_string(&empty).unwrap();
    assert!(recorded.starts_with("|1|"), "{recorded}");
    assert!(
        !recorded.contains("127.0.0.1"),
        "entry is not hashed: {recorded}"
    );
    let found = Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", sshd.port()))
        .arg("-f")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "ssh-keygen -F does not find the recorded key"
    );
    let output = doctor(&config, &["strict"], &[]);
    assert_eq!(assert_passed(&output)["host_key_summary"], "known");

    // Ask without a terminal refuses rather than hanging.
    let other = sshd.dir().join("other_known_hosts");
    sshd.append_client_config(
        &config,
        "ask",
        &[
            &format!("UserKnownHostsFile {}", other.display()),
            "StrictHostKeyChecking ask",
            "BatchMode no",
        ],
    );
    let mut command = xfer_without_terminal();
    command.args(["doctor", "-F"]).arg(&config).arg("ask");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(7));
    assert!(
        stdout(&output).contains("no terminal to confirm"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn changed_host_key_is_refused_until_forgotten() {
    let mut sshd = Sshd::start();
    let config = sshd.write_client_config("box", &[]);
    assert_passed(&doctor(&config, &["box"], &[]));
    let old_fingerprint =
        reports(&doctor(&config, &["box"], &[]))[0]["host_key_fingerprint"].clone();
    sshd.regenerate_host_key();

    // Even accept-new and no refuse a changed key.
    let mut advice = String::new();
    for policy in ["yes", "accept-new", "no"] {
        let output = doctor(
            &config,
            &["box"],
            &["-o", &format!("StrictHostKeyChecking={policy}")],
        );
        assert_eq!(output.status.code(), Some(7), "policy {policy}");
        let report = &reports(&output)[0];
        let problem = report["problems"][0].as_str().unwrap();
        assert!(problem.contains("HOST KEY CHANGED"), "{problem}");
        assert!(
            problem.contains(&format!("{}:1", sshd.known_hosts().display())),
            "{problem}"
        );
        assert!(
            problem.contains(old_fingerprint.as_str().unwrap()),
            "{problem}"
        );
        let hint = report["hints"][0].as_str().unwrap();
        advice = format!(
            "xfer forget-host -F {} -o StrictHostKeyChecking={policy} box",
            config.display()
        );
        assert!(hint.ends_with(&advice), "{hint}");
    }

    // The advice, pasted, forgets the key.
    let before = fs::read_to_string(sshd.known_hosts()).unwrap();
    let output = run_pasted(&advice);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains(&format!("removed 1 key(s) for [127.0.0.1]:{}", sshd.port())),
        "{}",
        stdout(&output)
    );
    let backup = sshd.dir().join("known_hosts.old");
    assert_eq!(fs::read_to_string(&backup).unwrap(), before);
    assert!(
        !fs::read_to_string(sshd.known_hosts())
            .unwrap()
            .contains(&format!("[127.0.0.1]:{}", sshd.port()))
    );
    // Forgetting again finds nothing, says so and fails.
    let output = run_pasted(&advice);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!(
            "nothing to forget: no keys for [127.0.0.1]:{} in {}",
            sshd.port(),
            sshd.known_hosts().display()
        )),
        "{}",
        stderr(&output)
    );

    let output = doctor(
        &config,
        &["box"],
        &["-o", "StrictHostKeyChecking=accept-new"],
    );
    assert_eq!(assert_passed(&output)["host_key_summary"], "recorded");
}

/// Runs a command xfer gave as advice through `sh -c`, as a person pasting it would, with the
/// built xfer first on the PATH.
fn run_pasted(command_text: &str) -> Output {
    let template = xfer_command();
    let binary = Path::new(template.get_program());
    let directory = binary.parent().expect("the binary's directory");
    let mut command = Command::new("sh");
    command.arg("-c").arg(command_text);
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let path = std::env::var("PATH").unwrap_or_default();
    command
        .env("PATH", format!("{}:{path}", directory.display()))
        .stdin(std::process::Stdio::null());
    run_with_timeout(&mut command, LIMIT)
}

/// Whether OpenSSH's own client accepts the host (the same config, a command that does nothing),
/// to hold xfer's host key decisions against.
fn ssh_accepts(config: &Path, alias: &str) -> bool {
    let mut command = Command::new("ssh");
    command
        .arg("-F")
        .arg(config)
        .args(["-o", "ConnectTimeout=10", alias, "true"])
        .stdin(std::process::Stdio::null());
    run_with_timeout(&mut command, LIMIT).status.success()
}

#[test]
fn host_key_alias_is_the_name_keys_are_found_recorded_and_forgotten_under() {
    let first = Sshd::start();
    let second = Sshd::start();
    // Two boxes reached at one address are told apart by HostKeyAlias: the file holds each key
    // under its alias, and under the first box's address and port the key of the second.
    let known = first.dir().join("alias_known_hosts");
    fs::write(
        &known,
        format!(
            "box-a {}\nbox-b {}\n[127.0.0.1]:{} {}\n",
            first.host_public_key(),
            second.host_public_key(),
            first.port(),
            second.host_public_key()
        ),
    )
    .unwrap();
    let known_line = format!("UserKnownHostsFile {}", known.display());
    let config = first.write_client_config("box-a", &["HostKeyAlias Box-A", &known_line]);
    second.append_client_config(&config, "box-b", &["HostKeyAlias box-b", &known_line]);
    first.append_client_config(&config, "plain-a", &[&known_line]);
    for alias in ["box-a", "box-b"] {
        let report = assert_passed(&doctor(&config, &[alias], &[]));
        assert_eq!(report["host_key_summary"], "known", "{alias}");
        assert!(ssh_accepts(&config, alias), "ssh refuses {alias}");
    }
    // Without the alias, the address's entry is what counts, for ssh as for xfer.
    let output = doctor(&config, &["plain-a"], &[]);
    assert_eq!(output.status.code(), Some(7));
    let problem = reports(&output)[0]["problems"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(problem.contains("HOST KEY CHANGED"), "{problem}");
    assert!(!ssh_accepts(&config, "plain-a"));

    // With an alias, a key filed only under [host]:port is not known.
    let by_port = first.dir().join("port_known_hosts");
    fs::write(
        &by_port,
        first.known_hosts_line("127.0.0.1", first.port()) + "\n",
    )
    .unwrap();
    first.append_client_config(
        &config,
        "box-c",
        &[
            "HostKeyAlias box-c",
            &format!("UserKnownHostsFile {}", by_port.display()),
        ],
    );
    let output = doctor(&config, &["box-c"], &[]);
    assert_eq!(output.status.code(), Some(7));
    let problem = reports(&output)[0]["problems"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        problem.contains("host key for box-c is not known"),
        "{problem}"
    );
    assert!(!ssh_accepts(&config, "box-c"));

    // accept-new records the key under the alias, where ssh then finds it.
    let output = doctor(
        &config,
        &["box-c"],
        &["-o", "StrictHostKeyChecking=accept-new"],
    );
    assert_eq!(assert_passed(&output)["host_key_summary"], "recorded");
    let found = |name: &str| {
        Command::new("ssh-keygen")
            .arg("-F")
            .arg(name)
            .arg("-f")
            .arg(&by_port)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(found("box-c"));
    assert!(ssh_accepts(&config, "box-c"));

    // forget-host removes the alias's entry and leaves the address's.
    let mut command = xfer_command();
    command
        .args(["forget-host", "-F"])
        .arg(&config)
        .arg("box-c");
    let output = run_with_timeout(&mut command, LIMIT);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("removed 1 key(s) for box-c"),
        "{}",
        stdout(&output)
    );
    assert!(!found("box-c"));
    assert!(found(&format!("[127.0.0.1]:{}", first.port())));
}

#[test]
fn advice_for_a_jump_host_carries_its_port_and_config_and_can_be_pasted() {
    let jump = Sshd::start();
    let target = Sshd::start();
    target.authorize(&public_key_path(&jump.client_key()));
    let config = target.write_client_config("inner", &[]);
    // The jump host's block names no port: it comes with -J, and its key is not on file yet.
    let fresh = jump.dir().join("jump_known_hosts");
    fs::write(
        &config,
        fs::read_to_string(&config).unwrap()
            + &format!(
                "\nHost jumpbox\n    HostName 127.0.0.1\n    User {}\n    IdentityFile {}\n    \
                 IdentitiesOnly yes\n    UserKnownHostsFile {}\n    StrictHostKeyChecking yes\n    \
                 BatchMode yes\n",
                jump.user(),
                jump.client_key().display(),
                fresh.display()
            ),
    )
    .unwrap();
    let jump_spec = format!("jumpbox:{}", jump.port());
    let output = doctor(&config, &["inner"], &["-J", &jump_spec]);
    assert_eq!(output.status.code(), Some(7));
    let report = &reports(&output)[0];
    let problem = report["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("via jump host") && problem.contains("is not known"),
        "{problem}"
    );
    // ssh reaches a jump host with -F and the hop's port only: so does the advice.
    let hint = report["hints"][0].as_str().unwrap();
    let advice = format!(
        "xfer doctor -o StrictHostKeyChecking=accept-new -F {} -p {} jumpbox",
        config.display(),
        jump.port()
    );
    assert!(hint.ends_with(&advice), "{hint}");
    let output = run_pasted(&format!("{advice} --json"));
    assert_eq!(assert_passed(&output)["host_key_summary"], "recorded");
    assert_passed(&doctor(&config, &["inner"], &["-J", &jump_spec]));
}

#[test]
fn a_plain_host_entry_is_found_for_another_port_as_ssh_finds_it() {
    let sshd = Sshd::start();
    // Filed under the address alone, as `ssh-keyscan 127.0.0.1` or an old port-22 entry would.
    let known = sshd.dir().join("portless_known_hosts");
    fs::write(&known, sshd.known_hosts_line("127.0.0.1", 22) + "\n").unwrap();
    let config = sshd.write_client_config(
        "portless",
        &[&format!("UserKnownHostsFile {}", known.display())],
    );
    let report = assert_passed(&doctor(&config, &["portless"], &[]));
    assert_eq!(report["host_key_summary"], "known");
    assert!(ssh_accepts(&config, "portless"));

    // Another key there is not a changed key: the host is new, as for ssh.
    let other = keygen(sshd.dir(), "other_host_key", "ed25519", None);
    let other_key = fs::read_to_string(public_key_path(&other)).unwrap();
    fs::write(&known, format!("127.0.0.1 {}", other_key)).unwrap();
    let output = doctor(&config, &["portless"], &[]);
    assert_eq!(output.status.code(), Some(7));
    let problem = reports(&output)[0]["problems"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        problem.contains(&format!(
            "host key for [127.0.0.1]:{} is not known",
            sshd.port()
        )),
        "{problem}"
    );
    assert!(!ssh_accepts(&config, "portless"));
    let output = doctor(
        &config,
        &["portless"],
        &["-o", "StrictHostKeyChecking=accept-new"],
    );
    assert_eq!(assert_passed(&output)["host_key_summary"], "recorded");
    assert!(ssh_accepts(&config, "portless"));
}

#[test]
fn a_host_certificate_from_a_listed_authority_is_accepted_as_ssh_accepts_it() {
    let work = tempfile::tempdir().unwrap();
    let ca = keygen(work.path(), "host_ca", "ed25519", None);
    let other_ca = keygen(work.path(), "other_ca", "ed25519", None);
    let sshd = Sshd::builder()
        .host_certificate(&ca, &["-n", "gpu.example.com,127.0.0.1", "-V", "-5m:+1h"])
        .start();
    let authority = |ca_key: &Path, pattern: &str| {
        let public = fs::read_to_string(public_key_path(ca_key)).unwrap();
        format!("@cert-authority {pattern} {}", public.trim())
    };
    let write_known = |name: &str, lines: &[String]| {
        let path = sshd.dir().join(name);
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        format!("UserKnownHostsFile {}", path.display())
    };
    // Only the authority is on file, for *.example.com: the alias names the host.
    let by_alias = write_known("ca_alias", &[authority(&ca, "*.example.com")]);
    let config = sshd.write_client_config("gpu", &["HostKeyAlias gpu.example.com", &by_alias]);
    // For the address without its port: found through ssh's port-less lookup.
    let by_address = write_known("ca_address", &[authority(&ca, "127.0.0.1")]);
    sshd.append_client_config(&config, "by-address", &[&by_address]);
    let report = assert_passed(&doctor(&config, &["gpu"], &[]));
    assert_eq!(report["host_key_summary"], "certified");
    assert!(ssh_accepts(&config, "gpu"));
    let report = assert_passed(&doctor(&config, &["by-address"], &[]));
    assert_eq!(report["host_key_summary"], "certified");
    assert!(ssh_accepts(&config, "by-address"));

    // A name the certificate is not issued for, and an authority that did not sign it.
    sshd.append_client_config(
        &config,
        "wrong-name",
        &["HostKeyAlias cpu.example.com", &by_alias],
    );
    let by_other = write_known("ca_other", &[authority(&other_ca, "*")]);
    sshd.append_client_config(&config, "other-ca", &[&by_other]);
    for (alias, why) in [
        ("wrong-name", "is not issued for \"cpu.example.com\""),
        ("other-ca", "is not known"),
    ] {
        let output = doctor(&config, &[alias], &[]);
        assert_eq!(output.status.code(), Some(7), "{alias}");
        let problem = reports(&output)[0]["problems"][0]
            .as_str()
            .unwrap()
            .to_string();
        assert!(problem.contains(why), "{alias}: {problem}");
        assert!(!ssh_accepts(&config, alias), "ssh accepts {alias}");
    }

    // An expired certificate is refused, saying so.
    let expired = Sshd::builder()
        .host_certificate(&ca, &["-n", "gpu.example.com", "-V", "-2h:-1h"])
        .start();
    let config = expired.write_client_config("gpu", &["HostKeyAlias gpu.example.com", &by_alias]);
    let output = doctor(&config, &["gpu"], &[]);
    assert_eq!(output.status.code(), Some(7));
    let problem = reports(&output)[0]["problems"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(problem.contains("has expired"), "{problem}");
    assert!(!ssh_accepts(&config, "gpu"));
}

#[test]
fn a_server_that_never_speaks_times_out() {
    // Accepts TCP but never sends an SSH banner: only ConnectTimeout can end this.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(4).flatten() {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let sshd = Sshd::start();
    let config = sshd.write_client_config("silent", &[&format!("Port {port}"), "ConnectTimeout 2"]);
    let started = std::time::Instant::now();
    let output = doctor(&config, &["silent"], &[]);
    assert_eq!(output.status.code(), Some(7));
    let problem = reports(&output)[0]["problems"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(problem.contains("no SSH handshake within 2 s"), "{problem}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn no_config_file_and_command_line_order_as_for_ssh() {
    let sshd = Sshd::start();
    // -F /dev/null: no configuration at all; everything comes from the command line, where
    // the first value of a setting wins, -p before -o Port included (port 1 would be refused).
    let mut command = xfer_command();
    command
        .args(["doctor", "--json", "-F", "/dev/null", "-p"])
        .arg(sshd.port().to_string())
        .args(["-o", "Port=1", "-i"])
        .arg(sshd.client_key())
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            sshd.known_hosts().display()
        ))
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg(format!("{}@127.0.0.1", sshd.user()));
    let report = assert_passed(&run_with_timeout(&mut command, LIMIT));
    assert_eq!(report["port"], sshd.port());
    assert_eq!(report["host_key_summary"], "known");
}

#[test]
fn usage_errors_have_their_exit_code() {
    let mut command = xfer_command();
    command.args(["doctor", "-o", "NoValue", "host"]);
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let mut command = xfer_command();
    command.args(["doctor", "bad;host"]);
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("contains the character ';'"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_mistyped_keyword_refuses_the_config_with_file_and_line() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("typo_config");
    fs::write(&config, "Hots gpu\n  Port 2222\n").unwrap();
    let mut command = xfer_command();
    command
        .args(["forget-host", "-F"])
        .arg(&config)
        .arg("anything");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("{} line 1", config.display()))
            && text.contains("Bad configuration option")
            && text.contains("hots"),
        "{text}"
    );
}

#[test]
fn match_exec_is_refused_clearly() {
    let sshd = Sshd::start();
    let config = sshd.dir().join("exec_config");
    fs::write(&config, "Match exec \"true\"\n  Port 1\n").unwrap();
    let mut command = xfer_command();
    command.args(["doctor", "-F"]).arg(&config).arg("anything");
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(7));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("{} line 1", config.display())) && text.contains("Match exec"),
        "{text}"
    );
}

/// Runs xfer under `script`, which gives it a pseudo-terminal, typing `typed` after a pause.
fn xfer_on_a_terminal(arguments: &[String], typed: &str) -> Output {
    let template = xfer_command();
    let mut line = String::from("exec");
    line.push(' ');
    line.push_str(template.get_program().to_str().unwrap());
    for argument in arguments {
        line.push_str(&format!(" '{argument}'"));
    }
    let mut command = Command::new("script");
    command.args(["-qfec", &line, "/dev/null"]);
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let input = format!("sleep 2; printf '{typed}\\n'");
    let mut feeder = Command::new("sh")
        .args(["-c", &input])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    command.stdin(feeder.stdout.take().unwrap());
    let output = run_with_timeout(&mut command, LIMIT);
    let _ = feeder.wait();
    output
}

#[test]
fn encrypted_key_asks_for_its_passphrase_on_a_terminal_without_echo() {
    let sshd = Sshd::start();
    let locked = keygen(sshd.dir(), "locked", "ed25519", Some("open sesame"));
    sshd.authorize(&public_key_path(&locked));
    let config = sshd.write_client_config(
        "locked",
        &[
            &format!("IdentityFile {}", locked.display()),
            "BatchMode no",
        ],
    );
    let arguments = vec![
        "doctor".to_string(),
        "-F".into(),
        config.display().to_string(),
        "locked".into(),
    ];
    let output = xfer_on_a_terminal(&arguments, "open sesame");
    let screen = stdout(&output);
    assert!(output.status.success(), "{screen}");
    assert!(
        screen.contains(&format!("Enter passphrase for key '{}'", locked.display())),
        "{screen}"
    );
    assert!(
        !screen.contains("open sesame"),
        "the passphrase was echoed: {screen}"
    );
    assert!(screen.contains("key locked"), "{screen}");
}

#[test]
fn ask_on_a_terminal_shows_the_fingerprint_and_records_on_yes() {
    let sshd = Sshd::start();
    let fresh = sshd.dir().join("fresh_known_hosts");
    let config = sshd.write_client_config(
        "askme",
        &[
            &format!("UserKnownHostsFile {}", fresh.display()),
            "StrictHostKeyChecking ask",
            "BatchMode no",
        ],
    );
    let arguments = vec![
        "doctor".to_string(),
        "-F".into(),
        config.display().to_string(),
        "askme".into(),
    ];
    let output = xfer_on_a_terminal(&arguments, "yes");
    let screen = stdout(&output);
    assert!(output.status.success(), "{screen}");
    assert!(
        screen.contains("can't be established") && screen.contains("SHA256:"),
        "{screen}"
    );
    assert!(fs::read_to_string(&fresh).unwrap().starts_with("|1|"));
}

#[test]
fn doctor_and_pull_explain_a_server_without_sftp() {
    let sshd = Sshd::builder().sftp(false).start();
    let config = sshd.write_client_config("nosftp", &[]);
    let output = doctor(&config, &["nosftp"], &[]);
    assert_eq!(output.status.code(), Some(7));
    let report = &reports(&output)[0];
    assert_eq!(report["sftp"], "refused");
    assert_eq!(report["exec"], "allowed");
    assert!(
        report["problems"][0]
            .as_str()
            .unwrap()
            .contains("refuses the SFTP subsystem"),
        "{report}"
    );
    assert!(
        report["hints"][0]
            .as_str()
            .unwrap()
            .contains("Subsystem sftp"),
        "{report}"
    );

    // SFTP only: refused, with the reason and what to do.
    let mut command = xfer_command();
    command
        .args(["pull", "--no-agent", "-F"])
        .arg(&config)
        .arg("nosftp:/etc/hostname")
        .arg(sshd.dir().join("copy"));
    let output = run_with_timeout(&mut command, LIMIT);
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("refuses the SFTP subsystem") && text.contains("xfer doctor"),
        "{text}"
    );
    assert!(!sshd.dir().join("copy").exists());

    // The agent needs only exec: the same pull works.
    let mut command = xfer_command();
    command
        .args(["pull", "-F"])
        .arg(&config)
        .arg("nosftp:/etc/hostname")
        .arg(sshd.dir().join("copy"));
    let output = run_with_timeout(&mut command, LIMIT);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        fs::read(sshd.dir().join("copy")).unwrap(),
        fs::read("/etc/hostname").unwrap()
    );
}

#[test]
fn a_certificate_signed_by_a_trusted_ca_authenticates() {
    // The server trusts a CA, not the user's key: only the certificate can get in.
    let work = tempfile::tempdir().unwrap();
    let ca = keygen(work.path(), "user_ca", "ed25519", None);
    let sshd = Sshd::builder()
        .extra_config(&format!(
            "TrustedUserCAKeys {}",
            public_key_path(&ca).display()
        ))
        .start();
    let key = keygen(sshd.dir(), "certified", "ed25519", None);
    let signed = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", "xfer-test", "-n"])
        .arg(sshd.user())
        .args(["-V", "-5m:+1h"])
        .arg(public_key_path(&key))
        .output()
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let config = sshd.write_client_config("cert", &[&format!("IdentityFile {}", key.display())]);
    let output = doctor(&config, &["cert"], &[]);
    let report = assert_passed(&output);
    assert_eq!(
        report["auth_summary"], "cert certified-cert.pub",
        "{report}"
    );
    assert!(
        report["auth_method"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{report}"
    );
}

/// A port where something else answers (an HTTP server, a wrong forward): xfer names it as
/// not SSH, with what it sent, exit 3, and no advice to re-run; an SSH version line after
/// other lines is still SSH.
#[test]
fn a_server_that_does_not_speak_ssh_is_named_as_such() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // Answers each connection as an HTTP server answers a stranger, a few times over.
        for _ in 0..3 {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("config");
    fs::write(
        &config,
        format!(
            "Host web\n  HostName 127.0.0.1\n  Port {port}\n  UserKnownHostsFile {}\n",
            work.path().join("known_hosts").display()
        ),
    )
    .unwrap();
    let mut command = xfer_without_terminal();
    command
        .args(["pull", "web:/x"])
        .arg(work.path().join("copy"))
        .arg("-F")
        .arg(&config);
    let output = run_with_timeout(&mut command, LIMIT);
    let said = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(said.contains("does not speak SSH"), "{said}");
    assert!(said.contains("HTTP/1.1 400 Bad Request"), "{said}");
    assert!(!said.contains("re-run"), "{said}");
    drop(server);
}
