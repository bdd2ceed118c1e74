//! Bearer API keys: looked up by their keyed hash (see `keyhash`); roles `operator`
//! (spans every workspace), `admin` (writes one workspace) and `viewer` (reads one).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use entity::Role;
use uuid::Uuid;

use syncfleet_worker::db as q;

use crate::error::ApiError;
use crate::keyhash;
use crate::state::AppState;

/// Whole seconds for `Retry-After`, at least 1.
fn wait_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    /// The key's name, for the audit trail.
    pub key_name: String,
    /// `None` = an operator key spanning every workspace.
    pub workspace_id: Option<Uuid>,
    pub role: Role,
}

impl Caller {
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }

    /// The workspace the caller's new resources belong to: its own, or for an operator
    /// key (which spans every workspace) the install's first one.
    pub async fn home_workspace(
        &self,
        db: &impl sea_orm::ConnectionTrait,
    ) -> Result<Uuid, ApiError> {
        Ok(match self.workspace_id {
            Some(ws) => ws,
            None => crate::db::default_workspace(db).await?,
        })
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if matches!(self.role, Role::Admin | Role::Operator) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(key) = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return Err(ApiError::Unauthorized);
        };
        let Some(hasher) = &state.key_hasher else {
            return Err(ApiError::Unauthorized);
        };
        let hash = hasher.hash(key);
        let address = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let caller = match state.auth_cache.get(&hash) {
            Some(c) => c,
            None => {
                // An address that sent too many unknown keys gets no more lookups.
                if let Some(wait) = address.and_then(|ip| state.address_guard.refused(ip, &hash)) {
                    return Err(ApiError::RateLimited(wait_secs(wait)));
                }
                let generation = state.auth_cache.generation();
                // One statement finds a key stored either way; a legacy row is
                // rewritten under the keyed hash on this first use.
                let rows = q::query(
                    &state.db,
                    format!(
                        "SELECT id, name, workspace_id, role, hash_version FROM api_keys WHERE revoked_at IS NULL \
                         AND ((key_hash = $1 AND hash_version = {}) OR (key_hash = $2 AND hash_version = {}))",
                        keyhash::HMAC_VERSION,
                        keyhash::LEGACY_VERSION
                    ),
                    [hash.clone().into(), keyhash::legacy_hash(key).into()],
                )
                .await?;
                let Some(r) = rows.first() else {
                    if let Some(wait) = address.and_then(|ip| state.address_guard.failed(ip)) {
                        return Err(ApiError::RateLimited(wait_secs(wait)));
                    }
                    return Err(ApiError::Unauthorized);
                };
                let role: Role = r.try_get("", "role")?;
                let c = Caller {
                    key_id: r.try_get("", "id")?,
                    key_name: r.try_get("", "name")?,
                    // An operator spans every workspace, whatever its home workspace.
                    workspace_id: match role {
                        Role::Operator => None,
                        _ => r.try_get("", "workspace_id")?,
                    },
                    role,
                };
                state.address_guard.verified(&hash);
                let version: i16 = r.try_get("", "hash_version")?;
                if version == keyhash::LEGACY_VERSION {
                    q::exec(
                        &state.db,
                        format!(
                            "UPDATE api_keys SET key_hash = $1, hash_version = {} WHERE id = $2 AND hash_version = {}",
                            keyhash::HMAC_VERSION,
                            keyhash::LEGACY_VERSION
                        ),
                        [hash.clone().into(), c.key_id.into()],
                    )
                    .await?;
                }
                state.auth_cache.put(hash, c.clone(), generation);
                c
            }
        };
        if let Err(not_until) = state.limiter.check_key(&caller.key_id) {
            let now = governor::clock::Clock::now(&governor::clock::DefaultClock::default());
            return Err(ApiError::RateLimited(
                not_until.wait_time_from(now).as_secs().max(1),
            ));
        }
        Ok(caller)
    }
}

/// Extractors for a caller with at least a given role. They run before the body is read,
/// so a caller without the role gets 403 whatever it sent (not 400 for a malformed body).
macro_rules! role_extractor {
    ($(#[$doc:meta])* $name:ident, $allowed:pat) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Caller);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                let caller = Caller::from_request_parts(parts, state).await?;
                if !matches!(caller.role, $allowed) {
                    return Err(ApiError::Forbidden);
                }
                Ok(Self(caller))
            }
        }
    };
}

role_extractor!(
    /// A caller that may write: an `admin` of its workspace, or an `operator`.
    Admin,
    Role::Admin | Role::Operator
);
role_extractor!(
    /// A caller with the `operator` role (spans workspaces).
    Operator,
    Role::Operator
);
