//! Reports over the session history: how many sessions per day or week, per technician
//! and per group, how long they lasted (median and 90th percentile), how often customers
//! declined the camera or shared their microphone, and how many recordings were made.
//! Computed from the session records on request; nothing is kept besides them.

use serde::{Deserialize, Serialize};

use super::model::SupportSession;
use super::toolkit::ConsentChange;
use super::{Live, LiveError};
use crate::auth::{Principal, Role};
use crate::clock::UnixMillis;

const DAY_MS: u64 = 24 * 3600 * 1000;
/// 1970-01-01 was a Thursday, three days after a Monday (weeks start on Mondays).
const THURSDAY_MS: u64 = 3 * DAY_MS;
/// A report covers at most this many periods (about two years of days).
pub const MAX_PERIODS: u64 = 750;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    #[default]
    Day,
    /// ISO weeks, Monday to Sunday (UTC).
    Week,
}

impl Bucket {
    fn len_ms(self) -> u64 {
        match self {
            Self::Day => DAY_MS,
            Self::Week => 7 * DAY_MS,
        }
    }

    /// The start of the period `ms` falls in.
    fn start_of(self, ms: UnixMillis) -> UnixMillis {
        match self {
            Self::Day => ms - ms % DAY_MS,
            Self::Week => ms.saturating_sub((ms + THURSDAY_MS) % (7 * DAY_MS)),
        }
    }
}

