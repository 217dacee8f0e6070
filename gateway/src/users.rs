//! Users and sessions: sign-up, sign-in, the profile, and ready-made users for load tests.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::{limit_address, Caller, ClientAddress, Role, ADMIN_USER_ID};
use crate::error::ApiError;
use crate::json::Json;
use crate::{now_rfc3339, AppState};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/users", post(create_user))
        .route("/v1/sessions", post(create_session))
        .route("/v1/me", get(me).patch(update_me))
        .route("/v1/admin/tokens", post(admin_tokens))
}

/// The public id of a user.
pub fn user_id_string(id: i64) -> String {
    format!("u{id}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    email: String,
    password: String,
    name: String,
    role: String,
}

#[derive(Serialize)]
struct UserView {
    id: String,
    email: String,
    name: String,
    role: String,
    /// `null` when not set (or cleared).
    postal_code: Option<String>,
    address: Option<String>,
}

/// The roles a user can be created with; admins exist only through the admin token.
fn self_service_role(text: &str) -> Result<Role, ApiError> {
    match Role::parse(text) {
        Some(role @ (Role::Buyer | Role::Seller)) => Ok(role),
        _ => Err(ApiError::validation("role: must be \"buyer\" or \"seller\"")),
    }
}

fn check_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if valid {
        Ok(email)
    } else {
        Err(ApiError::validation("email: not an email address"))
    }
}

async fn create_user(
    State(state): State<Arc<AppState>>,
    address: ClientAddress,
    Json(new): Json<NewUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let services = state.services()?;
    limit_address(services, address)?;
    let email = check_email(&new.email)?;
    if new.password.chars().count() < 8 || new.password.len() > 1024 {
        return Err(ApiError::validation("password: between 8 and 1024 characters"));
    }
    let name = new.name.trim().to_owned();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::validation("name: between 1 and 200 characters"));
    }
    let role = self_service_role(&new.role)?;
    // A taken email is answered before the (bounded, costly) hashing; the insert checks again.
    let taken_email = email.clone();
    let taken = services
        .db
        .read(move |connection| {
            Ok(connection
                .query_row("SELECT 1 FROM users WHERE email = ?1", [&taken_email], |_| Ok(()))
                .optional()?
                .is_some())
        })
        .await?;
    if taken {
        return Err(ApiError::conflict("a user with this email exists"));
    }
    let hash = services.passwords.hash(new.password).await?;
    let created_at = now_rfc3339();
    let (insert_email, insert_name) = (email.clone(), name.clone());
    let id = services
        .db
        .write(move |tx| {
            let exists: Option<i64> = tx
                .query_row("SELECT id FROM users WHERE email = ?1", [&insert_email], |row| row.get(0))
                .optional()?;
            if exists.is_some() {
                return Err(ApiError::conflict("a user with this email exists"));
            }
            tx.execute(
                "INSERT INTO users (email, name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![insert_email, insert_name, role.as_str(), hash, created_at],
            )?;
            Ok(tx.last_insert_rowid())
        })
        .await?;
    let view = UserView {
        id: user_id_string(id),
        email,
        name,
        role: role.as_str().to_owned(),
        postal_code: None,
        address: None,
    };
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    email: String,
    password: String,
}

