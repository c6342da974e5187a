//! Retention of the security log: entries past the period are cut, and the chain goes on
//! verifiably from a checkpoint that a chained cut entry names.

use serde::{Deserialize, Serialize};

use super::{
    Audit, AuditEntry, AuditKind, CHECKPOINT_KEY, ChainBreak, GENESIS, entry_key, verify_chain,
    verify_from,
};
use crate::audit::Actor;
use crate::clock::UnixMillis;
use crate::store::StoreError;

/// Entries removed per transaction when the log is cut.
const CUT_BATCH: u64 = 5_000;

/// Where the kept log starts after a retention cut: its first entry and the hash that
/// entry continues from. The cut itself is an entry of the chain ([`AuditKind::AuditLogTrimmed`])
/// naming how far it went, so a checkpoint moved further than a cut allows is detected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub first_seq: u64,
    pub prev_hash: String,
}

impl Checkpoint {
    pub(super) fn genesis() -> Self {
        Self {
            first_seq: 0,
            prev_hash: GENESIS.to_owned(),
        }
    }
}

/// A cut's entry text: names the entry the kept log continues at and that entry's
/// predecessor hash, which [`verify_log`] reads back.
fn cut_detail(removed: u64, cutoff_ms: UnixMillis, continues: &Checkpoint) -> String {
    format!(
        "{removed} entries older than {cutoff_ms} removed; the log continues at entry {} \
         from hash {}",
        continues.first_seq, continues.prev_hash
    )
}

fn parse_cut(detail: &str) -> Option<Checkpoint> {
    let (_, rest) = detail.split_once("the log continues at entry ")?;
    let (seq, hash) = rest.split_once(" from hash ")?;
    Some(Checkpoint {
        first_seq: seq.parse().ok()?,
        prev_hash: hash.to_owned(),
    })
}

/// Checks a log that may have been cut by retention: it must start where `checkpoint`
/// says, and the newest cut recorded in the log must allow a start that late.
pub fn verify_log(
    entries: &[AuditEntry],
    checkpoint: Option<&Checkpoint>,
) -> Result<usize, ChainBreak> {
    let Some(checkpoint) = checkpoint else {
        return verify_chain(entries);
    };
    let allowed = entries
        .iter()
        .rev()
        .find(|e| e.kind == AuditKind::AuditLogTrimmed)
        .and_then(|e| parse_cut(&e.detail));
    if allowed.is_none_or(|cut| checkpoint.first_seq > cut.first_seq) {
        return Err(ChainBreak::Checkpoint(checkpoint.first_seq));
    }
    verify_from(entries, checkpoint)
}

