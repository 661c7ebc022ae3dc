//! HMAC-SHA256 signatures: channel auth, user auth, REST requests, webhooks.
//!
//! Signatures are lowercase hex. Verification decodes the hex and lets the
//! `hmac` crate compare in constant time, so a forger learns nothing from timing.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

use crate::{app::AppKey, AppSecret, SocketId};

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &AppSecret, message: &[u8]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(secret.expose()).expect("HMAC accepts any key length");
    m.update(message);
    m
}

/// Lowercase hex HMAC-SHA256 of `message` under `secret`.
pub fn hmac_hex(secret: &AppSecret, message: &[u8]) -> String {
    hex::encode(mac(secret, message).finalize().into_bytes())
}

/// Checks a hex signature in constant time.
pub fn verify_hex(secret: &AppSecret, message: &[u8], signature_hex: &str) -> bool {
    match hex::decode(signature_hex) {
        Ok(sig) => mac(secret, message).verify_slice(&sig).is_ok(),
        Err(_) => false,
    }
}

/// Why an `auth` value was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("auth value must be \"key:signature\"")]
    Malformed,
    #[error("auth key does not match the app's key")]
    WrongKey,
    #[error("invalid signature")]
    BadSignature,
}

fn channel_message(socket_id: &str, channel: &str, channel_data: Option<&str>) -> String {
    match channel_data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    }
}

fn user_message(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// The `auth` value for a private, encrypted or presence subscription:
/// `key:hmac(secret, "socket_id:channel[:channel_data]")`.
pub fn sign_channel(
    key: &AppKey,
    secret: &AppSecret,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let sig = hmac_hex(
        secret,
        channel_message(socket_id, channel, channel_data).as_bytes(),
    );
    format!("{key}:{sig}")
}

pub fn verify_channel(
    key: &AppKey,
    secret: &AppSecret,
    socket_id: SocketId,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> Result<(), AuthError> {
    let sig = check_key(key, auth)?;
    let msg = channel_message(&socket_id.to_string(), channel, channel_data);
    verify_hex(secret, msg.as_bytes(), sig)
        .then_some(())
        .ok_or(AuthError::BadSignature)
}

/// The `auth` value for `pusher:signin`: `key:hmac(secret, "socket_id::user::user_data")`.
pub fn sign_user(key: &AppKey, secret: &AppSecret, socket_id: &str, user_data: &str) -> String {
    format!(
        "{key}:{}",
        hmac_hex(secret, user_message(socket_id, user_data).as_bytes())
    )
}

pub fn verify_user(
    key: &AppKey,
    secret: &AppSecret,
    socket_id: SocketId,
    user_data: &str,
    auth: &str,
) -> Result<(), AuthError> {
    let sig = check_key(key, auth)?;
    let msg = user_message(&socket_id.to_string(), user_data);
    verify_hex(secret, msg.as_bytes(), sig)
        .then_some(())
        .ok_or(AuthError::BadSignature)
}

fn check_key<'a>(key: &AppKey, auth: &'a str) -> Result<&'a str, AuthError> {
    let (k, sig) = auth.split_once(':').ok_or(AuthError::Malformed)?;
    if k != key.as_str() {
        return Err(AuthError::WrongKey);
    }
    Ok(sig)
}

/// `X-Pusher-Signature` of a webhook: hmac(secret, raw body).
pub fn sign_webhook(secret: &AppSecret, body: &[u8]) -> String {
    hmac_hex(secret, body)
}

pub fn verify_webhook(secret: &AppSecret, body: &[u8], signature_hex: &str) -> bool {
    verify_hex(secret, body, signature_hex)
}

/// Hex MD5 of a request body, as carried in `body_md5`.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// How far a REST request's `auth_timestamp` may be from the server's clock.
pub const REST_TIMESTAMP_WINDOW_SECS: u64 = 600;

/// The text a REST signature covers: `METHOD\npath\nk=v&k=v` over every query
/// parameter but `auth_signature`, keys lowercased and sorted, values unescaped.
pub fn rest_string_to_sign<'a>(
    method: &str,
    path: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .into_iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    pairs.sort();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{}\n{}\n{}", method.to_ascii_uppercase(), path, query)
}

