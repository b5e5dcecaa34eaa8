//! `starling.im.v1.Admin` over gRPC (reference im.md §8): a real tonic server on
//! `127.0.0.1:0` and a tonic client, against the same `Im` the HTTP harness (`common`) builds,
//! so an operation can be made over one transport and checked over the other.

mod common;

use axum::http::Method;
use common::*;
use serde_json::json;
use starling_im::admin::grpc::{self, AdminClient, status};
use starling_im::config::Config;
use starling_proto::im::v1::{self as pb, ConvKind};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};
use tonic::{Code, Request, Status};

/// Serves `svc` (or nothing) on a loopback port; a client connected to it.
async fn serve(svc: Option<grpc::Server>) -> AdminClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_optional_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    AdminClient::new(ch)
}

async fn client(t: &T) -> AdminClient<Channel> {
    serve(grpc::service(t.im.clone())).await
}

/// `m` with `authorization: Bearer <token>` (none when `None`).
fn with<M>(m: M, token: Option<&str>) -> Request<M> {
    let mut r = Request::new(m);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

/// `m` with the admin token.
fn req<M>(m: M) -> Request<M> {
    with(m, Some(ADMIN))
}

/// The status's gRPC code and IM code.
fn codes(s: &Status) -> (Code, Option<u16>) {
    (s.code(), status::im_code(s))
}

fn group_conv(gid: i64) -> Option<pb::ConvName> {
    Some(pb::ConvName {
        kind: ConvKind::Group as i32,
        id: gid,
        ..Default::default()
    })
}

fn send(from: i64, gid: i64, id: &str, content: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        from,
        conv: group_conv(gid),
        client_msg_id: id.into(),
        content_type: 1,
        content: content.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_missing_or_wrong_bearer_token_is_unauthenticated() {
    let t = setup();
    let mut c = client(&t).await;
    for token in [
        None,
        Some("wrong"),
        Some("admin-token-for-the-test"),
        Some(""),
    ] {
        let online = pb::ListOnlineRequest { uid: 1 };
        let e = c.list_online(with(online, token)).await.unwrap_err();
        assert_eq!(codes(&e), (Code::Unauthenticated, Some(401)), "{token:?}");
        let g = pb::CreateGroupRequest {
            name: "g".into(),
            owner: 1,
            ..Default::default()
        };
        let e = c.create_group(with(g, token)).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    assert!(t.im.store.group(1).await.unwrap().is_none(), "nothing ran");
    // The scheme is case-insensitive, as over HTTP.
    let online = pb::ListOnlineRequest { uid: 1 };
    let r = c
        .list_online(with(online, Some(ADMIN)))
        .await
        .unwrap()
        .into_inner();
    assert!(r.devices.is_empty());
    let mut r = Request::new(pb::ListOnlineRequest { uid: 1 });
    r.metadata_mut()
        .insert("authorization", format!("bearer {ADMIN}").parse().unwrap());
    c.list_online(r).await.unwrap();
}

#[tokio::test]
async fn without_an_admin_token_the_service_is_not_served() {
    let t = setup_with(Config {
        admin_token: String::new(),
        ..config()
    });
    let svc = grpc::service(t.im.clone());
    assert!(svc.is_none(), "as the HTTP routes are absent");
    let mut c = serve(svc).await;
    let e = c
        .list_online(with(pb::ListOnlineRequest { uid: 1 }, Some("")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_group_conversation_end_to_end() {
    let t = setup();
    t.device(2, "k2", "ios");
    let mut c = client(&t).await;
    let g = pb::CreateGroupRequest {
        name: "g".into(),
        owner: 1,
        members: vec![2, 3],
        ..Default::default()
    };
    let created = c.create_group(req(g)).await.unwrap().into_inner();
    let group = created.group.unwrap();
    let gid = group.gid;
    assert!(gid > 0);
    assert_eq!((group.owner, group.member_count), (1, 3));
    assert_eq!(created.change.unwrap().seq, 1, "group_created at seq 1");
    assert_eq!(
        c.get_group(req(pb::GetGroupRequest { gid }))
            .await
            .unwrap()
            .into_inner(),
        group
    );

    let add = pb::AddMembersRequest {
        gid,
        uids: vec![4, 3],
        ..Default::default()
    };
    let added = c.add_members(req(add.clone())).await.unwrap().into_inner();
    assert_eq!((added.seq, added.added.clone()), (2, vec![4]));
    // Set semantics: adding them again writes nothing new.
    let again = c.add_members(req(add)).await.unwrap().into_inner();
    assert!(again.added.is_empty(), "{again:?}");

    let ack = c
        .send_message(req(send(2, gid, "m-1", "hi")))
        .await
        .unwrap()
        .into_inner();
    let seq = ack.seq;
    assert!(ack.stored && !ack.duplicate && ack.msg_id > 0, "{ack:?}");
    let dup = c
        .send_message(req(send(2, gid, "m-1", "hi")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (dup.seq, dup.msg_id, dup.duplicate),
        (seq, ack.msg_id, true)
    );

    let history = |viewer: Option<i64>| pb::HistoryRequest {
        conv: Some(pb::ConvName {
            kind: ConvKind::Group as i32,
            a: gid,
            ..Default::default()
        }),
        viewer,
        ..Default::default()
    };
    let page = c.history(req(history(Some(4)))).await.unwrap().into_inner();
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        vec![seq, 2],
        "4 reads from its join (seq 2), newest first"
    );
    assert_eq!((page.floor_seq, page.last_seq), (2, seq));
    assert_eq!(page.messages[0].content, "hi");

    let recall = pb::RecallMessageRequest {
        conv: group_conv(gid),
        seq,
        ..Default::default()
    };
    let r = c
        .recall_message(req(recall.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.seq, seq + 1, "the RECALL event");
    let r2 = c.recall_message(req(recall)).await.unwrap().into_inner();
    assert_eq!((r2.seq, r2.duplicate), (r.seq, true), "idempotent");
    let raw = c.history(req(history(None))).await.unwrap().into_inner();
    let hi = raw.messages.iter().find(|m| m.seq == seq).unwrap();
    assert!(hi.recalled, "{hi:?}");

    let dir = pb::ListConversationsRequest {
        uid: 2,
        ..Default::default()
    };
    let dir = c.list_conversations(req(dir)).await.unwrap().into_inner();
    let head = dir
        .convs
        .iter()
        .find(|h| h.conv.as_ref().is_some_and(|v| v.id == gid))
        .expect("the group in 2's directory");
    assert_eq!(head.last_seq, seq + 1);

    let read = pb::MarkReadRequest {
        uid: 3,
        conv: group_conv(gid),
        seq,
    };
    let m = c.mark_read(req(read)).await.unwrap().into_inner();
    assert_eq!((m.seq, m.moved), (seq, true));
    let members = pb::MembersReq {
        gid,
        ..Default::default()
    };
    let members = c.list_members(req(members)).await.unwrap().into_inner();
    let read_seqs: Vec<(i64, u64)> = members
        .members
        .iter()
        .map(|m| (m.uid, m.read_seq))
        .collect();
    assert!(read_seqs.contains(&(3, seq)), "{read_seqs:?}");

    let online = c
        .list_online(req(pb::ListOnlineRequest { uid: 2 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(online.devices.len(), 1);
    assert_eq!(
        (
            online.devices[0].key.as_str(),
            online.devices[0].platform.as_str()
        ),
        ("k2", "ios")
    );
    let kicked = c
        .kick_user(req(pb::KickUserRequest {
            uid: 2,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kicked.kicked, 1);

    let rm = pb::RemoveMembersRequest {
        gid,
        uids: vec![3],
        ..Default::default()
    };
    let rm = c.remove_members(req(rm)).await.unwrap().into_inner();
    assert_eq!(rm.removed, vec![3]);
    let gone = c
        .dissolve_group(req(pb::DissolveGroupRequest { gid, by: 0 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(gone.seq, rm.seq + 1);
}

#[tokio::test]
async fn users_tokens_and_contacts() {
    let t = setup();
    let mut c = client(&t).await;
    let u = pb::PutUserRequest {
        uid: 5,
        name: Some("Eve".into()),
        ..Default::default()
    };
    let u = c.put_user(req(u)).await.unwrap().into_inner();
    assert_eq!((u.uid, u.name.as_str()), (5, "Eve"));
    // An absent field keeps its value.
    let u2 = pb::PutUserRequest {
        uid: 5,
        avatar: Some("a.png".into()),
        ..Default::default()
    };
    let u2 = c.put_user(req(u2)).await.unwrap().into_inner();
    assert_eq!((u2.name.as_str(), u2.avatar.as_str()), ("Eve", "a.png"));

    let tok = pb::MintTokenRequest {
        uid: 5,
        platform: "ios".into(),
        ttl: 60,
    };
    let tok = c.mint_token(req(tok)).await.unwrap().into_inner();
    let claims =
        t.im.tokens()
            .unwrap()
            .verify(&tok.token, 5, "ios", 0)
            .unwrap();
    assert_eq!(claims.exp as i64 * 1000, tok.expires_at);

    let put = |peer, state: pb::ContactStatus| pb::PutContactRequest {
        uid: 5,
        peer,
        state: state as i32,
        remark: String::new(),
    };
    let v1 = c
        .put_contact(req(put(6, pb::ContactStatus::Friend)))
        .await
        .unwrap();
    let v2 = c
        .put_contact(req(put(7, pb::ContactStatus::Blocked)))
        .await
        .unwrap();
    assert!(v2.get_ref().version > v1.get_ref().version);
    let del = pb::DeleteContactRequest { uid: 5, peer: 6 };
    let v3 = c
        .delete_contact(req(del))
        .await
        .unwrap()
        .into_inner()
        .version;
    let list = pb::ListContactsRequest {
        uid: 5,
        since_version: v1.get_ref().version,
        limit: 10,
    };
    let list = c.list_contacts(req(list)).await.unwrap().into_inner();
    let got: Vec<(i64, i32)> = list.contacts.iter().map(|c| (c.peer, c.state)).collect();
    assert_eq!(
        got,
        vec![
            (7, pb::ContactStatus::Blocked as i32),
            (6, pb::ContactStatus::Unspecified as i32)
        ],
        "changes after v1, a deletion as UNSPECIFIED"
    );
    assert_eq!((list.version, list.has_more), (v3, false));
    let e = c
        .put_contact(req(put(8, pb::ContactStatus::Unspecified)))
        .await
        .unwrap_err();
    assert_eq!(codes(&e), (Code::InvalidArgument, Some(400)));

    let off = pb::DisableUserRequest {
        uid: 5,
        reason: String::new(),
    };
    c.disable_user(req(off)).await.unwrap();
    let tok = pb::MintTokenRequest {
        uid: 5,
        ..Default::default()
    };
    let e = c.mint_token(req(tok)).await.unwrap_err();
    assert_eq!(codes(&e), (Code::PermissionDenied, Some(403)));
}

#[tokio::test]
async fn each_im_code_becomes_its_status_with_the_code_attached() {
    let t = setup();
    let mut c = client(&t).await;
    let g = pb::CreateGroupRequest {
        gid: 77,
        name: "g".into(),
        owner: 1,
        members: vec![2],
        ..Default::default()
    };
    c.create_group(req(g.clone())).await.unwrap();

    // 409: the gid is taken.
    let e = c.create_group(req(g)).await.unwrap_err();
    assert_eq!(codes(&e), (Code::AlreadyExists, Some(409)));
    assert!(e.message().starts_with("409: "), "{}", e.message());
    // 409: a client_msg_id reused with other content.
    c.send_message(req(send(2, 77, "x", "a"))).await.unwrap();
    let e = c
        .send_message(req(send(2, 77, "x", "b")))
        .await
        .unwrap_err();
    assert_eq!(codes(&e), (Code::AlreadyExists, Some(409)));
    // 404: no such group, user or message.
    let e = c
        .get_group(req(pb::GetGroupRequest { gid: 78 }))
        .await
        .unwrap_err();
    assert_eq!(codes(&e), (Code::NotFound, Some(404)));
    let e = c
        .get_user(req(pb::GetUserRequest { uid: 9 }))
        .await
        .unwrap_err();
    assert_eq!(codes(&e), (Code::NotFound, Some(404)));
    let recall = pb::RecallMessageRequest {
        conv: group_conv(77),
        seq: 99,
        ..Default::default()
    };
    let e = c.recall_message(req(recall)).await.unwrap_err();
    assert_eq!(codes(&e), (Code::NotFound, Some(404)));
    // 403: a non-member sends; the owner is removed.
    let e = c
        .send_message(req(send(5, 77, "y", "a")))
        .await
        .unwrap_err();
    assert_eq!(codes(&e), (Code::PermissionDenied, Some(403)));
    let rm = pb::RemoveMembersRequest {
        gid: 77,
        uids: vec![1],
        by: 0,
    };
    let e = c.remove_members(req(rm)).await.unwrap_err();
    assert_eq!(codes(&e), (Code::PermissionDenied, Some(403)));
    // 400: no client_msg_id; no conv; a RECALL kind.
    let e = c.send_message(req(send(2, 77, "", "a"))).await.unwrap_err();
    assert_eq!(codes(&e), (Code::InvalidArgument, Some(400)));
    let mut no_conv = send(2, 77, "z", "a");
    no_conv.conv = None;
    let e = c.send_message(req(no_conv)).await.unwrap_err();
    assert_eq!(codes(&e), (Code::InvalidArgument, Some(400)));
    let mut recall_kind = send(2, 77, "z", "a");
    recall_kind.kind = pb::MsgKind::Recall as i32;
    let e = c.send_message(req(recall_kind)).await.unwrap_err();
    assert_eq!(codes(&e), (Code::InvalidArgument, Some(400)));
    // 413: content over im.max_content; over 1000 uids in one call.
    let big = "x".repeat(t.im.config.max_content as usize + 1);
    let e = c
        .send_message(req(send(2, 77, "w", &big)))
        .await
        .unwrap_err();
    assert_eq!(codes(&e), (Code::ResourceExhausted, Some(413)));
    let add = pb::AddMembersRequest {
        gid: 77,
        uids: (100..1101).collect(),
        ..Default::default()
    };
    let e = c.add_members(req(add)).await.unwrap_err();
    assert_eq!(codes(&e), (Code::ResourceExhausted, Some(413)));
}

#[tokio::test]
async fn http_and_grpc_answer_the_same_operation_alike() {
    let t = setup();
    let mut c = client(&t).await;
    let g = pb::CreateGroupRequest {
        gid: 9,
        name: "g".into(),
        owner: 1,
        members: vec![2],
        ..Default::default()
    };
    c.create_group(req(g)).await.unwrap();
    // Sent over gRPC, retried over HTTP: the same message, a duplicate.
    let ack = c
        .send_message(req(send(2, 9, "same-id", "hello")))
        .await
        .unwrap()
        .into_inner();
    let http = t
        .ok(
            Method::POST,
            "/im/v1/messages",
            json!({"from": 2, "conv": {"kind": "GROUP", "id": 9}, "clientMsgId": "same-id",
                   "contentType": 1, "content": "hello"}),
        )
        .await;
    assert_eq!(http["duplicate"], json!(true), "{http}");
    assert_eq!(http["seq"], json!(ack.seq.to_string()));
    assert_eq!(http["msgId"], json!(ack.msg_id.to_string()));
    // And other content under that id is a conflict on both.
    t.fails(
        Method::POST,
        "/im/v1/messages",
        json!({"from": 2, "conv": {"kind": "GROUP", "id": 9}, "clientMsgId": "same-id",
               "content": "changed"}),
        409,
    )
    .await;
    // A group changed over HTTP reads the same over gRPC.
    let add = t
        .ok(
            Method::POST,
            "/im/v1/groups/9/members",
            json!({"uids": [3]}),
        )
        .await;
    let g = c
        .get_group(req(pb::GetGroupRequest { gid: 9 }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.member_count, 3);
    let page = pb::HistoryRequest {
        conv: Some(pb::ConvName {
            kind: ConvKind::Group as i32,
            a: 9,
            ..Default::default()
        }),
        ..Default::default()
    };
    let page = c.history(req(page)).await.unwrap().into_inner();
    assert_eq!(page.last_seq.to_string(), add["seq"].as_str().unwrap());
    let http_page = t
        .ok(
            Method::GET,
            "/im/v1/conversations/GROUP/9/0/messages",
            json!(null),
        )
        .await;
    assert_eq!(
        seqs(&http_page),
        page.messages.iter().map(|m| m.seq).collect::<Vec<_>>()
    );
}
