//! The signaling protocol: the messages participants send over the WebSocket and the
//! ones the appliance sends back, tagged JSON with unknown types and fields refused.

use serde::{Deserialize, Serialize};

use super::EndReason;
use super::SessionView;
use super::toolkit::{
    CameraCapabilities, CameraRequest, Point, Recording, Shape, Still, StillPurpose,
};
use crate::clock::UnixMillis;
use crate::ids::SessionId;

/// Messages a participant sends over the signaling WebSocket.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message on a technician's socket: which session to follow.
    Watch {
        session_id: SessionId,
    },
    /// First message on a customer's socket: the invitation token, and the device secret
    /// the appliance gave this browser when it first joined (so that a reload or a
    /// dropped connection takes its own place again under the consent it gave).
    Join {
        token: String,
        #[serde(default)]
        device: Option<String>,
    },
    /// The customer's choice; the microphone and recording are asked for separately and
    /// may be declined. Sent again, it changes what is shared.
    Consent {
        camera: bool,
        microphone: bool,
        #[serde(default)]
        recording: bool,
    },
    /// The customer paused or resumed the camera.
    Pause {
        paused: bool,
    },
    /// Either side ends the session.
    End,
    /// A chat line; stored with the session.
    Chat {
        text: String,
    },
    /// Technician: adds a shape to the drawing on the picture.
    Draw {
        shape: Shape,
    },
    /// Technician: removes the last shape.
    Undo,
    /// Technician: removes every shape.
    ClearDrawing,
    /// Technician: the laser pointer's position, or `None` to hide it.
    Pointer {
        at: Option<Point>,
    },
    /// Technician: freezes the picture on a still both sides see, or returns to live.
    Freeze {
        frozen: bool,
    },
    /// Technician: asks the customer's page to switch camera, torch or zoom.
    Camera {
        #[serde(flatten)]
        request: CameraRequest,
    },
    /// Customer: what the camera in use can do.
    Capabilities {
        capabilities: CameraCapabilities,
    },
    /// Technician: asks for a full-resolution photo from the customer's camera.
    Snapshot,
    /// Technician: starts or stops recording.
    Record {
        on: bool,
    },
    /// Either side muted or unmuted its microphone.
    Mute {
        muted: bool,
    },
    Ping,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not a signaling message at all (not JSON, an unknown type, a missing field).
    BadMessage,
    /// A well-formed message its sender cannot send now (or ever, in its role).
    Unexpected,
    /// A well-formed message or request whose content is not acceptable.
    BadRequest,
    NotAllowed,
    InvitationInvalid,
    PinInvalid,
    NotFound,
    AlreadyJoined,
    WrongDevice,
    NoConsent,
    CustomerAbsent,
    Ended,
    InvalidSdp,
    Throttled,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 15] = [
        Self::BadMessage,
        Self::Unexpected,
        Self::BadRequest,
        Self::NotAllowed,
        Self::InvitationInvalid,
        Self::PinInvalid,
        Self::NotFound,
        Self::AlreadyJoined,
        Self::WrongDevice,
        Self::NoConsent,
        Self::CustomerAbsent,
        Self::Ended,
        Self::InvalidSdp,
        Self::Throttled,
        Self::Internal,
    ];

    /// The code as the wire carries it, in an API error and a signaling error alike.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadMessage => "bad_message",
            Self::Unexpected => "unexpected",
            Self::BadRequest => "bad_request",
            Self::NotAllowed => "not_allowed",
            Self::InvitationInvalid => "invitation_invalid",
            Self::PinInvalid => "pin_invalid",
            Self::NotFound => "not_found",
            Self::AlreadyJoined => "already_joined",
            Self::WrongDevice => "wrong_device",
            Self::NoConsent => "no_consent",
            Self::CustomerAbsent => "customer_absent",
            Self::Ended => "ended",
            Self::InvalidSdp => "invalid_sdp",
            Self::Throttled => "throttled",
            Self::Internal => "internal",
        }
    }
}

