//! Parity of `xfer::ssh::config::resolve` with `ssh -G`.
//!
//! Each case writes a configuration (and the files it includes) into a temporary directory,
//! runs `ssh -G -F <config> [-o ...] [-p] [-l] [-i ...] [-J] host`, and compares every field of
//! `HostConfig` that `ssh -G` prints, in ssh's printed form. ssh prints `identityfile`,
//! `certificatefile` and `globalknownhostsfile` before expanding them (it expands them only
//! when loading keys or known hosts), so for those the test expands ssh's text itself, with
//! values taken from ssh's own output; the same tokens in `userknownhostsfile`, which ssh
//! expands before printing, check that the expansion itself agrees.
//!
//! The `ssh` binary is `$XFER_SSH_BINARY` or `ssh` on the PATH; the test fails if it is missing.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use xfer::ssh::config::{
    CommandLineArgument, ConfigSource, HostConfig, JumpHost, LocalContext, Overrides,
    StrictHostKeyChecking, resolve,
};

/// The fields compared, by ssh -G's names.
const FIELDS: [&str; 25] = [
    "host",
    "hostname",
    "port",
    "user",
    "identityfile",
    "identitiesonly",
    "certificatefile",
    "proxyjump",
    "proxycommand",
    "serveraliveinterval",
    "serveralivecountmax",
    "connecttimeout",
    "userknownhostsfile",
    "globalknownhostsfile",
    "stricthostkeychecking",
    "batchmode",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "preferredauthentications",
    "numberofpasswordprompts",
    "identityagent",
    "hashknownhosts",
    "tcpkeepalive",
    "identityfile_are_defaults_consistent",
    "hostkeyalias",
];

/// One scenario: a main configuration, extra files, and a command line.
#[derive(Default, Clone)]
struct Case {
    name: &'static str,
    config: &'static str,
    /// Extra files relative to the case directory.
    files: Vec<(&'static str, &'static str)>,
    host: &'static str,
    /// `-o`, `-p`, `-i` and `-J` in command-line order, given to ssh in that order; `-i` files
    /// are created (empty) so that ssh accepts them.
    arguments: Vec<CommandLineArgument>,
    /// `-l` for ssh, given after the arguments; `user@host` for xfer.
    user: Option<&'static str>,
}

fn case(name: &'static str, host: &'static str, config: &'static str) -> Case {
    Case {
        name,
        config,
        host,
        ..Case::default()
    }
}

