//! What technicians do in a live session beyond watching: drawings, camera requests,
//! stills (snapshots and freeze frames), recordings and colleagues. These are the types
//! carried by signaling and kept in the session record, with their validation.

use serde::{Deserialize, Serialize};

use crate::clock::UnixMillis;
use crate::ids::UserId;

/// A position in the video frame, normalised: (0, 0) is the top left corner and (1, 1)
/// the bottom right, whatever the size either side shows it at.
pub type Point = [f64; 2];

/// One annotation on the picture.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    /// A freehand line through the points.
    Pen { color: String, points: Vec<Point> },
    Arrow {
        color: String,
        from: Point,
        to: Point,
    },
    /// An ellipse inscribed in the box between the two corners (a circle on the picture
    /// when the box is square in pixels).
    Circle {
        color: String,
        from: Point,
        to: Point,
    },
    Text {
        color: String,
        at: Point,
        text: String,
    },
}

pub const MAX_SHAPES: usize = 200;
const MAX_PEN_POINTS: usize = 2_000;
const MAX_LABEL_CHARS: usize = 200;

impl Shape {
    pub fn validate(&self) -> Result<(), String> {
        let (color, points): (&str, Vec<&Point>) = match self {
            Self::Pen { color, points } => {
                if points.is_empty() || points.len() > MAX_PEN_POINTS {
                    return Err(format!("a pen line has 1 to {MAX_PEN_POINTS} points"));
                }
                (color, points.iter().collect())
            }
            Self::Arrow { color, from, to } | Self::Circle { color, from, to } => {
                (color, vec![from, to])
            }
            Self::Text { color, at, text } => {
                let text = text.trim();
                if text.is_empty()
                    || text.chars().count() > MAX_LABEL_CHARS
                    || text.chars().any(char::is_control)
                {
                    return Err(format!("a label has 1 to {MAX_LABEL_CHARS} characters"));
                }
                (color, vec![at])
            }
        };
        if !valid_color(color) {
            return Err("colours are written #rrggbb".into());
        }
        if !points.into_iter().all(valid_point) {
            return Err("positions are fractions of the picture, from 0 to 1".into());
        }
        Ok(())
    }
}

pub fn valid_point(p: &Point) -> bool {
    p.iter().all(|c| c.is_finite() && (0.0..=1.0).contains(c))
}

