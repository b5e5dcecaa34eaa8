//! `im_token`: an HS256 JWT (RFC 7519) proving which user a connection may act as, minted by
//! the business backend or `POST /im/v1/tokens` (reference im.md §5.1, §13.6). goim's own
//! token trusts the `mid` a client claims, which is tolerable for pushes, not for sending.
//!
//! Claims: `sub` = the mid as a decimal string (required, must equal the auth `mid`), `exp`
//! (required, seconds), `iat` (seconds; tokens issued before a user's "valid after" time are
//! refused), `plat` (optional; when present it must equal the auth `platform`), `jti`.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("im_token missing")]
    Missing,
    #[error("im_token invalid: {0}")]
    Invalid(String),
    #[error("im_token is for user {sub}, the connection claims {mid}")]
    WrongUser { sub: String, mid: i64 },
    #[error("im_token is for platform {plat:?}, the connection claims {platform:?}")]
    WrongPlatform { plat: String, platform: String },
    #[error("im_token was issued before the user's tokens were revoked")]
    Revoked,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub iat: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plat: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
}

/// How far ahead of this server's clock a token's `iat` may be (clock skew), seconds.
const FUTURE_IAT_SECS: u64 = 60;

/// Signs and verifies `im_token`s with one secret.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    /// `secret`: the UTF-8 bytes of `im.token_secret`; an empty one is `Invalid`.
    pub fn new(secret: &str) -> Result<Tokens, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        let bad = |e: jsonwebtoken::errors::Error| TokenError::Invalid(e.to_string());
        Ok(Tokens {
            encoding: EncodingKey::from_secret(secret.as_bytes()).map_err(bad)?,
            decoding: DecodingKey::from_secret(secret.as_bytes()).map_err(bad)?,
            validation,
        })
    }

    /// Mints a token for `uid` valid `ttl_secs` from now.
    pub fn mint(&self, uid: i64, platform: &str, ttl_secs: u64) -> Result<String, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: uid.to_string(),
            exp: now + ttl_secs,
            iat: now,
            plat: platform.to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The claims of `token` once its signature, `exp` and `nbf` check out, whoever it names:
    /// for an HTTP caller presenting its `im_token` as a bearer (the all-in-one's development
    /// app API), which then verifies it against `sub` with [`Tokens::verify`].
    pub fn decode(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// Verifies `token` for a connection claiming `mid` on `platform`; `valid_after_ms` is
    /// the user's revocation time (0 = none). Returns the claims.
    pub fn verify(
        &self,
        token: &str,
        mid: i64,
        platform: &str,
        valid_after_ms: i64,
    ) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        if claims.sub != mid.to_string() {
            return Err(TokenError::WrongUser {
                sub: claims.sub,
                mid,
            });
        }
        if !claims.plat.is_empty() && claims.plat != platform {
            return Err(TokenError::WrongPlatform {
                plat: claims.plat,
                platform: platform.to_string(),
            });
        }
        // A token "issued" in the future would outlive any revocation: refused.
        let now = jsonwebtoken::get_current_timestamp();
        if claims.iat > now + FUTURE_IAT_SECS {
            return Err(TokenError::Invalid(format!(
                "iat {} is in the future",
                claims.iat
            )));
        }
        check_not_revoked(&claims, valid_after_ms)?;
        Ok(claims)
    }
}

/// Whether `claims` were issued at or after `valid_after_ms` (the user's revocation time, ms
/// since the epoch; 0: never revoked). [`Tokens::verify`] with a revocation time of 0 checks
/// everything else, so a caller can check the signature before it reads the user.
pub fn check_not_revoked(claims: &Claims, valid_after_ms: i64) -> Result<(), TokenError> {
    // iat is in seconds: a token minted in the same second as a revocation is refused.
    if valid_after_ms > 0 && i128::from(claims.iat) * 1000 < i128::from(valid_after_ms) {
        return Err(TokenError::Revoked);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-of-32-bytes-------";

    #[test]
    fn decode_checks_the_signature_not_the_user() {
        let t = Tokens::new(SECRET).unwrap();
        let tok = t.mint(42, "", 60).unwrap();
        assert_eq!(t.decode(&tok).unwrap().sub, "42");
        let other = Tokens::new("another-secret-of-32-bytes------").unwrap();
        assert!(matches!(other.decode(&tok), Err(TokenError::Invalid(_))));
        assert_eq!(t.decode(""), Err(TokenError::Missing));
    }

    #[test]
    fn mints_and_verifies() {
        let t = Tokens::new(SECRET).unwrap();
        let tok = t.mint(123, "ios", 60).unwrap();
        let c = t.verify(&tok, 123, "ios", 0).unwrap();
        assert_eq!(c.sub, "123");
        assert_eq!(
            t.verify(&tok, 124, "ios", 0),
            Err(TokenError::WrongUser {
                sub: "123".into(),
                mid: 124
            })
        );
        assert!(matches!(
            t.verify(&tok, 123, "web", 0),
            Err(TokenError::WrongPlatform { .. })
        ));
        let later = (jsonwebtoken::get_current_timestamp() as i64 + 10) * 1000;
        assert_eq!(t.verify(&tok, 123, "ios", later), Err(TokenError::Revoked));
        assert_eq!(t.verify("", 123, "ios", 0), Err(TokenError::Missing));
    }

    #[test]
    fn refuses_other_secrets_expired_and_unsigned_tokens() {
        let t = Tokens::new(SECRET).unwrap();
        assert!(Tokens::new("").is_err());
        let other = Tokens::new("another-secret-of-32-bytes------")
            .unwrap()
            .mint(1, "", 60)
            .unwrap();
        assert!(matches!(
            t.verify(&other, 1, "", 0),
            Err(TokenError::Invalid(_))
        ));
        let expired = {
            let claims = Claims {
                sub: "1".into(),
                exp: 1_000,
                iat: 900,
                plat: String::new(),
                jti: String::new(),
            };
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            )
            .unwrap()
        };
        assert!(matches!(
            t.verify(&expired, 1, "", 0),
            Err(TokenError::Invalid(_))
        ));
        // An iat far in the future (which would outlive revocations; 2^62 once overflowed) and
        // a token not valid before an hour from now are refused.
        let sign = |c: &Claims| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                c,
                &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            )
            .unwrap()
        };
        let far = Claims {
            sub: "1".into(),
            exp: 9_999_999_999,
            iat: 1 << 62,
            plat: String::new(),
            jti: String::new(),
        };
        assert!(matches!(
            t.verify(&sign(&far), 1, "", 1),
            Err(TokenError::Invalid(_))
        ));
        #[derive(Serialize)]
        struct WithNbf {
            sub: String,
            exp: u64,
            nbf: u64,
        }
        let now = jsonwebtoken::get_current_timestamp();
        let early = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &WithNbf {
                sub: "1".into(),
                exp: now + 7200,
                nbf: now + 3600,
            },
            &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            t.verify(&early, 1, "", 0),
            Err(TokenError::Invalid(_))
        ));
        // alg "none" (a classic JWT forgery) is refused.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(matches!(
            t.verify(none, 1, "", 0),
            Err(TokenError::Invalid(_))
        ));
    }
}
