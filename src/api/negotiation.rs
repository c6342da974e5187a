//! Media negotiation: WHIP for the customer, WHEP for technicians (RFC 9725 style).

use std::net::SocketAddr;

use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::openapi::{Done, Raw, SdpAnswer, SdpCreated};
use super::{ApiError, ApiState, AppState, Caller, Customer, User};
use crate::ids::SessionId;
use crate::live::Participant;
use crate::media::PeerId;

/// An SDP offer as a WHIP/WHEP request carries it: `application/sdp`, not empty.
pub(super) struct SdpOffer(String);

impl<S: Send + Sync> FromRequest<S> for SdpOffer {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let is_sdp = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/sdp"));
        if !is_sdp {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the offer must be sent as application/sdp",
            )
            .into_response());
        }
        // Its refusals (too large, not UTF-8) get their typed shape from `typed_errors`.
        let body = String::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if body.trim().is_empty() {
            return Err(ApiError::bad_request("the SDP offer is empty").into_response());
        }
        Ok(Self(body))
    }
}

fn announce_addr(state: &ApiState, caller: &Caller) -> SocketAddr {
    let ip = state
        .media_public_ip
        .unwrap_or_else(|| caller.0.local.ip().to_canonical());
    SocketAddr::new(ip, state.live.media().local_addr().port())
}

fn sdp_created(location: String, answer: String) -> Raw<SdpCreated> {
    let mut response = (StatusCode::CREATED, answer).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    Raw::new(response)
}

pub(super) async fn whip(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    SdpOffer(offer): SdpOffer,
) -> Result<Raw<SdpCreated>, ApiError> {
    let announce = announce_addr(&state, &caller);
    let (_, peer, answer) = state.live.publish(&proof, caller.ip(), &offer, announce)?;
    Ok(sdp_created(
        format!("/api/invitation/whip/{}", peer.0),
        answer,
    ))
}

fn sdp_answer(answer: String) -> Raw<SdpAnswer> {
    Raw::new((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/sdp"),
        )],
        answer,
    ))
}

/// An ICE restart of the customer's connection: a new offer for the same resource.
pub(super) async fn whip_restart(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    Path(peer): Path<u64>,
    SdpOffer(offer): SdpOffer,
) -> Result<Raw<SdpAnswer>, ApiError> {
    let answer = state
        .live
        .restart_customer_media(&proof, caller.ip(), PeerId(peer), &offer)
        .await?;
    Ok(sdp_answer(answer))
}

pub(super) async fn whep_restart(
    State(state): State<AppState>,
    User(who): User,
    Path((id, peer)): Path<(SessionId, u64)>,
    SdpOffer(offer): SdpOffer,
) -> Result<Raw<SdpAnswer>, ApiError> {
    state.live.session_for(&who, &id)?;
    let answer = state
        .live
        .restart_media(
            &id,
            PeerId(peer),
            &Participant::Technician {
                user_id: who.user_id.clone(),
            },
            &offer,
        )
        .await?;
    Ok(sdp_answer(answer))
}

pub(super) async fn whip_delete(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    Path(peer): Path<u64>,
) -> Result<Done, ApiError> {
    state
        .live
        .customer_leaves_media(&proof, caller.ip(), PeerId(peer))?;
    Ok(Done)
}

pub(super) async fn whep(
    State(state): State<AppState>,
    caller: Caller,
    User(who): User,
    Path(id): Path<SessionId>,
    SdpOffer(offer): SdpOffer,
) -> Result<Raw<SdpCreated>, ApiError> {
    let announce = announce_addr(&state, &caller);
    let (peer, answer) = state
        .live
        .subscribe(&who, &id, caller.ip(), &offer, announce)?;
    Ok(sdp_created(
        format!("/api/sessions/{id}/whep/{}", peer.0),
        answer,
    ))
}

pub(super) async fn whep_delete(
    State(state): State<AppState>,
    User(who): User,
    Path((id, peer)): Path<(SessionId, u64)>,
) -> Result<Done, ApiError> {
    state.live.session_for(&who, &id)?;
    state.live.leave_media(
        &id,
        PeerId(peer),
        &Participant::Technician {
            user_id: who.user_id.clone(),
        },
    )?;
    Ok(Done)
}
