//! The HTTP API under `/apps/{app_id}`, plus the operator endpoints.

mod auth;
pub mod body;
mod channels;
pub mod error;
mod events;
mod history;
pub mod ops;
mod users;

use actix_web::{dev::Service, web};

use crate::{metrics::RestLabels, state::State};

pub use events::trigger_as;
pub use history::history_page;

/// The REST API and `/health`; `/ready` and `/metrics` are added per listener
/// (see [`ops::guarded_routes`]). Bodies are read by [`body::RestBody`], bounded by `max_rest_body_bytes`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    ops::health_route(cfg);
    cfg.service(
        web::scope("/apps/{app_id}")
            .wrap_fn(|req, srv| {
                let state = req.app_data::<web::Data<State>>().cloned();
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    if let Some(state) = state {
                        let route = res
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".into());
                        state
                            .metrics
                            .rest_requests
                            .get_or_create(&RestLabels {
                                route,
                                status: res.status().as_u16(),
                            })
                            .inc();
                    }
                    Ok(res)
                }
            })
            .route("/events", web::post().to(events::trigger))
            .route("/batch_events", web::post().to(events::batch))
            .route("/channels", web::get().to(channels::list))
            .route("/channels/{channel_name}", web::get().to(channels::show))
            .route(
                "/channels/{channel_name}/history",
                web::get().to(history::page),
            )
            .route(
                "/channels/{channel_name}/users",
                web::get().to(channels::users),
            )
            .route(
                "/users/{user_id}/terminate_connections",
                web::post().to(users::terminate_connections),
            ),
    );
}
