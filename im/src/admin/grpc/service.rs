//! The `starling.im.v1.Admin` methods: decode, call the operation the HTTP route calls,
//! encode. Auth happened before ([`super::BearerAuth`]).

use super::convert;
use super::status::from_api;
use crate::admin::messages::{Outgoing, Recall};
use crate::admin::users::{TOKEN_TTL_DEFAULT, UserIn};
use crate::admin::{ApiError, canonical, groups, messages, users};
use crate::groups::{GroupPatch, NewGroup};
use crate::service::Im;
use crate::store::{MarkKind, SetMemberReq};
use starling_proto::im::v1 as pb;
use starling_proto::im::v1::admin_server::Admin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `Admin` implementation over one IM service.
pub struct AdminService {
    im: Arc<Im>,
}

impl AdminService {
    pub fn new(im: Arc<Im>) -> AdminService {
        AdminService { im }
    }
}

type R<T> = Result<Response<T>, Status>;

/// An operation's result as a gRPC reply.
fn reply<T, U>(r: Result<T, ApiError>, f: impl FnOnce(T) -> U) -> R<U> {
    r.map(|v| Response::new(f(v))).map_err(from_api)
}

fn marked(m: crate::store::Marked) -> pb::MarkResponse {
    pb::MarkResponse {
        seq: m.seq,
        moved: m.moved,
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn mint_token(&self, req: Request<pb::MintTokenRequest>) -> R<pb::MintTokenResponse> {
        let r = req.into_inner();
        let ttl = if r.ttl == 0 { TOKEN_TTL_DEFAULT } else { r.ttl };
        let m = users::mint_token(&self.im, r.uid, &r.platform, ttl).await;
        reply(m, |m| pb::MintTokenResponse {
            token: m.token,
            expires_at: m.expires_at_ms,
        })
    }

    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> R<pb::User> {
        reply(
            users::user(&self.im, req.into_inner().uid).await,
            convert::user,
        )
    }

    async fn put_user(&self, req: Request<pb::PutUserRequest>) -> R<pb::User> {
        let r = req.into_inner();
        let change = UserIn {
            name: r.name,
            avatar: r.avatar,
            ex: r.ex,
        };
        reply(
            users::upsert_user(&self.im, r.uid, change).await,
            convert::user,
        )
    }

    async fn disable_user(&self, req: Request<pb::DisableUserRequest>) -> R<pb::KickResponse> {
        let r = req.into_inner();
        reply(users::disable_user(&self.im, r.uid, r.reason).await, |n| {
            pb::KickResponse { kicked: n as u32 }
        })
    }

    async fn kick_user(&self, req: Request<pb::KickUserRequest>) -> R<pb::KickResponse> {
        let r = req.into_inner();
        let n = users::admin_kick(&self.im, r.uid, &r.platform, &r.key, r.reason).await;
        reply(n, |n| pb::KickResponse { kicked: n as u32 })
    }

    async fn list_online(&self, req: Request<pb::ListOnlineRequest>) -> R<pb::ListOnlineResponse> {
        let d = users::online_devices(&self.im, req.into_inner().uid).await;
        reply(d, |d| pb::ListOnlineResponse {
            devices: d.into_iter().map(convert::device).collect(),
        })
    }

    async fn clear_history(&self, req: Request<pb::ClearHistoryRequest>) -> R<pb::MarkResponse> {
        let r = req.into_inner();
        let m = async {
            let conv = convert::conv_in(r.conv)?;
            users::mark(&self.im, r.uid, &conv, MarkKind::DeletedTo, r.seq).await
        };
        reply(m.await, marked)
    }

    async fn put_contact(&self, req: Request<pb::PutContactRequest>) -> R<pb::ContactVersion> {
        let r = req.into_inner();
        let v = async {
            let kind = convert::contact_kind(r.state)?;
            users::upsert_contact(&self.im, r.uid, r.peer, kind, r.remark).await
        };
        reply(v.await, |version| pb::ContactVersion { version })
    }

    async fn delete_contact(
        &self,
        req: Request<pb::DeleteContactRequest>,
    ) -> R<pb::ContactVersion> {
        let r = req.into_inner();
        reply(
            users::remove_contact(&self.im, r.uid, r.peer).await,
            |version| pb::ContactVersion { version },
        )
    }

    async fn list_contacts(
        &self,
        req: Request<pb::ListContactsRequest>,
    ) -> R<pb::ListContactsResponse> {
        let r = req.into_inner();
        let p = users::contacts_page(&self.im, r.uid, r.since_version, r.limit as usize).await;
        reply(p, |p| pb::ListContactsResponse {
            contacts: p.contacts.into_iter().map(convert::contact).collect(),
            version: p.version,
            has_more: p.has_more,
        })
    }

    async fn list_conversations(
        &self,
        req: Request<pb::ListConversationsRequest>,
    ) -> R<pb::SyncReply> {
        let r = req.into_inner();
        let sync = pb::SyncReq {
            since: r.since,
            cursor: r.cursor,
            limit: r.limit,
            epoch: r.epoch,
        };
        reply(users::directory(&self.im, r.uid, sync).await, |d| d)
    }

    async fn mark_read(&self, req: Request<pb::MarkReadRequest>) -> R<pb::MarkResponse> {
        let r = req.into_inner();
        let m = async {
            let conv = convert::conv_in(r.conv)?;
            users::mark(&self.im, r.uid, &conv, MarkKind::Read, r.seq).await
        };
        reply(m.await, marked)
    }

    async fn create_group(
        &self,
        req: Request<pb::CreateGroupRequest>,
    ) -> R<pb::CreateGroupResponse> {
        let r = req.into_inner();
        let created = async {
            let g = NewGroup {
                gid: r.gid,
                name: r.name,
                owner: r.owner,
                members: r.members,
                history: convert::history(r.history)?,
                ex: r.ex,
            };
            groups::create_group(&self.im, g).await
        };
        reply(created.await, |(g, c)| pb::CreateGroupResponse {
            group: Some(convert::group(g)),
            change: Some(convert::change(c)),
        })
    }

    async fn get_group(&self, req: Request<pb::GetGroupRequest>) -> R<pb::Group> {
        reply(
            groups::group(&self.im, req.into_inner().gid).await,
            convert::group,
        )
    }

    async fn update_group(&self, req: Request<pb::UpdateGroupRequest>) -> R<pb::GroupChange> {
        let r = req.into_inner();
        let patch = GroupPatch {
            name: r.name,
            ex: r.ex,
            muted: r.muted,
        };
        reply(
            groups::update_group(&self.im, r.gid, r.by, patch).await,
            convert::change,
        )
    }

    async fn dissolve_group(&self, req: Request<pb::DissolveGroupRequest>) -> R<pb::GroupChange> {
        let r = req.into_inner();
        reply(
            groups::dissolve_group(&self.im, r.gid, r.by).await,
            convert::change,
        )
    }

    async fn add_members(&self, req: Request<pb::AddMembersRequest>) -> R<pb::GroupChange> {
        let r = req.into_inner();
        let c = async {
            let history = convert::history(r.history)?;
            groups::add_members(&self.im, r.gid, r.by, r.uids, r.role, history).await
        };
        reply(c.await, convert::change)
    }

    async fn remove_members(&self, req: Request<pb::RemoveMembersRequest>) -> R<pb::GroupChange> {
        let r = req.into_inner();
        reply(
            groups::remove_members(&self.im, r.gid, r.by, r.uids).await,
            convert::change,
        )
    }

    async fn set_member(&self, req: Request<pb::SetMemberRequest>) -> R<pb::SetMemberResponse> {
        let r = req.into_inner();
        let set = SetMemberReq {
            gid: r.gid,
            uid: r.uid,
            role: r.role,
            muted_until_ms: r.muted_until,
        };
        reply(groups::update_member(&self.im, set).await, |(gid, uid)| {
            pb::SetMemberResponse { gid, uid }
        })
    }

    async fn list_members(&self, req: Request<pb::MembersReq>) -> R<pb::MembersReply> {
        reply(
            groups::members_page(&self.im, &req.into_inner()).await,
            |p| p,
        )
    }

    async fn send_message(&self, req: Request<pb::SendMessageRequest>) -> R<pb::SendAck> {
        let r = req.into_inner();
        let sent = async {
            let out = Outgoing {
                from: r.from,
                conv: convert::conv_in(r.conv)?,
                to: r.to,
                client_msg_id: r.client_msg_id,
                content_type: r.content_type,
                content: r.content,
                mentions: r.mentions,
                ref_seq: r.ref_seq,
                kind: convert::msg_kind(r.kind)?,
            };
            messages::send_message(&self.im, out).await
        };
        let sent = sent.await.map_err(from_api)?;
        convert::sent(sent).map(Response::new)
    }

    async fn recall_message(&self, req: Request<pb::RecallMessageRequest>) -> R<pb::SendAck> {
        let r = req.into_inner();
        let sent = async {
            let recall = Recall {
                conv: convert::conv_in(r.conv)?,
                seq: r.seq,
                by: r.by,
                to: r.to,
                client_msg_id: r.client_msg_id,
            };
            messages::recall_message(&self.im, recall).await
        };
        let sent = sent.await.map_err(from_api)?;
        convert::sent(sent).map(Response::new)
    }

    async fn history(&self, req: Request<pb::HistoryRequest>) -> R<pb::PullReply> {
        let r = req.into_inner();
        let page = async {
            let c = convert::conv_in(r.conv)?;
            let conv = canonical(c.kind.0, c.a.0, c.b.0)?;
            messages::history_page(&self.im, conv, r.viewer, r.after_seq, r.before_seq, r.limit)
                .await
        };
        reply(page.await, convert::page)
    }
}
