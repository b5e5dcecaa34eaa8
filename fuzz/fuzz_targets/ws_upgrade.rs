//! The HTTP upgrade request parser comet runs on a WebSocket connection's first bytes
//! (`starling_proto::ws::parse_upgrade`), then the permessage-deflate negotiation on its
//! `Sec-WebSocket-Extensions` (`ws::deflate::parse_offers`, `negotiate`) and the responses.
//!
//! Input: the bytes a client sends. Checked: every prefix of an accepted request is
//! incomplete (never an error, never accepted), what is consumed is within the input and the
//! limit, the key is base64 of 16 bytes, a refusal has an HTTP response, and an agreed
//! extension answer parses back as one acceptable offer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_proto::ws::{self, MAX_HANDSHAKE, deflate};

fuzz_target!(|data: &[u8]| {
    let up = match ws::parse_upgrade(data) {
        Ok(None) => {
            assert!(data.len() < MAX_HANDSHAKE, "a partial request is bounded");
            return;
        }
        Err(e) => {
            assert!(e.response().starts_with(b"HTTP/1.1 4"));
            return;
        }
        Ok(Some(up)) => up,
    };
    assert!(up.consumed <= data.len() && up.consumed <= MAX_HANDSHAKE);
    assert_eq!(ws::accept_key(&up.key).len(), 28);
    // The request ends at `consumed`: any shorter prefix is still incomplete.
    for cut in [up.consumed - 1, up.consumed / 2] {
        assert_eq!(ws::parse_upgrade(&data[..cut]), Ok(None), "prefix {cut}");
    }
    assert_eq!(
        ws::parse_upgrade(&data[..up.consumed]),
        Ok(Some(up.clone()))
    );
    let offers = match deflate::parse_offers(&up.extensions) {
        Ok(o) => o,
        Err(e) => {
            assert!(e.at <= up.extensions.len());
            return;
        }
    };
    let agreed = deflate::negotiate(&offers);
    let answer = agreed.map(|a| a.response());
    let response = ws::switching_protocols_with(&up.key, answer.as_deref());
    assert!(response.ends_with(b"\r\n\r\n"));
    if let Some(answer) = answer {
        let back = deflate::parse_offers(&answer).expect("our answer parses");
        assert_eq!(back.len(), 1);
        assert!(deflate::judge(&back[0]).is_ok());
    }
});
