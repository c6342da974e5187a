//! A WebM muxer for recordings, shaped for encryption at rest.
//!
//! A seekable WebM (duration in the header, cues at the end) is normally written by
//! seeking back once the recording ends; ours is written into an encrypted stream that
//! cannot be patched. So the file is produced in three parts: the clusters (streamed out
//! while recording), then, once the duration and cluster positions are known, the head
//! (EBML header, segment header, seek head, info, tracks) and the tail (cues). Played
//! back as `head ++ body ++ tail` it is an ordinary, seekable WebM file. Every size and
//! position is written with a fixed width, so the head's length does not depend on the
//! values in it.
//!
//! Timestamps are the relay's arrival times: the tracks come from different senders whose
//! RTP clocks are unrelated, and arrival order is what the technician saw and heard.

use std::time::Instant;

/// Track numbers; fixed so that blocks can be written before the header.
pub const VIDEO_TRACK: u8 = 1;
pub const CUSTOMER_AUDIO_TRACK: u8 = 2;
pub const TECHNICIAN_AUDIO_TRACK: u8 = 3;
const TRACKS: usize = 3;

/// A cluster is closed at the first video keyframe after this long, or after `MAX` in
/// any case (block timestamps are 16-bit milliseconds relative to their cluster).
const CLUSTER_MIN_MS: u64 = 1_000;
const CLUSTER_MAX_MS: u64 = 5_000;
const CLUSTER_MAX_BYTES: usize = 8 << 20;

mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const SEEK: u32 = 0x4DBB;
    pub const SEEK_ID: u32 = 0x53AB;
    pub const SEEK_POSITION: u32 = 0x53AC;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const NAME: u32 = 0x536E;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const SEEK_PRE_ROLL: u32 = 0x56BB;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const AUDIO: u32 = 0xE1;
    pub const SAMPLING_FREQUENCY: u32 = 0xB5;
    pub const CHANNELS: u32 = 0x9F;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;
}

/// What the head and tail need to know about the clusters written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub duration_ms: u64,
    /// Bytes of clusters written (the body).
    pub body_len: u64,
    /// (time in ms, offset of the cluster within the body) for clusters that start with a
    /// video keyframe.
    pub cues: Vec<(u64, u64)>,
    pub video_size: Option<(u16, u16)>,
    /// Frames written per track (index = track number - 1).
    pub frames: [u64; TRACKS],
}

/// Collects frames into clusters. Nothing is written before the first video keyframe,
/// so a recording always starts with a decodable picture.
pub struct Muxer {
    start: Option<Instant>,
    cluster: Vec<u8>,
    cluster_start_ms: u64,
    cluster_has_keyframe: bool,
    last_ms: u64,
    summary: Summary,
}

impl Default for Muxer {
    fn default() -> Self {
        Self::new()
    }
}

impl Muxer {
    pub fn new() -> Self {
        Self {
            start: None,
            cluster: Vec::new(),
            cluster_start_ms: 0,
            cluster_has_keyframe: false,
            last_ms: 0,
            summary: Summary::default(),
        }
    }

    /// Whether the recording has begun (a video keyframe arrived).
    pub fn started(&self) -> bool {
        self.start.is_some()
    }