/// Messages the appliance sends over the signaling WebSocket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The session as it is now; sent on join and on every change.
    State {
        session: SessionView,
    },
    Ended {
        reason: EndReason,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
    /// A new chat line, to everyone in the session (the sender included).
    Chat {
        line: ChatLine,
    },
    /// The chat so far, sent once when a participant joins.
    Transcript {
        lines: Vec<ChatLine>,
    },
    /// The drawing on the picture as it is now (sent whole on every change and on join).
    Drawing {
        shapes: Vec<Shape>,
    },
    Pointer {
        at: Option<Point>,
    },
    /// To the customer: the technician's camera request.
    Camera {
        #[serde(flatten)]
        request: CameraRequest,
    },
    /// To technicians: what the customer's camera can do.
    Capabilities {
        capabilities: CameraCapabilities,
    },
    /// To the customer: take a still and upload it for this request.
    Capture {
        request: String,
        purpose: StillPurpose,
    },
    /// A still was stored.
    Still {
        still: Still,
    },
    /// A recording was stored.
    Recorded {
        recording: Recording,
    },
    Muted {
        from: Speaker,
        author: String,
        muted: bool,
    },
    /// To one technician: whether their connection carries video now; when it is too
    /// thin, only audio continues.
    Bandwidth {
        video: bool,
    },
    /// To the customer, once at its first join: the device secret its page sends with
    /// every later request (media, stills, rejoin). Only its hash is kept.
    Device {
        key: String,
    },
    Pong,
}

/// Who wrote a chat line.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Technician,
    Customer,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ChatLine {
    pub at_ms: UnixMillis,
    pub from: Speaker,
    /// The technician's display name, or "Customer".
    pub author: String,
    pub text: String,
}

pub(super) const MAX_CHAT_CHARS: usize = 2000;

impl ServerMessage {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::toolkit::{self, *};

    #[test]
    fn client_messages_parse_from_tagged_json() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"consent","camera":true,"microphone":false}"#)
                .expect("parse");
        assert_eq!(
            m,
            ClientMessage::Consent {
                camera: true,
                microphone: false,
                recording: false,
            }
        );
        let m: ClientMessage = serde_json::from_str(r#"{"type":"end"}"#).expect("parse");
        assert_eq!(m, ClientMessage::End);
    }

    #[test]
    fn toolkit_messages_parse() {
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"camera","facing":"user","torch":true}"#)
                .expect("parse");
        assert_eq!(
            m,
            ClientMessage::Camera {
                request: CameraRequest {
                    facing: Some(toolkit::Facing::User),
                    torch: Some(true),
                    zoom: None,
                }
            }
        );
        assert!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"camera","torch":true,"laser":1}"#)
                .is_err(),
            "unknown camera controls are refused"
        );
        let m: ClientMessage = serde_json::from_str(
            r##"{"type":"draw","shape":{"kind":"circle","color":"#ffcc00","from":[0.1,0.1],"to":[0.3,0.4]}}"##,
        )
        .expect("parse");
        assert!(matches!(
            m,
            ClientMessage::Draw {
                shape: Shape::Circle { .. }
            }
        ));
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"pointer","at":null}"#).expect("parse");
        assert_eq!(m, ClientMessage::Pointer { at: None });
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"record"}"#).is_err());
        let json = serde_json::to_value(ServerMessage::Capture {
            request: "r1".into(),
            purpose: StillPurpose::Snapshot,
        })
        .expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type":"capture","request":"r1","purpose":"snapshot"})
        );
        let json = serde_json::to_value(ServerMessage::Camera {
            request: CameraRequest {
                zoom: Some(2.0),
                ..Default::default()
            },
        })
        .expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type":"camera","facing":null,"torch":null,"zoom":2.0})
        );
    }

    #[test]
    fn unknown_types_and_fields_are_refused() {
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"explode"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientMessage>(r#"{"type":"pause","paused":true,"x":1}"#)
                .is_err()
        );
        assert!(serde_json::from_str::<ClientMessage>(r#"{"camera":true}"#).is_err());
    }

    #[test]
    fn server_messages_are_tagged() {
        let json = serde_json::to_string(&ServerMessage::Ended {
            reason: EndReason::Customer,
        })
        .expect("json");
        assert_eq!(json, r#"{"type":"ended","reason":"customer"}"#);
    }
}
