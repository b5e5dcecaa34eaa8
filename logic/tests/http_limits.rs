//! The push API under abuse (issue 15): the bearer token, body/key/mid/room limits, slow
//! bodies, trickled headers (slowloris), held connections, on a real socket through the
//! same `Server` the binaries run.

mod common;

use common::{Api, read_response};
use starling_logic::Config;
use starling_logic::stats::{AuthRefusal, HttpRefusal};
use starling_proto::grpc::logic::ConnectReq;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

fn code(body: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    v["code"].as_i64().unwrap()
}

/// Turns a hang (a connection the server never closes or answers) into a failure; far
/// above every deadline the tests configure, so it bounds nothing they measure.
const HANG: Duration = Duration::from_secs(60);

/// Whether the server closed `s` (EOF or reset) rather than leaving it open.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    let closed = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(HANG, closed).await.is_ok()
}

#[tokio::test]
async fn push_token_is_required_when_set_and_compared_exactly() {
    let mut config = Config::default();
    config.http.push_token = "s3cret".into();
    let api = Api::start(config).await;
    let push = "POST /goim/push/all?operation=1000 HTTP/1.1";
    let (status, body) = api.request(push, b"m").await;
    assert_eq!((status, code(&body)), (401, -401), "{body}");
    let wrong = format!("{push}\r\nAuthorization: Bearer s3cre");
    let (status, body) = api.request(&wrong, b"m").await;
    assert_eq!((status, code(&body)), (401, -401), "{body}");
    let online = "GET /goim/online/total HTTP/1.1";
    assert_eq!(api.request(online, b"").await.0, 401);
    assert_eq!(api.pushes(), 0);
    assert_eq!(api.refused(HttpRefusal::Unauthorized), 3);

    let right = format!("{push}\r\nAuthorization: Bearer s3cret");
    let (status, body) = api.request(&right, b"m").await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    assert_eq!(api.pushes(), 1);
    // Clients ask where to connect without the push API's token.
    let nodes = "GET /goim/nodes/weighted?platform=web HTTP/1.1";
    assert_eq!(api.request(nodes, b"").await.0, 200);
}

#[tokio::test]
async fn without_a_push_token_goim_requests_pass_as_before() {
    let api = Api::start(Config::default()).await;
    let (status, body) = api
        .request("POST /goim/push/all?operation=1000 HTTP/1.1", b"m")
        .await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    assert_eq!(api.pushes(), 1);
}

