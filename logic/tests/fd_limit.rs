//! Out of file descriptors (issue 15): with RLIMIT_NOFILE lowered in this process (its own
//! test binary: the limit is the whole process's), connections to the push API are opened
//! until none is left. The HTTP accept fails with EMFILE, is counted
//! (`starling_logic_http_accept_errors_total`) and retried every 100 ms; once descriptors
//! free up, requests are served again.

mod common;

use common::Api;
use starling_cluster::testkit::{open_fds, set_nofile};
use starling_logic::Config;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

#[tokio::test]
async fn accept_retries_out_of_descriptors_and_resumes() {
    let api = Api::start(Config::default()).await;
    // Room for 30 more descriptors in the whole process: the clients' and the server's.
    let before = set_nofile(open_fds() + 30);
    let mut clients = Vec::new();
    let refused = loop {
        match std::net::TcpStream::connect(api.addr) {
            Ok(s) => clients.push(s),
            Err(e) => break e,
        }
        assert!(clients.len() < 100, "the limit did not apply");
    };
    assert_eq!(refused.raw_os_error(), Some(libc::EMFILE), "{refused}");
    // The server's accept fails on the connections still in the backlog.
    while api.logic.stats.http_accept_errors.load(Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Free descriptors: the server's ends close at their clients' EOF.
    clients.clear();
    let (status, _) = api
        .request("POST /goim/push/all?operation=1000 HTTP/1.1", b"m")
        .await;
    assert_eq!(status, 200);
    set_nofile(before);
    println!(
        "accept failures counted: {}",
        api.logic.stats.http_accept_errors.load(Relaxed)
    );
}
