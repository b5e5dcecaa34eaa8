//! `/im/v1/messages` and history (reference im.md §8 "messages"): sends as a user and as the
//! system with dedup, notices, recalls, history pages clamped to a viewer. Harness: `common`.

mod common;

use axum::http::Method;
use common::*;
use serde_json::{Value, json};
use starling_proto::im::v1::Push;
use starling_proto::op;

#[tokio::test]
async fn sends_as_a_user_and_as_the_system_are_deduplicated() {
    let t = setup();
    t.device(2, "k2", "ios");
    let send = json!({"from": 1, "conv": {"kind": "P2P", "id": "2"}, "clientMsgId": "m1", "contentType": 1, "content": "hi"});
    let a = t.ok(Method::POST, "/im/v1/messages", send.clone()).await;
    assert_eq!(
        (a["seq"].clone(), a["duplicate"].clone()),
        (json!("1"), json!(false))
    );
    let b = t.ok(Method::POST, "/im/v1/messages", send.clone()).await;
    assert_eq!(
        (b["seq"].clone(), b["msgId"].clone(), b["duplicate"].clone()),
        (json!("1"), a["msgId"].clone(), json!(true))
    );
    let mut other = send.clone();
    other["content"] = json!("changed");
    t.fails(Method::POST, "/im/v1/messages", other, 409).await;
    let mut no_id = send.clone();
    no_id["clientMsgId"] = json!("");
    t.fails(Method::POST, "/im/v1/messages", no_id, 400).await;
    let pushed: Vec<Push> = t.sink.to_key(op::im::MSG, "k2");
    assert!(
        pushed
            .iter()
            .any(|p| p.messages.iter().any(|m| m.seq == 1 && m.content == "hi"))
    );

    // The system into a group; a non-member user is refused as a client would be.
    t.ok(
        Method::POST,
        "/im/v1/groups",
        json!({"gid": 5, "owner": 1, "members": [2]}),
    )
    .await;
    let sys = json!({"from": 0, "conv": {"kind": "GROUP", "id": 5}, "clientMsgId": "s1", "content": "{\"text\":\"hello\"}"});
    let s = t.ok(Method::POST, "/im/v1/messages", sys.clone()).await;
    assert_eq!(s["seq"], json!("2"));
    assert_eq!(
        t.ok(Method::POST, "/im/v1/messages", sys).await["duplicate"],
        json!(true)
    );
    let stranger =
        json!({"from": 9, "conv": {"kind": "GROUP", "id": 5}, "clientMsgId": "x", "content": "x"});
    t.fails(Method::POST, "/im/v1/messages", stranger, 403)
        .await;
    let big = json!({"from": 1, "conv": {"kind": "GROUP", "id": 5}, "clientMsgId": "b", "content": "x".repeat(9000)});
    t.fails(Method::POST, "/im/v1/messages", big, 413).await;
    let h = t
        .ok(
            Method::GET,
            "/im/v1/conversations/GROUP/5/0/messages",
            Value::Null,
        )
        .await;
    assert_eq!(h["messages"][0]["sender"], json!("0"));
    assert_eq!(h["messages"][0]["kind"], json!("NORMAL"));
}

#[tokio::test]
async fn a_notice_goes_to_one_user() {
    let t = setup();
    t.device(5, "k5", "ios");
    t.device(6, "k6", "ios");
    let n = json!({"from": 0, "conv": {"kind": "NOTICE"}, "to": 5, "clientMsgId": "n1", "content": "welcome"});
    assert_eq!(
        t.ok(Method::POST, "/im/v1/messages", n).await["seq"],
        json!("1")
    );
    let h = t
        .ok(
            Method::GET,
            "/im/v1/conversations/NOTICE/5/0/messages?viewer=5",
            Value::Null,
        )
        .await;
    assert_eq!(h["messages"][0]["content"], json!("welcome"));
    assert_eq!(
        h["messages"][0]["conv"],
        json!({"kind": "NOTICE", "id": "0"})
    );
    assert_eq!(t.sink.to_key::<Push>(op::im::MSG, "k5").len(), 1);
    assert!(t.sink.to_key::<Push>(op::im::MSG, "k6").is_empty());
    t.fails(
        Method::GET,
        "/im/v1/conversations/NOTICE/5/0/messages?viewer=6",
        Value::Null,
        403,
    )
    .await;
    let no_to = json!({"from": 0, "conv": {"kind": "NOTICE"}, "clientMsgId": "n2", "content": "?"});
    t.fails(Method::POST, "/im/v1/messages", no_to, 400).await;
}

