//! The auth token: goim's op-7 JSON body as logic parses it (`AuthToken::parse`, called by
//! `Logic::connect`: mid, key, room_id, platform, accepts, and Starling's `im`/`im_token`),
//! then the IM path on what it parsed: the codec choice (`starling_im::codec::from_token`) and
//! the `im_token` JWT check (`starling_im::token::Tokens::verify`, pure given a secret).
//!
//! Input: byte 0 picks the mode. Even: the rest is the op-7 body. Odd: the rest is a JWT's
//! header and claims JSON, split at the first `\n`, signed here with the server's secret so
//! that claim parsing and checking (past the signature) is reached.
//!
//! Checked: a parsed token re-serialises to a body that parses to the same token; a token
//! verifies only for the user and platform it names.
#![no_main]

use base64::Engine;
use jsonwebtoken::crypto::sign;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use starling_im::token::{TokenError, Tokens};
use starling_proto::AuthToken;
use std::sync::LazyLock;

const SECRET: &str = "fuzz-secret-of-at-least-32-bytes!";

static TOKENS: LazyLock<Tokens> = LazyLock::new(|| Tokens::new(SECRET).expect("a secret"));
static KEY: LazyLock<EncodingKey> =
    LazyLock::new(|| EncodingKey::from_secret(SECRET.as_bytes()).expect("a secret"));

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn check_im_token(token: &str, mid: i64, platform: &str) {
    match TOKENS.verify(token, mid, platform, 0) {
        Ok(claims) => {
            assert_eq!(claims.sub, mid.to_string());
            assert!(claims.plat.is_empty() || claims.plat == platform);
        }
        Err(TokenError::Missing) => assert!(token.is_empty()),
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    if mode & 1 == 0 {
        let Ok(token) = AuthToken::parse(rest) else {
            return;
        };
        assert_eq!(AuthToken::parse(&token.to_json()).as_ref(), Ok(&token));
        let _ = starling_im::codec::from_token(&token.im);
        check_im_token(&token.im_token, token.mid, &token.platform);
        return;
    }
    let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
    };
    let message = format!("{}.{}", b64(header), b64(claims));
    let Ok(signature) = sign(message.as_bytes(), &KEY, Algorithm::HS256) else {
        return;
    };
    let token = format!("{message}.{signature}");
    // The mid and platform the claims most likely name, so success paths are reached too.
    let claims_json: serde_json::Value = serde_json::from_slice(claims).unwrap_or_default();
    let mid = claims_json["sub"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let platform = claims_json["plat"].as_str().unwrap_or("");
    check_im_token(&token, mid, platform);
});
