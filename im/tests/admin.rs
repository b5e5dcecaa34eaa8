//! The `/im/v1` management API (reference im.md §8, §13 point 8) against a real
//! `EmbeddedStore` in a temporary directory, driven through the axum router (merged into
//! logic's, as the all-in-one serves it) with `tower::ServiceExt::oneshot`. Pushes are
//! recorded by a `PushSink` test double: the sink is job's seam.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use starling_im::config::MultiLogin;
use starling_im::devices::Device;
use starling_im::store::embedded::{EmbeddedConfig, EmbeddedStore};
use starling_im::store::{Conv, Durability, ImStore};
use starling_im::token::{TokenError, Tokens};
use starling_im::{Config, Im};
use starling_logic::nodes::{Instance, Registry};
use starling_logic::store::{BoxFuture, MemorySessions};
use starling_logic::{Logic, PushError, PushSink};
use starling_proto::grpc::logic::PushMsg;
use starling_proto::im::v1::{Event, Kick, Push, event};
use starling_proto::op::{self, Codec};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-for-the-tests";
const SECRET: &str = "a-test-secret-of-32-bytes-------";

/// Records every `PushMsg` logic hands to job.
#[derive(Default)]
struct Recorder(Mutex<Vec<PushMsg>>);

impl PushSink for Recorder {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        self.0.lock().unwrap().push(msg);
        Box::pin(async { Ok(()) })
    }
}

impl Recorder {
    /// The recorded pushes of `op` to the connection `key`, decoded as JSON bodies.
    fn to_key<T: serde::de::DeserializeOwned>(&self, op: i32, key: &str) -> Vec<T> {
        let all = self.0.lock().unwrap();
        all.iter()
            .filter(|m| m.operation == op && m.keys.iter().any(|k| k == key))
            .map(|m| serde_json::from_slice(&m.msg).expect("a JSON body"))
            .collect()
    }
}

struct NoComets;

impl Registry for NoComets {
    fn instances(&self) -> Vec<Instance> {
        Vec::new()
    }
}

struct T {
    im: Arc<Im>,
    sink: Arc<Recorder>,
    app: Router,
    _dir: tempfile::TempDir,
}

fn setup_with(config: Config) -> T {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(EmbeddedConfig {
        path: dir.path().join("im"),
        durability: Durability::Buffer,
        ..EmbeddedConfig::default()
    })
    .unwrap();
    let sink = Arc::new(Recorder::default());
    let im = Im::new(config, Arc::new(store), sink.clone());
    let logic = Arc::new(Logic::new(
        starling_logic::Config::default(),
        Arc::new(MemorySessions::default()),
        sink.clone(),
        Arc::new(NoComets),
    ));
    // As the all-in-one serves it: logic's router (with its fallback) merged with IM's.
    let app = starling_logic::http::router(logic, None).merge(starling_im::admin::router(im.clone()));
    T { im, sink, app, _dir: dir }
}

fn config() -> Config {
    Config {
        enabled: true,
        token_secret: SECRET.into(),
        admin_token: ADMIN.into(),
        ..Config::default()
    }
}

fn setup() -> T {
    setup_with(config())
}

impl T {
    async fn call(&self, method: Method, path: &str, body: Option<&str>, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.unwrap_or("").to_string()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{path}: not JSON: {:?}", String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    /// An authorized call that must succeed: returns `data`.
    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let b = body.to_string();
        let (s, v) = self.call(method, path, (!body.is_null()).then_some(b.as_str()), Some(ADMIN)).await;
        assert_eq!((s, &v["code"]), (StatusCode::OK, &json!(0)), "{path}: {v}");
        v["data"].clone()
    }