impl Case {
    fn file(mut self, path: &'static str, contents: &'static str) -> Self {
        self.files.push((path, contents));
        self
    }
    fn option(mut self, option: &'static str) -> Self {
        self.arguments
            .push(CommandLineArgument::Option(option.to_string()));
        self
    }
    fn port(mut self, port: &'static str) -> Self {
        self.arguments
            .push(CommandLineArgument::Port(port.to_string()));
        self
    }
    fn user(mut self, user: &'static str) -> Self {
        self.user = Some(user);
        self
    }
    fn identity(mut self, path: &'static str) -> Self {
        self.arguments
            .push(CommandLineArgument::Identity(path.to_string()));
        self
    }
    fn jump(mut self, spec: &'static str) -> Self {
        self.arguments
            .push(CommandLineArgument::Jump(spec.to_string()));
        self
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("empty config gives the defaults", "plain", ""),
        case(
            "alias with hostname port and user",
            "web",
            "Host web\n  HostName web.example.com\n  Port 2222\n  User deploy\n",
        ),
        case(
            "star pattern",
            "db.internal",
            "Host *.internal\n  Port 2200\nHost *\n  User everyone\n",
        ),
        case(
            "question mark pattern picks the right length",
            "web12",
            "Host web?\n  Port 1001\nHost web??\n  Port 1002\n",
        ),
        case(
            "negated pattern excludes the bastion itself",
            "bastion",
            "Host * !bastion\n  ProxyJump bastion\nHost bastion\n  HostName 10.0.0.1\n",
        ),
        case(
            "negated pattern lets other hosts through",
            "app",
            "Host * !bastion\n  ProxyJump bastion\nHost bastion\n  HostName 10.0.0.1\n",
        ),
        case(
            "negation first on the line wins",
            "prod1",
            "Host !prod* *\n  User dev\n",
        ),
        case(
            "space separated pattern list",
            "beta",
            "Host alpha beta gamma\n  Port 2001\n",
        ),
        case(
            "comma in a Host pattern is literal",
            "a",
            "Host a,b\n  Port 3\n",
        ),
        case(
            "first value wins",
            "web",
            "Host web\n  HostName first.example\n  Port 1111\nHost *\n  HostName second.example\n  Port 2222\n  User second\n",
        ),
        case(
            "host patterns are case sensitive and host names lowercased",
            "Web.Example",
            "Host web.example\n  Port 5\nHost Web.Example\n  Port 6\n",
        ),
        case(
            "include glob with absolute path",
            "web",
            "Include {dir}/conf.d/*.conf\nHost *\n  User fallback\n",
        )
        .file(
            "conf.d/10-web.conf",
            "Host web\n  HostName web.internal\n  Port 2201\n",
        )
        .file("conf.d/20-all.conf", "Host *\n  User from-include\n")
        .file("conf.d/skipped.txt", "Host *\n  Port 1\n"),
        case("nested include", "nested", "Include {dir}/level1.conf\n")
            .file(
                "level1.conf",
                "Include {dir}/level2.conf\nHost *\n  Port 3000\n",
            )
            .file("level2.conf", "Host nested\n  User nested-user\n"),
        case(
            "include inside an active Host block",
            "web",
            "Host web\n  Include {dir}/web.conf\n  Port 2202\nHost *\n  User other\n",
        )
        .file("web.conf", "User web-user\nHost db\n  Port 9\n"),
        case(
            "include inside an inactive Host block is never applied",
            "db",
            "Host web\n  Include {dir}/web.conf\n  Port 2202\nHost *\n  User other\n",
        )
        .file("web.conf", "User web-user\nHost db\n  Port 9\n"),
        case(
            "include of a missing file, hidden files and bracket globs",
            "x",
            "Include {dir}/missing.conf {dir}/inc/*.conf {dir}/inc/[q]*\n",
        )
        .file("inc/.hidden.conf", "Port 1\n")
        .file("inc/a.conf", "Port 2\n")
        .file("inc/quser", "User from-bracket\n"),
        case(
            "include glob with [^a]: ^ is a member, not a negation",
            "x",
            "Include {dir}/inc/[^a]*.conf\n",
        )
        .file("inc/a.conf", "Port 1001\n")
        .file("inc/b.conf", "User from-b\n")
        .file("inc/^.conf", "Host x\n  HostName caret\n"),
        case(
            "include glob with [!a] negates",
            "x",
            "Include {dir}/inc/[!a]*.conf\n",
        )
        .file("inc/a.conf", "Port 1001\n")
        .file("inc/b.conf", "User from-b\n")
        .file("inc/^.conf", "Host x\n  HostName caret\n"),
        case(
            "include glob with ] first in a set, a class, a range and an escaped star",
            "x",
            "Include {dir}/inc/[]x]1 {dir}/inc/[[:digit:]]2 {dir}/inc/[c-e]3 {dir}/inc/\\*4\n",
        )
        .file("inc/]1", "Port 1101\n")
        .file("inc/72", "User from-class\n")
        .file("inc/d3", "HostName from-range\n")
        .file("inc/*4", "ConnectTimeout 44\n")
        .file("inc/x4", "ConnectTimeout 45\n"),
        case(
            "include glob with an unknown class matches nothing",
            "x",
            "Include {dir}/inc/[[:nope:]]*\n",
        )
        .file("inc/a", "Port 1201\n"),
        case(
            "include glob over directories",
            "x",
            "Include {dir}/d*/*.conf\n",
        )
        .file("d1/a.conf", "Port 1301\n")
        .file("d2/b.conf", "User from-d2\n")
        .file("dfile", "Port 1\n"),
        case(
            "Match host tests the HostName",
            "web",
            "Host web\n  HostName web.prod.example\nMatch host *.prod.example\n  User prod-user\n",
        ),
        case(
            "Match host sees %h expanded in HostName",
            "db",
            "Host db\n  HostName %h.internal\nMatch host db.internal\n  Port 2600\n",
        ),
        case(
            "Match originalhost with a list",
            "db",
            "Match originalhost web,db\n  Port 2300\n",
        ),
        case(
            "Match negated host",
            "localbox",
            "Match !host *.example\n  Port 2301\n",
        ),
        case(
            "Match host list with a negation",
            "xy",
            "Match host x*,!xy\n  Port 1\n",
        ),
        case(
            "Match user from the command line",
            "x",
            "Match user deploy\n  Port 2302\n",
        )
        .user("deploy"),
        case(
            "Match user that does not match",
            "x",
            "Match user deploy\n  Port 2302\n",
        ),
        case(
            "Match localuser and a negated localuser",
            "x",
            "Match localuser {user}\n  Port 2303\nMatch localuser !{user},*\n  User never\n",
        ),
        case(
            "Match all",
            "web",
            "Host web\n  Port 2304\nMatch all\n  User everyone\n",
        ),
        case(
            "Match canonical and final with canonicalisation off",
            "web",
            "Match canonical\n  Port 1\nMatch final host web.example\n  User late\nHost web\n  HostName Web.Example\n",
        ),
        case(
            "Match !final applies on the first pass",
            "x",
            "Match !final\n  Port 2305\nMatch final\n  User final-user\n",
        ),
        case(
            "final pass matches Host against the new host name",
            "x",
            "Host other\n  Port 7\nHost x\n  HostName Other\nMatch final\n  User z\n",
        ),
        case(
            "HostName with %h",
            "db.short",
            "Host *.short\n  HostName %h.example.com\n",
        ),
        case(
            "HostName with %%",
            "pct",
            "Host pct\n  HostName literal%%h.%h\n",
        ),
        case(
            "IdentityFile tokens",
            "web",
            "Host web\n  HostName web.example\n  User bob\n  Port 2222\n  IdentityFile ~/.ssh/%d/%u/%h/%r/%p/%n/%l/%L/%i/%%/key\n",
        ),
        case(
            "several IdentityFiles with a duplicate",
            "web",
            "Host web\n  IdentityFile ~/.ssh/a\n  IdentityFile ~/.ssh/b\nHost *\n  IdentityFile ~/.ssh/a\n  IdentityFile /keys/c\n  IdentitiesOnly yes\n",
        ),
        case("IdentityFile none", "x", "IdentityFile none\n"),
        case(
            "CertificateFile",
            "web",
            "Host web\n  CertificateFile ~/.ssh/web-cert.pub\n  CertificateFile /certs/%h.pub\n  CertificateFile /certs/%h.pub\n  IdentityFile ~/.ssh/web\n",
        ),
        case(
            "ProxyJump chain",
            "app",
            "Host app\n  ProxyJump jump-user@bastion.example:2222,inner\n",
        ),
        case(
            "ProxyJump none wins over a later ProxyJump",
            "app",
            "Host app\n  ProxyJump none\nHost *\n  ProxyJump bastion\n",
        ),
        case(
            "ProxyJump ssh:// form",
            "app",
            "Host app\n  ProxyJump first,ssh://bob@jump.example:2022\n",
        ),
        case(
            "ProxyJump IPv6 in brackets",
            "app",
            "Host app\n  ProxyJump admin@10.1.2.3,[2001:db8::1]:2222\n",
        ),
        case(
            "ProxyJump numeric IPv4 last hop",
            "app",
            "Host app\n  ProxyJump admin@10.1.2.3:2200\n",
        ),
        case(
            "ProxyCommand keeps tokens and comments raw",
            "app",
            "Host app\n  HostName app.internal\n  ProxyCommand ssh -W %h:%p -l %r gateway # via %n %%\n",
        ),
        case(
            "ProxyJump before ProxyCommand",
            "app",
            "Host app\n  ProxyJump bastion\nHost *\n  ProxyCommand nc %h %p\n",
        ),
        case(
            "ProxyCommand before ProxyJump",
            "app",
            "Host app\n  ProxyCommand nc %h %p\nHost *\n  ProxyJump bastion\n",
        ),
        case(
            "ProxyCommand none before ProxyJump",
            "app",
            "ProxyCommand none\nProxyJump bastion\n",
        ),
        case(
            "ProxyJump none then ProxyCommand",
            "app",
            "ProxyJump none\nProxyCommand nc %h %p\n",
        ),
        case(
            "keepalive settings",
            "x",
            "Host *\n  ServerAliveInterval 1m30s\n  ServerAliveCountMax 5\n  TCPKeepAlive no\n",
        ),
        case(
            "ConnectTimeout none leaves it unset",
            "x",
            "Host *\n  ConnectTimeout none\n  ConnectTimeout 15\n",
        ),
        case(
            "several UserKnownHostsFiles with tokens",
            "web",
            "Host web\n  HostName Web.Example\n  User bob\n  Port 2022\nHost *\n  UserKnownHostsFile ~/.ssh/known_hosts.d/%h {dir}/kh/%d/%u/%r/%p/%n/%l/%L/%i/%C/%k/%% ~\n  UserKnownHostsFile /ignored\n  GlobalKnownHostsFile {dir}/global1 ~/global2\n",
        ),
        case(
            "UserKnownHostsFile and GlobalKnownHostsFile none",
            "x",
            "UserKnownHostsFile none\nGlobalKnownHostsFile none\n",
        ),
        case(
            "UserKnownHostsFile with an environment variable",
            "x",
            "UserKnownHostsFile ${HOME}/kh\n",
        ),
        case(
            "StrictHostKeyChecking yes",
            "x",
            "StrictHostKeyChecking yes\n",
        ),
        case(
            "StrictHostKeyChecking accept-new",
            "x",
            "StrictHostKeyChecking accept-new\n",
        ),
        case(
            "StrictHostKeyChecking no",
            "x",
            "StrictHostKeyChecking no\n",
        ),
        case(
            "StrictHostKeyChecking off",
            "x",
            "StrictHostKeyChecking OFF\n",
        ),
        case(
            "StrictHostKeyChecking ask",
            "x",
            "StrictHostKeyChecking ask\n",
        ),
        case(
            "Key=Value forms",
            "web",
            "Host=web\nHostName=web.example\nPort = 2400\nUser\t=\tkv\n  IdentityFile=~/.ssh/kv\n  BatchMode=yes\n",
        ),
        case(
            "quoted values",
            "web",
            "Host \"quoted host\" web\n  User \"name with space\"\n  IdentityFile \"~/.ssh/key with space\"\n  ProxyCommand \"nc\" %h %p\n",
        ),
        case(
            "unknown and unused directives",
            "x",
            "IgnoreUnknown XferUnknown*\nHost *\n  XferUnknownOption yes\n  Compression yes\n  SendEnv LANG\n  ForwardAgent no\n  Port 2401\n",
        ),
        case(
            "comments, blank lines and tabs",
            "web",
            "# comment\n\n   # indented comment\nHost web # trailing\n  Port 2402 # trailing comment\n\tUser tabbed\r\n",
        ),
        case(
            "case-insensitive keywords and values",
            "web",
            "HOST web\n  hostNAME Web.Example\n  PORT 2403\n  batchmode YES\n  HashKnownHosts true\n  IdentityAgent none\n",
        ),
        case(
            "IdentityAgent path with tokens",
            "web",
            "Host *\n  IdentityAgent ~/.ssh/agent.%h.%p.sock\n",
        ),
        case(
            "IdentityAgent with an environment variable",
            "web",
            "IdentityAgent ${HOME}/agent.sock\n",
        ),
        case(
            "interactive authentication settings, first value wins",
            "web",
            "Host web\n  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n  PreferredAuthentications keyboard-interactive,password\n  NumberOfPasswordPrompts 1\nHost *\n  PasswordAuthentication yes\n  KbdInteractiveAuthentication yes\n  PreferredAuthentications publickey\n  NumberOfPasswordPrompts 7\n",
        ),
        case(
            "the older names of KbdInteractiveAuthentication",
            "x",
            "ChallengeResponseAuthentication no\nKbdInteractiveAuthentication yes\n",
        ),
        case(
            "SkeyAuthentication and TisAuthentication set it too",
            "x",
            "Host x\n  SkeyAuthentication no\nHost *\n  TisAuthentication yes\n",
        ),
        case(
            "interactive authentication from the command line wins over the file",
            "x",
            "PasswordAuthentication yes\nKbdInteractiveAuthentication yes\nPreferredAuthentications publickey\nNumberOfPasswordPrompts 2\n",
        )
        .option("PasswordAuthentication=no")
        .option("ChallengeResponseAuthentication no")
        .option("PreferredAuthentications=password,Unknown-Method")
        .option("NumberOfPasswordPrompts=0"),
        case(
            "a quoted PreferredAuthentications with a space is one word",
            "x",
            "PreferredAuthentications \"password, publickey\"\n",
        ),
        case(
            "PreferredAuthentications with two words is refused",
            "x",
            "PreferredAuthentications password, publickey\n",
        ),
        case(
            "a negative NumberOfPasswordPrompts is refused",
            "x",
            "NumberOfPasswordPrompts -1\n",
        ),
        case(
            "a PasswordAuthentication that is not yes or no is refused",
            "x",
            "PasswordAuthentication maybe\n",
        ),
        case(
            "BatchMode makes ServerAliveInterval default to 300 (Debian)",
            "x",
            "ServerAliveInterval none\nBatchMode yes\n",
        ),
        case(
            "Debian's ProtocolKeepAlives alias",
            "x",
            "ProtocolKeepAlives 10\nBatchMode yes\n",
        ),
        case(
            "Port as a service name and with a sign",
            "x",
            "Host x\n  Port ssh\nHost *\n  Port +7\n",
        ),
        case(
            "Match criteria with = and quotes",
            "web",
            "Match host=web originalhost \"web\"\n  Port 2800\n",
        ),
        case(
            "Match final inside an included file",
            "x",
            "Include {dir}/final.conf\nHost x\n  HostName Renamed\nHost renamed\n  Port 2801\n",
        )
        .file("final.conf", "Match final\n  User final-user\n"),
        case(
            "CanonicalizeHostname without domains re-reads the configuration",
            "x",
            "CanonicalizeHostname yes\nHost x\n  HostName Other\nHost other\n  Port 2802\n",
        ),
        case("User is taken literally", "x", "User %h-%u\n"),
        case(
            "Match user sees a user given with -o",
            "x",
            "Match user ouser\n  Port 2803\n",
        )
        .option("User=ouser"),
        case(
            "ProxyJump with a trailing comment",
            "x",
            "ProxyJump bastion # the way in\n",
        ),
        case(
            "ProxyCommand with = and quotes",
            "x",
            "ProxyCommand=\"nc  %h\" %p\n",
        ),
        case(
            "addresses are canonicalised",
            "127.1",
            "Host 127.1\n  Port 2700\n",
        ),
        case("IPv6 addresses keep their case", "FE80::1", ""),
        case(
            "-p and -l take precedence over configuration",
            "web",
            "Host web\n  Port 1\n  User cfg\n",
        )
        .port("2500")
        .user("cli"),
        case(
            "several -o options override configuration",
            "web",
            "Host web\n  Port 1\n  User cfg\n  HostName cfg.example\n  StrictHostKeyChecking yes\n",
        )
        .option("Port=2501")
        .option("User=o-user")
        .option("HostName o.example")
        .option("StrictHostKeyChecking=accept-new")
        .option("ServerAliveInterval 20"),
        case(
            "-o beats -p and the configuration",
            "web",
            "Host web\n  Port 1\n",
        )
        .option("Port 2502")
        .port("2503"),
        case(
            "-i comes before configured identities",
            "web",
            "Host web\n  IdentityFile ~/.ssh/configured\n",
        )
        .identity("{dir}/id_cli")
        .option("IdentityFile=/keys/from-o"),
        case(
            "-J overrides a configured ProxyCommand",
            "web",
            "Host web\n  ProxyCommand nc %h %p\n",
        )
        .jump("admin@jump1:2200,jump2"),
        case(
            "-o ProxyJump=none overrides a configured ProxyJump",
            "web",
            "Host web\n  ProxyJump bastion\n",
        )
        .option("ProxyJump=none"),
        case(
            "-o ProxyCommand overrides a configured ProxyJump",
            "web",
            "Host web\n  ProxyJump bastion\n",
        )
        .option("ProxyCommand=connect %h %p"),
        case(
            "HostKeyAlias is lowercased",
            "web",
            "Host web\n  HostKeyAlias Box-A.Example\n",
        ),
        case(
            "HostKeyAlias takes its first value",
            "web",
            "HostKeyAlias first\nHostKeyAlias second\n",
        ),
        case("-p before -o Port: -p wins", "web", "Host web\n  Port 1\n")
            .port("2042")
            .option("Port=2041"),
        case("-o Port before -p: -o wins", "web", "Host web\n  Port 1\n")
            .option("Port=2041")
            .port("2042"),
        case("two -p: the first wins", "web", "")
            .port("2043")
            .port("2044"),
        case("-p with a service name", "web", "").port("ssh"),
        case("a bad -p after -o Port is ignored", "web", "")
            .option("Port=2045")
            .port("0"),
        case("a bad first -p is refused", "web", "").port("0"),
        case(
            "-i, -o IdentityFile and -i accumulate in order",
            "web",
            "IdentityFile ~/.ssh/configured\n",
        )
        .identity("{dir}/id_first")
        .option("IdentityFile=/keys/from-o")
        .identity("{dir}/id_second"),
        case("-J then -o ProxyCommand: -J wins", "web", "")
            .jump("bastion:2200")
            .option("ProxyCommand=nc %h %p"),
        case("-o ProxyCommand then -J is refused", "web", "")
            .option("ProxyCommand=nc %h %p")
            .jump("bastion"),
        case("-J then -o ProxyJump: -J wins", "web", "")
            .jump("first")
            .option("ProxyJump=second"),
        case("-o ProxyJump then -J is refused", "web", "")
            .option("ProxyJump=second")
            .jump("first"),
        case("-J none then -o ProxyCommand", "web", "ProxyJump bastion\n")
            .jump("none")
            .option("ProxyCommand=nc %h %p"),
        case("two -J are refused", "web", "").jump("a").jump("b"),
        case(
            "-o User before -l: -o wins",
            "web",
            "Host web\n  User cfg\n",
        )
        .option("User=from-o")
        .user("from-l"),
        // Both must refuse these.
        case("bad port is refused", "x", "Port abc\n"),
        case(
            "unsupported Match attribute is refused",
            "x",
            "Match bogus x\n  Port 1\n",
        ),
        case(
            "Match all with other criteria is refused",
            "x",
            "Match all host x\n  Port 1\n",
        ),
        case("extra arguments are refused", "x", "Host x\n  User a b\n"),
        case("unclosed quote is refused", "x", "Host x\n  User \"a\n"),
        case("jump host loop is refused", "x", "Host x\n  ProxyJump x\n"),
        case(
            "HostName with an unknown token is refused",
            "x",
            "HostName %n.example\n",
        ),
        case("host with shell metacharacters is refused", "a;b", ""),
        case(
            "empty Host pattern is refused",
            "x",
            "Host \"\"\n  Port 1\n",
        ),
        case(
            "bad ServerAliveCountMax is refused",
            "x",
            "ServerAliveCountMax lots\n",
        ),
        case("bad time is refused", "x", "ConnectTimeout 5y\n"),
        case(
            "none with other known hosts files is refused",
            "x",
            "UserKnownHostsFile /a none\n",
        ),
        case("Include on the command line is refused", "x", "").option("Include /etc/passwd"),
        case("-J with shell metacharacters is refused", "x", "").jump("a;b"),
        case(
            "a mistyped Host keyword is refused",
            "other",
            "Port 5\nHots gpu\n  Port 2222\n",
        ),
        case(
            "an unknown keyword in a block that does not apply is refused",
            "x",
            "Host nothing\n  Frobnicate yes\n",
        ),
        case(
            "a byte order mark before the first keyword is refused",
            "x",
            "\u{feff}Host x\n  Port 5\n",
        ),
        case(
            "a keyword without an argument is refused",
            "x",
            "Compression\n",
        ),
        case(
            "IgnoreUnknown after the unknown keyword is too late",
            "x",
            "UseKeychain yes\nIgnoreUnknown UseKeychain\n",
        ),
        case(
            "IgnoreUnknown in a block that does not apply is not set",
            "x",
            "Host other\n  IgnoreUnknown UseKeychain\nHost *\n  UseKeychain yes\n",
        ),
        case(
            "IgnoreUnknown takes its first value",
            "x",
            "IgnoreUnknown Other\nIgnoreUnknown UseKeychain\nUseKeychain yes\n",
        ),
        case(
            "IgnoreUnknown with a pattern list skips what it lists",
            "x",
            "IgnoreUnknown usekeychain,Xfer*\nUseKeychain yes\nXferThing 1\nPort 2901\n",
        ),
        case(
            "deprecated, unsupported and Debian keywords are accepted",
            "x",
            "Protocol 2\nCipher blowfish\nUseRoaming no\nRSAAuthentication no\nCompressionLevel 6\nGSSAPIKeyExchange yes\nGSSAPITrustDNS no\nUseBlacklistedKeys no\nSetupTimeOut 7\nPort 2902\n",
        ),
        case("an unknown -o keyword is refused", "x", "").option("Hots=x"),
        case(
            "-o IgnoreUnknown lets a later -o through",
            "x",
            "UseKeychain yes\n",
        )
        .option("IgnoreUnknown=UseKeychain")
        .option("UseKeychain=yes"),
        case(
            "-o IgnoreUnknown after the -o it should skip is too late",
            "x",
            "",
        )
        .option("UseKeychain=yes")
        .option("IgnoreUnknown=UseKeychain"),
        case(
            "too deep includes are refused",
            "x",
            "Include {dir}/loop.conf\n",
        )
        .file("loop.conf", "Include {dir}/loop.conf\n"),
    ]
}

