//! Out of file descriptors (issue 15): with RLIMIT_NOFILE lowered in this process (its own
//! test binary: the limit is the whole process's), connections are opened until none is
//! left. comet's accept fails with EMFILE, is counted and backs off; connections already up
//! go on; once some close, the connection that waited in the backlog and new ones are
//! accepted again.

mod common;

use common::{Client, config, eventually, start_with, token};
use starling_cluster::testkit::{open_fds, set_nofile};
use std::net::TcpStream;
use std::sync::atomic::Ordering::Relaxed;

#[test]
fn accept_backs_off_out_of_descriptors_and_resumes() {
    let mut cfg = config();
    cfg.workers = 1;
    cfg.protocol.handshake_timeout = std::time::Duration::from_secs(60);
    let c = start_with(cfg);
    let mut old = Client::connect(c.tcp);
    old.auth(&token(1, "old", 0));
    // Room for 40 more descriptors in the whole process: clients' and comet's.
    let before = set_nofile(open_fds() + 40);
    let mut clients = Vec::new();
    let refused = loop {
        match TcpStream::connect(c.tcp) {
            Ok(s) => clients.push(s),
            Err(e) => break e,
        }
        assert!(clients.len() < 100, "the limit did not apply");
    };
    assert_eq!(refused.raw_os_error(), Some(libc::EMFILE), "{refused}");
    eventually("accept failed and was counted", || {
        c.comet.stats().accept_fd_errors.load(Relaxed) > 0
    });
    let open_before = c.comet.stats().connections.load(Relaxed);
    println!(
        "{} clients connected, comet holds {open_before}; accept failures so far: {}",
        clients.len(),
        c.comet.stats().accept_fd_errors.load(Relaxed)
    );
    // The connection that was up is untouched.
    old.send(2, 1, b"");
    assert_eq!(old.expect().op, 3);
    // Free some descriptors: comet's ends close when their clients go.
    let waiting = clients.pop().unwrap(); // the last one may wait in the backlog
    clients.truncate(5);
    // Those dropped before comet took them are taken now and closed at their EOF.
    eventually("accepting again", || {
        c.comet.stats().connections.load(Relaxed) == 5 + 2
    });
    let mut waiting = Client::from_stream(waiting);
    waiting.auth(&token(2, "waited", 0));
    let mut fresh = Client::connect(c.tcp);
    fresh.auth(&token(3, "fresh", 0));
    set_nofile(before);
    println!(
        "accept failures counted: {}",
        c.comet.stats().accept_fd_errors.load(Relaxed)
    );
}