    /// An authorized call that must fail with `code` (HTTP status and envelope alike).
    async fn fails(&self, method: Method, path: &str, body: Value, code: u16) -> Value {
        let b = body.to_string();
        let (s, v) = self.call(method, path, (!body.is_null()).then_some(b.as_str()), Some(ADMIN)).await;
        assert_eq!(s.as_u16(), code, "{path}: {v}");
        assert_eq!(v["code"], json!(code), "{path}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }

    fn device(&self, mid: i64, key: &str, platform: &str) {
        let d = Device {
            mid,
            key: key.into(),
            platform: platform.into(),
            codec: Codec::Json,
            server: "comet-1".into(),
            since_ms: 1,
        };
        self.im.devices.register(d, MultiLogin::Multi);
    }
}

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn without_an_admin_token_the_routes_are_absent() {
    let t = setup_with(Config { admin_token: String::new(), ..config() });
    for (m, p) in [(Method::POST, "/im/v1/tokens"), (Method::GET, "/im/v1/users/1/online")] {
        let (s, v) = t.call(m, p, Some(r#"{"uid":1}"#), Some("")).await;
        // logic's own 404: goim's envelope with -404.
        assert_eq!((s, v["code"].clone()), (StatusCode::OK, json!(-404)), "{p}: {v}");
    }
}

#[tokio::test]
async fn a_missing_or_wrong_bearer_token_is_401() {
    let t = setup();
    let routes = [
        (Method::POST, "/im/v1/tokens"),
        (Method::PUT, "/im/v1/users/1"),
        (Method::POST, "/im/v1/users/1/kick"),
        (Method::GET, "/im/v1/users/1/contacts"),
        (Method::POST, "/im/v1/groups"),
        (Method::DELETE, "/im/v1/groups/1/members"),
        (Method::POST, "/im/v1/messages"),
        (Method::GET, "/im/v1/conversations/P2P/1/2/messages"),
        (Method::GET, "/im/v1/no/such/route"),
    ];
    for (m, p) in routes {
        for token in [None, Some("wrong"), Some("admin-token-for-the-test"), Some("")] {
            let (s, v) = t.call(m.clone(), p, Some("{}"), token).await;
            assert_eq!(s, StatusCode::UNAUTHORIZED, "{m} {p} {token:?}");
            assert_eq!(v["code"], json!(401), "{v}");
        }
    }
    let (s, _) = t.call(Method::GET, "/im/v1/users/1/online", None, Some(ADMIN)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let t = setup();
    t.fails(Method::GET, "/im/v1/nope", Value::Null, 404).await;
    t.fails(Method::POST, "/im/v1/groups/1/members/2/x", Value::Null, 404).await;
    t.fails(Method::GET, "/im/v1", Value::Null, 404).await;
    t.fails(Method::GET, "/im/v1/messages", Value::Null, 405).await;
    // logic's routes and fallback are still logic's.
    let (s, v) = t.call(Method::GET, "/goim/nope", None, None).await;
    assert_eq!((s, v["code"].clone()), (StatusCode::OK, json!(-404)));
}

#[tokio::test]
async fn bad_bodies_and_paths_are_400_with_the_envelope() {
    let t = setup();
    let (s, v) = t.call(Method::POST, "/im/v1/groups", Some("{not json"), Some(ADMIN)).await;
    assert_eq!((s, v["code"].clone(), v["data"].clone()), (StatusCode::BAD_REQUEST, json!(400), Value::Null));
    t.fails(Method::POST, "/im/v1/groups", json!({"name": "no owner"}), 400).await;
    t.fails(Method::PUT, "/im/v1/users/abc", json!({}), 400).await;
    t.fails(Method::GET, "/im/v1/conversations/ROOM/1/2/messages", Value::Null, 400).await;
    t.fails(Method::GET, "/im/v1/conversations/P2P/1/1/messages", Value::Null, 400).await;
}

#[tokio::test]
async fn minted_tokens_verify_and_the_ttl_is_bounded() {
    let t = setup();
    let d = t.ok(Method::POST, "/im/v1/tokens", json!({"uid": "42", "platform": "ios", "ttl": 60})).await;
    let token = d["token"].as_str().unwrap();
    let claims = Tokens::new(SECRET).unwrap().verify(token, 42, "ios", 0).unwrap();
    assert_eq!(d["expiresAt"], json!((claims.exp * 1000).to_string()));
    let now = jsonwebtoken_now();
    assert!((now + 55..=now + 65).contains(&claims.exp), "ttl is in seconds");
    t.fails(Method::POST, "/im/v1/tokens", json!({"uid": 42, "ttl": 31 * 86400}), 400).await;
    t.fails(Method::POST, "/im/v1/tokens", json!({"uid": 0}), 400).await;
    let dev = setup_with(Config { token_secret: String::new(), insecure_trust_mid: true, ..config() });
    let v = dev.fails(Method::POST, "/im/v1/tokens", json!({"uid": 42}), 503).await;
    assert!(v["message"].as_str().unwrap().contains("token_secret"), "{v}");
}

fn jsonwebtoken_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn groups_created_joined_and_left_with_their_system_messages() {
    let t = setup();
    t.device(4, "k4", "ios");
    t.device(2, "k2", "web");
    let g = t
        .ok(Method::POST, "/im/v1/groups", json!({"name": "g", "owner": 1, "members": [2, "3"]}))
        .await;
    let gid: i64 = g["gid"].as_str().unwrap().parse().unwrap();
    assert!(gid > 0, "assigned: {g}");
    assert_eq!((g["owner"].clone(), g["memberCount"].clone()), (json!("1"), json!(3)));
    assert_eq!(g["change"]["seq"], json!("1"), "the created message is seq 1");
    let add = t.ok(Method::POST, &format!("/im/v1/groups/{gid}/members"), json!({"uids": [4, 3]})).await;
    assert_eq!((add["seq"].clone(), add["added"].clone()), (json!("2"), json!(["4"])));
    let rm = t.ok(Method::DELETE, &format!("/im/v1/groups/{gid}/members"), json!({"uids": [2]})).await;
    assert_eq!((rm["seq"].clone(), rm["removed"].clone()), (json!("3"), json!(["2"])));
    let conv = Conv::group(gid);
    let m4 = t.im.store.member(conv, 4).await.unwrap().unwrap();
    let m2 = t.im.store.member(conv, 2).await.unwrap().unwrap();
    assert_eq!((m4.join_seq, m4.leave_seq, m2.join_seq, m2.leave_seq), (2, 0, 1, 3));

    let h = t.ok(Method::GET, &format!("/im/v1/conversations/GROUP/{gid}/0/messages?afterSeq=0"), Value::Null).await;
    assert_eq!(seqs(&h), vec![1, 2, 3]);
    let kinds: Vec<(&str, Value)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["kind"].as_str().unwrap(), serde_json::from_str(m["content"].as_str().unwrap()).unwrap()))
        .collect();
    assert!(kinds.iter().all(|(k, _)| *k == "SYSTEM"), "{kinds:?}");
    assert_eq!(kinds[0].1["type"], "group_created");
    assert_eq!(kinds[1].1, json!({"type": "members_added", "by": "0", "uids": ["4", "3"]}));
    assert_eq!(kinds[2].1, json!({"type": "members_removed", "by": "0", "uids": ["2"]}));

    // The new member: the added message, then CONV_ADDED; the removed one: the removal
    // message (its leave_seq), then CONV_REMOVED.
    let pushed: Vec<Push> = t.sink.to_key(op::im::MSG, "k4");
    assert_eq!(pushed.iter().flat_map(|p| p.messages.iter().map(|m| m.seq)).collect::<Vec<_>>(), vec![2]);
    let ev: Vec<Event> = t.sink.to_key(op::im::EVENT, "k4");
    assert_eq!(ev.iter().map(|e| (e.r#type, e.seq)).collect::<Vec<_>>(), vec![(event::Type::ConvAdded as i32, 2)]);
    let pushed: Vec<Push> = t.sink.to_key(op::im::MSG, "k2");
    assert_eq!(pushed.iter().flat_map(|p| p.messages.iter().map(|m| m.seq)).collect::<Vec<_>>(), vec![1, 2, 3]);
    let ev: Vec<Event> = t.sink.to_key(op::im::EVENT, "k2");
    let types: Vec<i32> = ev.iter().map(|e| e.r#type).collect();
    assert_eq!(types, vec![event::Type::ConvAdded as i32, event::Type::ConvRemoved as i32]);

    // Member pages, roles and mutes; dissolve.
    t.ok(Method::PATCH, &format!("/im/v1/groups/{gid}/members/4"), json!({"role": 1, "mutedUntil": "5"})).await;
    let page = t.ok(Method::GET, &format!("/im/v1/groups/{gid}/members?limit=2"), Value::Null).await;
    assert_eq!(page["members"].as_array().unwrap().len(), 2);
    assert_eq!(page["hasMore"], json!(true));
    let page = t.ok(Method::GET, &format!("/im/v1/groups/{gid}/members?cursor={}", page["cursor"].as_str().unwrap()), Value::Null).await;
    assert_eq!(page["members"], json!([{"uid": "4", "role": 1, "readSeq": "0"}]));
    let up = t.ok(Method::PATCH, &format!("/im/v1/groups/{gid}"), json!({"name": "h", "muted": true})).await;
    assert_eq!(up["seq"], json!("4"));
    t.fails(Method::PATCH, &format!("/im/v1/groups/{gid}"), json!({}), 400).await;
    let gone = t.ok(Method::DELETE, &format!("/im/v1/groups/{gid}"), Value::Null).await;
    assert_eq!(gone["seq"], json!("5"));
    let g = t.ok(Method::GET, &format!("/im/v1/groups/{gid}"), Value::Null).await;
    assert_eq!((g["dissolved"].clone(), g["name"].clone()), (json!(true), json!("h")));
    t.fails(Method::POST, &format!("/im/v1/groups/{gid}/members"), json!({"uids": [9]}), 404).await;
}

#[tokio::test]
async fn more_than_1000_uids_in_one_call_are_refused() {
    let t = setup();
    let many: Vec<i64> = (2..=1002).collect();
    assert_eq!(many.len(), 1001);
    t.fails(Method::POST, "/im/v1/groups", json!({"owner": 1, "members": many}), 413).await;
    let g = t.ok(Method::POST, "/im/v1/groups", json!({"gid": 77, "owner": 1})).await;
    assert_eq!(g["gid"], json!("77"));
    t.fails(Method::POST, "/im/v1/groups/77/members", json!({"uids": many}), 413).await;
    t.fails(Method::DELETE, "/im/v1/groups/77/members", json!({"uids": many}), 413).await;
    let ok: Vec<i64> = (2..=1001).collect();
    let add = t.ok(Method::POST, "/im/v1/groups/77/members", json!({"uids": ok})).await;
    assert_eq!(add["added"].as_array().unwrap().len(), 1000);
    t.fails(Method::POST, "/im/v1/groups", json!({"gid": 77, "owner": 1}), 409).await;
}

#[tokio::test]
async fn sends_as_a_user_and_as_the_system_are_deduplicated() {
    let t = setup();
    t.device(2, "k2", "ios");
    let send = json!({"from": 1, "conv": {"kind": "P2P", "id": "2"}, "clientMsgId": "m1", "contentType": 1, "content": "hi"});
    let a = t.ok(Method::POST, "/im/v1/messages", send.clone()).await;
    assert_eq!((a["seq"].clone(), a["duplicate"].clone()), (json!("1"), json!(false)));
    let b = t.ok(Method::POST, "/im/v1/messages", send.clone()).await;
    assert_eq!((b["seq"].clone(), b["msgId"].clone(), b["duplicate"].clone()), (json!("1"), a["msgId"].clone(), json!(true)));
    let mut other = send.clone();
    other["content"] = json!("changed");
    t.fails(Method::POST, "/im/v1/messages", other, 409).await;
    let mut no_id = send.clone();
    no_id["clientMsgId"] = json!("");
    t.fails(Method::POST, "/im/v1/messages", no_id, 400).await;
    let pushed: Vec<Push> = t.sink.to_key(op::im::MSG, "k2");
    assert!(pushed.iter().any(|p| p.messages.iter().any(|m| m.seq == 1 && m.content == "hi")));

    // The system into a group; a non-member user is refused as a client would be.
    t.ok(Method::POST, "/im/v1/groups", json!({"gid": 5, "owner": 1, "members": [2]})).await;
    let sys = json!({"from": 0, "conv": {"kind": "GROUP", "id": 5}, "clientMsgId": "s1", "content": "{\"text\":\"hello\"}"});
    let s = t.ok(Method::POST, "/im/v1/messages", sys.clone()).await;
    assert_eq!(s["seq"], json!("2"));
    assert_eq!(t.ok(Method::POST, "/im/v1/messages", sys).await["duplicate"], json!(true));
    let stranger = json!({"from": 9, "conv": {"kind": "GROUP", "id": 5}, "clientMsgId": "x", "content": "x"});
    t.fails(Method::POST, "/im/v1/messages", stranger, 403).await;
    let big = json!({"from": 1, "conv": {"kind": "GROUP", "id": 5}, "clientMsgId": "b", "content": "x".repeat(9000)});
    t.fails(Method::POST, "/im/v1/messages", big, 413).await;
    let h = t.ok(Method::GET, "/im/v1/conversations/GROUP/5/0/messages", Value::Null).await;
    assert_eq!(h["messages"][0]["sender"], json!("0"));
    assert_eq!(h["messages"][0]["kind"], json!("NORMAL"));
}

#[tokio::test]
async fn a_notice_goes_to_one_user() {
    let t = setup();
    t.device(5, "k5", "ios");
    t.device(6, "k6", "ios");
    let n = json!({"from": 0, "conv": {"kind": "NOTICE"}, "to": 5, "clientMsgId": "n1", "content": "welcome"});
    assert_eq!(t.ok(Method::POST, "/im/v1/messages", n).await["seq"], json!("1"));
    let h = t.ok(Method::GET, "/im/v1/conversations/NOTICE/5/0/messages?viewer=5", Value::Null).await;
    assert_eq!(h["messages"][0]["content"], json!("welcome"));
    assert_eq!(h["messages"][0]["conv"], json!({"kind": "NOTICE", "id": "0"}));
    assert_eq!(t.sink.to_key::<Push>(op::im::MSG, "k5").len(), 1);
    assert!(t.sink.to_key::<Push>(op::im::MSG, "k6").is_empty());
    t.fails(Method::GET, "/im/v1/conversations/NOTICE/5/0/messages?viewer=6", Value::Null, 403).await;
    let no_to = json!({"from": 0, "conv": {"kind": "NOTICE"}, "clientMsgId": "n2", "content": "?"});
    t.fails(Method::POST, "/im/v1/messages", no_to, 400).await;
}

#[tokio::test]
async fn recall_through_the_api() {
    let t = setup();
    let send = json!({"from": 1, "conv": {"kind": "P2P", "id": 2}, "clientMsgId": "m1", "content": "oops"});
    t.ok(Method::POST, "/im/v1/messages", send).await;
    let r = json!({"conv": {"kind": "P2P", "a": 1, "b": 2}, "seq": 1});
    let a = t.ok(Method::POST, "/im/v1/messages/recall", r.clone()).await;
    assert_eq!((a["seq"].clone(), a["duplicate"].clone()), (json!("2"), json!(false)));
    assert_eq!(t.ok(Method::POST, "/im/v1/messages/recall", r.clone()).await["duplicate"], json!(true));
    let mut other = r.clone();
    other["clientMsgId"] = json!("another");
    t.fails(Method::POST, "/im/v1/messages/recall", other, 409).await;
    t.fails(Method::POST, "/im/v1/messages/recall", json!({"conv": {"kind": "P2P", "a": 1, "b": 2}, "seq": 9}), 404).await;
    let h = t.ok(Method::GET, "/im/v1/conversations/P2P/2/1/messages?viewer=2", Value::Null).await;
    assert_eq!(seqs(&h), vec![2, 1], "newest first");
    assert_eq!(h["messages"][0]["kind"], json!("RECALL"));
    assert_eq!(h["messages"][1]["recalled"], json!(true));
    assert_eq!(h["messages"][1]["content"], json!(""), "recall_wipe");
}

#[tokio::test]
async fn history_pages_clamped_to_the_viewer() {
    let t = setup();
    t.ok(Method::POST, "/im/v1/groups", json!({"gid": 9, "owner": 1})).await;
    for i in 0..4 {
        let m = json!({"from": 1, "conv": {"kind": "GROUP", "id": 9}, "clientMsgId": format!("a{i}"), "content": "x"});
        t.ok(Method::POST, "/im/v1/messages", m).await;
    }
    t.ok(Method::POST, "/im/v1/groups/9/members", json!({"uids": [3]})).await; // seq 6
    let m = json!({"from": 3, "conv": {"kind": "GROUP", "id": 9}, "clientMsgId": "b", "content": "y"});
    t.ok(Method::POST, "/im/v1/messages", m).await; // seq 7
    let base = "/im/v1/conversations/GROUP/9/0/messages";
    // Without viewer: the raw log, backward in pages.
    let p = t.ok(Method::GET, &format!("{base}?limit=3"), Value::Null).await;
    assert_eq!((seqs(&p), p["hasMore"].clone(), p["nextSeq"].clone()), (vec![7, 6, 5], json!(true), json!("5")));
    let p = t.ok(Method::GET, &format!("{base}?limit=3&beforeSeq=5"), Value::Null).await;
    assert_eq!(seqs(&p), vec![4, 3, 2]);
    let p = t.ok(Method::GET, &format!("{base}?limit=3&beforeSeq=2"), Value::Null).await;
    assert_eq!((seqs(&p), p["hasMore"].clone(), p["nextSeq"].clone()), (vec![1], json!(false), json!("0")));
    // The late member: from its join on, whatever it asks.
    let p = t.ok(Method::GET, &format!("{base}?viewer=3&afterSeq=0"), Value::Null).await;
    assert_eq!((seqs(&p), p["floorSeq"].clone(), p["lastSeq"].clone()), (vec![6, 7], json!("6"), json!("7")));
    let p = t.ok(Method::GET, &format!("{base}?viewer=3&limit=1"), Value::Null).await;
    assert_eq!((seqs(&p), p["nextSeq"].clone()), (vec![7], json!("7")));
    let p = t.ok(Method::GET, &format!("{base}?viewer=3&beforeSeq=7"), Value::Null).await;
    assert_eq!((seqs(&p), p["hasMore"].clone()), (vec![6], json!(false)));
    let p = t.ok(Method::GET, &format!("{base}?viewer=1&afterSeq=0&limit=2"), Value::Null).await;
    assert_eq!((seqs(&p), p["nextSeq"].clone()), (vec![1, 2], json!("3")));
    t.fails(Method::GET, &format!("{base}?viewer=8"), Value::Null, 403).await;
    t.fails(Method::GET, &format!("{base}?afterSeq=1&beforeSeq=3"), Value::Null, 400).await;
    t.fails(Method::GET, "/im/v1/conversations/GROUP/404/0/messages", Value::Null, 404).await;
}

#[tokio::test]
async fn contacts_list_incrementally_with_deletions() {
    let t = setup();
    let v1 = t.ok(Method::PUT, "/im/v1/users/1/contacts/2", json!({"state": "friend", "remark": "bob"})).await;
    let v2 = t.ok(Method::PUT, "/im/v1/users/1/contacts/3", json!({"state": "blocked"})).await;
    let v3 = t.ok(Method::DELETE, "/im/v1/users/1/contacts/2", Value::Null).await;
    assert_eq!((v1["version"].clone(), v2["version"].clone(), v3["version"].clone()), (json!("1"), json!("2"), json!("3")));
    let all = t.ok(Method::GET, "/im/v1/users/1/contacts", Value::Null).await;
    assert_eq!(
        all["contacts"],
        json!([
            {"peer": "3", "state": "blocked", "remark": "", "version": "2"},
            {"peer": "2", "state": null, "remark": "", "version": "3"},
        ])
    );
    assert_eq!((all["version"].clone(), all["hasMore"].clone()), (json!("3"), json!(false)));
    let since = t.ok(Method::GET, "/im/v1/users/1/contacts?sinceVersion=2", Value::Null).await;
    assert_eq!(since["contacts"], json!([{"peer": "2", "state": null, "remark": "", "version": "3"}]));
    let page = t.ok(Method::GET, "/im/v1/users/1/contacts?limit=1", Value::Null).await;
    assert_eq!((page["version"].clone(), page["hasMore"].clone()), (json!("2"), json!(true)));
    t.fails(Method::PUT, "/im/v1/users/1/contacts/2", json!({"state": "enemy"}), 400).await;
    // A blocked sender is refused through the API as through a client.
    let m = json!({"from": 3, "conv": {"kind": "P2P", "id": 1}, "clientMsgId": "m", "content": "x"});
    t.fails(Method::POST, "/im/v1/messages", m, 403).await;
}

#[tokio::test]
async fn disabling_a_user_kicks_its_devices_and_refuses_its_tokens() {
    let t = setup();
    t.ok(Method::PUT, "/im/v1/users/7", json!({"name": "eve"})).await;
    let old = t.ok(Method::POST, "/im/v1/tokens", json!({"uid": 7})).await["token"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    t.device(7, "k7a", "ios");
    t.device(7, "k7b", "web");
    let d = t.ok(Method::POST, "/im/v1/users/7/disable", json!({"reason": "spam"})).await;
    assert_eq!(d["kicked"], json!(2));
    for key in ["k7a", "k7b"] {
        let kicks: Vec<Kick> = t.sink.to_key(op::im::KICK, key);
        assert_eq!(kicks.len(), 1, "{key}");
        assert_eq!((kicks[0].code, kicks[0].reason.as_str()), (4004, "spam"));
    }
    let u = t.im.store.user(7).await.unwrap().unwrap();
    assert!(u.disabled && u.valid_after_ms > 0);
    assert_eq!(u.name, "eve", "the profile is kept");
    let shown = t.ok(Method::GET, "/im/v1/users/7", Value::Null).await;
    assert_eq!((shown["disabled"].clone(), shown["name"].clone()), (json!(true), json!("eve")));
    let tokens = Tokens::new(SECRET).unwrap();
    assert_eq!(tokens.verify(&old, 7, "", u.valid_after_ms), Err(TokenError::Revoked));
    t.fails(Method::POST, "/im/v1/tokens", json!({"uid": 7}), 403).await;
    assert!(t.ok(Method::GET, "/im/v1/users/7/online", Value::Null).await["devices"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_admin_kick_revokes_tokens_and_kicks_matching_devices() {
    let t = setup();
    let old = t.ok(Method::POST, "/im/v1/tokens", json!({"uid": 8, "platform": "web"})).await["token"]
        .as_str()
        .unwrap()
        .to_string();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    t.device(8, "k8i", "ios");
    t.device(8, "k8w", "web");
    let on = t.ok(Method::GET, "/im/v1/users/8/online", Value::Null).await;
    assert_eq!(on["devices"].as_array().unwrap().len(), 2);
    assert_eq!(t.ok(Method::POST, "/im/v1/users/8/kick", json!({"platform": "ios"})).await["kicked"], json!(1));
    assert_eq!(t.sink.to_key::<Kick>(op::im::KICK, "k8i")[0].code, 4002);
    assert!(t.sink.to_key::<Kick>(op::im::KICK, "k8w").is_empty());
    let u = t.im.store.user(8).await.unwrap().unwrap();
    assert!(!u.disabled);
    let tokens = Tokens::new(SECRET).unwrap();
    assert_eq!(tokens.verify(&old, 8, "web", u.valid_after_ms), Err(TokenError::Revoked));
    // No body: every device.
    assert_eq!(t.ok(Method::POST, "/im/v1/users/8/kick", Value::Null).await["kicked"], json!(1));
}

#[tokio::test]
async fn a_backend_marks_read() {
    let t = setup();
    t.device(1, "k1", "ios");
    for id in ["a", "b"] {
        let m = json!({"from": 1, "conv": {"kind": "P2P", "id": 2}, "clientMsgId": id, "content": "x"});
        t.ok(Method::POST, "/im/v1/messages", m).await;
    }
    let dir = t.ok(Method::GET, "/im/v1/users/2/conversations", Value::Null).await;
    assert_eq!(dir["convs"][0]["unread"], json!(2));
    let r = t.ok(Method::POST, "/im/v1/users/2/read", json!({"conv": {"kind": "P2P", "id": 1}, "seq": 9})).await;
    assert_eq!(r, json!({"seq": "2", "moved": true}), "clamped to the last seq");
    let again = t.ok(Method::POST, "/im/v1/users/2/read", json!({"conv": {"kind": "P2P", "id": 1}, "seq": 1})).await;
    assert_eq!(again["moved"], json!(false));
    let dir = t.ok(Method::GET, "/im/v1/users/2/conversations", Value::Null).await;
    assert_eq!((dir["convs"][0]["unread"].clone(), dir["convs"][0]["readSeq"].clone()), (json!(0), json!("2")));
    assert_eq!(dir["convs"][0]["conv"], json!({"kind": "P2P", "id": "1"}));
    // The peer sees the read receipt.
    let ev: Vec<Event> = t.sink.to_key(op::im::EVENT, "k1");
    assert_eq!(ev.iter().map(|e| (e.r#type, e.uid, e.seq)).collect::<Vec<_>>(), vec![(event::Type::Read as i32, 2, 2)]);
}
