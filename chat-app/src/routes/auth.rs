//! Login, signup and logout.

use actix_session::Session;
use std::net::{IpAddr, Ipv4Addr};

use actix_web::{
    http::{header, StatusCode},
    web, HttpRequest, HttpResponse,
};
use serde::Deserialize;

use crate::{
    accounts,
    body::FormOrJson,
    csrf,
    error::AppError,
    html::{self, AuthForm},
    passwords, session,
    state::AppState,
    store, validate,
};

#[derive(Debug, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    csrf_token: Option<String>,
}

const STALE_FORM: &str = "Your session expired or the form was out of date. Please try again.";

fn redirect(to: &str) -> HttpResponse {
    // 303 so that the browser follows a POST with a GET.
    HttpResponse::SeeOther()
        .insert_header(("Location", to))
        .finish()
}

enum Form {
    Login,
    Signup,
}

fn render(
    state: &AppState,
    session: &Session,
    form: Form,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Result<HttpResponse, AppError> {
    let token = csrf::token(session)?;
    let f = AuthForm {
        csrf_token: &token,
        username,
        error,
        notice: None,
    };
    let page = match form {
        Form::Login => html::login_page(&f),
        Form::Signup => html::signup_page(&f),
    };
    Ok(html::respond(status, &state.config, page))
}

/// The form again with the error, its status, and `Retry-After` when waiting helps.
fn render_error(
    state: &AppState,
    session: &Session,
    form: Form,
    username: &str,
    e: &AppError,
) -> Result<HttpResponse, AppError> {
    let mut resp = render(
        state,
        session,
        form,
        e_status(e),
        username,
        Some(&capitalize(&e.to_string())),
    )?;
    if let Some(secs) = e.retry_after_secs() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    Ok(resp)
}

/// The peer address; the app does not trust forwarding headers, which any client can set.
fn client_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

pub async fn login_form(
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, AppError> {
    if session::current_user(&session, &state).await?.is_some() {
        return Ok(redirect("/"));
    }
    render(&state, &session, Form::Login, StatusCode::OK, "", None)
}

pub async fn login(
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    FormOrJson(form): FormOrJson<Credentials>,
) -> Result<HttpResponse, AppError> {
    let username = form.username.as_deref().unwrap_or("").trim().to_owned();
    if csrf::verify(&session, &req, form.csrf_token.as_deref()).is_err() {
        return render(
            &state,
            &session,
            Form::Login,
            StatusCode::FORBIDDEN,
            &username,
            Some(STALE_FORM),
        );
    }
    let password = form.password.unwrap_or_default();
    if username.is_empty() || password.is_empty() {
        return render(
            &state,
            &session,
            Form::Login,
            StatusCode::BAD_REQUEST,
            &username,
            Some("Enter your username and password."),
        );
    }
    if let Err(too_many) = state.throttle.login_attempt(client_ip(&req), &username) {
        tracing::warn!(user = %username, "login attempts throttled");
        return render_error(&state, &session, Form::Login, &username, &too_many.into());
    }
    let lookup = username.clone();
    // The connection goes back to the pool before hashing starts.
    let user = state
        .db(move |c| Ok(store::find_user_by_name(c, &lookup)?))
        .await?;
    let slot = match state.throttle.hashing_slot().await {
        Ok(slot) => slot,
        Err(busy) => return render_error(&state, &session, Form::Login, &username, &busy.into()),
    };
    // Hashing is deliberately slow, so it runs on the blocking pool, one slot each.
    let user = web::block(move || match user {
        Some(u) if passwords::verify(&password, &u.password_hash) => Some(u),
        Some(_) => None,
        None => {
            passwords::verify_nobody(&password);
            None
        }
    })
    .await?;
    drop(slot);
    match user {
        Some(u) => {
            session::log_in(&session, &state, &u).await?;
            tracing::info!(user = %u.username, "logged in");
            Ok(redirect("/"))
        }
        None => render(
            &state,
            &session,
            Form::Login,
            StatusCode::UNAUTHORIZED,
            &username,
            Some("Invalid username or password."),
        ),
    }
}

pub async fn signup_form(
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, AppError> {
    render(&state, &session, Form::Signup, StatusCode::OK, "", None)
}

pub async fn signup(
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    FormOrJson(form): FormOrJson<Credentials>,
) -> Result<HttpResponse, AppError> {
    let raw_name = form.username.unwrap_or_default();
    if csrf::verify(&session, &req, form.csrf_token.as_deref()).is_err() {
        return render(
            &state,
            &session,
            Form::Signup,
            StatusCode::FORBIDDEN,
            raw_name.trim(),
            Some(STALE_FORM),
        );
    }
    let password = form.password.unwrap_or_default();
    let checked = validate::username(&raw_name)
        .and_then(|name| validate::password(&password).map(|_| name.to_owned()));
    let username = match checked {
        Ok(name) => name,
        Err(e) => return render_error(&state, &session, Form::Signup, raw_name.trim(), &e),
    };
    if let Err(too_many) = state.throttle.signup_attempt(client_ip(&req), &username) {
        tracing::warn!("signups throttled");
        return render_error(&state, &session, Form::Signup, &username, &too_many.into());
    }
    match create_account(&state, username.clone(), password).await {
        Ok(user) => {
            session::log_in(&session, &state, &user).await?;
            tracing::info!(user = %user.username, "account created");
            Ok(redirect("/"))
        }
        Err(e @ (AppError::Conflict(_) | AppError::BadRequest(_) | AppError::Busy { .. })) => {
            render_error(&state, &session, Form::Signup, &username, &e)
        }
        Err(e) => Err(e),
    }
}

fn e_status(e: &AppError) -> StatusCode {
    actix_web::ResponseError::status_code(e)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

/// Hashes in a hashing slot on the blocking pool, then takes a database
/// connection only to insert.
async fn create_account(
    state: &AppState,
    username: String,
    password: String,
) -> Result<crate::models::User, AppError> {
    let lookup = username.clone();
    if state
        .db(move |c| Ok(store::find_user_by_name(c, &lookup)?))
        .await?
        .is_some()
    {
        return Err(crate::store::StoreError::UsernameTaken.into());
    }
    let slot = state.throttle.hashing_slot().await?;
    let account = web::block(move || accounts::prepare(&username, &password)).await??;
    drop(slot);
    state.db(move |c| accounts::store(c, &account)).await
}

pub async fn logout_form(
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, AppError> {
    match session::current_user(&session, &state).await? {
        Some(u) => {
            let token = csrf::token(&session)?;
            Ok(html::respond(
                StatusCode::OK,
                &state.config,
                html::logout_page(&token, &u.username),
            ))
        }
        None => Ok(redirect("/login")),
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf_token: Option<String>,
    /// Any non-empty value ends every session of the account, not only this one.
    #[serde(default)]
    everywhere: Option<String>,
}

pub async fn logout(
    state: web::Data<AppState>,
    session: Session,
    req: HttpRequest,
    FormOrJson(form): FormOrJson<LogoutForm>,
) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, form.csrf_token.as_deref())?;
    let everywhere = form.everywhere.as_deref().is_some_and(|v| !v.is_empty());
    match session::current_user(&session, &state).await? {
        Some(user) if everywhere => {
            let ended = session::log_out_everywhere(&session, &state, user.id).await?;
            tracing::info!(user = %user.username, sessions = ended, "logged out everywhere");
        }
        _ => session::log_out(&session, &state).await?,
    }
    Ok(redirect("/login"))
}
