//! The checks every new connection passes, whatever its transport.

use std::sync::Arc;

use protocol::ErrorCode;

use crate::{apps::App, state::State};

/// Protocol versions this broker speaks; pusher-js 8 uses 7.
const SUPPORTED_PROTOCOLS: std::ops::RangeInclusive<u32> = 5..=7;

/// Admits a new connection to the app with `key`, counting it against the
/// app's connection limit (the session gives the place back when it ends), or
/// says why it is refused.
pub fn admit(
    state: &State,
    key: &str,
    protocol: Option<&str>,
    origin: Option<&str>,
) -> Result<Arc<App>, ErrorCode> {
    let app = state.apps.by_key(key).ok_or(ErrorCode::AppNotFound)?;
    if !app.enabled {
        return Err(ErrorCode::AppDisabled);
    }
    if !app.origin_allowed(origin) {
        return Err(ErrorCode::Unauthorized);
    }
    let version: u32 = protocol
        .ok_or(ErrorCode::NoProtocolVersion)?
        .parse()
        .map_err(|_| ErrorCode::InvalidVersionFormat)?;
    if !SUPPORTED_PROTOCOLS.contains(&version) {
        return Err(ErrorCode::UnsupportedProtocolVersion);
    }
    if !app.hub.try_add_connection(app.limits.max_connections) {
        return Err(ErrorCode::OverConnectionQuota);
    }
    Ok(app)
}
