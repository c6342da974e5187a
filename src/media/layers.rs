//! Simulcast layer choice: the customer's browser sends the picture twice (a small, low
//! rate layer and the full one); each technician gets the layer their measured downlink
//! allows, or no video at all when even the small one does not fit (audio goes on).

use str0m::media::Rid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    Low,
    High,
}

impl Layer {
    /// The RTP stream id the customer's page gives the layer (`sendEncodings[].rid`).
    pub fn rid(self) -> Rid {
        match self {
            Self::Low => "l".into(),
            Self::High => "h".into(),
        }
    }

    pub fn of(rid: Rid) -> Option<Self> {
        [Self::Low, Self::High].into_iter().find(|l| l.rid() == rid)
    }
}

/// Estimates, in bit/s, at which a technician moves between layers. Each move up needs
/// more than the move back down, so an estimate hovering near a threshold does not flip
/// layers back and forth. The page caps the layers at 150 and 900 kbit/s.
const HIGH_UP: u64 = 1_100_000;
const HIGH_DOWN: u64 = 800_000;
const VIDEO_RESUME: u64 = 160_000;
const VIDEO_SUSPEND: u64 = 90_000;

/// The layer a technician should receive given their current one (`None`: video is
/// suspended) and the latest estimate of their downlink.
pub fn choose(current: Option<Layer>, estimate_bps: u64) -> Option<Layer> {
    let (high_at, video_at) = match current {
        Some(Layer::High) => (HIGH_DOWN, VIDEO_SUSPEND),
        Some(Layer::Low) => (HIGH_UP, VIDEO_SUSPEND),
        None => (HIGH_UP, VIDEO_RESUME),
    };
    if estimate_bps >= high_at {
        Some(Layer::High)
    } else if estimate_bps >= video_at {
        Some(Layer::Low)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_follow_the_estimate_with_hysteresis() {
        assert_eq!(choose(Some(Layer::Low), 2_000_000), Some(Layer::High));
        assert_eq!(
            choose(Some(Layer::Low), 1_000_000),
            Some(Layer::Low),
            "not yet"
        );
        assert_eq!(
            choose(Some(Layer::High), 1_000_000),
            Some(Layer::High),
            "not down yet"
        );
        assert_eq!(choose(Some(Layer::High), 500_000), Some(Layer::Low));
        assert_eq!(choose(Some(Layer::Low), 100_000), Some(Layer::Low));
        assert_eq!(choose(Some(Layer::Low), 50_000), None, "too thin for video");
        assert_eq!(choose(None, 120_000), None, "not back until clearly enough");
        assert_eq!(choose(None, 200_000), Some(Layer::Low));
    }

    #[test]
    fn rids_name_the_layers() {
        assert_eq!(Layer::of("h".into()), Some(Layer::High));
        assert_eq!(Layer::of("l".into()), Some(Layer::Low));
        assert_eq!(Layer::of("q".into()), None);
    }
}
