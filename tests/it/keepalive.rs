//! A peer that stops answering mid-session is detected by keepalives and becomes a transient
//! error, never a hang: a real sshd behind a proxy that goes silent while keeping the socket
//! open, as a dead NAT entry or a suspended VM would.

use crate::support::{Proxy, ProxyMode, Sshd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xfer::ErrorKind;
use xfer::ssh::config::{ConfigSource, LocalContext, Overrides};
use xfer::ssh::connect::Connector;
use xfer::ssh::exec::{self, ExecLimits};
use xfer::target::parse_host;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_link_is_detected_by_keepalive() {
    let sshd = Sshd::start();
    let proxy = Proxy::start(sshd.port());
    let config = sshd.write_client_config(
        "stalling",
        &[
            &format!("Port {}", proxy.port()),
            "ServerAliveInterval 1",
            "ServerAliveCountMax 2",
        ],
    );
    let connector = Arc::new(Connector::new(
        ConfigSource::File(config),
        Overrides::default(),
        LocalContext::current().unwrap(),
    ));
    let connection = connector
        .connect(&parse_host("stalling").unwrap())
        .await
        .unwrap();
    let quick = exec::run(&connection, "echo alive", b"", ExecLimits::default())
        .await
        .unwrap();
    assert_eq!(quick.stdout_text().trim(), "alive");

    proxy.set_mode(ProxyMode::StallNow);
    let started = Instant::now();
    let limits = ExecLimits {
        max_output: 1024,
        // Far longer than keepalive needs, so only keepalive can end this early.
        timeout: Duration::from_secs(120),
    };
    let error = exec::run(&connection, "sleep 100", b"", limits)
        .await
        .expect_err("a stalled link must fail");
    let waited = started.elapsed();
    assert_eq!(error.kind(), ErrorKind::Connect, "{error}");
    assert!(error.is_transient(), "{error}");
    assert!(
        waited < Duration::from_secs(20),
        "took {waited:?} to notice: {error}"
    );
    assert!(connection.is_closed());
}
