//! Login (paste an API key) and logout.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::html;
use serde::Deserialize;

use syncfleet_worker::audit;

use super::session::{self, COOKIE, LOGIN_COOKIE, Session};
use super::{bare, page};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(show).post(submit))
        .route("/logout", post(logout))
}

fn form(state: &AppState, error: Option<&str>, status: StatusCode) -> Response {
    let token = session::random_hex(16);
    let mut r = page(bare(
        "Log in",
        html! {
            section.card.narrow.login {
                h1 { span.logo aria-hidden="true" { "◆" } " syncfleet" }
                p.muted { "Paste an API key to open the console. The key printed when the server first started is an admin key; a viewer key opens it read-only." }
                form method="post" action="/login" {
                    input type="hidden" name="_csrf" value=(token);
                    label for="key" { "API key" }
                    input #key type="password" name="key" autocomplete="off" required autofocus
                        placeholder="sf_…" aria-describedby=[error.map(|_| "login-error")];
                    @if let Some(e) = error {
                        p #login-error .field-error role="alert" { (e) }
                    }
                    button.primary type="submit" { "Log in" }
                }
            }
        },
    ));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(state, LOGIN_COOKIE, &token, 3600)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// The workspace a login is audited in (an operator's: the default workspace).
async fn home(state: &AppState, s: &Session) -> Option<uuid::Uuid> {
    match s.caller.workspace_id {
        Some(ws) => Some(ws),
        None => crate::db::default_workspace(&state.db).await.ok(),
    }
}

async fn show(State(state): State<AppState>, s: Option<Session>) -> Response {
    if s.is_some() {
        return Redirect::to("/").into_response();
    }
    form(&state, None, StatusCode::OK)
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
    #[serde(rename = "_csrf", default)]
    csrf: String,
}

async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    // Double-submit: the form's token must match the cookie set with the form.
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::same(&expected, &f.csrf) {
        return form(
            &state,
            Some("The login form expired; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    match session::create(&state, &f.key).await {
        Ok(Some((token, s))) => {
            let _ = audit::record(
                &state.db,
                audit::Event {
                    integration_id: None,
                    workspace_id: home(&state, &s).await,
                    actor: s.caller.actor(),
                    actor_name: Some(s.caller.key_name.clone()),
                    action: "console.login".into(),
                    reason: None,
                    before: None,
                    after: None,
                },
            )
            .await;
            let mut r = Redirect::to("/").into_response();
            let max_age = state.config.console_session_lifetime.as_secs();
            for c in [
                session::set_cookie(&state, COOKIE, &token, max_age),
                session::set_cookie(&state, LOGIN_COOKIE, "", 0),
            ] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Ok(None) => form(
            &state,
            Some("That key is unknown or revoked."),
            StatusCode::UNAUTHORIZED,
        ),
        Err(e) => super::ConsoleError::page(e).into_response(),
    }
}

async fn logout(State(state): State<AppState>, s: Session) -> Response {
    if let Err(e) = session::end(&state, &s.id).await {
        return super::ConsoleError::page(e).into_response();
    }
    let _ = audit::record(
        &state.db,
        audit::Event {
            integration_id: None,
            workspace_id: home(&state, &s).await,
            actor: s.caller.actor(),
            actor_name: Some(s.caller.key_name.clone()),
            action: "console.logout".into(),
            reason: None,
            before: None,
            after: None,
        },
    )
    .await;
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&state, COOKIE, "", 0)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