/// What ssh's expansion of a path uses, taken from ssh's own output.
struct ExpansionValues {
    home: String,
    local_user: String,
    uid: String,
    local_host: String,
    host: String,
    remote_user: String,
    port: String,
    original_host: String,
}

/// ssh's tilde and `%` expansion for the few forms the cases use; written independently of the
/// library so that the comparison means something.
fn expand_like_ssh(raw: &str, values: &ExpansionValues) -> String {
    let with_home = if raw == "~" {
        format!("{}/", values.home)
    } else if let Some(rest) = raw.strip_prefix("~/") {
        format!("{}/{}", values.home.trim_end_matches('/'), rest)
    } else {
        raw.to_string()
    };
    let short_host = values.local_host.split('.').next().unwrap_or_default();
    let mut out = String::new();
    let mut characters = with_home.chars();
    while let Some(character) = characters.next() {
        if character != '%' {
            out.push(character);
            continue;
        }
        match characters.next() {
            Some('%') => out.push('%'),
            Some('d') => out.push_str(&values.home),
            Some('u') => out.push_str(&values.local_user),
            Some('i') => out.push_str(&values.uid),
            Some('l') => out.push_str(&values.local_host),
            Some('L') => out.push_str(short_host),
            Some('h') => out.push_str(&values.host),
            Some('r') => out.push_str(&values.remote_user),
            Some('p') => out.push_str(&values.port),
            Some('n') => out.push_str(&values.original_host),
            other => panic!("test expander does not know %{other:?} in {raw}"),
        }
    }
    out
}