#[tokio::test]
async fn bodies_keys_mids_and_rooms_over_their_limits_are_refused_and_counted() {
    let mut config = Config::default();
    config.http.max_body = 16;
    config.http.max_keys = 3;
    config.http.max_mids = 3;
    config.http.max_room_len = 12;
    let api = Api::start(config).await;

    let all = "POST /goim/push/all?operation=1000 HTTP/1.1";
    let (status, body) = api.request(all, &[b'x'; 17]).await;
    assert_eq!((status, code(&body)), (413, -413), "{body}");
    let (status, _) = api.request(all, &[b'x'; 16]).await;
    assert_eq!(status, 200);

    let keys = "POST /goim/push/keys?operation=1000&keys=a&keys=b&keys=c&keys=d HTTP/1.1";
    let (status, body) = api.request(keys, b"m").await;
    assert_eq!((status, code(&body)), (413, -413), "{body}");
    assert!(body.contains("max_keys"), "{body}");
    let mids = "POST /goim/push/mids?operation=1000&mids=1&mids=2&mids=3&mids=4 HTTP/1.1";
    let (status, body) = api.request(mids, b"m").await;
    assert_eq!((status, code(&body)), (413, -413), "{body}");
    assert!(body.contains("max_mids"), "{body}");
    let three = "POST /goim/push/mids?operation=1000&mids=1&mids=2&mids=3 HTTP/1.1";
    assert_eq!(code(&api.request(three, b"m").await.1), 0);

    // "live://" + 6 bytes = 13 > 12.
    let room = "POST /goim/push/room?operation=1000&type=live&room=123456 HTTP/1.1";
    let (status, body) = api.request(room, b"m").await;
    assert_eq!((status, code(&body)), (200, -400), "{body}");
    let room_ok = "POST /goim/push/room?operation=1000&type=live&room=12345 HTTP/1.1";
    assert_eq!(code(&api.request(room_ok, b"m").await.1), 0);

    assert_eq!(api.pushes(), 2, "the /all of 16 bytes and the room of 12");
    assert_eq!(api.refused(HttpRefusal::BodyTooLarge), 1);
    assert_eq!(api.refused(HttpRefusal::TooManyTargets), 2);
    assert_eq!(api.refused(HttpRefusal::RoomTooLong), 1);
    let (_, metrics) = api.request("GET /metrics HTTP/1.1", b"").await;
    assert!(
        metrics.contains("starling_logic_http_refused_total{reason=\"too_many_targets\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_body_trickled_past_body_timeout_is_answered_408() {
    let mut config = Config::default();
    config.http.body_timeout = Duration::from_millis(300);
    let api = Api::start(config).await;
    let mut s = TcpStream::connect(api.addr).await.unwrap();
    s.write_all(
        b"POST /goim/push/all?operation=1000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
          Content-Length: 100\r\n\r\nabc",
    )
    .await
    .unwrap();
    // The rest of the body never comes.
    let (status, body) = tokio::time::timeout(HANG, read_response(&mut s))
        .await
        .expect("no answer to a body that never completes");
    assert_eq!((status, code(&body)), (408, -408), "{body}");
    assert_eq!(api.pushes(), 0);
    assert_eq!(api.refused(HttpRefusal::BodyTimeout), 1);
}

/// A body whose `Content-Length` is over `max_body` is refused from its header: a client
/// that asked `Expect: 100-continue` gets 413 at once, not `100 Continue` (and then 408 for
/// the body it was told to send, as before).
#[tokio::test]
async fn a_content_length_over_max_body_is_refused_before_100_continue() {
    let mut config = Config::default();
    config.http.max_body = 16;
    config.http.body_timeout = Duration::from_millis(300);
    let api = Api::start(config).await;
    let mut s = TcpStream::connect(api.addr).await.unwrap();
    s.write_all(
        b"POST /goim/push/all?operation=1000 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
          Expect: 100-continue\r\nContent-Length: 17\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, body) = tokio::time::timeout(HANG, read_response(&mut s))
        .await
        .expect("no answer");
    assert_eq!((status, code(&body)), (413, -413), "{status} {body}");
    assert_eq!(api.pushes(), 0);
    assert_eq!(api.refused(HttpRefusal::BodyTooLarge), 1);
    assert_eq!(api.refused(HttpRefusal::BodyTimeout), 0);
}

/// 1,000 connections trickling a request header one byte at a time: real pushes keep
/// succeeding meanwhile, and every trickling connection is closed at `header_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_while_pushes_succeed() {
    const SLOW: usize = 1000;
    let mut config = Config::default();
    config.http.header_timeout = Duration::from_secs(3);
    let api = Api::start(config).await;
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = TcpStream::connect(api.addr).await.unwrap();
        s.write_all(b"P").await.unwrap();
        slow.push(s);
    }
    let (stop, mut stopped) = oneshot::channel::<()>();
    let trickle = tokio::spawn(async move {
        let header = b"OST /goim/push/all?operation=1000 HTTP/1.1\r\nHost: t\r\nX-Slow: ";
        for i in 0.. {
            let byte = [header.get(i).copied().unwrap_or(b'a')];
            for s in &mut slow {
                let _ = s.write_all(&byte).await;
            }
            tokio::select! {
                _ = &mut stopped => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        slow
    });
    for i in 0..50 {
        let push = "POST /goim/push/all?operation=1000 HTTP/1.1";
        let (status, body) = api.request(push, format!("m{i}").as_bytes()).await;
        assert_eq!((status, code(&body)), (200, 0), "push {i}: {body}");
    }
    assert_eq!(api.pushes(), 50);
    stop.send(()).unwrap();
    let mut slow = trickle.await.unwrap();
    for (i, s) in slow.iter_mut().enumerate() {
        assert!(closed_by_server(s).await, "slow connection {i} still open");
    }
    // Each server task counts its connection out just after closing it.
    let drained = async {
        while api.logic.stats.http_conns_open.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(HANG, drained)
        .await
        .expect("connections still counted open");
}

/// Held connections beyond `max_conns` are closed at accept; once they go, service resumes.
#[tokio::test]
async fn connections_beyond_max_conns_are_closed_at_once() {
    let mut config = Config::default();
    config.http.max_conns = 20;
    let api = Api::start(config).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(api.addr).await.unwrap());
    }
    // The server takes the 20 in order; wait until it holds them all.
    while api.logic.stats.http_conns_open.load(Ordering::Relaxed) < 20 {
        tokio::task::yield_now().await;
    }
    let mut extra = TcpStream::connect(api.addr).await.unwrap();
    assert!(closed_by_server(&mut extra).await);
    assert_eq!(
        api.logic.stats.http_conns_refused.load(Ordering::Relaxed),
        1
    );
    drop(held);
    while api.logic.stats.http_conns_open.load(Ordering::Relaxed) > 0 {
        tokio::task::yield_now().await;
    }
    let (status, _) = api
        .request("POST /goim/push/all?operation=1000 HTTP/1.1", b"m")
        .await;
    assert_eq!(status, 200);
}

/// `max_conns = 0` is no limit (as comet's): held connections do not shut anyone out.
#[tokio::test]
async fn max_conns_zero_is_no_limit() {
    let mut config = Config::default();
    config.http.max_conns = 0;
    let api = Api::start(config).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(TcpStream::connect(api.addr).await.unwrap());
    }
    // The server takes the 50 in order; a refusal would show before all are open.
    while api.logic.stats.http_conns_open.load(Ordering::Relaxed) < 50 {
        assert_eq!(
            api.logic.stats.http_conns_refused.load(Ordering::Relaxed),
            0,
            "a connection was refused"
        );
        tokio::task::yield_now().await;
    }
    let (status, _) = api
        .request("POST /goim/push/all?operation=1000 HTTP/1.1", b"m")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        api.logic.stats.http_conns_refused.load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn shutdown_ends_the_server_with_an_idle_connection_open() {
    let mut api = Api::start(Config::default()).await;
    let mut idle = TcpStream::connect(api.addr).await.unwrap();
    let push =
        "POST /goim/push/all?operation=1000 HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nm";
    idle.write_all(push.as_bytes()).await.unwrap();
    let mut buf = [0u8; 256];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // Kept alive, idle: shutdown must not wait for it.
    api.stop.take().unwrap().send(()).unwrap();
    (&mut api.served).await.unwrap().unwrap();
    assert!(closed_by_server(&mut idle).await);
}

#[tokio::test]
async fn oversize_and_malformed_tokens_are_refused_and_counted() {
    let api = Api::start(Config::default()).await;
    let connect = |token: Vec<u8>| ConnectReq {
        server: "c1".into(),
        token: token.into(),
        ..Default::default()
    };
    let logic = &api.logic;
    assert!(logic.connect(connect(b"{not json".to_vec())).await.is_err());
    let long_key = format!(r#"{{"mid":1,"key":"{}"}}"#, "k".repeat(300));
    assert!(logic.connect(connect(long_key.into_bytes())).await.is_err());
    let huge = format!(r#"{{"mid":1,"x":"{}"}}"#, "x".repeat(5000));
    assert!(logic.connect(connect(huge.into_bytes())).await.is_err());
    let room = format!(r#"{{"mid":1,"room_id":"live://{}"}}"#, "r".repeat(300));
    assert!(logic.connect(connect(room.into_bytes())).await.is_err());
    assert!(
        logic
            .connect(connect(br#"{"mid":1}"#.to_vec()))
            .await
            .is_ok()
    );
    assert_eq!(logic.stats.auth_refused_count(AuthRefusal::BadJson), 1);
    assert_eq!(logic.stats.auth_refused_count(AuthRefusal::Oversize), 3);
}
