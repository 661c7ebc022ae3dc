//! A REST request as the broker receives it: the raw query string decoded the
//! way actix-web's `web::Query` decodes it, then `RestRequest::verify` (key,
//! version, timestamp window, body MD5, signature). Input: `METHOD\npath\nquery\nbody`.
//! The seeds are correctly signed requests, so mutations start from ones that pass.

#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::sign::{rest_string_to_sign, RestAuthError, RestRequest};
use protocol_fuzz::{app, NOW};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(4, |b| *b == b'\n');
    let (Some(method), Some(path), Some(query)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let body = parts.next().unwrap_or_default();
    let (Ok(method), Ok(path), Ok(query)) = (
        std::str::from_utf8(method),
        std::str::from_utf8(path),
        std::str::from_utf8(query),
    ) else {
        return;
    };
    // A query that does not decode is refused with 400 before any signature check.
    let Ok(params) = serde_urlencoded::from_str::<Vec<(String, String)>>(query) else {
        return;
    };

    // Canonicalisation does not depend on the order parameters arrive in.
    let pairs = || params.iter().map(|(k, v)| (k.as_str(), v.as_str()));
    let canonical = rest_string_to_sign(method, path, pairs());
    assert_eq!(rest_string_to_sign(method, path, pairs().rev()), canonical);
    // `auth_signature` itself (in any case) is never part of what is signed.
    let unsigned = pairs().filter(|(k, _)| !k.eq_ignore_ascii_case("auth_signature"));
    assert_eq!(rest_string_to_sign(method, path, unsigned), canonical);

    let (key, secret) = app();
    let verify = |query: &[(String, String)], body: &[u8]| {
        RestRequest {
            method,
            path,
            query,
            body,
        }
        .verify(&key, &secret, NOW)
    };
    match verify(&params, body) {
        Ok(()) => {
            // A request that passes stops passing when any signed value changes.
            for i in 0..params.len() {
                if params[i].0.eq_ignore_ascii_case("auth_signature") {
                    continue;
                }
                let mut changed = params.clone();
                changed[i].1.push('x');
                assert!(
                    verify(&changed, body).is_err(),
                    "changing {:?} kept the signature valid",
                    params[i].0
                );
            }
            let mut other_body = body.to_vec();
            other_body.push(b' ');
            assert!(verify(&params, &other_body).is_err());
        }
        Err(RestAuthError::BadSignature(signed)) => assert_eq!(signed, canonical),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
