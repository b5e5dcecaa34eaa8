//! `/metrics`, `/healthz` and `/readyz` of the all-in-one after real traffic, and the Grafana
//! dashboard (`tools/grafana/starling.json`) checked against what the binaries export.

mod common;

use common::im_client::p2p;
use common::im_server::Im;
use common::*;
use starling_cluster::metrics::{DependencyErrors, Metrics};
use starling_proto::op::Codec;
use starling_proto::packet::Packet;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::SocketAddr;

/// `GET path`: (status, body as text).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out.split_once("\r\n\r\n").unwrap().1.to_string())
}

/// The value of the sample `series` (name with its labels, as printed), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn metrics(addr: SocketAddr) -> String {
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    text
}

/// Every series name a scrape can hold: counters as `x_total`, histograms as
/// `x_bucket`/`x_sum`/`x_count`, gauges as they are (from the `# TYPE` lines).
fn series_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for l in text.lines() {
        let Some(rest) = l.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

#[test]
fn traffic_moves_the_metrics_and_health_answers() {
    let im = Im::start();
    let http = im.server.http;
    assert_eq!(get(http, "/healthz").0, 200);
    let (status, body) = get(http, "/readyz");
    assert_eq!((status, body.as_str()), (200, r#"{"ready":true}"#));

    let before = metrics(http);
    assert_eq!(sample(&before, "starling_im_ack_seconds_count"), Some(0.0));

    // An IM send: acked 0, stored, delivered through job and comet to the peer.
    let mut a = im.client(1, "metrics-a", Codec::Protobuf);
    let _b = im.client(2, "metrics-b", Codec::Protobuf);
    assert_eq!(a.send(p2p(2), "m-1", "hello")[0].code, 0);
    // A goim push through the HTTP API.
    post_ok(http, "/goim/push/keys?operation=1000&keys=metrics-b", b"x");
    // A connection closed for a bad packet.
    let mut c = Client::tcp(im.server.tcp);
    c.write_raw(&{
        let mut p = Packet::new(1, 2, 1, vec![]).to_bytes();
        p[5] = 0;
        p
    });
    c.expect_close();

    eventually("metrics moved", || {
        let t = metrics(http);
        // The IM message reaches the peer; the goim push (op 1000) passes job but an IM
        // connection does not accept it.
        sample(&t, "starling_comet_pushed_total") >= Some(1.0)
            && sample(&t, "starling_job_delivered_total") >= Some(2.0)
            // Both, from logic's hand-over to comet's answer.
            && sample(&t, "starling_job_delivery_seconds_count") >= Some(2.0)
            && sample(
                &t,
                "starling_comet_closed_total{reason=\"bad_packet\",code=\"4\"}",
            ) == Some(1.0)
    });
    let t = metrics(http);
    for (series, want) in [
        ("starling_im_send_acks_total{code=\"0\"}", 1.0),
        ("starling_im_ack_seconds_count", 1.0),
        ("starling_logic_pushes_total{kind=\"keys\"}", 1.0),
        ("starling_im_sent_total", 1.0),
    ] {
        assert_eq!(sample(&t, series), Some(want), "{series} in:\n{t}");
    }
    for series in [
        "starling_im_store_commit_seconds_count",
        "starling_job_comet_call_seconds_count",
        "starling_job_comet_call_seconds_bucket{le=\"+Inf\"}",
        // The HTTP server's, the IM layer's and job's tasks at least.
        "starling_tokio_alive_tasks",
    ] {
        assert!(sample(&t, series) >= Some(1.0), "{series} in:\n{t}");
    }
    assert!(
        t.lines()
            .any(|l| l.starts_with("starling_job_comet_queue{comet=")),
        "{t}"
    );
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/grafana/starling.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("dashboard is JSON");

    // The all-in-one exports comet's, logic's, job's and IM's metrics.
    let im = Im::start();
    let mut exported = series_names(&metrics(im.server.http));
    // What only the split binaries export: job's Kafka consumer and Redis errors, a logic
    // node's Redis and Kafka errors, the PostgreSQL store's errors, comet's Redis errors.
    let split = Metrics::new();
    std::sync::Arc::new(starling_job::node::ops::KafkaOps::default()).register(&split);
    starling_logic::node::register_dependency_errors(
        &split,
        DependencyErrors::new(),
        DependencyErrors::new(),
    );
    starling_im::stats::register_postgres_errors(&split, DependencyErrors::new());
    starling_comet::node::register_redis_errors(&split, DependencyErrors::new());
    exported.extend(series_names(&split.render()));

    let mut queried = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("starling_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 20, "{queried:?}");
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}
