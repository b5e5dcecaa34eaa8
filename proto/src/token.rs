//! The auth body a client sends with op 7: a JSON object read the way Go's `encoding/json`
//! reads goim's struct, so field names match case-insensitively and unknown fields are ignored.
//!
//! `{"mid":123, "key":"", "room_id":"live://1000", "platform":"web", "accepts":[1000,1001]}`,
//! plus Starling's IM opt-in `"im":"pb", "im_token":"<JWT>"` (reference im.md §5.1).

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AuthToken {
    /// Member (user) id; 0 means anonymous.
    pub mid: i64,
    /// Connection key (device or session id); empty asks logic to generate one.
    pub key: String,
    /// Room joined at connect, `type://id`; empty joins none.
    pub room_id: String,
    pub platform: String,
    /// Ops accepted for key, mid and broadcast pushes.
    pub accepts: Vec<i32>,
    /// Starling: the IM body codec the connection opts in to, `"pb"` or `"json"`; empty = a
    /// goim connection (reference im.md §5.1).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub im: String,
    /// Starling: the signed IM token (HS256 JWT) proving `mid` (reference im.md §13.6).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub im_token: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is not a JSON object: {0}")]
    NotJson(String),
    #[error("token field {field} has the wrong type")]
    FieldType { field: &'static str },
}

impl AuthToken {
    pub fn parse(body: &[u8]) -> Result<Self, TokenError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| TokenError::NotJson(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(TokenError::NotJson("not an object".into()));
        };
        let mut token = AuthToken::default();
        for (name, v) in map {
            // Go's decoder: exact match wins, otherwise a case-insensitive one; null leaves the
            // field as it was.
            if v.is_null() {
                continue;
            }
            match name.to_ascii_lowercase().as_str() {
                "mid" => token.mid = v.as_i64().ok_or(TokenError::FieldType { field: "mid" })?,
                "key" => token.key = string(v, "key")?,
                "room_id" => token.room_id = string(v, "room_id")?,
                "platform" => token.platform = string(v, "platform")?,
                "im" => token.im = string(v, "im")?,
                "im_token" => token.im_token = string(v, "im_token")?,
                "accepts" => {
                    let Value::Array(items) = v else {
                        return Err(TokenError::FieldType { field: "accepts" });
                    };
                    token.accepts = items
                        .iter()
                        .map(|i| {
                            i.as_i64()
                                .and_then(|n| i32::try_from(n).ok())
                                .ok_or(TokenError::FieldType { field: "accepts" })
                        })
                        .collect::<Result<_, _>>()?;
                }
                _ => {}
            }
        }
        Ok(token)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("token serialises")
    }
}

fn string(v: Value, field: &'static str) -> Result<String, TokenError> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(TokenError::FieldType { field }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_js_client_token() {
        let t = AuthToken::parse(
            br#"{"mid":123, "room_id":"live://1000", "platform":"web", "accepts":[1000,1001,1002]}"#,
        )
        .unwrap();
        assert_eq!(t.mid, 123);
        assert_eq!(t.key, "");
        assert_eq!(t.room_id, "live://1000");
        assert_eq!(t.accepts, vec![1000, 1001, 1002]);
    }

    #[test]
    fn field_names_are_case_insensitive_and_unknown_ones_ignored() {
        let t =
            AuthToken::parse(br#"{"MID":5,"Key":"k","Room_ID":"a://b","x":[1],"accepts":null}"#)
                .unwrap();
        assert_eq!(
            (t.mid, t.key.as_str(), t.room_id.as_str()),
            (5, "k", "a://b")
        );
        assert!(t.accepts.is_empty());
    }

    #[test]
    fn round_trips() {
        let t = AuthToken {
            mid: 9,
            key: "dev-1".into(),
            room_id: "test://1".into(),
            platform: "ios".into(),
            accepts: vec![1000],
            ..Default::default()
        };
        assert_eq!(AuthToken::parse(&t.to_json()).unwrap(), t);
        assert!(
            !String::from_utf8(t.to_json()).unwrap().contains("im"),
            "goim's token unchanged"
        );
        let im = AuthToken {
            im: "pb".into(),
            im_token: "j.w.t".into(),
            ..t
        };
        assert_eq!(AuthToken::parse(&im.to_json()).unwrap(), im);
    }

    #[test]
    fn bad_tokens_are_typed_errors() {
        assert!(matches!(
            AuthToken::parse(b"not json"),
            Err(TokenError::NotJson(_))
        ));
        assert!(matches!(
            AuthToken::parse(b"[1]"),
            Err(TokenError::NotJson(_))
        ));
        assert_eq!(
            AuthToken::parse(br#"{"mid":"1"}"#),
            Err(TokenError::FieldType { field: "mid" })
        );
        assert_eq!(
            AuthToken::parse(br#"{"accepts":[1.5]}"#),
            Err(TokenError::FieldType { field: "accepts" })
        );
    }
}