async fn create_session(
    State(state): State<Arc<AppState>>,
    address: ClientAddress,
    Json(sign_in): Json<SignIn>,
) -> Result<Json<Value>, ApiError> {
    let services = state.services()?;
    limit_address(services, address)?;
    let email = sign_in.email.trim().to_ascii_lowercase();
    if email.len() > 254 {
        return Err(ApiError::validation("email: not an email address"));
    }
    services.sign_in_by_email.check(email.clone()).map_err(ApiError::rate_limited)?;
    let found: Option<(i64, String, Option<String>)> = services
        .db
        .read(move |connection| {
            Ok(connection
                .query_row(
                    "SELECT id, role, password_hash FROM users WHERE email = ?1",
                    [&email],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?)
        })
        .await?;
    let wrong = || ApiError::unauthorized("wrong email or password");
    // An unknown email costs the same check as a known one (against a dummy hash).
    let stored = found.as_ref().and_then(|(_, _, hash)| hash.clone());
    let matches = services.passwords.verify(sign_in.password, stored).await?;
    let Some((id, role, _)) = found.filter(|_| matches) else { return Err(wrong()) };
    let role = Role::parse(&role).ok_or_else(|| ApiError::internal("stored role"))?;
    let (token, expires_at) = services.tokens.issue(id, role);
    Ok(Json(json!({
        "token": token,
        "user_id": user_id_string(id),
        "role": role.as_str(),
        "expires_at": crate::rfc3339_from_unix(expires_at),
    })))
}

async fn load_user(state: &AppState, id: i64) -> Result<UserView, ApiError> {
    state
        .services()?
        .db
        .read(move |connection| {
            connection
                .query_row(
                    "SELECT email, name, role, postal_code, address FROM users WHERE id = ?1",
                    [id],
                    |row| {
                        Ok(UserView {
                            id: user_id_string(id),
                            email: row.get(0)?,
                            name: row.get(1)?,
                            role: row.get(2)?,
                            postal_code: row.get(3)?,
                            address: row.get(4)?,
                        })
                    },
                )
                .optional()?
                .ok_or_else(|| ApiError::not_found("user not found"))
        })
        .await
}

async fn me(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<UserView>, ApiError> {
    if caller.user_id == ADMIN_USER_ID {
        return Ok(Json(UserView {
            id: user_id_string(ADMIN_USER_ID),
            email: "admin@surge.invalid".to_owned(),
            name: "admin".to_owned(),
            role: "admin".to_owned(),
            postal_code: None,
            address: None,
        }));
    }
    load_user(&state, caller.user_id).await.map(Json)
}

/// A `PATCH /v1/me`: a field left out is kept, a field given is set, and `postal_code` or
/// `address` given as `null` is cleared (as `per_buyer: null` lifts a limit). A name cannot be
/// cleared.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileChange {
    #[serde(default, deserialize_with = "crate::json::present")]
    name: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::json::present")]
    postal_code: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::json::present")]
    address: Option<Option<String>>,
}

async fn update_me(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(change): Json<ProfileChange>,
) -> Result<Json<UserView>, ApiError> {
    if caller.user_id == ADMIN_USER_ID {
        return Err(ApiError::forbidden("the admin token has no profile"));
    }
    let name = match change.name {
        Some(None) => return Err(ApiError::validation("name: cannot be cleared")),
        Some(Some(name)) if name.trim().is_empty() || name.len() > 200 => {
            return Err(ApiError::validation("name: between 1 and 200 characters"))
        }
        Some(Some(name)) => Some(name.trim().to_owned()),
        None => None,
    };
    if let Some(Some(code)) = &change.postal_code {
        if code.is_empty()
            || code.len() > 16
            || !code.chars().all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-')
        {
            return Err(ApiError::validation(
                "postal_code: 1 to 16 letters, digits, spaces or dashes",
            ));
        }
    }
    if let Some(Some(address)) = &change.address {
        if address.len() > 500 {
            return Err(ApiError::validation("address: at most 500 characters"));
        }
    }
    let id = caller.user_id;
    let (set_postal_code, postal_code) =
        (change.postal_code.is_some(), change.postal_code.flatten());
    let (set_address, address) = (change.address.is_some(), change.address.flatten());
    state
        .services()?
        .db
        .write(move |tx| {
            tx.execute(
                "UPDATE users SET name = COALESCE(?2, name),
                 postal_code = CASE WHEN ?3 THEN ?4 ELSE postal_code END,
                 address = CASE WHEN ?5 THEN ?6 ELSE address END WHERE id = ?1",
                params![id, name, set_postal_code, postal_code, set_address, address],
            )?;
            Ok(())
        })
        .await?;
    load_user(&state, caller.user_id).await.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    count: u32,
    #[serde(default = "default_role")]
    role: String,
}

fn default_role() -> String {
    "buyer".to_owned()
}

/// The most users one `POST /v1/admin/tokens` creates.
const ADMIN_TOKENS_MAX: u32 = 100_000;

async fn admin_tokens(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Json(request): Json<TokenRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Admin)?;
    let services = state.services()?;
    if request.count == 0 || request.count > ADMIN_TOKENS_MAX {
        return Err(ApiError::validation(format!("count: between 1 and {ADMIN_TOKENS_MAX}")));
    }
    let role = self_service_role(&request.role)?;
    let mut tag = [0u8; 6];
    getrandom::fill(&mut tag).map_err(ApiError::internal)?;
    let tag = crate::auth::hex(&tag);
    let count = request.count;
    let created_at = now_rfc3339();
    // Users without a password: they exist to hold the token returned here.
    let ids = services
        .db
        .write(move |tx| {
            let mut insert = tx.prepare(
                "INSERT INTO users (email, name, role, password_hash, created_at) VALUES (?1, ?2, ?3, NULL, ?4)",
            )?;
            let mut ids = Vec::with_capacity(count as usize);
            for index in 0..count {
                let email = format!("load-{tag}-{index}@surge.invalid");
                insert.execute(params![email, format!("load user {index}"), role.as_str(), created_at])?;
                ids.push(tx.last_insert_rowid());
            }
            Ok(ids)
        })
        .await?;
    let users: Vec<Value> = ids
        .into_iter()
        .map(|id| {
            let (token, _) = services.tokens.issue(id, role);
            json!({"user_id": user_id_string(id), "token": token})
        })
        .collect();
    Ok((StatusCode::CREATED, Json(json!({ "users": users }))))
}
