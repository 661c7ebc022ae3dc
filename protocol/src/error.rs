//! Error and close codes the broker sends, in one place.
//!
//! pusher-js decides what to do after a close from the code's range:
//! 4000-4099 never reconnect, 4100-4199 reconnect after a back-off,
//! 4200-4299 reconnect at once, 4300-4399 are errors that do not close.

/// A `pusher:error` code, also used as the WebSocket close code where the error is fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 4001: no app has the key in the URL.
    AppNotFound,
    /// 4003: the app exists but is disabled.
    AppDisabled,
    /// 4004: the app is at its connection quota.
    OverConnectionQuota,
    /// 4005: the URL is not `/app/{key}`.
    PathNotFound,
    /// 4006: `protocol` is not a number.
    InvalidVersionFormat,
    /// 4007: `protocol` is a number we do not speak.
    UnsupportedProtocolVersion,
    /// 4008: `protocol` is missing.
    NoProtocolVersion,
    /// 4009: the connection is not authorised (e.g. its user's connections were terminated).
    Unauthorized,
    /// 4100: the broker cannot keep up with this client (its send queue overflowed).
    OverCapacity,
    /// 4101: the client's address holds `max_connections_per_ip` connections already.
    /// Not one of the hosted service's codes; in the 41xx range so clients retry after a back-off.
    OverAddressQuota,
    /// 4200: please reconnect (e.g. the broker is shutting down).
    ReconnectImmediately,
    /// 4201: a ping went unanswered.
    PongNotReceived,
    /// 4202: the connection was idle too long.
    ClosedAfterInactivity,
    /// 4301: too many client events; the connection stays open.
    ClientEventRateLimit,
}

impl ErrorCode {
    /// Every code, for looking one up by number.
    pub const ALL: [Self; 14] = [
        Self::AppNotFound,
        Self::AppDisabled,
        Self::OverConnectionQuota,
        Self::PathNotFound,
        Self::InvalidVersionFormat,
        Self::UnsupportedProtocolVersion,
        Self::NoProtocolVersion,
        Self::Unauthorized,
        Self::OverCapacity,
        Self::OverAddressQuota,
        Self::ReconnectImmediately,
        Self::PongNotReceived,
        Self::ClosedAfterInactivity,
        Self::ClientEventRateLimit,
    ];

    /// The code with this number, if it is one of Pusher's.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    pub const fn code(self) -> u16 {
        match self {
            Self::AppNotFound => 4001,
            Self::AppDisabled => 4003,
            Self::OverConnectionQuota => 4004,
            Self::PathNotFound => 4005,
            Self::InvalidVersionFormat => 4006,
            Self::UnsupportedProtocolVersion => 4007,
            Self::NoProtocolVersion => 4008,
            Self::Unauthorized => 4009,
            Self::OverCapacity => 4100,
            Self::OverAddressQuota => 4101,
            Self::ReconnectImmediately => 4200,
            Self::PongNotReceived => 4201,
            Self::ClosedAfterInactivity => 4202,
            Self::ClientEventRateLimit => 4301,
        }
    }

    pub const fn message(self) -> &'static str {
        match self {
            Self::AppNotFound => "App key not in this cluster",
            Self::AppDisabled => "App disabled",
            Self::OverConnectionQuota => "Over connection quota",
            Self::PathNotFound => "Path not found",
            Self::InvalidVersionFormat => "Invalid version string format",
            Self::UnsupportedProtocolVersion => "Unsupported protocol version",
            Self::NoProtocolVersion => "No protocol version supplied",
            Self::Unauthorized => "Connection is unauthorized",
            Self::OverCapacity => "Over capacity: client could not keep up",
            Self::OverAddressQuota => "Too many connections from this address",
            Self::ReconnectImmediately => "Please reconnect immediately",
            Self::PongNotReceived => "Pong reply not received",
            Self::ClosedAfterInactivity => "Closed after inactivity",
            Self::ClientEventRateLimit => "Client event rejected: rate limit exceeded",
        }
    }

    /// Whether the connection is closed after the error is sent.
    pub const fn closes_connection(self) -> bool {
        !matches!(self, Self::ClientEventRateLimit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_pusher_js_reconnect_rules() {
        for c in [
            ErrorCode::AppNotFound,
            ErrorCode::AppDisabled,
            ErrorCode::NoProtocolVersion,
            ErrorCode::Unauthorized,
        ] {
            assert!((4000..4100).contains(&c.code()));
        }
        assert!((4100..4200).contains(&ErrorCode::OverCapacity.code()));
        assert!((4100..4200).contains(&ErrorCode::OverAddressQuota.code()));
        assert!((4200..4300).contains(&ErrorCode::PongNotReceived.code()));
        assert!((4300..4400).contains(&ErrorCode::ClientEventRateLimit.code()));
        assert!(!ErrorCode::ClientEventRateLimit.closes_connection());
    }

    #[test]
    fn every_code_is_found_by_its_number() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(c.code()), Some(c));
        }
        assert_eq!(ErrorCode::from_code(1000), None);
    }
}