#[tokio::test]
async fn recall_through_the_api() {
    let t = setup();
    let send = json!({"from": 1, "conv": {"kind": "P2P", "id": 2}, "clientMsgId": "m1", "content": "oops"});
    t.ok(Method::POST, "/im/v1/messages", send).await;
    let r = json!({"conv": {"kind": "P2P", "a": 1, "b": 2}, "seq": 1});
    let a = t
        .ok(Method::POST, "/im/v1/messages/recall", r.clone())
        .await;
    assert_eq!(
        (a["seq"].clone(), a["duplicate"].clone()),
        (json!("2"), json!(false))
    );
    assert_eq!(
        t.ok(Method::POST, "/im/v1/messages/recall", r.clone())
            .await["duplicate"],
        json!(true)
    );
    let mut other = r.clone();
    other["clientMsgId"] = json!("another");
    t.fails(Method::POST, "/im/v1/messages/recall", other, 409)
        .await;
    t.fails(
        Method::POST,
        "/im/v1/messages/recall",
        json!({"conv": {"kind": "P2P", "a": 1, "b": 2}, "seq": 9}),
        404,
    )
    .await;
    let h = t
        .ok(
            Method::GET,
            "/im/v1/conversations/P2P/2/1/messages?viewer=2",
            Value::Null,
        )
        .await;
    assert_eq!(seqs(&h), vec![2, 1], "newest first");
    assert_eq!(h["messages"][0]["kind"], json!("RECALL"));
    assert_eq!(h["messages"][1]["recalled"], json!(true));
    assert_eq!(h["messages"][1]["content"], json!(""), "recall_wipe");
}

#[tokio::test]
async fn history_pages_clamped_to_the_viewer() {
    let t = setup();
    t.ok(Method::POST, "/im/v1/groups", json!({"gid": 9, "owner": 1}))
        .await;
    for i in 0..4 {
        let m = json!({"from": 1, "conv": {"kind": "GROUP", "id": 9}, "clientMsgId": format!("a{i}"), "content": "x"});
        t.ok(Method::POST, "/im/v1/messages", m).await;
    }
    t.ok(
        Method::POST,
        "/im/v1/groups/9/members",
        json!({"uids": [3]}),
    )
    .await; // seq 6
    let m =
        json!({"from": 3, "conv": {"kind": "GROUP", "id": 9}, "clientMsgId": "b", "content": "y"});
    t.ok(Method::POST, "/im/v1/messages", m).await; // seq 7
    let base = "/im/v1/conversations/GROUP/9/0/messages";
    // Without viewer: the raw log, backward in pages.
    let p = t
        .ok(Method::GET, &format!("{base}?limit=3"), Value::Null)
        .await;
    assert_eq!(
        (seqs(&p), p["hasMore"].clone(), p["nextSeq"].clone()),
        (vec![7, 6, 5], json!(true), json!("5"))
    );
    let p = t
        .ok(
            Method::GET,
            &format!("{base}?limit=3&beforeSeq=5"),
            Value::Null,
        )
        .await;
    assert_eq!(seqs(&p), vec![4, 3, 2]);
    let p = t
        .ok(
            Method::GET,
            &format!("{base}?limit=3&beforeSeq=2"),
            Value::Null,
        )
        .await;
    assert_eq!(
        (seqs(&p), p["hasMore"].clone(), p["nextSeq"].clone()),
        (vec![1], json!(false), json!("0"))
    );
    // The late member: from its join on, whatever it asks.
    let p = t
        .ok(
            Method::GET,
            &format!("{base}?viewer=3&afterSeq=0"),
            Value::Null,
        )
        .await;
    assert_eq!(
        (seqs(&p), p["floorSeq"].clone(), p["lastSeq"].clone()),
        (vec![6, 7], json!("6"), json!("7"))
    );
    let p = t
        .ok(
            Method::GET,
            &format!("{base}?viewer=3&limit=1"),
            Value::Null,
        )
        .await;
    assert_eq!((seqs(&p), p["nextSeq"].clone()), (vec![7], json!("7")));
    let p = t
        .ok(
            Method::GET,
            &format!("{base}?viewer=3&beforeSeq=7"),
            Value::Null,
        )
        .await;
    assert_eq!((seqs(&p), p["hasMore"].clone()), (vec![6], json!(false)));
    let p = t
        .ok(
            Method::GET,
            &format!("{base}?viewer=1&afterSeq=0&limit=2"),
            Value::Null,
        )
        .await;
    assert_eq!((seqs(&p), p["nextSeq"].clone()), (vec![1, 2], json!("3")));
    t.fails(Method::GET, &format!("{base}?viewer=8"), Value::Null, 403)
        .await;
    t.fails(
        Method::GET,
        &format!("{base}?afterSeq=1&beforeSeq=3"),
        Value::Null,
        400,
    )
    .await;
    t.fails(
        Method::GET,
        "/im/v1/conversations/GROUP/404/0/messages",
        Value::Null,
        404,
    )
    .await;
}

