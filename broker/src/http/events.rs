//! `POST /apps/{id}/events` and `POST /apps/{id}/batch_events`.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use bytestring::ByteString;

use actix_web::{web, HttpRequest, HttpResponse};
use protocol::{
    frame,
    rest::{BatchRequest, BatchResponse, ChannelStats, InfoRequest, TriggerRequest, TriggerResponse},
    ChannelKind, ChannelName, EventName, SocketId,
};

use super::{
    auth::authenticate,
    body::RestBody,
    error::{bad_request, ApiError},
};
use crate::{apps::App, core::hub::CachedEvent, state::State};

/// A trigger that passed validation.
struct Trigger {
    name: EventName,
    data: String,
    channels: Vec<ChannelName>,
    except: Option<SocketId>,
    info: InfoRequest,
}

fn validate(app: &App, req: TriggerRequest) -> Result<Trigger, ApiError> {
    let limits = &app.limits;
    let name = EventName::parse_with_max(&req.name, limits.max_event_name_len)
        .map_err(|e| bad_request(format!("invalid event name {:?}: {e}", req.name)))?;
    let raw: Vec<String> = match (req.channel, req.channels) {
        (Some(c), None) => vec![c],
        (None, Some(cs)) => cs,
        (Some(_), Some(_)) => return Err(bad_request("give either channel or channels, not both")),
        (None, None) => return Err(bad_request("missing channel or channels")),
    };
    if raw.is_empty() {
        return Err(bad_request("channels must name at least one channel"));
    }
    if raw.len() > limits.max_channels_per_trigger {
        return Err(bad_request(format!("too many channels: {} (at most {})", raw.len(), limits.max_channels_per_trigger)));
    }
    let channels = raw
        .iter()
        .map(|c| {
            ChannelName::parse_with_max(c, limits.max_channel_name_len).map_err(|e| bad_request(format!("invalid channel name {c:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if channels.iter().any(|c| c.kind() == ChannelKind::PrivateEncrypted) && channels.len() > 1 {
        return Err(bad_request("an event on an encrypted channel must name exactly one channel"));
    }
    if req.data.len() > limits.max_event_data_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "event data is {} bytes, more than the limit of {}",
            req.data.len(),
            limits.max_event_data_bytes
        )));
    }
    let except = match req.socket_id.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<SocketId>().map_err(|_| bad_request(format!("invalid socket_id {s:?}")))?),
    };
    let info = InfoRequest::parse(req.info.as_deref()).map_err(bad_request)?;
    if info.cache {
        return Err(bad_request("info=cache is only available from GET /channels/{name}"));
    }
    Ok(Trigger { name, data: req.data, channels, except, info })
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

/// Serializes the event once per channel and hands it to the adapter; cache
/// channels keep it as their last event.
fn publish(state: &State, app: &App, t: &Trigger) {
    let mut shared: Option<(Arc<str>, Arc<str>)> = None;
    for channel in &t.channels {
        let bytes = ByteString::from(frame::channel_event(channel.as_str(), t.name.as_str(), &t.data));
        if channel.is_cache() {
            let (event, data) = shared.get_or_insert_with(|| (t.name.as_str().into(), t.data.as_str().into())).clone();
            state.adapter.cache_put(app, channel, CachedEvent { frame: bytes.clone(), event, data, stored: Instant::now() });
        }
        state.adapter.broadcast(app, channel, bytes, t.except);
    }
}

async fn stats(state: &State, app: &App, channel: &ChannelName, info: InfoRequest) -> ChannelStats {
    let counts = state.adapter.channel_counts(app, channel).await;
    ChannelStats {
        user_count: (info.user_count && channel.kind() == ChannelKind::Presence).then_some(counts.users),
        subscription_count: info.subscription_count.then_some(counts.subscriptions),
    }
}

pub async fn trigger(
    req: HttpRequest,
    body: RestBody,
    app_id: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let authed = authenticate(&req, &body, &state, &app_id)?;
    let t = validate(&authed.app, parse_json(&body)?)?;
    publish(&state, &authed.app, &t);
    let mut response = TriggerResponse::default();
    if t.info.any() {
        let mut channels = BTreeMap::new();
        for c in &t.channels {
            channels.insert(c.as_str().to_owned(), stats(&state, &authed.app, c, t.info).await);
        }
        response.channels = Some(channels);
    }
    Ok(HttpResponse::Ok().json(response))
}

pub async fn batch(
    req: HttpRequest,
    body: RestBody,
    app_id: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let authed = authenticate(&req, &body, &state, &app_id)?;
    let app = &authed.app;
    let batch: BatchRequest = parse_json(&body)?;
    if batch.batch.len() > app.limits.max_batch_events {
        return Err(bad_request(format!("too many events in batch: {} (at most {})", batch.batch.len(), app.limits.max_batch_events)));
    }
    // Validate everything before publishing anything: a batch is all or nothing.
    let triggers = batch
        .batch
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let single = item.channels.as_ref().map_or(1, Vec::len);
            if item.channels.is_some() && single != 1 {
                return Err(bad_request(format!("batch[{i}]: each batch event names one channel")));
            }
            validate(app, item).map_err(|e| match e {
                ApiError::BadRequest(m) => ApiError::BadRequest(format!("batch[{i}]: {m}")),
                ApiError::PayloadTooLarge(m) => ApiError::PayloadTooLarge(format!("batch[{i}]: {m}")),
                other => other,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for t in &triggers {
        publish(&state, app, t);
    }
    let mut response = BatchResponse::default();
    if triggers.iter().any(|t| t.info.any()) {
        let mut out = Vec::with_capacity(triggers.len());
        for t in &triggers {
            out.push(stats(&state, app, &t.channels[0], t.info).await);
        }
        response.batch = Some(out);
    }
    Ok(HttpResponse::Ok().json(response))
}
