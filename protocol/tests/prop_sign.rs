//! Property tests of signatures and REST query canonicalisation (the fuzz
//! targets `auth_signatures` and `rest_query` run the same entry points).

use proptest::prelude::*;
use protocol::{
    sign::{
        self, rest_string_to_sign, AuthError, RestAuthError, RestRequest,
        REST_TIMESTAMP_WINDOW_SECS,
    },
    AppKey, AppSecret, SocketId,
};

fn key() -> impl Strategy<Value = AppKey> {
    "[A-Za-z0-9_-]{1,40}".prop_map(|k| AppKey::new(k).unwrap())
}

fn secret() -> impl Strategy<Value = AppSecret> {
    "\\PC{1,40}".prop_map(|s| AppSecret::new(s).unwrap())
}

fn socket_id() -> impl Strategy<Value = SocketId> {
    (any::<u64>(), any::<u64>()).prop_map(|(a, b)| SocketId::new(a, b))
}

/// Query parameters other than the ones signing adds.
fn params() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[a-zA-Z_]{1,12}", "\\PC{0,20}"), 0..6).prop_map(|ps| {
        ps.into_iter()
            .filter(|(k, _)| {
                ![
                    "auth_key",
                    "auth_timestamp",
                    "auth_version",
                    "auth_signature",
                    "body_md5",
                ]
                .contains(&k.to_ascii_lowercase().as_str())
            })
            .collect()
    })
}

/// `signature` with the character at `at` replaced by `with`, unless that is the
/// same character or the same hex digit in the other case (which decodes to the
/// same bytes, so it still verifies: the comparison is of the MAC, not its text).
fn change_one_char(signature: &str, at: prop::sample::Index, with: char) -> Option<String> {
    let mut chars: Vec<char> = signature.chars().collect();
    let i = at.index(chars.len());
    if chars[i].eq_ignore_ascii_case(&with) {
        return None;
    }
    chars[i] = with;
    Some(chars.into_iter().collect())
}

