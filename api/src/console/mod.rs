//! The web console (docs/architecture.md §12): server-rendered HTML (maud), htmx for
//! partial updates, server-sent events for live state. Served by the `api` role (and
//! so by `standalone`) at `/`; every asset is embedded in the binary.
//!
//! One file per page. Adding a page: a new file with a `router()`, its `mod` line and
//! one entry in [`NAV`] (plus its `.merge` below). Every write goes through
//! [`actions`], the one adapter onto the API's own control functions.

pub mod actions;
mod assets;
mod conflicts;
mod detail;
mod failures;
mod fleet;
mod form;
pub mod live;
mod login;
mod notifications;
mod outbox;
mod overview;
mod session;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::error::ApiError;
use crate::state::AppState;
pub use session::Session;

/// The navigation: `(path, title, count)`, one line per page. A page with a count
/// serves it at `<path>/count` ([`nav_count`]); the page shell loads it and reloads it
/// with the live regions.
pub const NAV: &[(&str, &str, bool)] = &[
    ("/", "Integrations", false),
    ("/failures", "Failures", false),
    ("/outbox", "Outbox", false),
    ("/conflicts", "Conflicts", true),
    ("/fleet", "Fleet", false),
    ("/notifications", "Notifications", false),
];

/// A navigation entry's count (`n`, hidden when 0): `initial` is the page shell's empty
/// placeholder, which loads the count; the count reloads on the page's live events.
pub fn nav_count(path: &str, n: i64, initial: bool) -> Markup {
    let name = path.trim_start_matches('/');
    let trigger = if initial {
        "load, sf-refresh from:body, sf-live"
    } else {
        "sf-refresh from:body, sf-live"
    };
    html! {
        span.navcount id=(format!("nav-count-{name}")) hx-get=(format!("{path}/count")) hx-trigger=(trigger) hx-swap="outerHTML"
            data-count=[(!initial).then_some(n)] hidden[initial || n == 0] {
            @if !initial { (n) span.sr { " open" } }
        }
    }
}

pub fn router(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .merge(overview::router())
        .merge(detail::router())
        .merge(form::router())
        .merge(failures::router())
        .merge(fleet::router())
        .merge(notifications::router())
        .merge(outbox::router())
        .merge(conflicts::router())
        .merge(login::router())
        .merge(live::router())
        .layer(axum::middleware::from_fn_with_state(state, session::guard))
        .layer(tower_http::compression::CompressionLayer::new());
    Router::new()
        .merge(pages)
        .merge(assets::router())
        .layer(axum::middleware::from_fn(security_headers))
}

/// Headers on every console response: a strict CSP (no inline script or style, no
/// outside host), no MIME sniffing, no framing, no referrer leaks.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; worker-src 'self'; style-src 'self'; img-src 'self' data:; \
             font-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// htmx settings: no inline styles or eval (the CSP forbids both), and error answers
/// are swapped in (they carry the message to show).
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0,"responseHandling":[{"code":"204","swap":false},{"code":"...","swap":true}]}"#;

/// The page shell: navigation, who is logged in, the toast area.
pub fn layout(s: &Session, title: &str, active: &str, body: Markup) -> Markup {
    let csrf = serde_json::json!({ "X-CSRF-Token": s.csrf }).to_string();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=(HTMX_CONFIG);
                title { (title) " · syncfleet" }
                link rel="icon" href=(assets::url("favicon.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(assets::url("app.css"));
                script src=(assets::url("htmx.js")) defer {}
                script src=(assets::url("app.js")) defer {}
            }
            body hx-headers=(csrf) data-events=(format!("/console/events?since={}", s.since))
                data-since=(s.since) data-live-worker=(assets::url("live-worker.js")) data-live-tag=(s.live_tag()) {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { span.logo aria-hidden="true" { "◆" } " syncfleet" }
                    nav aria-label="Main" {
                        @for (path, name, counted) in NAV {
                            a href=(path) aria-current=[(*path == active).then_some("page")] {
                                (name)
                                @if *counted { " " (nav_count(path, 0, true)) }
                            }
                        }
                    }
                    div.who {
                        span.role.{"role-" (s.role_name())} title=(format!("API key {}", s.caller.key_id)) { (s.role_name()) }
                        @if !s.is_admin() { span.muted { " read-only" } }
                        span #live-state.live title="Live updates" { "●" }
                        form method="post" action="/logout" {
                            input type="hidden" name="_csrf" value=(s.csrf);
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                main #main { (body) }
                div #toasts aria-live="polite" {}
            }
        }
    }
}

/// A page without a session (login, errors before login).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · syncfleet" }
                link rel="icon" href=(assets::url("favicon.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(assets::url("app.css"));
            }
            body.bare { main #main { (body) } }
        }
    }
}