impl Audit {
    /// Where the kept log starts, if it was ever cut.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        self.checkpoints.get(CHECKPOINT_KEY)
    }

    /// `sightline audit verify`: the chain from its start (or the last retention cut).
    pub fn verify(&self) -> Result<Result<usize, ChainBreak>, StoreError> {
        Ok(verify_log(&self.entries()?, self.checkpoint()?.as_ref()))
    }

    /// Removes the entries written before `cutoff_ms` (never the newest one): the cut is
    /// recorded in the chain first, then the entries go in batches, each together with
    /// the checkpoint that says where the kept log now starts. Returns how many went.
    pub fn cut_before(&self, cutoff_ms: UnixMillis) -> Result<u64, StoreError> {
        self.cut_in_batches(cutoff_ms, CUT_BATCH)
    }

    fn cut_in_batches(&self, cutoff_ms: UnixMillis, batch: u64) -> Result<u64, StoreError> {
        use std::sync::atomic::Ordering;
        let mut end = self.checkpoint()?.unwrap_or_else(Checkpoint::genesis);
        let start = end.first_seq;
        let next = self.head.lock().unwrap_or_else(|p| p.into_inner()).0;
        while end.first_seq + 1 < next {
            match self.log.get(&entry_key(end.first_seq))? {
                Some(entry) if entry.at_ms < cutoff_ms => {
                    end = Checkpoint {
                        first_seq: end.first_seq + 1,
                        prev_hash: entry.hash,
                    };
                }
                _ => break,
            }
        }
        let removed = end.first_seq - start;
        if removed == 0 {
            return Ok(0);
        }
        self.record(
            AuditKind::AuditLogTrimmed,
            Actor::APPLIANCE,
            cut_detail(removed, cutoff_ms, &end),
        );
        let mut from = start;
        while from < end.first_seq {
            let to = (from + batch.max(1)).min(end.first_seq);
            // The checkpoint of a partial cut names the first entry still kept; the
            // entry before it gives its hash.
            let checkpoint = if to == end.first_seq {
                end.clone()
            } else {
                match self.log.get(&entry_key(to - 1))? {
                    Some(last) => Checkpoint {
                        first_seq: to,
                        prev_hash: last.hash,
                    },
                    None => break,
                }
            };
            self.store.batch(|b| {
                b.put(&self.checkpoints, CHECKPOINT_KEY, &checkpoint)?;
                for seq in from..to {
                    b.remove(&self.log, &entry_key(seq))?;
                }
                Ok(())
            })?;
            self.first_kept.store(to, Ordering::SeqCst);
            from = to;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::Store;
    use crate::store::keys::MasterKey;

    const DAY: u64 = 24 * 3_600_000;

    /// Five entries on day 0, three on day 100; the clock then stands on day 100.
    fn log_over_a_hundred_days(dir: &std::path::Path) -> (Store, Audit, ManualClock) {
        let store = Store::open(dir, MasterKey::generate()).expect("store");
        let clock = ManualClock::new(1_000);
        let audit = Audit::open(&store, Arc::new(clock.clone())).expect("audit");
        for i in 0..5 {
            audit.record(AuditKind::Logout, Actor::APPLIANCE, format!("old {i}"));
        }
        clock.advance_secs(100 * DAY / 1000);
        for i in 0..3 {
            audit.record(AuditKind::Logout, Actor::APPLIANCE, format!("new {i}"));
        }
        (store, audit, clock)
    }

    fn details(audit: &Audit) -> Vec<String> {
        audit
            .entries()
            .expect("entries")
            .into_iter()
            .map(|e| e.detail)
            .collect()
    }

    #[test]
    fn a_cut_removes_only_entries_older_than_the_period_and_the_chain_still_verifies() {
        let dir = tempfile::tempdir().expect("dir");
        let (_store, audit, _clock) = log_over_a_hundred_days(dir.path());
        assert_eq!(audit.verify().expect("read"), Ok(8), "before the cut");
        // Day 50 as the cut-off: nothing of day 100 may go.
        assert_eq!(audit.cut_in_batches(1_000 + 50 * DAY, 2).expect("cut"), 5);
        let kept = details(&audit);
        assert_eq!(&kept[..3], ["new 0", "new 1", "new 2"]);
        assert!(kept[3].contains("5 entries older than"), "{kept:?}");
        assert_eq!(audit.verify().expect("read"), Ok(4), "after the cut");
        assert_eq!(
            audit.checkpoint().expect("read").map(|c| c.first_seq),
            Some(5)
        );
        assert_eq!(
            audit.newest_first().count(),
            4,
            "the page reads only what is kept"
        );
        // A second cut at the same point removes nothing.
        assert_eq!(audit.cut_in_batches(1_000 + 50 * DAY, 2).expect("cut"), 0);
    }

    #[test]
    fn the_newest_entry_is_never_cut_and_the_chain_goes_on_after_a_restart() {
        let dir = tempfile::tempdir().expect("dir");
        let master_path = dir.path().join("master.key");
        let master = MasterKey::generate();
        master.write(&master_path).expect("write");
        {
            let store = Store::open(dir.path(), master).expect("store");
            let audit = Audit::open(&store, Arc::new(ManualClock::new(1_000))).expect("audit");
            for i in 0..3 {
                audit.record(AuditKind::Logout, Actor::APPLIANCE, format!("old {i}"));
            }
            // Everything is older than the cut-off; the newest entry stays anyway.
            assert_eq!(audit.cut_before(u64::MAX).expect("cut"), 2);
            assert_eq!(audit.verify().expect("read"), Ok(2));
            store.flush_blocking().expect("flush");
        }
        let store =
            Store::open(dir.path(), MasterKey::read(&master_path).expect("read")).expect("store");
        let audit = Audit::open(&store, Arc::new(ManualClock::new(2_000))).expect("audit");
        audit.record(AuditKind::Logout, Actor::APPLIANCE, "after the restart");
        assert_eq!(audit.verify().expect("read"), Ok(3));
    }

    #[test]
    fn entries_removed_beyond_the_recorded_cut_are_detected() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, audit, _clock) = log_over_a_hundred_days(dir.path());
        audit.cut_before(1_000 + 50 * DAY).expect("cut");
        // Someone removes the first kept entry and moves the checkpoint past it.
        let raw = store.global::<AuditEntry>("audit").expect("log");
        let first = raw.remove(&entry_key(5)).expect("remove").expect("entry");
        store
            .global::<Checkpoint>("audit_checkpoint")
            .expect("checkpoints")
            .put(
                CHECKPOINT_KEY,
                &Checkpoint {
                    first_seq: 6,
                    prev_hash: first.hash,
                },
            )
            .expect("put");
        assert_eq!(
            audit.verify().expect("read"),
            Err(ChainBreak::Checkpoint(6))
        );
    }

    #[test]
    fn a_log_cut_without_its_cut_entry_is_detected() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, audit, _clock) = log_over_a_hundred_days(dir.path());
        audit.cut_before(1_000 + 50 * DAY).expect("cut");
        let raw = store.global::<AuditEntry>("audit").expect("log");
        raw.remove(&entry_key(8))
            .expect("remove the cut's own entry");
        assert!(audit.verify().expect("read").is_err());
    }
}
