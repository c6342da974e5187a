//! The API's errors: one typed JSON shape (`{"error": code, "message": …}`) for every
//! refusal, whichever layer makes it — handlers, extractors, the body limit, the router.
//! The codes are listed once, in [`ERROR_CODES`]; the pages translate each of them.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::http::{MAX_HEADER_BYTES, MAX_HEADERS};
use crate::live::{ErrorCode, LiveError};

/// Every code an API error or a signaling error carries. A code not listed here is a bug (debug builds
/// assert it), and the pages have a translation for each (a test checks).
pub const ERROR_CODES: &[&str] = &[
    "already_joined",
    "already_set_up",
    "bad_credentials",
    "bad_message",
    "bad_request",
    "bad_second_factor",
    "bad_setup_code",
    "conflict",
    "csrf",
    "customer_absent",
    "deactivated",
    "delivery_failed",
    "ended",
    "forbidden",
    "foreign_origin",
    "headers_too_large",
    "internal",
    "invalid",
    "invalid_recipient",
    "invalid_sdp",
    "invitation_invalid",
    "locked",
    "method_not_allowed",
    "no_consent",
    "not_allowed",
    "not_configured",
    "not_found",
    "password_letters_and_digits",
    "password_own_details",
    "password_too_common",
    "password_too_long",
    "password_too_short",
    "pin_invalid",
    "sign_in_incomplete",
    "store_unavailable",
    "throttled",
    "too_large",
    "unauthenticated",
    "unexpected",
    "unsupported_media_type",
    "wrong_device",
    "wrong_stage",
];

/// A throttled source may try again after this long at the latest (the guessing
/// penalty; see [`crate::audit::GuessThrottle`]).
const RETRY_AFTER_SECS: u64 = crate::audit::GUESS_PENALTY_SECS;

/// An API error: status, a stable machine-readable code and a sentence for people.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    locked_until_ms: Option<u64>,
    /// For a refused password: the minimum length, so a page can say it in its language.
    min_length: Option<usize>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        debug_assert!(ERROR_CODES.contains(&code), "{code} is not in ERROR_CODES");
        Self {
            status,
            code,
            message: message.into(),
            locked_until_ms: None,
            min_length: None,
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(super) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            locked_until_ms: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            min_length: Option<usize>,
        }
        let body = Json(Body {
            error: self.code,
            message: &self.message,
            locked_until_ms: self.locked_until_ms,
            min_length: self.min_length,
        });
        let mut response = (self.status, body).into_response();
        response
            .extensions_mut()
            .insert(super::openapi::RefusalCode(self.code));
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let (status, code) = match &e {
            AuthError::AlreadySetUp => (StatusCode::CONFLICT, "already_set_up"),
            AuthError::BadSetupCode => (StatusCode::FORBIDDEN, "bad_setup_code"),
            AuthError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
            AuthError::Locked { until_ms } => {
                let mut error = Self::new(StatusCode::LOCKED, "locked", e.to_string());
                error.locked_until_ms = Some(*until_ms);
                return error;
            }
            AuthError::Deactivated => (StatusCode::FORBIDDEN, "deactivated"),
            AuthError::BadSecondFactor => (StatusCode::UNAUTHORIZED, "bad_second_factor"),
            AuthError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AuthError::WrongStage(_) => (StatusCode::CONFLICT, "wrong_stage"),
            AuthError::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            AuthError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            AuthError::Throttled => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            AuthError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AuthError::Policy(violation) => {
                use crate::auth::PolicyViolation as V;
                let code = match violation {
                    V::TooShort(_) => "password_too_short",
                    V::TooLong => "password_too_long",
                    V::NeedsLettersAndDigits => "password_letters_and_digits",
                    V::TooGuessable => "password_too_common",
                    V::BuiltFromDetails => "password_own_details",
                };
                let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string());
                if let V::TooShort(n) = violation {
                    error.min_length = Some(*n);
                }
                return error;
            }
            AuthError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            AuthError::Store(_) | AuthError::Hashing => {
                tracing::error!(error = %e, "internal error");
                return Self::internal();
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<crate::lifecycle::LifecycleError> for ApiError {
    fn from(e: crate::lifecycle::LifecycleError) -> Self {
        use crate::lifecycle::LifecycleError as E;
        match e {
            E::NoScope => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string()),
            E::NothingMatches => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            E::Live(e) => e.into(),
            E::Auth(e) => e.into(),
            E::Store(_) | E::Export(_) | E::Vault(_) => {
                tracing::error!(error = %e, "internal error");
                Self::internal()
            }
        }
    }
}

impl From<LiveError> for ApiError {
    fn from(e: LiveError) -> Self {
        let code = e.code();
        let status = match code {
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InvitationInvalid
            | ErrorCode::PinInvalid
            | ErrorCode::WrongDevice
            | ErrorCode::NoConsent
            | ErrorCode::NotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::Throttled => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::AlreadyJoined | ErrorCode::CustomerAbsent | ErrorCode::Unexpected => {
                StatusCode::CONFLICT
            }
            ErrorCode::Ended => StatusCode::GONE,
            ErrorCode::BadMessage | ErrorCode::BadRequest | ErrorCode::InvalidSdp => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::Internal => {
                tracing::error!(error = %e, "internal error");
                return Self::internal();
            }
        };
        Self::new(status, code.as_str(), e.public_message())
    }
}

pub(super) async fn api_not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route")
}

/// Answers the refusals that layers below the handlers make in plain text or with an
/// empty body (axum's extractor rejections, the body limit, an unknown method) in the
/// typed shape, keeping their status and, where it helps, their text.
pub(super) async fn typed_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let typed = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || typed {
        return response;
    }
    let (code, fallback) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::NOT_FOUND => ("not_found", "no such API route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", "wrong content type"),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid", "the request cannot be processed"),
        StatusCode::TOO_MANY_REQUESTS => ("throttled", "too many requests; try again later"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("headers_too_large", "the request headers are too large")
        }
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "the request was refused"),
    };
    let bytes = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    let text = std::str::from_utf8(&bytes).unwrap_or_default().trim();
    let message = if text.is_empty() || status.is_server_error() {
        fallback.to_owned()
    } else {
        text.to_owned()
    };
    let mut error = ApiError::new(status, code, message);
    error.status = status;
    error.into_response()
}

/// Refuses requests with too many or too large headers, typed (see [`MAX_HEADERS`]).
pub(super) async fn header_limits(request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("at most {MAX_HEADERS} request headers of {MAX_HEADER_BYTES} bytes in all"),
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One source of error codes: every code the API or the signaling socket sends has a
    /// translation in both languages of the pages.
    /// The live service's codes are this list's, spelt as serde spells them on the socket.
    #[test]
    fn the_live_codes_are_listed_and_spelt_alike_on_both_wires() {
        for code in ErrorCode::ALL {
            assert!(ERROR_CODES.contains(&code.as_str()), "{code:?}");
            assert_eq!(serde_json::to_value(code).expect("code"), code.as_str());
        }
    }

    #[test]
    fn every_error_code_is_translated_in_every_language() {
        let languages = [
            ("English", include_str!("../web/strings/en.js")),
            ("German", include_str!("../web/strings/de.js")),
        ];
        for code in ERROR_CODES {
            let key = format!("'err.{code}':");
            for (language, strings) in languages {
                assert_eq!(strings.matches(&key).count(), 1, "{key} in {language}");
            }
        }
    }
}
