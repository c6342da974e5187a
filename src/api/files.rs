//! Stills and recordings: the customer's upload, the technician's download (with byte
//! ranges for recordings) and the session record.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::openapi::{Created, Raw, RecordingVideo, StillImage};
use super::{ApiError, AppState, Caller, Customer, StillUpload, User};
use crate::ids::SessionId;
use crate::live::{ReadSeek, RecordingFile, SessionRecord, Still};

pub(super) async fn upload_still(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    Path(request): Path<String>,
    StillUpload(body): StillUpload,
) -> Result<Created<Still>, ApiError> {
    // Storing writes and syncs a file: off the async workers.
    let ip = caller.ip();
    let still =
        tokio::task::spawn_blocking(move || state.live.store_still(&proof, ip, &request, &body))
            .await
            .map_err(|_| ApiError::internal())??;
    Ok(Created(still))
}

fn image_response(still: &Still, image: Vec<u8>) -> Raw<StillImage> {
    Raw::new((
        [
            (header::CONTENT_TYPE, still.content_type.clone()),
            (header::CACHE_CONTROL, "private, no-store".to_owned()),
        ],
        image,
    ))
}

pub(super) async fn customer_still(
    State(state): State<AppState>,
    caller: Caller,
    Customer(proof): Customer,
    Path(still_id): Path<String>,
) -> Result<Raw<StillImage>, ApiError> {
    let (still, image) = state
        .live
        .still_for_customer(&proof, caller.ip(), &still_id)?;
    Ok(image_response(&still, image))
}

pub(super) async fn still(
    State(state): State<AppState>,
    User(who): User,
    Path((id, still_id)): Path<(SessionId, String)>,
) -> Result<Raw<StillImage>, ApiError> {
    let (still, image) = state.live.still_for(&who, &id, &still_id)?;
    Ok(image_response(&still, image))
}

pub(super) async fn record(
    State(state): State<AppState>,
    User(who): User,
    Path(id): Path<SessionId>,
) -> Result<Json<SessionRecord>, ApiError> {
    Ok(Json(state.live.record_for(&who, &id)?))
}

/// A recording as one WebM file, decrypted as it is sent; byte ranges are served so the
/// browser's player can seek.
pub(super) async fn recording(
    State(state): State<AppState>,
    User(who): User,
    Path((id, recording_id)): Path<(SessionId, String)>,
    headers: HeaderMap,
) -> Result<Raw<RecordingVideo>, ApiError> {
    let RecordingFile { recording, parts } = state.live.recording_for(&who, &id, &recording_id)?;
    let total = recording.len();
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| byte_range(v, total));
    let (start, end) = match range {
        None => (0, total),
        Some(Some(range)) => range,
        Some(None) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(Raw::new(response));
        }
    };
    let lens = [recording.head_len, recording.body_len, recording.tail_len];
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    tokio::task::spawn_blocking(move || send_range(parts, lens, start, end, &tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let mut response = Response::new(axum::body::Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/webm"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    if let Ok(v) = HeaderValue::from_str(&(end - start).to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if range.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{total}", end - 1)) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(Raw::new(response))
}

/// Parses a single `bytes=` range into a half-open interval within `total`.
fn byte_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (total.saturating_sub(n), total)
        }
        (first, "") => (first.parse().ok()?, total),
        (first, last) => (
            first.parse().ok()?,
            last.parse::<u64>().ok()?.saturating_add(1).min(total),
        ),
    };
    (start < end && end <= total).then_some((start, end))
}

/// Reads `[start, end)` of the concatenated parts and sends it in chunks.
fn send_range(
    mut parts: Vec<Box<dyn ReadSeek + Send>>,
    lens: [u64; 3],
    start: u64,
    end: u64,
    tx: &tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    use std::io::{Read, Seek, SeekFrom};
    let mut offset = 0u64;
    for (part, len) in parts.iter_mut().zip(lens) {
        let (from, to) = (start.max(offset), end.min(offset + len));
        if from < to {
            if let Err(e) = part.seek(SeekFrom::Start(from - offset)) {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            let mut left = to - from;
            let mut buf = vec![0u8; 64 * 1024];
            while left > 0 {
                let want = buf.len().min(left as usize);
                match part.read(&mut buf[..want]) {
                    Ok(0) => {
                        let _ = tx.blocking_send(Err(std::io::ErrorKind::UnexpectedEof.into()));
                        return;
                    }
                    Ok(n) => {
                        left -= n as u64;
                        if tx.blocking_send(Ok(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        }
        offset += len;
    }
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn byte_ranges_are_bounded_by_the_file() {
        assert_eq!(byte_range("bytes=0-", 100), Some((0, 100)));
        assert_eq!(byte_range("bytes=10-19", 100), Some((10, 20)));
        assert_eq!(byte_range("bytes=90-500", 100), Some((90, 100)));
        assert_eq!(byte_range("bytes=-10", 100), Some((90, 100)));
        assert_eq!(byte_range("bytes=100-", 100), None);
        assert_eq!(byte_range("bytes=5-1", 100), None);
        assert_eq!(byte_range("bytes=0-1,4-5", 100), None);
        assert_eq!(byte_range("items=0-1", 100), None);
    }
}
