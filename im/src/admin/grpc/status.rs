//! IM result codes (reference im.md §5.5) as gRPC statuses: [`code`] is the one table, and
//! [`from_api`] carries the IM code along so a caller sees the number the HTTP API would
//! have answered.
//!
//! | IM | gRPC | why |
//! |---|---|---|
//! | 400 | `INVALID_ARGUMENT` | a malformed request, whatever the state |
//! | 401 | `UNAUTHENTICATED` | no or a wrong admin token |
//! | 403 | `PERMISSION_DENIED` | the acting user may not (not a member, blocked, the owner removed) |
//! | 404 | `NOT_FOUND` | no such user, group or message |
//! | 405 | `UNIMPLEMENTED` | (HTTP only: another method on a known path) |
//! | 409 | `ALREADY_EXISTS` | every 409 is a write that collides with one already made: a gid taken, a `client_msg_id` stored with other content, a message already recalled under another id. gRPC's guide keeps `ABORTED` for concurrency conflicts a caller retries at a higher level (a failed read-modify-write); retrying these never succeeds |
//! | 410 | `FAILED_PRECONDITION` | the state forbids it for good: recall window passed, below the retention floor |
//! | 413 | `RESOURCE_EXHAUSTED` | content over `im.max_content`, a group over its size: gRPC's own status for a message over the size limit, and a quota |
//! | 429 | `RESOURCE_EXHAUSTED` | a rate limit (retry later) |
//! | 500 | `INTERNAL` | a bug |
//! | 503 | `UNAVAILABLE` | the store is down, or stored but not handed to delivery: retry with the same id |
//! | 504 | `DEADLINE_EXCEEDED` | outcome unknown |
//! | other | `UNKNOWN` | |
//!
//! 413 and 429 share a gRPC code; `im-code` tells them apart.

use super::super::ApiError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The trailing metadata key holding the IM result code (`"404"`).
pub const IM_CODE: &str = "im-code";

/// The gRPC code for IM result code `im` (the table above).
pub fn code(im: u16) -> Code {
    match im {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        405 => Code::Unimplemented,
        409 => Code::AlreadyExists,
        410 => Code::FailedPrecondition,
        413 | 429 => Code::ResourceExhausted,
        500 => Code::Internal,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Unknown,
    }
}

/// `e` as a status: [`code`]`(e.code)`, message `"<code>: <message>"`, metadata `im-code`.
pub fn from_api(e: ApiError) -> Status {
    with_details(e, Vec::new())
}

/// As [`from_api`], with `details` (an encoded protobuf message) as the status details.
pub fn with_details(e: ApiError, details: Vec<u8>) -> Status {
    let message = format!("{}: {}", e.code, e.message);
    let mut s = Status::with_details(code(e.code), message, details.into());
    s.metadata_mut()
        .insert(IM_CODE, MetadataValue::from(u32::from(e.code)));
    s
}

/// The IM result code a status carries (`im-code`), if any.
pub fn im_code(s: &Status) -> Option<u16> {
    s.metadata().get(IM_CODE)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_im_code_keeps_its_number() {
        for (im, grpc) in [
            (400, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (409, Code::AlreadyExists),
            (410, Code::FailedPrecondition),
            (413, Code::ResourceExhausted),
            (429, Code::ResourceExhausted),
            (503, Code::Unavailable),
        ] {
            let s = from_api(ApiError::new(im, "why"));
            assert_eq!(s.code(), grpc, "{im}");
            assert_eq!(im_code(&s), Some(im));
            assert_eq!(s.message(), format!("{im}: why"));
        }
    }
}
