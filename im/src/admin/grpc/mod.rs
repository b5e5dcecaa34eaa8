//! The management API as gRPC: service `starling.im.v1.Admin` (`proto/starling/im/v1/
//! admin.proto`), served on logic's gRPC port (goim: 3119) beside `goim.logic.Logic`
//! (reference im.md §8). One rpc per `/im/v1` route; each calls the same function as the
//! HTTP handler ([`super::users`], [`super::groups`], [`super::messages`]), so the rules,
//! limits and results are the HTTP API's, only encoded as protobuf.
//!
//! - **Auth:** metadata `authorization: Bearer <im.admin_token>`, checked by
//!   [`BearerAuth`] before any method runs, in constant time ([`super::bearer_ok`], the HTTP
//!   check). Missing or wrong: `UNAUTHENTICATED` (IM code 401).
//! - **Off:** with an empty `im.admin_token`, [`service`] returns `None` and nothing is
//!   registered, as the HTTP routes are then absent: a call gets `UNIMPLEMENTED` from the
//!   server. An API that is off answers like one that does not exist, on both transports.
//! - **Errors:** [`status::from_api`] maps an IM result code to a gRPC status in one table,
//!   with the IM code in the trailing metadata `im-code` and at the head of the message.
//!
//! # Layout
//! - this file: [`service`], the constructor to register, and [`BearerAuth`].
//! - [`status`]: the IM code → gRPC code table.
//! - `service`: the `Admin` trait implementation and the proto ↔ domain conversions.

mod convert;
mod service;
pub mod status;

use crate::service::Im;
use starling_proto::im::v1::admin_server::AdminServer;
use std::sync::Arc;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

pub use service::AdminService;
pub use starling_proto::im::v1::admin_client::AdminClient;

/// The served `Admin`: the implementation behind the bearer-token check.
pub type Server = InterceptedService<AdminServer<AdminService>, BearerAuth>;

/// `starling.im.v1.Admin` for `im`, ready for `tonic::transport::Server::add_service` (or
/// `add_optional_service`); `None` when `im.admin_token` is empty (the API is off).
pub fn service(im: Arc<Im>) -> Option<Server> {
    let token: Arc<str> = im.config.admin_token.as_str().into();
    if token.is_empty() {
        return None;
    }
    Some(AdminServer::with_interceptor(
        AdminService::new(im),
        BearerAuth { token },
    ))
}

/// Refuses a call whose `authorization` metadata is not `Bearer <admin_token>`.
#[derive(Clone)]
pub struct BearerAuth {
    token: Arc<str>,
}

impl Interceptor for BearerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if super::bearer_ok(given, &self.token) {
            Ok(req)
        } else {
            Err(status::from_api(super::ApiError::new(
                401,
                "metadata authorization: Bearer <im.admin_token> required",
            )))
        }
    }
}
