//! A flood of bad auth tokens never reaches the session store (issue 15): logic on Redis
//! sessions and IM's Redis device table, as the `logic` binary runs them, against a real
//! `redis-server`; Redis's own command counters (`INFO commandstats`) must not move while
//! thousands of malformed, oversize and forged tokens are refused.

use starling_cluster::testkit::Redis;
use starling_im::devices::{DeviceTable, RedisDevices};
use starling_im::store::Durability;
use starling_im::store::embedded::{EmbeddedConfig, EmbeddedStore};
use starling_im::token::Tokens;
use starling_im::{Config, Im};
use starling_logic::nodes::{Instance, Registry};
use starling_logic::redis_store::RedisSessions;
use starling_logic::stats::AuthRefusal;
use starling_logic::store::BoxFuture;
use starling_logic::{Logic, PushError, PushSink};
use starling_proto::grpc::logic::{ConnectReq, PushMsg};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "a-test-secret-of-32-bytes-------";
const EXPIRE: Duration = Duration::from_secs(1800);

struct Nowhere;

impl PushSink for Nowhere {
    fn publish(&self, _: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        Box::pin(async { Ok(()) })
    }
}

impl Registry for Nowhere {
    fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }
}

fn connect(url: &str) -> redis::aio::ConnectionManager {
    starling_cluster::redis::connect(&starling_cluster::redis::Config {
        url: url.into(),
        ..Default::default()
    })
    .unwrap()
}

/// Commands Redis has run, `INFO` itself left out (the probe must not count itself).
async fn commands(admin: &mut redis::aio::ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(admin)
        .await
        .unwrap();
    info.lines()
        .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
        .filter_map(|l| {
            let calls = l.split_once("calls=")?.1;
            calls.split(',').next()?.parse::<u64>().ok()
        })
        .sum()
}

fn req(token: String) -> ConnectReq {
    ConnectReq {
        server: "c1".into(),
        conn: "1".into(),
        token: token.into_bytes().into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_without_a_session_store_call() {
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig {
        durability: Durability::Buffer,
        ..EmbeddedConfig::new(dir.path().join("im"))
    })
    .unwrap();
    let config = Config {
        enabled: true,
        token_secret: SECRET.into(),
        ..Config::default()
    };
    let devices = DeviceTable::Redis(RedisDevices::new(connect(&redis.url()), EXPIRE));
    let im = Im::with_devices(config, Arc::new(store), Arc::new(Nowhere), devices);
    let logic = Logic::new(
        starling_logic::Config::default(),
        Arc::new(RedisSessions::new(connect(&redis.url()), EXPIRE)),
        Arc::new(Nowhere),
        Arc::new(Nowhere),
    );
    im.install(&logic);

    let ours = Tokens::new(SECRET).unwrap();
    let forger = Tokens::new("not-the-secret-but-also-32-bytes").unwrap();
    let good = ours.mint(7, "web", 60).unwrap();
    let forged = forger.mint(7, "web", 60).unwrap();
    let someone_else = ours.mint(8, "web", 60).unwrap();
    let flood: Vec<(AuthRefusal, String)> = vec![
        (AuthRefusal::BadJson, "{\"mid\":7,".into()),
        (AuthRefusal::BadJson, "[1,2,3]".into()),
        (AuthRefusal::BadJson, r#"{"mid":"seven"}"#.into()),
        (
            AuthRefusal::Oversize,
            format!(r#"{{"mid":7,"key":"{}"}}"#, "k".repeat(4000)),
        ),
        (
            AuthRefusal::Oversize,
            format!(r#"{{"mid":7,"x":"{}"}}"#, "x".repeat(5000)),
        ),
        (
            AuthRefusal::Oversize,
            format!(r#"{{"mid":7,"key":"{}"}}"#, "k".repeat(300)),
        ),
        (
            AuthRefusal::Im,
            format!(r#"{{"im":"pb","im_token":"{good}"}}"#),
        ),
        (
            AuthRefusal::Im,
            format!(r#"{{"mid":0,"im":"pb","im_token":"{good}"}}"#),
        ),
        (
            AuthRefusal::Im,
            format!(r#"{{"mid":7,"platform":"web","im":"pb","im_token":"{forged}"}}"#),
        ),
        (
            AuthRefusal::Im,
            format!(r#"{{"mid":7,"platform":"web","im":"pb","im_token":"{someone_else}"}}"#),
        ),
        (
            AuthRefusal::Im,
            r#"{"mid":7,"platform":"web","im":"pb","im_token":"a.b.c"}"#.into(),
        ),
        (
            AuthRefusal::Im,
            r#"{"mid":7,"platform":"web","im":"xml"}"#.into(),
        ),
    ];
    let mut admin = connect(&redis.url());
    let before = commands(&mut admin).await;
    const ROUNDS: usize = 200;
    for _ in 0..ROUNDS {
        for (_, token) in &flood {
            assert!(logic.connect(req(token.clone())).await.is_err(), "{token}");
        }
    }
    let after = commands(&mut admin).await;
    assert_eq!(after, before, "Redis ran commands for refused tokens");
    for why in AuthRefusal::ALL {
        let sent = flood.iter().filter(|(w, _)| *w == why).count() * ROUNDS;
        assert_eq!(logic.stats.auth_refused_count(why), sent as u64, "{why:?}");
    }

    // The probe sees what a real login does: session and device written.
    let login = format!(r#"{{"mid":7,"key":"k7","platform":"web","im":"pb","im_token":"{good}"}}"#);
    logic.connect(req(login)).await.unwrap();
    assert!(commands(&mut admin).await > after);
}
