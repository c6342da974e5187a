//! The signaling WebSocket: the first message names who speaks, then the conversation
//! runs until either side ends it or the appliance stops.

use std::net::IpAddr;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};

use super::openapi::{Raw, Upgraded};
use super::{ApiError, ApiState, AppState, Caller, cookie_token, own_origin};
use crate::audit::{Actor, AuditKind};
use crate::auth::{Principal, Stage};
use crate::live::{Attachment, ClientMessage, ErrorCode, LiveError, ServerMessage};
use crate::store::Store;

const FIRST_MESSAGE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BAD_MESSAGES: u32 = 20;
/// Malformed messages audited per connection; the rest are only counted.
const AUDITED_BAD_MESSAGES: u32 = 3;

pub(super) async fn websocket(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Result<Raw<Upgraded>, ApiError> {
    let source = caller.ip();
    // A page of another site must not open a signaling socket in a signed-in browser.
    if !own_origin(&headers, state.public_url.as_deref()) {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("(not text)");
        state.audit.record(
            AuditKind::AccessDenied,
            Actor::stranger(source),
            format!("signaling socket from another origin: {:.100}", origin),
        );
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "foreign_origin",
            "the signaling socket is open to this appliance's own pages only",
        ));
    }
    let principal = cookie_token(&headers)
        .and_then(|t| state.auth.authenticate(&t).ok())
        .filter(|p| p.stage == Stage::Complete);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(Raw::new(upgrade.max_message_size(64 * 1024).on_upgrade(
        move |socket| signaling(state, socket, principal, user_agent, source),
    )))
}

/// Sends one signaling message, once every write made so far is durable: a message may
/// acknowledge a change (joined, consented, paused, a chat line), and what the other side
/// has seen must survive a crash. `false`: the socket (or the store) failed.
async fn send(store: &Store, socket: &mut WebSocket, message: &ServerMessage) -> bool {
    if let Err(e) = store.flush().await {
        tracing::error!(error = %e, "a change could not be made durable; closing the socket");
        return false;
    }
    match serde_json::to_string(message) {
        Ok(json) => socket.send(Message::Text(json.into())).await.is_ok(),
        Err(_) => false,
    }
}

async fn signaling(
    state: AppState,
    mut socket: WebSocket,
    principal: Option<Principal>,
    user_agent: Option<String>,
    source: IpAddr,
) {
    let first = tokio::select! {
        first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, socket.recv()) => first,
        () = state.stopping.wait() => return,
    };
    let first = match first {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<ClientMessage>(&text),
        _ => return,
    };
    let attached = match (first, &principal) {
        (Ok(ClientMessage::Watch { session_id }), Some(who)) => state
            .live
            .attach_technician(who, &session_id, source)
            .map_err(|e| live_error_message(&e)),
        (Ok(ClientMessage::Watch { .. }), None) => Err(ServerMessage::error(
            ErrorCode::NotAllowed,
            "sign in to follow a session",
        )),
        (Ok(ClientMessage::Join { token, device }), _) => state
            .live
            .attach_customer(&token, device.as_deref(), user_agent.as_deref(), source)
            .map_err(|e| live_error_message(&e)),
        (Ok(_), _) => Err(ServerMessage::error(
            ErrorCode::Unexpected,
            "the first message must be watch or join",
        )),
        (Err(e), _) => {
            state.audit.record(
                AuditKind::MalformedSignaling,
                Actor::stranger(source),
                "malformed first signaling message",
            );
            Err(ServerMessage::error(ErrorCode::BadMessage, e.to_string()))
        }
    };
    let (attachment, mut outbox) = match attached {
        Ok(pair) => pair,
        Err(message) => {
            send(&state.store, &mut socket, &message).await;
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    };
    converse(&state, &mut socket, &attachment, &mut outbox).await;
    state.live.detach(&attachment);
    let _ = socket.send(Message::Close(None)).await;
}

async fn converse(
    state: &ApiState,
    socket: &mut WebSocket,
    attachment: &Attachment,
    outbox: &mut tokio::sync::mpsc::UnboundedReceiver<ServerMessage>,
) {
    let mut bad_messages = 0u32;
    loop {
        tokio::select! {
            // Participants are told by `Live::shutdown` first; this only ends the task.
            () = state.stopping.wait() => {
                while let Ok(message) = outbox.try_recv() {
                    send(&state.store, socket, &message).await;
                }
                return;
            }
            outgoing = outbox.recv() => {
                let Some(message) = outgoing else { return };
                let ended = matches!(message, ServerMessage::Ended { .. });
                if !send(&state.store, socket, &message).await || ended {
                    return;
                }
            }
            incoming = socket.recv() => {
                let text = match incoming {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        bad_messages += 1;
                        if !send(&state.store, socket, &ServerMessage::error(ErrorCode::BadMessage, "messages are JSON text")).await {
                            return;
                        }
                        continue;
                    }
                    _ => return,
                };
                let reply = match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(message) => match state.live.handle(attachment, message).await {
                        Ok(reply) => reply,
                        Err(e) => Some(live_error_message(&e)),
                    },
                    Err(e) => {
                        bad_messages += 1;
                        if bad_messages <= AUDITED_BAD_MESSAGES {
                            state.audit.record(
                                AuditKind::MalformedSignaling,
                                attachment.actor(),
                                format!("session {}: {e}", attachment.session_id),
                            );
                        }
                        Some(ServerMessage::error(ErrorCode::BadMessage, e.to_string()))
                    }
                };
                if let Some(reply) = reply && !send(&state.store, socket, &reply).await {
                    return;
                }
                if bad_messages > MAX_BAD_MESSAGES {
                    return;
                }
            }
        }
    }
}

fn live_error_message(e: &LiveError) -> ServerMessage {
    if e.code() == ErrorCode::Internal {
        tracing::error!(error = %e, "internal error in signaling");
    }
    ServerMessage::error(e.code(), e.public_message())
}
