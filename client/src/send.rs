//! Send bookkeeping (reference im.md §5.4 step 1, §5.5): a `client_msg_id` made once and kept
//! until a final answer, and what each `SendAck` code means for the sender.

use starling_proto::im::v1::SendAck;
use std::time::Duration;

/// A fresh `client_msg_id`: a UUID v4, 36 bytes (the server allows ≤ 64).
pub fn new_client_msg_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What to do with a `SendAck`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stored (`code` 0, `duplicate` or not): the message has its seq; mark it sent.
    Sent,
    /// 429/500/503/504: send again with the same id, no sooner than `after` (the server's
    /// `retry_after_ms` when it gave one).
    Retry { after: Option<Duration> },
    /// 400/403/404/409/410/413 and any other code: final, do not retry.
    Refused,
}

/// The verdict for `ack` (§5.5's retry column).
pub fn verdict(ack: &SendAck) -> Verdict {
    match ack.code {
        0 => Verdict::Sent,
        429 | 500 | 503 | 504 => Verdict::Retry {
            after: (ack.retry_after_ms > 0)
                .then(|| Duration::from_millis(u64::from(ack.retry_after_ms))),
        },
        _ => Verdict::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(code: i32, retry_after_ms: u32) -> SendAck {
        SendAck {
            code,
            retry_after_ms,
            ..Default::default()
        }
    }

    #[test]
    fn codes_follow_the_result_table() {
        assert_eq!(verdict(&ack(0, 0)), Verdict::Sent);
        assert_eq!(
            verdict(&ack(429, 250)),
            Verdict::Retry {
                after: Some(Duration::from_millis(250))
            }
        );
        for code in [500, 503, 504] {
            assert_eq!(verdict(&ack(code, 0)), Verdict::Retry { after: None });
        }
        for code in [400, 401, 403, 404, 409, 410, 413, 999] {
            assert_eq!(verdict(&ack(code, 0)), Verdict::Refused, "{code}");
        }
        let a = new_client_msg_id();
        assert_eq!(a.len(), 36);
        assert_ne!(a, new_client_msg_id());
    }
}
