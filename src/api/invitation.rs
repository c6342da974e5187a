//! The customer's side of an invitation: the PIN exchanged for the link's token, and
//! what the customer sees before deciding.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, Caller, InvitationToken, JsonBody};
use crate::ids::SessionId;

#[derive(Deserialize, schemars::JsonSchema)]
pub(super) struct PinRequest {
    pin: String,
}

#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct PinAnswer {
    token: String,
}

pub(super) async fn join_with_pin(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(request): JsonBody<PinRequest>,
) -> Result<Json<PinAnswer>, ApiError> {
    let token = state.live.exchange_pin(&request.pin, caller.ip()).await?;
    Ok(Json(PinAnswer { token }))
}

/// What the customer sees before deciding: who asks, and exactly what would be shared.
#[derive(Serialize, schemars::JsonSchema)]
pub(super) struct InvitationView {
    session_id: SessionId,
    technician_name: String,
    organisation: String,
    state: crate::live::SessionState,
    shares: Vec<&'static str>,
    optional: Vec<&'static str>,
}

impl InvitationView {
    fn optional(recording_allowed: bool) -> Vec<&'static str> {
        if recording_allowed {
            vec!["microphone", "recording"]
        } else {
            vec!["microphone"]
        }
    }
}

pub(super) async fn invitation(
    State(state): State<AppState>,
    caller: Caller,
    InvitationToken(token): InvitationToken,
) -> Result<Json<InvitationView>, ApiError> {
    let session = state.live.resolve_invitation(&token, caller.ip())?;
    Ok(Json(InvitationView {
        session_id: session.id,
        technician_name: session.technician_name,
        organisation: session.organisation,
        state: session.state,
        shares: vec!["camera"],
        optional: InvitationView::optional(session.recording_allowed),
    }))
}
