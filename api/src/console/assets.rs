//! The console's static files, embedded in the binary. Each is served at
//! `/assets/<name>?v=<hash>` with a strong ETag (its SHA-256); a request carrying the
//! current hash may be cached for a year, anything else must revalidate. Gzip copies
//! are made once, at first use.

use std::collections::HashMap;
use std::io::Write;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::state::AppState;

struct Asset {
    body: &'static [u8],
    gzip: Vec<u8>,
    mime: &'static str,
    etag: String,
    hash: String,
}

/// `(served name, contents, type)`. Vendored files keep their version in the file
/// name on disk (see `static/vendor/README.md`).
const FILES: &[(&str, &[u8], &str)] = &[
    (
        "app.css",
        include_bytes!("static/app.css"),
        "text/css; charset=utf-8",
    ),
    (
        "app.js",
        include_bytes!("static/app.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "live-worker.js",
        include_bytes!("static/live-worker.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "htmx.js",
        include_bytes!("static/vendor/htmx-2.0.11.min.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "uplot.js",
        include_bytes!("static/vendor/uplot-1.6.32.min.js"),
        "text/javascript; charset=utf-8",
    ),
    (
        "uplot.css",
        include_bytes!("static/vendor/uplot-1.6.32.min.css"),
        "text/css; charset=utf-8",
    ),
    (
        "favicon.svg",
        include_bytes!("static/favicon.svg"),
        "image/svg+xml",
    ),
];

static ASSETS: LazyLock<HashMap<&'static str, Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, body, mime)| {
            let hash = hex::encode(Sha256::digest(body));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let gzip = gz
                .write_all(body)
                .and_then(|_| gz.finish())
                .unwrap_or_default();
            (
                *name,
                Asset {
                    body,
                    gzip,
                    mime,
                    etag: format!("\"{}\"", &hash[..32]),
                    hash: hash[..12].to_owned(),
                },
            )
        })
        .collect()
});

/// The URL of an asset, carrying its content hash.
pub fn url(name: &str) -> String {
    match ASSETS.get(name) {
        Some(a) => format!("/assets/{name}?v={}", a.hash),
        None => format!("/assets/{name}"),
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/assets/{name}", get(serve))
}

async fn serve(
    Path(name): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(a) = ASSETS.get(name.as_str()) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let versioned = query.as_deref() == Some(&format!("v={}", a.hash));
    let cache = if versioned {
        "public, max-age=31536000, immutable"
    } else {
        "public, no-cache"
    };
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&a.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag || t.trim() == "*"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    let gzip_ok = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"));
    if gzip_ok && !a.gzip.is_empty() {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        (h, a.gzip.clone()).into_response()
    } else {
        (h, a.body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_embedded_and_hashed() {
        for (name, body, _) in FILES {
            let a = ASSETS.get(name).unwrap_or_else(|| panic!("{name}"));
            assert!(!body.is_empty(), "{name} is empty");
            assert!(!a.gzip.is_empty(), "{name} has no gzip copy");
            assert!(url(name).contains(&a.hash));
        }
    }
}
