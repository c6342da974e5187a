//! The account's data: export archives and deletion requests.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;

use super::openapi::{Accepted, Raw, TarArchive};
use super::{ApiError, AppState, JsonBody, User};
use crate::lifecycle::{DeletionRequest, Scope};

/// A tar archive of the account's content, or of one customer's (by session or by the
/// customer reference the technician recorded), with JSON records and decrypted files.
pub(super) async fn export(
    State(state): State<AppState>,
    User(admin): User,
    query: Result<Query<Scope>, axum::extract::rejection::QueryRejection>,
) -> Result<Raw<TarArchive>, ApiError> {
    let Query(scope) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let lifecycle = state.lifecycle.clone();
    let account_id = admin.account_id.clone();
    let user_id = admin.user_id.clone();
    let archive = tokio::task::spawn_blocking(move || {
        let mut archive = Vec::new();
        lifecycle
            .export(&account_id, Some(&user_id), &scope, &mut archive)
            .map(|()| archive)
    })
    .await
    .map_err(|_| ApiError::internal())??;
    Ok(Raw::new((
        [
            (header::CONTENT_TYPE, "application/x-tar"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"sightline-export.tar\"",
            ),
        ],
        archive,
    )))
}

pub(super) async fn pending_deletions(
    State(state): State<AppState>,
    User(admin): User,
) -> Result<Json<Vec<DeletionRequest>>, ApiError> {
    Ok(Json(state.lifecycle.pending(&admin.account_id)?))
}

pub(super) async fn request_deletion(
    State(state): State<AppState>,
    User(admin): User,
    JsonBody(scope): JsonBody<Scope>,
) -> Result<Accepted<DeletionRequest>, ApiError> {
    let request = state.lifecycle.request_deletion(&admin, scope).await?;
    Ok(Accepted(request))
}

pub(super) async fn delete_session(
    State(state): State<AppState>,
    User(admin): User,
    Path(id): Path<String>,
) -> Result<Accepted<DeletionRequest>, ApiError> {
    let scope = Scope {
        session_id: Some(id),
        customer_reference: None,
    };
    let request = state.lifecycle.request_deletion(&admin, scope).await?;
    Ok(Accepted(request))
}