/// The figures of a set of sessions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Figures {
    pub sessions: u64,
    /// The customer answered the consent question (either way).
    pub answered: u64,
    /// The customer declined the camera and never agreed to it in that session.
    pub declined: u64,
    /// The customer agreed to share the camera.
    pub granted: u64,
    /// Of those, sessions where the microphone was shared too.
    pub microphone_shared: u64,
    pub recordings: u64,
    /// From the customer joining to the session's end, over ended sessions the customer
    /// joined (nearest-rank percentiles).
    pub median_duration_secs: Option<u64>,
    pub p90_duration_secs: Option<u64>,
    /// `declined / answered`.
    pub declined_rate: Option<f64>,
    /// `microphone_shared / granted`.
    pub microphone_rate: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Period {
    pub start_ms: UnixMillis,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A technician's or a group's line.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Line {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Report {
    pub since_ms: UnixMillis,
    pub until_ms: UnixMillis,
    pub bucket: Bucket,
    /// `account` for an account admin (every session), `own` for a technician (their own).
    pub scope: String,
    pub totals: Figures,
    /// Every period from `since_ms` to `until_ms`, empty ones included.
    pub periods: Vec<Period>,
    /// By sessions, most first.
    pub technicians: Vec<Line>,
    pub groups: Vec<Line>,
}

#[derive(Default)]
struct Tally {
    figures: Figures,
    durations: Vec<u64>,
}

impl Tally {
    fn add(&mut self, s: &SupportSession) {
        let f = &mut self.figures;
        f.sessions += 1;
        let granted = s
            .consent_log
            .iter()
            .any(|e| e.event == ConsentChange::Granted && e.camera);
        let answered = s
            .consent_log
            .iter()
            .any(|e| matches!(e.event, ConsentChange::Granted | ConsentChange::Declined));
        if answered {
            f.answered += 1;
        }
        if granted {
            f.granted += 1;
            if s.consent_log.iter().any(|e| e.microphone) {
                f.microphone_shared += 1;
            }
        } else if answered {
            f.declined += 1;
        }
        f.recordings += s.recordings.len() as u64;
        if let (Some(joined), Some(ended)) = (s.joined_ms, s.ended_ms) {
            self.durations.push(ended.saturating_sub(joined) / 1000);
        }
    }

    fn finish(mut self) -> Figures {
        self.durations.sort_unstable();
        let f = &mut self.figures;
        f.median_duration_secs = nearest_rank(&self.durations, 50);
        f.p90_duration_secs = nearest_rank(&self.durations, 90);
        f.declined_rate = ratio(f.declined, f.answered);
        f.microphone_rate = ratio(f.microphone_shared, f.granted);
        self.figures
    }
}

/// The nearest-rank percentile of sorted values: the smallest value that at least `p` %
/// of them do not exceed.
fn nearest_rank(sorted: &[u64], p: u64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as u64).div_ceil(100).max(1);
    sorted.get(rank as usize - 1).copied()
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// Builds the report of `sessions` created in `[since_ms, until_ms)`; `groups` names the
/// groups to break down by (none for a technician's own report).
pub fn build(
    sessions: &[SupportSession],
    since_ms: UnixMillis,
    until_ms: UnixMillis,
    bucket: Bucket,
    scope: &str,
    groups: &[(String, String)],
) -> Report {
    let first = bucket.start_of(since_ms);
    let count = until_ms
        .saturating_sub(first)
        .div_ceil(bucket.len_ms())
        .max(1);
    let mut periods: Vec<(UnixMillis, Tally)> = (0..count)
        .map(|i| (first + i * bucket.len_ms(), Tally::default()))
        .collect();
    let mut totals = Tally::default();
    let mut technicians: Vec<(String, String, Tally)> = Vec::new();
    let mut by_group: Vec<(String, String, Tally)> = groups
        .iter()
        .map(|(id, name)| (id.clone(), name.clone(), Tally::default()))
        .collect();
    for s in sessions
        .iter()
        .filter(|s| s.created_ms >= since_ms && s.created_ms < until_ms)
    {
        totals.add(s);
        let index = ((s.created_ms - first) / bucket.len_ms()) as usize;
        if let Some((_, tally)) = periods.get_mut(index) {
            tally.add(s);
        }
        match technicians
            .iter_mut()
            .find(|(id, _, _)| *id == s.technician_id.as_str())
        {
            Some((_, _, tally)) => tally.add(s),
            None => {
                let mut tally = Tally::default();
                tally.add(s);
                technicians.push((
                    s.technician_id.to_string(),
                    s.technician_name.clone(),
                    tally,
                ));
            }
        }
        for (id, _, tally) in &mut by_group {
            if s.group_ids.contains(id) {
                tally.add(s);
            }
        }
    }
    let lines = |tallies: Vec<(String, String, Tally)>| {
        let mut lines: Vec<Line> = tallies
            .into_iter()
            .map(|(id, name, tally)| Line {
                id,
                name,
                figures: tally.finish(),
            })
            .collect();
        lines.sort_by(|a, b| {
            b.figures
                .sessions
                .cmp(&a.figures.sessions)
                .then_with(|| a.name.cmp(&b.name))
        });
        lines
    };
    Report {
        since_ms,
        until_ms,
        bucket,
        scope: scope.to_owned(),
        totals: totals.finish(),
        periods: periods
            .into_iter()
            .map(|(start_ms, tally)| Period {
                start_ms,
                figures: tally.finish(),
            })
            .collect(),
        technicians: lines(technicians),
        groups: lines(by_group),
    }
}

/// How many periods a report over `[since_ms, until_ms)` has.
pub fn periods_in(since_ms: UnixMillis, until_ms: UnixMillis, bucket: Bucket) -> u64 {
    until_ms
        .saturating_sub(bucket.start_of(since_ms))
        .div_ceil(bucket.len_ms())
}

impl Live {
    /// The report an account admin (the whole account, by technician and by `groups`) or a
    /// technician (their own sessions) asks for. Without dates: the 30 days up to today.
    pub fn report(
        &self,
        who: &Principal,
        since_ms: Option<UnixMillis>,
        until_ms: Option<UnixMillis>,
        bucket: Bucket,
        groups: &[(String, String)],
    ) -> Result<Report, LiveError> {
        let until_ms =
            until_ms.unwrap_or_else(|| Bucket::Day.start_of(self.clock.now_ms()) + DAY_MS);
        let since_ms = since_ms.unwrap_or_else(|| until_ms.saturating_sub(30 * DAY_MS));
        if since_ms >= until_ms {
            return Err(LiveError::BadMessage(
                "since_ms must come before until_ms".into(),
            ));
        }
        if periods_in(since_ms, until_ms, bucket) > MAX_PERIODS {
            return Err(LiveError::BadMessage(format!(
                "a report covers at most {MAX_PERIODS} periods; choose weeks or a shorter span"
            )));
        }
        let admin = who.role == Role::AccountAdmin;
        let mut sessions = self.sessions(&who.account_id)?.values()?;
        if !admin {
            sessions.retain(|s| s.technician_id == who.user_id);
        }
        let (scope, groups) = if admin {
            ("account", groups)
        } else {
            ("own", &[][..])
        };
        Ok(build(&sessions, since_ms, until_ms, bucket, scope, groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[7], 90), Some(7));
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(nearest_rank(&ten, 50), Some(5));
        assert_eq!(nearest_rank(&ten, 90), Some(9));
        assert_eq!(nearest_rank(&[1, 2, 3], 50), Some(2));
        assert_eq!(nearest_rank(&[1, 2, 3], 90), Some(3));
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-30 was a Monday; 2026-12-02 a Wednesday.
        let monday = 1_795_996_800_000;
        assert_eq!(Bucket::Week.start_of(monday + 2 * DAY_MS + 5), monday);
        assert_eq!(Bucket::Week.start_of(monday), monday);
        assert_eq!(Bucket::Week.start_of(monday - 1), monday - 7 * DAY_MS);
        assert_eq!(Bucket::Day.start_of(monday + DAY_MS + 17), monday + DAY_MS);
    }
}
