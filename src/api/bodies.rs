//! The request bodies handlers take: JSON (required or optional) and a still's bytes,
//! each refused in the API's typed shape.

use axum::Json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Parses a JSON body, answering malformed input with a clear 400 instead of axum's
/// plain-text rejection.
pub(super) struct JsonBody<T>(pub(super) T);

impl<T, S> axum::extract::FromRequest<S> for JsonBody<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// A JSON body that may be left out (empty or only whitespace): then `T::default()`.
pub(super) struct OptionalJsonBody<T>(pub(super) T);

impl<T, S> axum::extract::FromRequest<S> for OptionalJsonBody<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        // Its refusals (too large) get their typed shape from `typed_errors`.
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        serde_json::from_slice(&body)
            .map(Self)
            .map_err(|e| ApiError::bad_request(e.to_string()).into_response())
    }
}

/// The bytes of an uploaded still (their type is checked by what stores them).
pub(super) struct StillUpload(pub(super) axum::body::Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for StillUpload {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        // Its refusals (too large) get their typed shape from `typed_errors`.
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Self)
            .map_err(IntoResponse::into_response)
    }
}