/// An HTML response.
pub fn page(markup: Markup) -> Response {
    let mut r = markup.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

/// Whether the request came from htmx (a fragment is wanted, not a whole page).
pub fn is_htmx(headers: &HeaderMap) -> bool {
    headers.contains_key("hx-request") && !headers.contains_key("hx-history-restore-request")
}

/// A toast message as the answer to an action; `refresh` makes the page's live
/// regions reload (`HX-Trigger: sf-refresh`).
pub fn toast(ok: bool, text: &str, refresh: bool) -> Response {
    let mut r = page(html! {
        div.toast.(if ok { "ok" } else { "error" }) role=(if ok { "status" } else { "alert" }) { (text) }
    });
    if refresh {
        r.headers_mut()
            .insert("hx-trigger", HeaderValue::from_static("sf-refresh"));
    }
    r
}

/// An htmx error whose request targeted something else than the toasts: shown as a
/// toast.
pub fn error_toast(err: ApiError) -> Response {
    let mut r = ConsoleError::fragment(err).into_response();
    let h = r.headers_mut();
    h.insert("hx-retarget", HeaderValue::from_static("#toasts"));
    h.insert("hx-reswap", HeaderValue::from_static("afterbegin"));
    r
}

/// An error of a console request: a toast for htmx, a small page otherwise.
pub struct ConsoleError {
    pub err: ApiError,
    pub htmx: bool,
}

impl ConsoleError {
    pub fn page(err: impl Into<ApiError>) -> Self {
        Self {
            err: err.into(),
            htmx: false,
        }
    }
    pub fn fragment(err: impl Into<ApiError>) -> Self {
        Self {
            err: err.into(),
            htmx: true,
        }
    }
}

/// Most console handlers answer this: a page or an error shown to the person.
pub type Result<T = Response> = std::result::Result<T, ConsoleError>;

impl<E: Into<ApiError>> From<E> for ConsoleError {
    fn from(e: E) -> Self {
        Self::page(e)
    }
}

pub fn status_of(err: &ApiError) -> StatusCode {
    err.status()
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = status_of(&self.err);
        if matches!(self.err, ApiError::Unauthorized) {
            return if self.htmx {
                (
                    StatusCode::UNAUTHORIZED,
                    [("hx-redirect", "/login")],
                    "session ended",
                )
                    .into_response()
            } else {
                Redirect::to("/login").into_response()
            };
        }
        if let ApiError::Internal(e) = &self.err {
            tracing::error!(error = ?e, "console request failed");
        }
        let text = message(&self.err);
        let mut r = if self.htmx {
            toast(false, &text, false)
        } else {
            page(bare(
                "Error",
                html! {
                    section.card.narrow {
                        h1 { "Something went wrong" }
                        p role="alert" { (text) }
                        p { a href="/" { "Back to the integrations" } }
                    }
                },
            ))
        };
        *r.status_mut() = status;
        r
    }
}

