//! Login, signup and logout.

use actix_session::Session;
use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
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
    HttpResponse::SeeOther().insert_header(("Location", to)).finish()
}

enum Form {
    Login,
    Signup,
}

fn render(state: &AppState, session: &Session, form: Form, status: StatusCode, username: &str, error: Option<&str>) -> Result<HttpResponse, AppError> {
    let token = csrf::token(session)?;
    let f = AuthForm { csrf_token: &token, username, error, notice: None };
    let page = match form {
        Form::Login => html::login_page(&f),
        Form::Signup => html::signup_page(&f),
    };
    Ok(html::respond(status, &state.config, page))
}

pub async fn login_form(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, AppError> {
    if session::current_user(&session, &state).await?.is_some() {
        return Ok(redirect("/"));
    }
    render(&state, &session, Form::Login, StatusCode::OK, "", None)
}

pub async fn login(state: web::Data<AppState>, session: Session, req: HttpRequest, FormOrJson(form): FormOrJson<Credentials>) -> Result<HttpResponse, AppError> {
    let username = form.username.as_deref().unwrap_or("").trim().to_owned();
    if csrf::verify(&session, &req, form.csrf_token.as_deref()).is_err() {
        return render(&state, &session, Form::Login, StatusCode::FORBIDDEN, &username, Some(STALE_FORM));
    }
    let password = form.password.unwrap_or_default();
    if username.is_empty() || password.is_empty() {
        return render(&state, &session, Form::Login, StatusCode::BAD_REQUEST, &username, Some("Enter your username and password."));
    }
    let lookup = username.clone();
    let user = state.db(move |c| Ok(store::find_user_by_name(c, &lookup)?)).await?;
    // Hashing is deliberately slow, so it runs on the blocking pool.
    let user = web::block(move || match user {
        Some(u) if passwords::verify(&password, &u.password_hash) => Some(u),
        Some(_) => None,
        None => {
            passwords::verify_nobody(&password);
            None
        }
    })
    .await?;
    match user {
        Some(u) => {
            session::log_in(&session, &u)?;
            tracing::info!(user = %u.username, "logged in");
            Ok(redirect("/"))
        }
        None => render(&state, &session, Form::Login, StatusCode::UNAUTHORIZED, &username, Some("Invalid username or password.")),
    }
}

pub async fn signup_form(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, AppError> {
    render(&state, &session, Form::Signup, StatusCode::OK, "", None)
}

pub async fn signup(state: web::Data<AppState>, session: Session, req: HttpRequest, FormOrJson(form): FormOrJson<Credentials>) -> Result<HttpResponse, AppError> {
    let raw_name = form.username.unwrap_or_default();
    if csrf::verify(&session, &req, form.csrf_token.as_deref()).is_err() {
        return render(&state, &session, Form::Signup, StatusCode::FORBIDDEN, raw_name.trim(), Some(STALE_FORM));
    }
    let password = form.password.unwrap_or_default();
    let checked = validate::username(&raw_name).and_then(|name| validate::password(&password).map(|_| name.to_owned()));
    let username = match checked {
        Ok(name) => name,
        Err(e) => return render(&state, &session, Form::Signup, e_status(&e), raw_name.trim(), Some(&capitalize(&e.to_string()))),
    };
    match create_account(&state, username.clone(), password).await {
        Ok(user) => {
            session::log_in(&session, &user)?;
            tracing::info!(user = %user.username, "account created");
            Ok(redirect("/"))
        }
        Err(e @ (AppError::Conflict(_) | AppError::BadRequest(_))) => {
            render(&state, &session, Form::Signup, e_status(&e), &username, Some(&capitalize(&e.to_string())))
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

async fn create_account(state: &AppState, username: String, password: String) -> Result<crate::models::User, AppError> {
    state.db(move |c| accounts::create(c, &username, &password)).await
}

pub async fn logout_form(state: web::Data<AppState>, session: Session) -> Result<HttpResponse, AppError> {
    match session::current_user(&session, &state).await? {
        Some(u) => {
            let token = csrf::token(&session)?;
            Ok(html::respond(StatusCode::OK, &state.config, html::logout_page(&token, &u.username)))
        }
        None => Ok(redirect("/login")),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenOnly {
    #[serde(default)]
    csrf_token: Option<String>,
}

pub async fn logout(session: Session, req: HttpRequest, FormOrJson(form): FormOrJson<TokenOnly>) -> Result<HttpResponse, AppError> {
    csrf::verify(&session, &req, form.csrf_token.as_deref())?;
    session::log_out(&session);
    Ok(redirect("/login"))
}