/// Signs a REST request. Returns every query parameter to send, `auth_signature` last.
pub fn sign_rest(
    key: &AppKey,
    secret: &AppSecret,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
    timestamp: u64,
) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    all.push(("auth_key".into(), key.to_string()));
    all.push(("auth_timestamp".into(), timestamp.to_string()));
    all.push(("auth_version".into(), "1.0".into()));
    if !body.is_empty() {
        all.push(("body_md5".into(), body_md5(body)));
    }
    let to_sign = rest_string_to_sign(
        method,
        path,
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    );
    all.push((
        "auth_signature".into(),
        hmac_hex(secret, to_sign.as_bytes()),
    ));
    all
}

/// Why a REST request's signature was refused; each maps to HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestAuthError {
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    #[error("auth_key does not match the app's key")]
    WrongKey,
    #[error("unsupported auth_version {0} (expected 1.0)")]
    BadVersion(String),
    #[error("auth_timestamp is not a number")]
    BadTimestamp,
    #[error("auth_timestamp is more than {REST_TIMESTAMP_WINDOW_SECS} seconds from the server's time ({server} vs {given})")]
    StaleTimestamp { server: u64, given: u64 },
    #[error("body_md5 is required when the request has a body")]
    MissingBodyMd5,
    #[error("body_md5 does not match the body")]
    BodyMd5Mismatch,
    #[error("invalid signature: expected HMAC-SHA256 of {0:?}")]
    BadSignature(String),
}

/// A REST request as the server received it: query parameters already URL-decoded.
pub struct RestRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
}