/// The text a person sees for an error: the API's own message, with field problems.
pub fn message(err: &ApiError) -> String {
    match err {
        ApiError::Validation(problems) => problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect::<Vec<_>>()
            .join("; "),
        ApiError::Forbidden => "Your API key is read-only (viewer): it may not do that.".into(),
        other => other.to_string(),
    }
}

/// A timestamp shown relative ("3 min ago", "in 2 min"), exact on hover, in the
/// browser's time zone (app.js rewrites it; the server text is UTC).
pub fn rel(t: Option<DateTime<Utc>>, none: &str) -> Markup {
    match t {
        Some(t) => html! {
            time datetime=(t.to_rfc3339()) data-rel title=(t.format("%Y-%m-%d %H:%M:%S UTC")) {
                (t.format("%Y-%m-%d %H:%M UTC"))
            }
        },
        None => html! { span.muted { (none) } },
    }
}

/// A timestamp shown exactly, in the browser's time zone.
pub fn abs(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => html! {
            time datetime=(t.to_rfc3339()) data-abs title=(t.to_rfc3339()) {
                (t.format("%Y-%m-%d %H:%M:%S UTC"))
            }
        },
        None => html! { span.muted { "—" } },
    }
}

/// The colour and words for an integration's state: green healthy, amber degraded or
/// at risk, red disabled, grey paused, blue before its first sync.
pub fn tone(health: &str, ever_synced: bool) -> (&'static str, &'static str) {
    match health {
        "healthy" if !ever_synced => ("new", "Waiting for first sync"),
        "healthy" => ("ok", "Healthy"),
        "degraded" => ("warn", "Degraded"),
        "at_risk" => ("warn", "At risk"),
        "disabled" => ("bad", "Disabled"),
        "paused" => ("off", "Paused"),
        _ => ("off", "Unknown"),
    }
}

/// Seconds as a short interval: "1 min", "6 h", "90 s", "manual only".
pub fn interval_text(secs: Option<i64>) -> String {
    match secs {
        None => "manual only".into(),
        Some(s) if s % 86_400 == 0 => format!("{} d", s / 86_400),
        Some(s) if s % 3600 == 0 => format!("{} h", s / 3600),
        Some(s) if s % 60 == 0 => format!("{} min", s / 60),
        Some(s) => format!("{s} s"),
    }
}

/// Seconds as an age, written as the browser writes relative times (app.js): "45 s",
/// "3 min 20 s", "2 h 5 min", "3 d".
pub fn age_text(secs: i64) -> String {
    let s = secs.max(0);
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        if s < 600 && s % 60 != 0 {
            format!("{} min {} s", s / 60, s % 60)
        } else {
            format!("{} min", s / 60)
        }
    } else if s < 86_400 {
        match (s / 60) % 60 {
            0 => format!("{} h", s / 3600),
            m => format!("{} h {m} min", s / 3600),
        }
    } else {
        format!("{} d", s / 86_400)
    }
}

/// The first line of an error message, at most `max` characters.
pub fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > max {
        let mut s: String = line.chars().take(max).collect();
        s.push('…');
        s
    } else {
        line.to_owned()
    }
}

/// An inline SVG icon for a run status (no icon font, nothing to fetch).
pub fn status_icon(status: &str) -> Markup {
    let (class, glyph, label) = match status {
        "SUCCESS" => ("ok", "✓", "Success"),
        "FAILED" => ("bad", "✕", "Failed"),
        "RATE_LIMITED" => ("warn", "⏸", "Rate limited"),
        "RUNNING" => ("run", "↻", "Running"),
        "PENDING" => ("new", "…", "Pending"),
        "CANCELLED" => ("off", "⊘", "Cancelled"),
        _ => ("off", "?", "Unknown"),
    };
    html! { span.status.(class) title=(label) { span aria-hidden="true" { (glyph) } " " (label) } }
}

/// Raw, already-escaped HTML (maud's `PreEscaped`), for JSON embedded in attributes.
pub fn raw(s: String) -> PreEscaped<String> {
    PreEscaped(s)
}