    /// Adds a frame; returns a finished cluster when this frame opened a new one.
    pub fn push(&mut self, track: u8, at: Instant, keyframe: bool, data: &[u8]) -> Option<Vec<u8>> {
        if !(1..=TRACKS as u8).contains(&track) || data.is_empty() {
            return None;
        }
        let video_key = track == VIDEO_TRACK && keyframe;
        let start = match self.start {
            Some(start) => start,
            None if video_key => *self.start.insert(at),
            None => return None,
        };
        // Arrival times are monotonic; the max guards against callers that are not.
        let ms = (at.saturating_duration_since(start).as_millis() as u64).max(self.last_ms);
        self.last_ms = ms;
        // The largest picture recorded (simulcast layers may change the size).
        if video_key
            && let Some(size) = vp8_size(data)
            && self.summary.video_size.is_none_or(|(w, h)| {
                u32::from(size.0) * u32::from(size.1) > u32::from(w) * u32::from(h)
            })
        {
            self.summary.video_size = Some(size);
        }
        let age = ms - self.cluster_start_ms;
        let finished = if self.cluster.is_empty() {
            None
        } else if (video_key && age >= CLUSTER_MIN_MS)
            || age >= CLUSTER_MAX_MS
            || self.cluster.len() >= CLUSTER_MAX_BYTES
        {
            self.close_cluster()
        } else {
            None
        };
        if self.cluster.is_empty() {
            self.cluster_start_ms = ms;
            self.cluster_has_keyframe = video_key;
        }
        let relative = (ms - self.cluster_start_ms) as i16;
        let mut block = Vec::with_capacity(data.len() + 4);
        block.push(0x80 | track);
        block.extend_from_slice(&relative.to_be_bytes());
        // Audio frames are always keyframes; video only when it is one.
        let flags = if track == VIDEO_TRACK && !keyframe {
            0x00
        } else {
            0x80
        };
        block.push(flags);
        block.extend_from_slice(data);
        element(&mut self.cluster, id::SIMPLE_BLOCK, &block);
        self.summary.frames[usize::from(track - 1)] += 1;
        finished
    }

    fn close_cluster(&mut self) -> Option<Vec<u8>> {
        if self.cluster.is_empty() {
            return None;
        }
        let mut body = Vec::with_capacity(self.cluster.len() + 16);
        uint_element(&mut body, id::TIMESTAMP, self.cluster_start_ms);
        body.append(&mut self.cluster);
        let mut out = Vec::with_capacity(body.len() + 12);
        element(&mut out, id::CLUSTER, &body);
        if self.cluster_has_keyframe {
            self.summary
                .cues
                .push((self.cluster_start_ms, self.summary.body_len));
        }
        self.summary.body_len += out.len() as u64;
        Some(out)
    }

    /// Ends the recording: the last cluster (if any) and the summary for head and tail.
    pub fn finish(mut self) -> (Option<Vec<u8>>, Summary) {
        let last = self.close_cluster();
        let mut summary = self.summary;
        if self.start.is_some() {
            // The last frame lasts about one video frame interval.
            summary.duration_ms = self.last_ms + 33;
        }
        (last, summary)
    }
}

/// The EBML header, segment header, seek head, info and tracks.
pub fn head(summary: &Summary) -> Vec<u8> {
    let tail_len = tail(summary).len() as u64;
    let meta = segment_meta(summary, 0);
    let cues_at = meta.len() as u64 + summary.body_len;
    let meta = segment_meta(summary, cues_at);
    let mut out = Vec::new();
    let mut ebml = Vec::new();
    uint_element(&mut ebml, id::EBML_VERSION, 1);
    uint_element(&mut ebml, id::EBML_READ_VERSION, 1);
    uint_element(&mut ebml, id::EBML_MAX_ID_LENGTH, 4);
    uint_element(&mut ebml, id::EBML_MAX_SIZE_LENGTH, 8);
    element(&mut ebml, id::DOC_TYPE, b"webm");
    uint_element(&mut ebml, id::DOC_TYPE_VERSION, 4);
    uint_element(&mut ebml, id::DOC_TYPE_READ_VERSION, 2);
    element(&mut out, id::EBML, &ebml);
    write_id(&mut out, id::SEGMENT);
    write_size(&mut out, meta.len() as u64 + summary.body_len + tail_len);
    out.extend_from_slice(&meta);
    out
}

