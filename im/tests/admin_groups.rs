//! `/im/v1/groups` (reference im.md §8 "groups"): SYSTEM messages in seq order, join and
//! leave seqs, CONV_ADDED / CONV_REMOVED events, the 1000-uid limit. Harness: `common`.

mod common;

use axum::http::Method;
use common::*;
use serde_json::{Value, json};
use starling_im::store::Conv;
use starling_proto::im::v1::{Event, Push, event};
use starling_proto::op;

#[tokio::test]
async fn groups_created_joined_and_left_with_their_system_messages() {
    let t = setup();
    t.device(4, "k4", "ios");
    t.device(2, "k2", "web");
    let g = t
        .ok(
            Method::POST,
            "/im/v1/groups",
            json!({"name": "g", "owner": 1, "members": [2, "3"]}),
        )
        .await;
    let gid: i64 = g["gid"].as_str().unwrap().parse().unwrap();
    assert!(gid > 0, "assigned: {g}");
    assert_eq!(
        (g["owner"].clone(), g["memberCount"].clone()),
        (json!("1"), json!(3))
    );
    assert_eq!(
        g["change"]["seq"],
        json!("1"),
        "the created message is seq 1"
    );
    let add = t
        .ok(
            Method::POST,
            &format!("/im/v1/groups/{gid}/members"),
            json!({"uids": [4, 3]}),
        )
        .await;
    assert_eq!(
        (add["seq"].clone(), add["added"].clone()),
        (json!("2"), json!(["4"]))
    );
    let rm = t
        .ok(
            Method::DELETE,
            &format!("/im/v1/groups/{gid}/members"),
            json!({"uids": [2]}),
        )
        .await;
    assert_eq!(
        (rm["seq"].clone(), rm["removed"].clone()),
        (json!("3"), json!(["2"]))
    );
    let conv = Conv::group(gid);
    let m4 = t.im.store.member(conv, 4).await.unwrap().unwrap();
    let m2 = t.im.store.member(conv, 2).await.unwrap().unwrap();
    assert_eq!(
        (m4.join_seq, m4.leave_seq, m2.join_seq, m2.leave_seq),
        (2, 0, 1, 3)
    );

    let h = t
        .ok(
            Method::GET,
            &format!("/im/v1/conversations/GROUP/{gid}/0/messages?afterSeq=0"),
            Value::Null,
        )
        .await;
    assert_eq!(seqs(&h), vec![1, 2, 3]);
    let kinds: Vec<(&str, Value)> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["kind"].as_str().unwrap(),
                serde_json::from_str(m["content"].as_str().unwrap()).unwrap(),
            )
        })
        .collect();
    assert!(kinds.iter().all(|(k, _)| *k == "SYSTEM"), "{kinds:?}");
    assert_eq!(kinds[0].1["type"], "group_created");
    assert_eq!(
        kinds[1].1,
        json!({"type": "members_added", "by": "0", "uids": ["4"]}),
        "3 was already a member: only who joins is named"
    );
    assert_eq!(
        kinds[2].1,
        json!({"type": "members_removed", "by": "0", "uids": ["2"]})
    );

    // The new member: the added message, then CONV_ADDED; the removed one: the removal
    // message (its leave_seq), then CONV_REMOVED.
    let pushed: Vec<Push> = t.sink.to_key(op::im::MSG, "k4");
    assert_eq!(
        pushed
            .iter()
            .flat_map(|p| p.messages.iter().map(|m| m.seq))
            .collect::<Vec<_>>(),
        vec![2, 3]
    );
    let ev: Vec<Event> = t.sink.to_key(op::im::EVENT, "k4");
    assert_eq!(
        ev.iter().map(|e| (e.r#type, e.seq)).collect::<Vec<_>>(),
        vec![(event::Type::ConvAdded as i32, 2)]
    );
    let pushed: Vec<Push> = t.sink.to_key(op::im::MSG, "k2");
    assert_eq!(
        pushed
            .iter()
            .flat_map(|p| p.messages.iter().map(|m| m.seq))
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let ev: Vec<Event> = t.sink.to_key(op::im::EVENT, "k2");
    let types: Vec<i32> = ev.iter().map(|e| e.r#type).collect();
    assert_eq!(
        types,
        vec![
            event::Type::ConvAdded as i32,
            event::Type::ConvRemoved as i32
        ]
    );

    // Member pages, roles and mutes; dissolve.
    t.ok(
        Method::PATCH,
        &format!("/im/v1/groups/{gid}/members/4"),
        json!({"role": 1, "mutedUntil": "5"}),
    )
    .await;
    let page = t
        .ok(
            Method::GET,
            &format!("/im/v1/groups/{gid}/members?limit=2"),
            Value::Null,
        )
        .await;
    assert_eq!(page["members"].as_array().unwrap().len(), 2);
    assert_eq!(page["hasMore"], json!(true));
    let page = t
        .ok(
            Method::GET,
            &format!(
                "/im/v1/groups/{gid}/members?cursor={}",
                page["cursor"].as_str().unwrap()
            ),
            Value::Null,
        )
        .await;
    assert_eq!(
        page["members"],
        json!([{"uid": "4", "role": 1, "readSeq": "0"}])
    );
    let up = t
        .ok(
            Method::PATCH,
            &format!("/im/v1/groups/{gid}"),
            json!({"name": "h", "muted": true}),
        )
        .await;
    assert_eq!(up["seq"], json!("4"));
    t.fails(
        Method::PATCH,
        &format!("/im/v1/groups/{gid}"),
        json!({}),
        400,
    )
    .await;
    let gone = t
        .ok(Method::DELETE, &format!("/im/v1/groups/{gid}"), Value::Null)
        .await;
    assert_eq!(gone["seq"], json!("5"));
    let g = t
        .ok(Method::GET, &format!("/im/v1/groups/{gid}"), Value::Null)
        .await;
    assert_eq!(
        (g["dissolved"].clone(), g["name"].clone()),
        (json!(true), json!("h"))
    );
    t.fails(
        Method::POST,
        &format!("/im/v1/groups/{gid}/members"),
        json!({"uids": [9]}),
        404,
    )
    .await;
}

#[tokio::test]
async fn more_than_1000_uids_in_one_call_are_refused() {
    let t = setup();
    let many: Vec<i64> = (2..=1002).collect();
    assert_eq!(many.len(), 1001);
    t.fails(
        Method::POST,
        "/im/v1/groups",
        json!({"owner": 1, "members": many}),
        413,
    )
    .await;
    let g = t
        .ok(
            Method::POST,
            "/im/v1/groups",
            json!({"gid": 77, "owner": 1}),
        )
        .await;
    assert_eq!(g["gid"], json!("77"));
    t.fails(
        Method::POST,
        "/im/v1/groups/77/members",
        json!({"uids": many}),
        413,
    )
    .await;
    t.fails(
        Method::DELETE,
        "/im/v1/groups/77/members",
        json!({"uids": many}),
        413,
    )
    .await;
    let ok: Vec<i64> = (2..=1001).collect();
    let add = t
        .ok(
            Method::POST,
            "/im/v1/groups/77/members",
            json!({"uids": ok}),
        )
        .await;
    assert_eq!(add["added"].as_array().unwrap().len(), 1000);
    t.fails(
        Method::POST,
        "/im/v1/groups",
        json!({"gid": 77, "owner": 1}),
        409,
    )
    .await;
}

/// A membership call that changes nothing (adding members, removing non-members) writes no
/// SYSTEM message: a retried call does not spam the group.
#[tokio::test]
async fn redundant_membership_calls_write_nothing() {
    let t = setup();
    t.ok(
        Method::POST,
        "/im/v1/groups",
        json!({"gid": "77", "name": "g", "owner": "1", "members": ["2"]}),
    )
    .await;
    let again = t
        .ok(
            Method::POST,
            "/im/v1/groups/77/members",
            json!({"uids": ["2"]}),
        )
        .await;
    assert_eq!(again["seq"], "0", "{again}");
    let gone = t
        .ok(
            Method::DELETE,
            "/im/v1/groups/77/members",
            json!({"uids": ["424242"]}),
        )
        .await;
    assert_eq!(gone["seq"], "0", "{gone}");
    let h = t
        .ok(
            Method::GET,
            "/im/v1/conversations/GROUP/77/0/messages?afterSeq=0",
            Value::Null,
        )
        .await;
    assert_eq!(seqs(&h), vec![1], "only the creation message");
    let (status, _) = t
        .call(
            Method::DELETE,
            "/im/v1/groups/78/members",
            Some(r#"{"uids":["2"]}"#),
            Some(ADMIN),
        )
        .await;
    assert_eq!(status, 404, "a missing group is still 404");
}

/// Values refused up front alike on every store (found by a bad-input pass): a negative actor
/// (`by`) of a group change, a token bound to a platform no connection may name (over
/// `MAX_PLATFORM` bytes), a client message id holding NUL (PostgreSQL's text cannot).
#[tokio::test]
async fn negative_actors_unusable_platforms_and_nul_ids_are_400() {
    let t = setup();
    t.ok(
        Method::POST,
        "/im/v1/groups",
        json!({"gid": 9, "name": "g", "owner": 1, "members": [2]}),
    )
    .await;
    t.fails(
        Method::PATCH,
        "/im/v1/groups/9",
        json!({"name": "n", "by": -1}),
        400,
    )
    .await;
    t.fails(
        Method::POST,
        "/im/v1/groups/9/members",
        json!({"uids": [3], "by": i64::MIN.to_string()}),
        400,
    )
    .await;
    t.fails(
        Method::DELETE,
        "/im/v1/groups/9/members",
        json!({"uids": [2], "by": "-5"}),
        400,
    )
    .await;
    t.fails(Method::DELETE, "/im/v1/groups/9?by=-1", json!({}), 400)
        .await;
    t.ok(
        Method::POST,
        "/im/v1/tokens",
        json!({"uid": 1, "platform": "p".repeat(12), "ttl": 60}),
    )
    .await;
    t.fails(
        Method::POST,
        "/im/v1/tokens",
        json!({"uid": 1, "platform": "p".repeat(13), "ttl": 60}),
        400,
    )
    .await;
    t.fails(
        Method::POST,
        "/im/v1/messages",
        json!({"from": 1, "conv": {"kind": "GROUP", "id": 9}, "clientMsgId": "a\u{0}b", "content": "x"}),
        400,
    )
    .await;
    t.fails(
        Method::POST,
        "/im/v1/messages",
        json!({"from": 1, "conv": {"kind": "GROUP", "id": 999, "a": 9}, "clientMsgId": "c1", "content": "x"}),
        400,
    )
    .await;
    // Nothing was written by the refused calls: the group still has its owner and member 2,
    // and only its "created" message.
    let m = t
        .ok(Method::GET, "/im/v1/groups/9/members", json!(null))
        .await;
    assert_eq!(m["members"].as_array().map(Vec::len), Some(2), "{m}");
}
