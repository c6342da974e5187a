//! A room's recording: the WebM muxer fed by the relay loop, and where its clusters go.

use super::*;

pub(super) struct Recording {
    muxer: crate::webm::Muxer,
    sink: Box<dyn RecordingSink>,
    /// The technician whose voice is recorded: the first to speak. A WebM track carries
    /// one encoder's stream, so other technicians' audio is not recorded.
    technician: Option<PeerId>,
    /// With simulcast: the layer recorded now, and when the full layer was last seen (the
    /// browser sends it only once its uplink allows). The best layer flowing is recorded,
    /// switching at keyframes.
    layer: Option<layers::Layer>,
    high_seen: Option<Instant>,
}

impl Recording {
    pub(super) fn new(sink: Box<dyn RecordingSink>) -> Self {
        Self {
            muxer: crate::webm::Muxer::new(),
            sink,
            technician: None,
            layer: None,
            high_seen: None,
        }
    }

    /// Adds a frame; returns the layer (`Some(None)`: no simulcast) of which a keyframe
    /// is wanted, while the recording waits for one to start or to switch layers.
    pub(super) fn push(
        &mut self,
        from: PeerId,
        role: PeerRole,
        kind: MediaKind,
        data: &MediaData,
        now: Instant,
    ) -> Option<Option<Rid>> {
        use crate::webm::{CUSTOMER_AUDIO_TRACK, TECHNICIAN_AUDIO_TRACK, VIDEO_TRACK};
        let mut wanted_keyframe = None;
        if role == PeerRole::Publisher && kind == MediaKind::Video {
            match data.rid {
                None if !self.muxer.started() => wanted_keyframe = Some(None),
                None => {}
                Some(rid) => {
                    let layer = layers::Layer::of(rid)?;
                    if layer == layers::Layer::High {
                        self.high_seen = Some(now);
                    }
                    let high_flows = self
                        .high_seen
                        .is_some_and(|at| now.duration_since(at) < Duration::from_secs(1));
                    let best = if high_flows {
                        layers::Layer::High
                    } else {
                        layers::Layer::Low
                    };
                    if self.layer != Some(best) {
                        if layer == best && data.is_keyframe() {
                            self.layer = Some(best);
                        } else {
                            wanted_keyframe = Some(Some(best.rid()));
                        }
                    }
                    if self.layer != Some(layer) {
                        return wanted_keyframe;
                    }
                }
            }
        }
        let track = match (role, kind) {
            (PeerRole::Publisher, MediaKind::Video) => VIDEO_TRACK,
            (PeerRole::Publisher, MediaKind::Audio) => CUSTOMER_AUDIO_TRACK,
            (PeerRole::Subscriber, MediaKind::Audio)
                if *self.technician.get_or_insert(from) == from =>
            {
                TECHNICIAN_AUDIO_TRACK
            }
            _ => return wanted_keyframe,
        };
        let keyframe = kind == MediaKind::Audio || data.is_keyframe();
        if let Some(cluster) = self.muxer.push(track, now, keyframe, &data.data) {
            self.sink.cluster(cluster);
        }
        wanted_keyframe
    }

    pub(super) fn finish(self) {
        let (last, summary) = self.muxer.finish();
        self.sink.finish(last, summary);
    }
}