/// Deliveries are keyed per conversation (issue 13; reference im.md §7.1 step 4, §7.1 "job"):
/// every op-41 push of one conversation carries one partition key, whoever sent the message
/// and whichever device (user, platform) it goes to, and no two conversations share a key.
/// logic's Kafka producer uses that key as the record key (`message_key`, tested in
/// `logic/src/kafka.rs`), so one conversation stays on one partition, in commit order.
#[tokio::test]
async fn deliveries_are_keyed_per_conversation_whatever_the_sender_or_device() {
    let t = setup();
    for (mid, key, platform) in [
        (1, "k1-ios", "ios"),
        (1, "k1-web", "web"),
        (2, "k2-ios", "ios"),
        (2, "k2-android", "android"),
        (3, "k3-ios", "ios"),
    ] {
        t.device(mid, key, platform);
    }
    t.ok(
        Method::POST,
        "/im/v1/groups",
        json!({"gid": 7, "owner": 1, "members": [2, 3]}),
    )
    .await;
    // (conversation, sender, peer or group id): both directions of each P2P pair.
    let sends = [
        ("P2P 1-2", 1, "P2P", 2),
        ("P2P 1-2", 2, "P2P", 1),
        ("P2P 1-3", 3, "P2P", 1),
        ("P2P 1-3", 1, "P2P", 3),
        ("P2P 2-3", 2, "P2P", 3),
        ("GROUP 7", 1, "GROUP", 7),
        ("GROUP 7", 2, "GROUP", 7),
        ("GROUP 7", 3, "GROUP", 7),
    ];
    let mut conv_of = std::collections::HashMap::new();
    for (i, (conv, from, kind, id)) in sends.iter().enumerate() {
        let cmid = format!("m{i}");
        t.ok(
            Method::POST,
            "/im/v1/messages",
            json!({"from": from, "conv": {"kind": kind, "id": id.to_string()}, "clientMsgId": cmid, "contentType": 1, "content": "x"}),
        )
        .await;
        conv_of.insert(cmid, *conv);
    }
    // conversation → the keys its pushes carried, and the devices they went to.
    let mut keys: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> =
        Default::default();
    let mut devices: std::collections::BTreeMap<&str, std::collections::BTreeSet<String>> =
        Default::default();
    for m in t.sink.all().iter().filter(|m| m.operation == op::im::MSG) {
        let push: Push = serde_json::from_slice(&m.msg).expect("a JSON body");
        for msg in &push.messages {
            if let Some(conv) = conv_of.get(&msg.client_msg_id) {
                keys.entry(conv)
                    .or_default()
                    .insert(m.partition_key.clone());
                devices.entry(conv).or_default().extend(m.keys.clone());
            }
        }
    }
    assert_eq!(
        devices["P2P 1-2"].len(),
        4,
        "both users' devices: {devices:?}"
    );
    assert_eq!(devices["GROUP 7"].len(), 5, "{devices:?}");
    assert_eq!(keys.len(), 4, "every conversation delivered: {keys:?}");
    for (conv, ks) in &keys {
        assert_eq!(
            ks.len(),
            1,
            "{conv}: one key whatever the sender or device: {ks:?}"
        );
        assert!(!ks.first().unwrap().is_empty(), "{conv}: keyed");
    }
    let distinct: std::collections::BTreeSet<&String> = keys.values().flatten().collect();
    assert_eq!(
        distinct.len(),
        4,
        "no two conversations share a key: {keys:?}"
    );
}
