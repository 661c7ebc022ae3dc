//! `GET /apps/{id}/channels/{name}/history`: a page of a kept channel's events.

use actix_web::{web, HttpResponse};
use protocol::history::{FailReason, HistoryPage, HistoryQuery, PageEvent};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    auth::Authed,
    channels::channel_name,
    error::{bad_request, ApiError},
};
use crate::{adapter::history::is_kept, apps::App, core::history::KeptEvent, state::State};

/// The parts of a kept frame a page shows.
#[derive(Deserialize)]
struct Frame<'a> {
    event: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    user_id: Option<&'a str>,
}

pub async fn page(
    authed: Authed,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let (_, raw) = path.into_inner();
    let json = history_page(&state, &authed.app, &raw, |k| authed.param(k)).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(json))
}

/// A kept channel's history page as JSON, for the query `param` looks up; the REST
/// endpoint and the debug console both answer with this.
pub async fn history_page<'q>(
    state: &State,
    app: &App,
    channel: &str,
    param: impl Fn(&str) -> Option<&'q str>,
) -> Result<String, ApiError> {
    let name = channel_name(channel, app.limits.max_channel_name_len)?;
    let Some(config) = app.history.as_ref().filter(|_| is_kept(app, &name, false)) else {
        return Err(ApiError::NotFound(format!(
            "this app keeps no history for {}",
            name.as_str()
        )));
    };
    let query =
        HistoryQuery::parse(param, config.max_page).map_err(|e| bad_request(e.to_string()))?;
    let page = state
        .adapter
        .page(app, &name, &query)
        .await
        .map_err(|reason| match reason {
            FailReason::Unavailable => ApiError::Unavailable(
                "history is unavailable: the cluster's Redis cannot be reached".into(),
            ),
            other => ApiError::NotFound(other.to_string()),
        })?;
    let events = page
        .events
        .iter()
        .filter_map(|e: &KeptEvent| {
            // Every kept frame is one the broker serialised itself.
            let f: Frame<'_> = serde_json::from_str(&e.frame).ok()?;
            Some(PageEvent {
                position: e.position,
                event: f.event,
                data: f.data,
                user_id: f.user_id,
                published_at_ms: e.at_ms,
            })
        })
        .collect();
    Ok(serde_json::to_string(&HistoryPage {
        epoch: &page.window.epoch,
        oldest: page.window.oldest,
        newest: page.window.newest,
        direction: query.direction,
        events,
    })
    .expect("a page serializes"))
}