/// The cues, written after the body; positions follow [`head`]'s layout.
pub fn tail(summary: &Summary) -> Vec<u8> {
    let meta_len = segment_meta(summary, 0).len() as u64;
    let mut cues = Vec::new();
    for (time, offset) in &summary.cues {
        let mut positions = Vec::new();
        uint_element(&mut positions, id::CUE_TRACK, u64::from(VIDEO_TRACK));
        fixed_uint_element(&mut positions, id::CUE_CLUSTER_POSITION, meta_len + offset);
        let mut point = Vec::new();
        uint_element(&mut point, id::CUE_TIME, *time);
        element(&mut point, id::CUE_TRACK_POSITIONS, &positions);
        element(&mut cues, id::CUE_POINT, &point);
    }
    let mut out = Vec::new();
    if !cues.is_empty() {
        element(&mut out, id::CUES, &cues);
    }
    out
}

/// Seek head, info and tracks: everything between the segment header and the clusters.
/// Its length is the same whatever `cues_at` is.
fn segment_meta(summary: &Summary, cues_at: u64) -> Vec<u8> {
    let mut info = Vec::new();
    uint_element(&mut info, id::TIMESTAMP_SCALE, 1_000_000);
    element(
        &mut info,
        id::DURATION,
        &(summary.duration_ms as f64).to_be_bytes(),
    );
    element(&mut info, id::MUXING_APP, b"sightline");
    element(&mut info, id::WRITING_APP, b"sightline");

    let mut tracks = Vec::new();
    if summary.frames[usize::from(VIDEO_TRACK - 1)] > 0 {
        let (width, height) = summary.video_size.unwrap_or((640, 480));
        let mut video = Vec::new();
        uint_element(&mut video, id::PIXEL_WIDTH, u64::from(width));
        uint_element(&mut video, id::PIXEL_HEIGHT, u64::from(height));
        let mut entry = track_entry(VIDEO_TRACK, 1, "V_VP8", "Customer camera");
        element(&mut entry, id::VIDEO, &video);
        element(&mut tracks, id::TRACK_ENTRY, &entry);
    }
    for (track, name) in [
        (CUSTOMER_AUDIO_TRACK, "Customer microphone"),
        (TECHNICIAN_AUDIO_TRACK, "Technician microphone"),
    ] {
        if summary.frames[usize::from(track - 1)] == 0 {
            continue;
        }
        let mut entry = track_entry(track, 2, "A_OPUS", name);
        element(&mut entry, id::CODEC_PRIVATE, &opus_head());
        // Opus decoders need 80 ms of pre-roll after a seek (Matroska codec mapping).
        uint_element(&mut entry, id::SEEK_PRE_ROLL, 80_000_000);
        let mut audio = Vec::new();
        element(&mut audio, id::SAMPLING_FREQUENCY, &48_000f64.to_be_bytes());
        uint_element(&mut audio, id::CHANNELS, 2);
        element(&mut entry, id::AUDIO, &audio);
        element(&mut tracks, id::TRACK_ENTRY, &entry);
    }

    // Positions are relative to the start of the segment's data, which begins with the
    // seek head; its own length is fixed, so the offsets can be computed up front.
    let seek_head_len = seek_head(0, 0, 0).len() as u64;
    let mut info_el = Vec::new();
    element(&mut info_el, id::INFO, &info);
    let mut tracks_el = Vec::new();
    element(&mut tracks_el, id::TRACKS, &tracks);
    let info_at = seek_head_len;
    let tracks_at = info_at + info_el.len() as u64;
    let mut out = seek_head(info_at, tracks_at, cues_at);
    out.extend_from_slice(&info_el);
    out.extend_from_slice(&tracks_el);
    out
}

fn seek_head(info_at: u64, tracks_at: u64, cues_at: u64) -> Vec<u8> {
    let mut seeks = Vec::new();
    for (target, at) in [
        (id::INFO, info_at),
        (id::TRACKS, tracks_at),
        (id::CUES, cues_at),
    ] {
        let mut seek = Vec::new();
        let mut target_id = Vec::new();
        write_id(&mut target_id, target);
        element(&mut seek, id::SEEK_ID, &target_id);
        fixed_uint_element(&mut seek, id::SEEK_POSITION, at);
        element(&mut seeks, id::SEEK, &seek);
    }
    let mut out = Vec::new();
    element(&mut out, id::SEEK_HEAD, &seeks);
    out
}

