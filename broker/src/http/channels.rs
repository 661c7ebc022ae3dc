//! `GET /apps/{id}/channels`, `/channels/{name}` and `/channels/{name}/users`.

use std::{collections::BTreeMap, time::Instant};

use actix_web::{web, HttpResponse};
use protocol::{
    rest::{
        CacheInfo, ChannelResponse, ChannelStats, ChannelsResponse, InfoRequest, UserRef,
        UsersResponse,
    },
    ChannelKind, ChannelName,
};

use super::{
    auth::Authed,
    error::{bad_request, ApiError},
};
use crate::state::State;

pub(super) fn channel_name(raw: &str, max: usize) -> Result<ChannelName, ApiError> {
    ChannelName::parse_with_max(raw, max)
        .map_err(|e| bad_request(format!("invalid channel name {raw:?}: {e}")))
}

pub async fn list(authed: Authed, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let prefix = authed.param("filter_by_prefix").unwrap_or("");
    let info = InfoRequest::parse(authed.param("info")).map_err(bad_request)?;
    if info.subscription_count || info.cache {
        return Err(bad_request(
            "only info=user_count is available when listing channels",
        ));
    }
    if info.user_count && !prefix.starts_with("presence-") {
        return Err(bad_request(
            "info=user_count needs filter_by_prefix=presence-",
        ));
    }
    let mut channels = BTreeMap::new();
    for (name, counts) in state.adapter.channels(&authed.app, prefix).await {
        // Server-to-user channels are an implementation detail of sign-in.
        if name.kind() == ChannelKind::ServerToUser {
            continue;
        }
        let stats = ChannelStats {
            user_count: info.user_count.then_some(counts.users),
            subscription_count: None,
        };
        channels.insert(name.as_str().to_owned(), stats);
    }
    Ok(HttpResponse::Ok().json(ChannelsResponse { channels }))
}

pub async fn show(
    authed: Authed,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let (_, raw) = path.into_inner();
    let name = channel_name(&raw, authed.app.limits.max_channel_name_len)?;
    let info = InfoRequest::parse(authed.param("info")).map_err(bad_request)?;
    if info.user_count && name.kind() != ChannelKind::Presence {
        return Err(bad_request(
            "info=user_count is only available for presence channels",
        ));
    }
    if info.cache && !name.is_cache() {
        return Err(bad_request(
            "info=cache is only available for cache channels",
        ));
    }
    let counts = state.adapter.channel_counts(&authed.app, &name).await;
    let cache = if info.cache {
        let now = Instant::now();
        let kept = state.adapter.cached(&authed.app, &name).await;
        Some(kept.map(|e| CacheInfo {
            event: e.event.to_string(),
            data: e.data.to_string(),
            ttl: e.ttl_secs(now),
        }))
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(ChannelResponse {
        occupied: counts.subscriptions > 0,
        user_count: info.user_count.then_some(counts.users),
        subscription_count: info.subscription_count.then_some(counts.subscriptions),
        cache,
    }))
}

pub async fn users(
    authed: Authed,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let (_, raw) = path.into_inner();
    let name = channel_name(&raw, authed.app.limits.max_channel_name_len)?;
    if name.kind() != ChannelKind::Presence {
        return Err(bad_request(
            "users can only be listed for presence channels",
        ));
    }
    let users = state
        .adapter
        .users(&authed.app, &name)
        .await
        .into_iter()
        .map(|id| UserRef { id })
        .collect();
    Ok(HttpResponse::Ok().json(UsersResponse { users }))
}