impl RestRequest<'_> {
    fn param(&self, name: &'static str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks key, version, timestamp window, body MD5 and signature, in that order.
    pub fn verify(
        &self,
        key: &AppKey,
        secret: &AppSecret,
        now_secs: u64,
    ) -> Result<(), RestAuthError> {
        let req = |n| self.param(n).ok_or(RestAuthError::Missing(n));
        if req("auth_key")? != key.as_str() {
            return Err(RestAuthError::WrongKey);
        }
        let version = req("auth_version")?;
        if version != "1.0" {
            return Err(RestAuthError::BadVersion(version.to_owned()));
        }
        let ts: u64 = req("auth_timestamp")?
            .parse()
            .map_err(|_| RestAuthError::BadTimestamp)?;
        if ts.abs_diff(now_secs) > REST_TIMESTAMP_WINDOW_SECS {
            return Err(RestAuthError::StaleTimestamp {
                server: now_secs,
                given: ts,
            });
        }
        // The Python SDK sends the empty body's MD5 on GET requests; it must still match.
        match self.param("body_md5") {
            Some(md5) if !md5.eq_ignore_ascii_case(&body_md5(self.body)) => {
                return Err(RestAuthError::BodyMd5Mismatch)
            }
            None if !self.body.is_empty() => return Err(RestAuthError::MissingBodyMd5),
            _ => {}
        }
        let signature = req("auth_signature")?;
        let to_sign = rest_string_to_sign(
            self.method,
            self.path,
            self.query.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        if verify_hex(secret, to_sign.as_bytes(), signature) {
            Ok(())
        } else {
            Err(RestAuthError::BadSignature(to_sign))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples published in Pusher's authentication documentation.
    fn doc_key() -> AppKey {
        AppKey::new("278d425bdf160c739803").unwrap()
    }
    fn doc_secret() -> AppSecret {
        AppSecret::new("7ad3773142a6692b25b8").unwrap()
    }

    #[test]
    fn private_channel_doc_vector() {
        let auth = sign_channel(
            &doc_key(),
            &doc_secret(),
            "1234.1234",
            "private-foobar",
            None,
        );
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        let sid = "1234.1234".parse().unwrap();
        assert_eq!(
            verify_channel(
                &doc_key(),
                &doc_secret(),
                sid,
                "private-foobar",
                None,
                &auth
            ),
            Ok(())
        );
        assert_eq!(
            verify_channel(&doc_key(), &doc_secret(), sid, "private-other", None, &auth),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn user_auth_doc_vector() {
        let auth = sign_user(&doc_key(), &doc_secret(), "1234.1234", r#"{"id":"12345"}"#);
        assert_eq!(
            auth,
            "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
        );
    }

    #[test]
    fn presence_signature_covers_channel_data() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let auth = sign_channel(
            &doc_key(),
            &doc_secret(),
            "1234.1234",
            "presence-foobar",
            Some(data),
        );
        let expected = hmac_hex(
            &doc_secret(),
            format!("1234.1234:presence-foobar:{data}").as_bytes(),
        );
        assert_eq!(auth, format!("278d425bdf160c739803:{expected}"));
        let sid = "1234.1234".parse().unwrap();
        let verify = |d| {
            verify_channel(
                &doc_key(),
                &doc_secret(),
                sid,
                "presence-foobar",
                Some(d),
                &auth,
            )
        };
        assert_eq!(verify(data), Ok(()));
        assert_eq!(verify(r#"{"user_id":11}"#), Err(AuthError::BadSignature));
    }

    #[test]
    fn rest_doc_vector() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        let params = sign_rest(
            &doc_key(),
            &doc_secret(),
            "POST",
            "/apps/3/events",
            &[],
            body,
            1353088179,
        );
        let sig = &params
            .iter()
            .find(|(k, _)| k == "auth_signature")
            .unwrap()
            .1;
        assert_eq!(
            sig,
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        let req = RestRequest {
            method: "POST",
            path: "/apps/3/events",
            query: &params,
            body,
        };
        assert_eq!(
            req.verify(&doc_key(), &doc_secret(), 1353088179 + 10),
            Ok(())
        );
    }

    #[test]
    fn rest_rejections() {
        let (k, s) = (doc_key(), doc_secret());
        let body = br#"{"a":1}"#;
        let now = 1_700_000_000;
        let params = sign_rest(&k, &s, "POST", "/apps/3/events", &[], body, now);
        let ok = |q: &[(String, String)], b: &[u8], t| {
            RestRequest {
                method: "POST",
                path: "/apps/3/events",
                query: q,
                body: b,
            }
            .verify(&k, &s, t)
        };
        assert_eq!(ok(&params, body, now), Ok(()));
        assert!(matches!(
            ok(&params, body, now + 601),
            Err(RestAuthError::StaleTimestamp { .. })
        ));
        assert_eq!(
            ok(&params, br#"{"a":2}"#, now),
            Err(RestAuthError::BodyMd5Mismatch)
        );
        let no_md5: Vec<_> = params
            .iter()
            .filter(|(k, _)| k != "body_md5")
            .cloned()
            .collect();
        assert_eq!(ok(&no_md5, body, now), Err(RestAuthError::MissingBodyMd5));
        let mut tampered = params.clone();
        tampered.insert(0, ("info".into(), "user_count".into()));
        assert!(matches!(
            ok(&tampered, body, now),
            Err(RestAuthError::BadSignature(_))
        ));
        let wrong = AppSecret::new("nope").unwrap();
        assert!(RestRequest {
            method: "POST",
            path: "/apps/3/events",
            query: &params,
            body
        }
        .verify(&k, &wrong, now)
        .is_err());
        let missing: Vec<_> = params
            .iter()
            .filter(|(k, _)| k != "auth_signature")
            .cloned()
            .collect();
        assert_eq!(
            ok(&missing, body, now),
            Err(RestAuthError::Missing("auth_signature"))
        );
    }

    #[test]
    fn rest_get_with_empty_body_md5_is_accepted() {
        let (k, s) = (doc_key(), doc_secret());
        let mut params = vec![("body_md5".to_string(), body_md5(b""))];
        params.extend(sign_rest(
            &k,
            &s,
            "GET",
            "/apps/3/channels",
            &[("body_md5", &body_md5(b""))],
            b"",
            5,
        ));
        params.remove(0);
        let req = RestRequest {
            method: "GET",
            path: "/apps/3/channels",
            query: &params,
            body: b"",
        };
        assert_eq!(req.verify(&k, &s, 5), Ok(()));
    }

    #[test]
    fn user_auth_roundtrip() {
        let (k, s) = (doc_key(), doc_secret());
        let data = r#"{"id":"42"}"#;
        let auth = sign_user(&k, &s, "1.2", data);
        let sid = "1.2".parse().unwrap();
        assert_eq!(verify_user(&k, &s, sid, data, &auth), Ok(()));
        assert_eq!(
            verify_user(&k, &s, sid, r#"{"id":"43"}"#, &auth),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify_user(&k, &s, sid, data, "nokey"),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            verify_user(&k, &s, sid, data, &auth.replacen("278d", "xxxx", 1)),
            Err(AuthError::WrongKey)
        );
    }

    #[test]
    fn webhook_signature() {
        let s = doc_secret();
        let body = br#"{"time_ms":1,"events":[]}"#;
        let sig = sign_webhook(&s, body);
        assert!(verify_webhook(&s, body, &sig));
        assert!(!verify_webhook(&s, b"{}", &sig));
        assert!(!verify_webhook(&s, body, "zz"));
    }
}