type Printed = BTreeMap<String, Vec<String>>;

fn parse_ssh_output(stdout: &str) -> Printed {
    let mut printed = Printed::new();
    for line in stdout.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        printed
            .entry(key.to_string())
            .or_default()
            .push(value.to_string());
    }
    printed
}

fn single(printed: &Printed, key: &str) -> String {
    match printed.get(key).map(Vec::as_slice) {
        Some([value]) => value.clone(),
        Some(values) => panic!("ssh printed {key} {} times: {values:?}", values.len()),
        None => "(unset)".to_string(),
    }
}

/// ssh -G's output reduced to the compared fields, with the paths ssh prints unexpanded
/// expanded as ssh would when using them.
fn normalize_ssh(printed: &Printed, local: &LocalContext) -> BTreeMap<&'static str, String> {
    let values = ExpansionValues {
        home: local.home.to_string_lossy().into_owned(),
        local_user: local.user.clone(),
        uid: local.uid.to_string(),
        local_host: local.hostname.clone(),
        host: single(printed, "hostname"),
        remote_user: single(printed, "user"),
        port: single(printed, "port"),
        original_host: single(printed, "host"),
    };
    let expand_list = |key: &str| -> String {
        let lines: Vec<String> = printed
            .get(key)
            .map(|lines| {
                lines
                    .iter()
                    .filter(|line| !line.eq_ignore_ascii_case("none"))
                    .map(|line| expand_like_ssh(line, &values))
                    .collect()
            })
            .unwrap_or_default();
        lines.join("\n")
    };
    let global = single(printed, "globalknownhostsfile");
    let global = if global == "none" {
        global
    } else {
        global
            .split(' ')
            .map(|path| expand_like_ssh(path, &values))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut normalized = BTreeMap::new();
    for field in FIELDS {
        let value = match field {
            "identityfile" | "certificatefile" => expand_list(field),
            "globalknownhostsfile" => global.clone(),
            "identityfile_are_defaults_consistent" => "true".to_string(),
            _ => single(printed, field),
        };
        normalized.insert(field, value);
    }
    normalized
}

fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

fn paths(list: &[PathBuf], separator: &str) -> String {
    list.iter()
        .map(|path| path.display().to_string())
        .collect::<Vec<_>>()
        .join(separator)
}

/// A hop as ssh -G prints it: brackets for IPv6, and (last hop only) for numeric IPv4.
fn print_hop(hop: &JumpHost, last: bool) -> String {
    let numeric = hop.host.contains(':')
        || (last && hop.host.chars().all(|c| c.is_ascii_digit() || c == '.'));
    let mut text = String::new();
    if let Some(user) = &hop.user {
        text.push_str(user);
        text.push('@');
    }
    if numeric {
        text.push_str(&format!("[{}]", hop.host));
    } else {
        text.push_str(&hop.host);
    }
    if let Some(port) = hop.port {
        text.push_str(&format!(":{port}"));
    }
    text
}

/// `HostConfig` in ssh -G's printed form.
fn normalize_xfer(config: &HostConfig) -> BTreeMap<&'static str, String> {
    let mut normalized = BTreeMap::new();
    for field in FIELDS {
        let value = match field {
            "host" => config.original_host.clone(),
            "hostname" => config.hostname.clone(),
            "port" => config.port.to_string(),
            "user" => config.user.clone(),
            "identityfile" => paths(&config.identity_files, "\n"),
            "identitiesonly" => yes_no(config.identities_only),
            "certificatefile" => paths(&config.certificate_files, "\n"),
            "proxyjump" => {
                if config.proxy_jump.is_empty() {
                    "(unset)".to_string()
                } else {
                    let count = config.proxy_jump.len();
                    config
                        .proxy_jump
                        .iter()
                        .enumerate()
                        .map(|(index, hop)| print_hop(hop, index + 1 == count))
                        .collect::<Vec<_>>()
                        .join(",")
                }
            }
            "proxycommand" => config
                .proxy_command
                .clone()
                .unwrap_or_else(|| "(unset)".to_string()),
            "serveraliveinterval" => config.server_alive_interval.to_string(),
            "serveralivecountmax" => config.server_alive_count_max.to_string(),
            "connecttimeout" => config
                .connect_timeout
                .map_or_else(|| "none".to_string(), |seconds| seconds.to_string()),
            "userknownhostsfile" | "globalknownhostsfile" => {
                let list = if field == "userknownhostsfile" {
                    &config.user_known_hosts_files
                } else {
                    &config.global_known_hosts_files
                };
                if list.is_empty() {
                    "none".to_string()
                } else {
                    paths(list, " ")
                }
            }
            "stricthostkeychecking" => match config.strict_host_key_checking {
                StrictHostKeyChecking::Yes => "true",
                StrictHostKeyChecking::No => "false",
                StrictHostKeyChecking::Ask => "ask",
                StrictHostKeyChecking::AcceptNew => "accept-new",
            }
            .to_string(),
            "batchmode" => yes_no(config.batch_mode),
            "passwordauthentication" => yes_no(config.password_authentication),
            "kbdinteractiveauthentication" => yes_no(config.keyboard_interactive_authentication),
            "preferredauthentications" => config
                .preferred_authentications
                .clone()
                .unwrap_or_else(|| "(unset)".to_string()),
            "numberofpasswordprompts" => config.number_of_password_prompts.to_string(),
            "identityagent" => config
                .identity_agent
                .clone()
                .unwrap_or_else(|| "(unset)".to_string()),
            "hashknownhosts" => yes_no(config.hash_known_hosts),
            "tcpkeepalive" => yes_no(config.tcp_keepalive),
            "hostkeyalias" => config
                .host_key_alias
                .clone()
                .unwrap_or_else(|| "(unset)".to_string()),
            // ssh prints defaults only when nothing was given; xfer must say so too.
            "identityfile_are_defaults_consistent" => {
                let defaults = config.identity_files_are_defaults;
                let looks_default = config
                    .identity_files
                    .first()
                    .is_some_and(|path| path.ends_with(".ssh/id_rsa"));
                (defaults == looks_default).to_string()
            }
            other => panic!("unknown field {other}"),
        };
        normalized.insert(field, value);
    }
    normalized
}