fn valid_color(color: &str) -> bool {
    color.len() == 7 && color.starts_with('#') && color[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Facing {
    /// The camera on the screen's side.
    User,
    /// The camera on the back.
    Environment,
}

/// What the technician asks the customer's camera to do; absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraRequest {
    #[serde(default)]
    pub facing: Option<Facing>,
    #[serde(default)]
    pub torch: Option<bool>,
    #[serde(default)]
    pub zoom: Option<f64>,
}

impl CameraRequest {
    pub fn validate(&self) -> Result<(), String> {
        if self.facing.is_none() && self.torch.is_none() && self.zoom.is_none() {
            return Err("a camera request asks for a camera, the torch or a zoom".into());
        }
        if self
            .zoom
            .is_some_and(|z| !z.is_finite() || !(0.0..=100.0).contains(&z))
        {
            return Err("zoom is a factor from 0 to 100".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ZoomRange {
    pub min: f64,
    pub max: f64,
    pub step: f64,
    pub value: f64,
}

/// What the customer's camera can do, as its page reports it. `None` means the device
/// does not support the control, and the console shows it as unavailable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CameraCapabilities {
    /// How many cameras the device has.
    pub cameras: u8,
    #[serde(default)]
    pub facing: Option<Facing>,
    /// The camera in use, as the browser names it.
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub torch: Option<bool>,
    #[serde(default)]
    pub zoom: Option<ZoomRange>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
}

impl CameraCapabilities {
    pub fn validate(&self) -> Result<(), String> {
        if self.label.as_ref().is_some_and(|l| l.chars().count() > 200) {
            return Err("the camera label is too long".into());
        }
        if let Some(z) = &self.zoom
            && ![z.min, z.max, z.step, z.value]
                .iter()
                .all(|v| v.is_finite())
        {
            return Err("zoom values must be numbers".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StillPurpose {
    /// A full-resolution photo the technician asked for.
    Snapshot,
    /// The picture both sides look at while the technician has frozen it.
    Freeze,
}

/// A still stored with the session (the image itself is an encrypted file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Still {
    pub id: String,
    pub purpose: StillPurpose,
    pub at_ms: UnixMillis,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// The drawing on the picture when the still was taken (snapshots) or when the
    /// picture was unfrozen (freeze frames).
    #[serde(default)]
    pub annotations: Vec<Shape>,
}

/// A finished recording; the WebM file is stored as three encrypted parts (see
/// [`crate::webm`]), played back as one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Recording {
    pub id: String,
    pub started_ms: UnixMillis,
    pub ended_ms: UnixMillis,
    pub duration_ms: u64,
    pub head_len: u64,
    pub body_len: u64,
    pub tail_len: u64,
    /// Whether the technician's voice and the customer's are in it.
    pub technician_audio: bool,
    pub customer_audio: bool,
}

impl Recording {
    pub fn len(&self) -> u64 {
        self.head_len + self.body_len + self.tail_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColleagueRole {
    /// Sees, hears and chats; cannot talk, draw, drive the camera or record.
    Observer,
    /// Does everything the session's technician does.
    Participant,
}

/// Another technician of the account invited into a session.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Colleague {
    pub user_id: UserId,
    pub name: String,
    pub role: ColleagueRole,
    pub invited_ms: UnixMillis,
    pub invited_by: UserId,
}

/// One entry of the consent record: what the customer allowed, and when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ConsentEvent {
    pub at_ms: UnixMillis,
    pub event: ConsentChange,
    pub camera: bool,
    pub microphone: bool,
    pub recording: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentChange {
    Granted,
    Declined,
    /// The customer changed what is shared (e.g. stopped the recording).
    Changed,
    /// The customer's page came back (reload or dropped network) and sharing resumed
    /// under the consent already given in this session, without asking again.
    Resumed,
    /// A different device joined with the invitation while the first was away: nothing
    /// the first device agreed to carries over; the new one is asked afresh.
    NewDevice,
    /// Everything stopped because the session ended.
    Revoked,
}

/// A short, non-identifying description of the customer's browser and system, from the
/// User-Agent, for the session record ("Chrome 156 on Android").
pub fn describe_device(user_agent: &str) -> String {
    let ua = user_agent;
    let system = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("CrOS", "ChromeOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(needle, _)| ua.contains(needle))
    .map_or("an unknown system", |(_, name)| name);
    // Order matters: Edge and Opera also say Chrome, Chrome also says Safari.
    let browser = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("SamsungBrowser/", "Samsung Internet"),
        ("Firefox/", "Firefox"),
        ("CriOS/", "Chrome"),
        ("Chrome/", "Chrome"),
        ("Version/", "Safari"),
    ]
    .iter()
    .find_map(|(token, name)| {
        let at = ua.find(token)? + token.len();
        let major: String = ua[at..].chars().take_while(char::is_ascii_digit).collect();
        Some(if major.is_empty() {
            (*name).to_owned()
        } else {
            format!("{name} {major}")
        })
    })
    .unwrap_or_else(|| "An unknown browser".to_owned());
    format!("{browser} on {system}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_validate() {
        let shape: Shape = serde_json::from_str(
            r##"{"kind":"arrow","color":"#ff0000","from":[0.1,0.2],"to":[0.5,0.5]}"##,
        )
        .expect("parse");
        assert!(shape.validate().is_ok());
        let outside = Shape::Circle {
            color: "#00ff00".into(),
            from: [0.5, 0.5],
            to: [1.5, 0.5],
        };
        assert!(outside.validate().is_err());
        let bad_color = Shape::Text {
            color: "red".into(),
            at: [0.5, 0.5],
            text: "here".into(),
        };
        assert!(bad_color.validate().is_err());
        let empty = Shape::Pen {
            color: "#000000".into(),
            points: vec![],
        };
        assert!(empty.validate().is_err());
        assert!(!valid_point(&[f64::NAN, 0.0]));
        assert!(
            serde_json::from_str::<Shape>(
                r##"{"kind":"pen","color":"#000000","points":[],"x":1}"##
            )
            .is_err()
        );
    }

    #[test]
    fn camera_requests_ask_for_something_sensible() {
        assert!(CameraRequest::default().validate().is_err());
        let zoom = CameraRequest {
            zoom: Some(f64::INFINITY),
            ..Default::default()
        };
        assert!(zoom.validate().is_err());
        let torch = CameraRequest {
            torch: Some(true),
            ..Default::default()
        };
        assert!(torch.validate().is_ok());
    }

    #[test]
    fn devices_are_described_briefly() {
        assert_eq!(
            describe_device(
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36"
            ),
            "Chrome 156 on Android"
        );
        assert_eq!(
            describe_device(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.0 Mobile/15E148 Safari/604.1"
            ),
            "Safari 18 on iOS"
        );
        assert_eq!(
            describe_device(""),
            "An unknown browser on an unknown system"
        );
    }
}