fn track_entry(number: u8, kind: u64, codec: &str, name: &str) -> Vec<u8> {
    let mut entry = Vec::new();
    uint_element(&mut entry, id::TRACK_NUMBER, u64::from(number));
    uint_element(&mut entry, id::TRACK_UID, u64::from(number));
    uint_element(&mut entry, id::TRACK_TYPE, kind);
    uint_element(&mut entry, id::FLAG_LACING, 0);
    element(&mut entry, id::NAME, name.as_bytes());
    element(&mut entry, id::CODEC_ID, codec.as_bytes());
    entry
}

/// The Opus identification header (RFC 7845 §5.1) that WebM carries as codec private
/// data: WebRTC Opus is signalled as two channels at 48 kHz, with no pre-skip.
fn opus_head() -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(2);
    head.extend_from_slice(&0u16.to_le_bytes());
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// Width and height from a VP8 keyframe header (RFC 6386 §9.1).
pub fn vp8_size(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let height = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

fn write_id(out: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(3);
    out.extend_from_slice(&bytes[skip..]);
}

/// Sizes are always written as 8-byte variable-length integers.
fn write_size(out: &mut Vec<u8>, size: u64) {
    let bytes = size.to_be_bytes();
    out.push(0x01);
    out.extend_from_slice(&bytes[1..]);
}

fn element(out: &mut Vec<u8>, id: u32, body: &[u8]) {
    write_id(out, id);
    write_size(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn uint_element(out: &mut Vec<u8>, id: u32, value: u64) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    element(out, id, &bytes[skip..]);
}

/// An unsigned integer with a fixed 8-byte body, so its length does not depend on it.
fn fixed_uint_element(out: &mut Vec<u8>, id: u32, value: u64) {
    element(out, id, &value.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::time::Duration;

    use matroska_demuxer::{Frame, MatroskaFile, TrackType};

    use super::*;

    /// A VP8 keyframe header for the given size, followed by filler.
    fn keyframe(width: u16, height: u16) -> Vec<u8> {
        let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        f.extend_from_slice(&width.to_le_bytes());
        f.extend_from_slice(&height.to_le_bytes());
        f.extend_from_slice(&[7; 100]);
        f
    }

    fn record(seconds: u64) -> Vec<u8> {
        let t0 = Instant::now();
        let mut muxer = Muxer::new();
        let mut body = Vec::new();
        // Audio before the first keyframe is dropped: the recording starts on a picture.
        assert!(
            muxer
                .push(CUSTOMER_AUDIO_TRACK, t0, true, &[1; 40])
                .is_none()
        );
        assert!(!muxer.started());
        for i in 0..seconds * 50 {
            let at = t0 + Duration::from_millis(20 * i + 5);
            if i % 50 == 0 {
                body.extend(
                    muxer
                        .push(VIDEO_TRACK, at, true, &keyframe(1280, 720))
                        .into_iter()
                        .flatten(),
                );
            } else if i % 2 == 0 {
                body.extend(
                    muxer
                        .push(VIDEO_TRACK, at, false, &[9; 60])
                        .into_iter()
                        .flatten(),
                );
            }
            body.extend(
                muxer
                    .push(CUSTOMER_AUDIO_TRACK, at, true, &[1; 40])
                    .into_iter()
                    .flatten(),
            );
            if i % 3 == 0 {
                body.extend(
                    muxer
                        .push(TECHNICIAN_AUDIO_TRACK, at, true, &[2; 30])
                        .into_iter()
                        .flatten(),
                );
            }
        }
        let (last, summary) = muxer.finish();
        body.extend(last.into_iter().flatten());
        assert_eq!(summary.body_len, body.len() as u64);
        let mut file = head(&summary);
        file.extend_from_slice(&body);
        file.extend_from_slice(&tail(&summary));
        file
    }

    #[test]
    fn a_recording_parses_as_webm_with_its_tracks() {
        let file = record(4);
        let mut mkv = MatroskaFile::open(Cursor::new(file)).expect("parses as Matroska");
        assert_eq!(mkv.ebml_header().doc_type(), "webm");
        let duration = mkv.info().duration().expect("duration");
        assert!((3_900.0..4_100.0).contains(&duration), "{duration}");
        let tracks: Vec<(u64, TrackType, String)> = mkv
            .tracks()
            .iter()
            .map(|t| {
                (
                    t.track_number().get(),
                    t.track_type(),
                    t.codec_id().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            tracks,
            vec![
                (1, TrackType::Video, "V_VP8".to_owned()),
                (2, TrackType::Audio, "A_OPUS".to_owned()),
                (3, TrackType::Audio, "A_OPUS".to_owned()),
            ]
        );
        let video = mkv.tracks()[0].video().expect("video settings");
        assert_eq!(
            (video.pixel_width().get(), video.pixel_height().get()),
            (1280, 720)
        );

        let mut frame = Frame::default();
        let mut counts = [0u64; 3];
        let mut last = [0u64; 3];
        while mkv.next_frame(&mut frame).expect("frame") {
            let i = frame.track as usize - 1;
            assert!(frame.timestamp >= last[i], "timestamps never go back");
            last[i] = frame.timestamp;
            counts[i] += 1;
        }
        assert_eq!(counts, [100, 200, 67]);
    }

    #[test]
    fn seeking_through_the_cues_lands_on_a_keyframe() {
        let mut mkv = MatroskaFile::open(Cursor::new(record(4))).expect("parses");
        mkv.seek(2_500).expect("seek");
        let mut frame = Frame::default();
        assert!(mkv.next_frame(&mut frame).expect("frame"));
        assert!(frame.timestamp >= 2_000, "{}", frame.timestamp);
    }

    #[test]
    fn cues_and_seek_head_point_at_their_elements() {
        let file = record(4);
        // The segment's data starts after the EBML header element, the segment id (4
        // bytes) and its 8-byte size.
        let ebml_len = 4 + 8 + usize::from(file[11]);
        let data_start = ebml_len + 12;
        let mut muxer_cues = Vec::new();
        let mut i = 0;
        while let Some(at) = find(&file[i..], &[0xF1, 0x01, 0, 0, 0, 0, 0, 0, 8]) {
            let position = &file[i + at + 9..i + at + 17];
            muxer_cues.push(u64::from_be_bytes(position.try_into().expect("8 bytes")));
            i += at + 1;
        }
        assert!(muxer_cues.len() >= 3, "a cue per keyframe cluster");
        for position in muxer_cues {
            let at = data_start + position as usize;
            assert_eq!(file[at..at + 4], [0x1F, 0x43, 0xB6, 0x75], "a cluster");
        }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    #[test]
    fn nothing_is_written_without_a_keyframe() {
        let mut muxer = Muxer::new();
        let t0 = Instant::now();
        assert!(muxer.push(VIDEO_TRACK, t0, false, &[1; 10]).is_none());
        let (last, summary) = muxer.finish();
        assert!(last.is_none());
        assert_eq!(summary, Summary::default());
    }

    #[test]
    fn vp8_sizes_come_from_keyframes_only() {
        assert_eq!(vp8_size(&keyframe(640, 480)), Some((640, 480)));
        let mut delta = keyframe(640, 480);
        delta[0] |= 1;
        assert_eq!(vp8_size(&delta), None);
        assert_eq!(vp8_size(&[0; 4]), None);
    }
}