fn ssh_binary() -> String {
    xfer::env::var(xfer::env::XFER_SSH_BINARY).unwrap_or_else(|| "ssh".to_string())
}

fn fill(text: &str, directory: &Path, local: &LocalContext) -> String {
    text.replace("{dir}", &directory.display().to_string())
        .replace("{user}", &local.user)
}

fn write_file(path: &Path, contents: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create case directory");
    }
    std::fs::write(path, contents).expect("write case file");
    // ssh refuses included files that others can write, whatever the umask.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
}

/// Runs one case; `Err` describes a difference.
fn run_case(case: &Case, root: &Path, index: usize, local: &LocalContext) -> Result<(), String> {
    let directory = root.join(format!("case-{index:02}"));
    let config_path = directory.join("config");
    let config_text = fill(case.config, &directory, local);
    write_file(&config_path, &config_text);
    for (relative, contents) in &case.files {
        write_file(
            &directory.join(relative),
            &fill(contents, &directory, local),
        );
    }
    let arguments: Vec<CommandLineArgument> = case
        .arguments
        .iter()
        .map(|argument| match argument {
            CommandLineArgument::Identity(path) => {
                let path = fill(path, &directory, local);
                write_file(Path::new(&path), "");
                CommandLineArgument::Identity(path)
            }
            other => other.clone(),
        })
        .collect();

    let mut command = Command::new(ssh_binary());
    command.arg("-G").arg("-F").arg(&config_path);
    for argument in &arguments {
        let (flag, value) = match argument {
            CommandLineArgument::Option(value) => ("-o", value),
            CommandLineArgument::Port(value) => ("-p", value),
            CommandLineArgument::Identity(value) => ("-i", value),
            CommandLineArgument::Jump(value) => ("-J", value),
        };
        command.arg(flag).arg(value);
    }
    if let Some(user) = case.user {
        command.arg("-l").arg(user);
    }
    command.arg(case.host);
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", ssh_binary()));

    let overrides = Overrides {
        user: case.user.map(str::to_string),
        arguments,
    };
    let resolved = resolve(
        case.host,
        &overrides,
        &ConfigSource::File(config_path.clone()),
        local,
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let context = || {
        format!(
            "--- case: {}\n--- command: {command:?}\n--- config:\n{config_text}--- ssh stderr:\n{stderr}",
            case.name
        )
    };

    compare(output, resolved, local, &context)
}

/// Compares one ssh -G run with xfer's resolution of the same inputs.
fn compare(
    output: std::process::Output,
    resolved: xfer::Result<HostConfig>,
    local: &LocalContext,
    context: &dyn Fn() -> String,
) -> Result<(), String> {
    match (output.status.success(), resolved) {
        (false, Err(_)) => Ok(()),
        (false, Ok(config)) => Err(format!(
            "{}\nssh refused this configuration but xfer resolved it: {config:#?}",
            context()
        )),
        (true, Err(error)) => Err(format!(
            "{}\nssh accepted this configuration but xfer refused it: {error} (hint: {:?})",
            context(),
            error.hint()
        )),
        (true, Ok(config)) => {
            let printed = parse_ssh_output(&String::from_utf8_lossy(&output.stdout));
            let expected = normalize_ssh(&printed, local);
            let actual = normalize_xfer(&config);
            let mut differences = String::new();
            for field in FIELDS {
                let (ssh, ours) = (&expected[field], &actual[field]);
                if ssh != ours {
                    differences.push_str(&format!(
                        "  {field}:\n    ssh -G: {}\n    xfer:   {}\n",
                        ssh.replace('\n', "\n            "),
                        ours.replace('\n', "\n            ")
                    ));
                }
            }
            if differences.is_empty() {
                Ok(())
            } else {
                Err(format!("{}\ndifferences:\n{differences}", context()))
            }
        }
    }
}

#[test]
fn resolution_matches_ssh_dash_g() {
    let version = Command::new(ssh_binary()).arg("-V").output().unwrap_or_else(|error| {
        panic!(
            "the parity test needs OpenSSH's ssh ({}): {error}; install openssh-client or set {}",
            ssh_binary(),
            xfer::env::XFER_SSH_BINARY
        )
    });
    assert!(version.status.success(), "`{} -V` failed", ssh_binary());

    let local = LocalContext::current().expect("local user");
    let root = tempfile::tempdir().expect("temporary directory");
    let cases = cases();
    assert!(cases.len() >= 35, "too few parity cases: {}", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .enumerate()
        .filter_map(|(index, case)| run_case(case, root.path(), index, &local).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from {} -G:\n\n{}",
        failures.len(),
        cases.len(),
        String::from_utf8_lossy(&version.stderr).trim(),
        failures.join("\n\n")
    );
    eprintln!("{} cases match ssh -G", cases.len());
}

/// Every keyword xfer's list says ssh knows is known to the installed ssh (it may refuse the value
/// given here, but not the keyword), and a few near misses are refused by both.
#[test]
fn keyword_list_matches_ssh() {
    let bad_option = |keyword: &str| -> bool {
        let output = Command::new(ssh_binary())
            .args(["-G", "-F", "/dev/null", "-o"])
            .arg(format!("{keyword}=1"))
            .arg("host")
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", ssh_binary()));
        String::from_utf8_lossy(&output.stderr).contains("Bad configuration option")
    };
    let unknown_to_ssh: Vec<&str> = xfer::ssh::config::SSH_KEYWORDS
        .iter()
        .copied()
        .filter(|keyword| bad_option(keyword))
        .collect();
    assert!(
        unknown_to_ssh.is_empty(),
        "ssh does not know these listed keywords: {unknown_to_ssh:?}"
    );
    let local = LocalContext::current().expect("local user");
    let none = ConfigSource::File(PathBuf::from("none"));
    for near_miss in [
        "hots",
        "usekeychain",
        "hostkeyalgorithm",
        "identityfiles",
        "portt",
    ] {
        assert!(bad_option(near_miss), "ssh knows {near_miss}");
        let overrides = Overrides {
            arguments: vec![CommandLineArgument::Option(format!("{near_miss}=1"))],
            ..Overrides::default()
        };
        assert!(
            resolve("host", &overrides, &none, &local).is_err(),
            "xfer accepts {near_miss}"
        );
    }
}

/// The default sources: the user's `~/.ssh/config` (if any) and `/etc/ssh/ssh_config`, whose
/// Debian version includes `ssh_config.d/*.conf` by an absolute glob and sets
/// `HashKnownHosts yes` for every host.
#[test]
fn default_configuration_matches_ssh_dash_g() {
    let local = LocalContext::current().expect("local user");
    let mut failures = Vec::new();
    for host in ["plain-host", "Mixed.Case.Example", "10.0.0.7"] {
        let output = Command::new(ssh_binary())
            .arg("-G")
            .arg(host)
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", ssh_binary()));
        let resolved = resolve(host, &Overrides::default(), &ConfigSource::Default, &local);
        if let Err(error) = &resolved {
            // A developer's own configuration may use what xfer refuses on purpose.
            if error.message().contains("Match exec") {
                eprintln!("skipping default-configuration parity for {host}: {error}");
                continue;
            }
        }
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let context =
            || format!("--- default configuration, host {host}\n--- ssh stderr:\n{stderr}");
        if let Err(difference) = compare(output, resolved, &local, &context) {
            failures.push(difference);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
