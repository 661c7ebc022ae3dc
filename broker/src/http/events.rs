//! `POST /apps/{id}/events` and `POST /apps/{id}/batch_events`.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use bytestring::ByteString;
use futures_util::future::join_all;

use actix_web::{web, HttpResponse};
use protocol::{
    frame,
    rest::{BatchResponse, ChannelStats, InfoRequest, TriggerResponse},
    trigger::{parse_batch, parse_trigger, Trigger},
    ChannelKind, ChannelName,
};

use super::{
    auth::{admit, Authed},
    error::ApiError,
};
use crate::{
    adapter::{history::is_kept, Published},
    apps::App,
    core::hub::CachedEvent,
    state::State,
};

/// Serializes the event once per channel and hands it to the adapter; cache
/// channels keep it as their last event. Returns what says whether every node heard it.
fn publish(state: &State, app: &App, t: &Trigger) -> Vec<Published> {
    let mut shared: Option<(Arc<str>, Arc<str>)> = None;
    let mut published = Vec::with_capacity(t.channels.len());
    for channel in &t.channels {
        let bytes = ByteString::from(frame::channel_event(
            channel.as_str(),
            t.name.as_str(),
            &t.data,
        ));
        if channel.is_cache() {
            let (event, data) = shared
                .get_or_insert_with(|| (t.name.as_str().into(), t.data.as_str().into()))
                .clone();
            state.adapter.cache_put(
                app,
                channel,
                CachedEvent {
                    frame: bytes.clone(),
                    event,
                    data,
                    stored: Instant::now(),
                },
            );
        }
        published.push(if is_kept(app, channel, false) {
            state.adapter.keep(app, channel, bytes, t.except)
        } else {
            state.adapter.broadcast(app, channel, bytes, t.except)
        });
    }
    state
        .console
        .rest_trigger(&app.key, &t.channels, &t.name, t.data.len(), t.except);
    published
}

/// Waits until every node holding the channels heard the events: a trigger answered 200
/// reached every node's subscribers, and 503 says it may not have.
async fn confirmed(published: Vec<Published>) -> Result<(), ApiError> {
    for result in join_all(published.into_iter().map(Published::acknowledged)).await {
        result.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    }
    Ok(())
}

async fn stats(state: &State, app: &App, channel: &ChannelName, info: InfoRequest) -> ChannelStats {
    let counts = state.adapter.channel_counts(app, channel).await;
    ChannelStats {
        user_count: (info.user_count && channel.kind() == ChannelKind::Presence)
            .then_some(counts.users),
        subscription_count: info.subscription_count.then_some(counts.subscriptions),
    }
}

pub async fn trigger(authed: Authed, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let response = trigger_checked(&state, &authed.app, &authed.body).await?;
    Ok(HttpResponse::Ok().json(response))
}

/// Publishes one trigger (a REST trigger's JSON body) for an app whose caller is
/// already authenticated. Applies the app's enabled flag and REST rate limit like a
/// signed request; the debug console's event creator comes here too.
pub async fn trigger_as(
    state: &State,
    app: &App,
    body: &[u8],
) -> Result<TriggerResponse, ApiError> {
    admit(app)?;
    trigger_checked(state, app, body).await
}

/// Validates, publishes and answers one trigger (after authentication and admission).
async fn trigger_checked(
    state: &State,
    app: &App,
    body: &[u8],
) -> Result<TriggerResponse, ApiError> {
    let t = parse_trigger(body, &app.limits)?;
    confirmed(publish(state, app, &t)).await?;
    let mut response = TriggerResponse::default();
    if t.info.any() {
        // One query per channel, all at once (`max_channels_per_trigger` bounds them).
        let all = join_all(t.channels.iter().map(|c| stats(state, app, c, t.info))).await;
        let channels: BTreeMap<_, _> = t
            .channels
            .iter()
            .map(|c| c.as_str().to_owned())
            .zip(all)
            .collect();
        response.channels = Some(channels);
    }
    Ok(response)
}

pub async fn batch(authed: Authed, state: web::Data<State>) -> Result<HttpResponse, ApiError> {
    let app = &authed.app;
    // Validated whole before anything is published: a batch is all or nothing.
    let triggers = parse_batch(&authed.body, &app.limits)?;
    let published = triggers
        .iter()
        .flat_map(|t| publish(&state, app, t))
        .collect();
    confirmed(published).await?;
    let mut response = BatchResponse::default();
    if triggers.iter().any(|t| t.info.any()) {
        // One query per event, all at once (`max_batch_events` bounds them).
        let all = triggers
            .iter()
            .map(|t| stats(&state, app, &t.channels[0], t.info));
        response.batch = Some(join_all(all).await);
    }
    Ok(HttpResponse::Ok().json(response))
}