fn pairs(ps: &[(String, String)]) -> Vec<(&str, &str)> {
    ps.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_signed_subscription_verifies(
        key in key(), secret in secret(), sid in socket_id(),
        channel in "\\PC{0,60}", data in proptest::option::of("\\PC{0,60}"),
    ) {
        let auth = sign::sign_channel(&key, &secret, &sid.to_string(), &channel, data.as_deref());
        prop_assert_eq!(sign::verify_channel(&key, &secret, sid, &channel, data.as_deref(), &auth), Ok(()));
    }

    #[test]
    fn any_single_character_change_to_a_signature_fails(
        key in key(), secret in secret(), sid in socket_id(), channel in "\\PC{1,60}",
        at in any::<prop::sample::Index>(), with in any::<char>(),
    ) {
        let auth = sign::sign_channel(&key, &secret, &sid.to_string(), &channel, None);
        let Some(changed) = change_one_char(&auth, at, with) else { return Ok(()) };
        prop_assert!(sign::verify_channel(&key, &secret, sid, &channel, None, &changed).is_err(), "{changed}");
        let user = sign::sign_user(&key, &secret, &sid.to_string(), &channel);
        let Some(changed) = change_one_char(&user, at, with) else { return Ok(()) };
        prop_assert!(sign::verify_user(&key, &secret, sid, &channel, &changed).is_err());
    }

    #[test]
    fn a_signature_is_bound_to_its_socket_channel_data_and_secret(
        key in key(), secret in secret(), other_secret in secret(), sid in socket_id(), other_sid in socket_id(),
        channel in "\\PC{1,40}", other_channel in "\\PC{1,40}", data in "\\PC{0,40}", other_data in "\\PC{0,40}",
    ) {
        let auth = sign::sign_channel(&key, &secret, &sid.to_string(), &channel, Some(&data));
        let verify = |secret: &AppSecret, sid, channel: &str, data: &str| sign::verify_channel(&key, secret, sid, channel, Some(data), &auth);
        if other_sid != sid {
            prop_assert_eq!(verify(&secret, other_sid, &channel, &data), Err(AuthError::BadSignature));
        }
        if other_channel != channel {
            prop_assert_eq!(verify(&secret, sid, &other_channel, &data), Err(AuthError::BadSignature));
        }
        if other_data != data {
            prop_assert_eq!(verify(&secret, sid, &channel, &other_data), Err(AuthError::BadSignature));
        }
        if other_secret != secret {
            prop_assert_eq!(verify(&other_secret, sid, &channel, &data), Err(AuthError::BadSignature));
        }
    }

    #[test]
    fn auth_text_gives_the_documented_error(key in key(), secret in secret(), sid in socket_id(), auth in "\\PC{0,100}") {
        let result = sign::verify_user(&key, &secret, sid, "{}", &auth);
        let expected = match auth.split_once(':') {
            None => Err(AuthError::Malformed),
            Some((k, _)) if k != key.as_str() => Err(AuthError::WrongKey),
            Some(_) => Err(AuthError::BadSignature),
        };
        prop_assert_eq!(result, expected);
    }

    #[test]
    fn a_signed_user_and_webhook_verify(key in key(), secret in secret(), sid in socket_id(), data in "\\PC{0,100}") {
        let auth = sign::sign_user(&key, &secret, &sid.to_string(), &data);
        prop_assert_eq!(sign::verify_user(&key, &secret, sid, &data, &auth), Ok(()));
        let signature = sign::sign_webhook(&secret, data.as_bytes());
        prop_assert!(sign::verify_webhook(&secret, data.as_bytes(), &signature));
        let changed = format!("{data} ");
        prop_assert!(!sign::verify_webhook(&secret, changed.as_bytes(), &signature));
    }

    #[test]
    fn canonical_query_ignores_parameter_order_and_key_case(
        method in "[A-Za-z]{1,7}", path in "/\\PC{0,30}",
        (params, shuffled) in params().prop_flat_map(|p| (Just(p.clone()), Just(p).prop_shuffle())),
    ) {
        let canonical = rest_string_to_sign(&method, &path, pairs(&params));
        prop_assert_eq!(rest_string_to_sign(&method.to_ascii_lowercase(), &path, pairs(&shuffled)), canonical.clone());
        let upper: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_ascii_uppercase(), v.clone())).collect();
        prop_assert_eq!(rest_string_to_sign(&method, &path, pairs(&upper)), canonical.clone());
        // auth_signature is never part of what is signed.
        let mut with_sig = params.clone();
        with_sig.push(("auth_signature".into(), "x".into()));
        prop_assert_eq!(rest_string_to_sign(&method, &path, pairs(&with_sig)), canonical);
    }

    #[test]
    fn a_signed_rest_request_verifies_in_any_order(
        key in key(), secret in secret(), params in params(), body in prop::collection::vec(any::<u8>(), 0..64),
        ts in 1_000_000u64..4_000_000_000, skew in 0..=REST_TIMESTAMP_WINDOW_SECS, reverse: bool,
    ) {
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut query = sign::sign_rest(&key, &secret, "POST", "/apps/1/events", &borrowed, &body, ts);
        if reverse {
            query.reverse();
        }
        let req = RestRequest { method: "POST", path: "/apps/1/events", query: &query, body: &body };
        prop_assert_eq!(req.verify(&key, &secret, ts + skew), Ok(()));
        prop_assert_eq!(req.verify(&key, &secret, ts - skew), Ok(()));
        let stale = req.verify(&key, &secret, ts + REST_TIMESTAMP_WINDOW_SECS + 1 + skew);
        prop_assert!(matches!(stale, Err(RestAuthError::StaleTimestamp { .. })), "{:?}", stale);
    }

    #[test]
    fn changing_any_signed_rest_value_fails(
        key in key(), secret in secret(), params in params(), body in prop::collection::vec(any::<u8>(), 0..64),
        which in any::<prop::sample::Index>(), suffix in "\\PC{1,3}",
    ) {
        let borrowed: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut query = sign::sign_rest(&key, &secret, "GET", "/apps/1/channels", &borrowed, &body, 1_700_000_000);
        let i = which.index(query.len());
        let changed_key = query[i].0.clone();
        query[i].1.push_str(&suffix);
        let req = RestRequest { method: "GET", path: "/apps/1/channels", query: &query, body: &body };
        let result = req.verify(&key, &secret, 1_700_000_000);
        prop_assert!(result.is_err(), "changing {} kept the request valid", changed_key);
    }

    #[test]
    fn any_query_is_checked_without_panicking(
        query in prop::collection::vec(("\\PC{0,16}", "\\PC{0,40}"), 0..8), body in prop::collection::vec(any::<u8>(), 0..32), now: u64,
    ) {
        let (key, secret) = (AppKey::new("k").unwrap(), AppSecret::new("s").unwrap());
        let result = RestRequest { method: "GET", path: "/", query: &query, body: &body }.verify(&key, &secret, now);
        prop_assert!(result.is_err());
    }
}
