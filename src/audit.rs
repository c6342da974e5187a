//! The security log and the counters that notice guessing.
//!
//! Every security-relevant event is written to the store (one appliance-level log whose
//! entries are hash-chained, [`entry`]), to the `sightline::audit` tracing target and, when
//! configured, to a syslog collector ([`syslog`]). Anomaly rules ([`throttle`]) raise
//! alerts and ask the firewall helper to blocklist the source; [`retention`] trims the
//! log while keeping the chain checkable.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::store::{Collection, Store, StoreError};

mod counts;
mod entry;
mod retention;
mod syslog;
mod throttle;
pub use counts::SecurityCounts;
pub use entry::{Actor, AuditEntry, AuditKind};
pub use retention::{Checkpoint, verify_log};
use syslog::Syslog;
pub use throttle::{GUESS_PENALTY_SECS, GuessAttempt, GuessThrottle};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where the chain of audit entries breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("entry {0} is missing (removed)")]
    Missing(u64),
    #[error("entry {0} does not follow its predecessor (reordered or inserted)")]
    Unlinked(u64),
    #[error("entry {0} was changed after it was written")]
    Changed(u64),
    #[error(
        "the log starts at entry {0}, which no retention cut recorded in the log allows \
         (entries were removed outside retention)"
    )]
    Checkpoint(u64),
}

/// Checks a log (in sequence order) for changed, removed or reordered entries; returns
/// how many entries were checked.
pub fn verify_chain(entries: &[AuditEntry]) -> Result<usize, ChainBreak> {
    verify_from(entries, &Checkpoint::genesis())
}

fn verify_from(entries: &[AuditEntry], start: &Checkpoint) -> Result<usize, ChainBreak> {
    let mut previous = start.prev_hash.clone();
    for (expected_seq, entry) in (start.first_seq..).zip(entries) {
        if entry.seq != expected_seq {
            return Err(if entry.seq > expected_seq {
                ChainBreak::Missing(expected_seq)
            } else {
                ChainBreak::Unlinked(entry.seq)
            });
        }
        if entry.prev_hash != previous {
            return Err(ChainBreak::Unlinked(entry.seq));
        }
        if entry.compute_hash() != entry.hash {
            return Err(ChainBreak::Changed(entry.seq));
        }
        previous = entry.hash.clone();
    }
    Ok(entries.len())
}

/// The log's last entry, noted with it in one transaction: start-up reads it instead of
/// decrypting the whole log, which grows with every session.
#[derive(Serialize, Deserialize)]
struct NotedHead {
    seq: u64,
}

const HEAD_KEY: &str = "head";
const CHECKPOINT_KEY: &str = "checkpoint";

/// Zero-padded so that keys sort in the log's order.
fn entry_key(seq: u64) -> String {
    format!("{seq:016}")
}

pub struct Audit {
    store: Store,
    log: Collection<AuditEntry>,
    noted_head: Collection<NotedHead>,
    checkpoints: Collection<Checkpoint>,
    /// The first entry kept after retention cuts (0 before any).
    first_kept: std::sync::atomic::AtomicU64,
    clock: SharedClock,
    alarm: std::sync::OnceLock<(crate::firewall::BlocklistClient, u32)>,
    syslog: std::sync::OnceLock<Syslog>,
    /// The next sequence number and the hash of the last entry.
    head: Mutex<(u64, String)>,
    pub counts: SecurityCounts,
}

impl Audit {
    pub fn open(store: &Store, clock: SharedClock) -> Result<Self, StoreError> {
        let log = store.global::<AuditEntry>("audit")?;
        let noted_head = store.global::<NotedHead>("audit_head")?;
        let checkpoints = store.global::<Checkpoint>("audit_checkpoint")?;
        let first_kept = checkpoints.get(CHECKPOINT_KEY)?.map_or(0, |c| c.first_seq);
        let last = match noted_head.get(HEAD_KEY)? {
            Some(noted) => Self::last_from(&log, noted.seq)?,
            None => None,
        };
        let last = match last {
            Some(last) => Some(last),
            // No note (a log from before notes, or none yet), or it names an entry that
            // is not there: the whole log, once; the note makes the next start quick.
            None => {
                let last = log.values()?.into_iter().max_by_key(|e| e.seq);
                if let Some(last) = &last {
                    noted_head.put(HEAD_KEY, &NotedHead { seq: last.seq })?;
                }
                last.map(|e| (e.seq, e))
            }
        };
        let head = last.map_or((0, GENESIS.to_owned()), |(seq, e)| (seq + 1, e.hash));
        Ok(Self {
            store: store.clone(),
            log,
            noted_head,
            checkpoints,
            first_kept: std::sync::atomic::AtomicU64::new(first_kept),
            clock,
            alarm: std::sync::OnceLock::new(),
            syslog: std::sync::OnceLock::new(),
            head: Mutex::new(head),
            counts: SecurityCounts::default(),
        })
    }

    pub fn record(&self, kind: AuditKind, actor: Actor<'_>, detail: impl Into<String>) {
        let Actor {
            account_id,
            user_id,
            source,
        } = actor;
        let detail = detail.into();
        self.counts.note(&kind);
        let mut head = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let mut entry = AuditEntry {
            seq: head.0,
            at_ms: self.clock.now_ms(),
            kind,
            account_id: account_id.map(str::to_owned),
            actor: user_id.map(str::to_owned),
            source,
            detail,
            prev_hash: head.1.clone(),
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        *head = (entry.seq + 1, entry.hash.clone());
        let key = entry_key(entry.seq);
        tracing::info!(
            target: "sightline::audit",
            kind = ?entry.kind,
            account_id = entry.account_id.as_deref(),
            actor = entry.actor.as_deref(),
            source = ?entry.source,
            detail = %entry.detail,
        );
        // Never over an existing entry: a stored entry is not lost to a wrong head.
        let noted = NotedHead { seq: entry.seq };
        match self
            .log
            .insert_new_with(&key, &entry, &self.noted_head, HEAD_KEY, &noted)
        {
            Ok(true) => {}
            Ok(false) => tracing::error!(
                seq = entry.seq,
                "audit entry not stored: its number is taken"
            ),
            Err(e) => tracing::error!(error = %e, "audit entry could not be stored"),
        }
        if let Some(syslog) = self.syslog.get() {
            syslog.send(&entry);
        }
    }

    /// Forwards every new entry to a syslog collector (RFC 5424 over UDP, the entry as
    /// JSON in the message) for a SIEM.
    pub fn set_syslog(&self, collector: SocketAddr) -> std::io::Result<()> {
        let bind: SocketAddr = if collector.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = std::net::UdpSocket::bind(bind)?;
        socket.set_nonblocking(true)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "-".into());
        let _ = self.syslog.set(Syslog {
            socket,
            collector,
            host,
        });
        Ok(())
    }

    /// Where anomaly alerts send sources, and for how long.
    pub fn set_blocklist(&self, client: crate::firewall::BlocklistClient, block_secs: u32) {
        let _ = self.alarm.set((client, block_secs));
    }

    /// A source used up its guessing allowance: records that it is throttled and raises
    /// the anomaly alert that blocklists it.
    pub fn source_throttled(&self, source: IpAddr, what: &str) {
        self.record(AuditKind::SourceThrottled, Actor::stranger(source), what);
        self.alert(source, what);
    }

    /// An anomaly rule fired for `source`: records an alert entry and asks the firewall
    /// to blocklist the source for the configured time.
    pub fn alert(&self, source: IpAddr, why: &str) {
        let outcome = match self.alarm.get() {
            Some((client, secs)) => match client.block(source, *secs) {
                Ok(()) => format!("blocklisted for {secs} s"),
                Err(e) => format!("not blocklisted: {e}"),
            },
            None => "not blocklisted: no firewall configured".to_owned(),
        };
        tracing::warn!(target: "sightline::alert", %source, why, outcome = %outcome, "anomaly");
        self.record(
            AuditKind::AnomalyAlert,
            Actor::stranger(source),
            format!("{why}; {outcome}"),
        );
    }

    /// The number and entry of the log's last key, read forward from key `seq` (one read
    /// when the note is current, as it always is unless the store was tampered with);
    /// `None` when `seq` itself is missing. Walks by key, not by the entries' own numbers,
    /// so entries moved between keys cannot send it round in circles.
    fn last_from(
        log: &Collection<AuditEntry>,
        seq: u64,
    ) -> Result<Option<(u64, AuditEntry)>, StoreError> {
        let Some(mut last) = log.get(&entry_key(seq))? else {
            return Ok(None);
        };
        let mut at = seq;
        while let Some(next) = log.get(&entry_key(at + 1))? {
            last = next;
            at += 1;
        }
        Ok(Some((at, last)))
    }

    /// Entries newest first, read one at a time as the caller goes: a page of the log
    /// costs what it shows (and what its filter skips), not the whole history in memory.
    /// Numbers without an entry (one that could not be stored) are passed over.
    pub fn newest_first(&self) -> impl Iterator<Item = Result<AuditEntry, StoreError>> + '_ {
        let next = self.head.lock().unwrap_or_else(|p| p.into_inner()).0;
        let first = self.first_kept.load(std::sync::atomic::Ordering::SeqCst);
        (first..next)
            .rev()
            .filter_map(|seq| self.log.get(&entry_key(seq)).transpose())
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = self.log.values()?;
        entries.sort_by_key(|e| e.seq);
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::ManualClock;
    use crate::store::keys::MasterKey;

    fn log_with_entries(dir: &std::path::Path) -> (Store, Audit) {
        let store = Store::open(dir, MasterKey::generate()).expect("store");
        let audit = Audit::open(&store, Arc::new(ManualClock::new(1_000))).expect("audit");
        for i in 0..5 {
            audit.record(
                AuditKind::LoginFailed,
                Actor::account("acct"),
                format!("attempt {i}"),
            );
        }
        (store, audit)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let dir = tempfile::tempdir().expect("dir");
        let (_store, audit) = log_with_entries(dir.path());
        assert_eq!(verify_chain(&audit.entries().expect("entries")), Ok(5));
    }

    #[test]
    fn a_changed_entry_is_detected() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, audit) = log_with_entries(dir.path());
        let raw = store.global::<AuditEntry>("audit").expect("log");
        let mut entry = raw.get(&format!("{:016}", 2)).expect("get").expect("entry");
        entry.detail = "nothing happened".into();
        raw.put(&format!("{:016}", 2), &entry).expect("put");
        assert_eq!(
            verify_chain(&audit.entries().expect("entries")),
            Err(ChainBreak::Changed(2))
        );
    }

    #[test]
    fn a_removed_entry_is_detected() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, audit) = log_with_entries(dir.path());
        let raw = store.global::<AuditEntry>("audit").expect("log");
        raw.remove(&format!("{:016}", 3)).expect("remove");
        assert_eq!(
            verify_chain(&audit.entries().expect("entries")),
            Err(ChainBreak::Missing(3))
        );
    }

    #[test]
    fn reordered_entries_are_detected() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, audit) = log_with_entries(dir.path());
        let raw = store.global::<AuditEntry>("audit").expect("log");
        let mut one = raw.get(&format!("{:016}", 1)).expect("get").expect("1");
        let mut two = raw.get(&format!("{:016}", 2)).expect("get").expect("2");
        std::mem::swap(&mut one.seq, &mut two.seq);
        raw.put(&format!("{:016}", 1), &two).expect("put");
        raw.put(&format!("{:016}", 2), &one).expect("put");
        assert!(matches!(
            verify_chain(&audit.entries().expect("entries")),
            Err(ChainBreak::Unlinked(1) | ChainBreak::Changed(1))
        ));
    }

    #[test]
    fn the_chain_continues_across_restarts() {
        let dir = tempfile::tempdir().expect("dir");
        let master_path = dir.path().join("master.key");
        {
            let master = MasterKey::generate();
            master.write(&master_path).expect("write");
            let store = Store::open(dir.path(), master).expect("store");
            let audit = Audit::open(&store, Arc::new(ManualClock::new(1))).expect("audit");
            audit.record(AuditKind::Logout, Actor::APPLIANCE, "first run");
            store.flush_blocking().expect("flush");
        }
        let store =
            Store::open(dir.path(), MasterKey::read(&master_path).expect("read")).expect("store");
        let audit = Audit::open(&store, Arc::new(ManualClock::new(2))).expect("audit");
        audit.record(AuditKind::Logout, Actor::APPLIANCE, "second run");
        assert_eq!(verify_chain(&audit.entries().expect("entries")), Ok(2));
    }

    /// What a start-up finds as the next entry's number and previous hash.
    fn reopened_head(store: &Store) -> (u64, String) {
        let audit = Audit::open(store, Arc::new(ManualClock::new(2_000))).expect("audit");
        audit.head.into_inner().expect("head")
    }

    #[test]
    fn start_up_reads_the_noted_head_not_the_whole_log() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, audit) = log_with_entries(dir.path());
        let expected = audit.head.lock().expect("head").clone();
        assert_eq!(expected.0, 5);
        // An old entry that no longer decodes: reading the whole log would fail on it.
        let raw = store.global::<String>("audit").expect("log");
        raw.put(&entry_key(1), &"not an entry".to_owned())
            .expect("put");
        assert_eq!(reopened_head(&store), expected);
    }

    #[test]
    fn a_stale_or_missing_note_still_finds_the_last_entry() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, audit) = log_with_entries(dir.path());
        let expected = audit.head.lock().expect("head").clone();
        let notes = store.global::<NotedHead>("audit_head").expect("notes");
        notes.put(HEAD_KEY, &NotedHead { seq: 2 }).expect("put");
        assert_eq!(
            reopened_head(&store),
            expected,
            "read forward from a stale note"
        );
        notes.remove(HEAD_KEY).expect("remove");
        assert_eq!(reopened_head(&store), expected, "a log from before notes");
        let noted = notes.get(HEAD_KEY).expect("get").expect("noted again");
        assert_eq!(noted.seq, 4);
        notes.put(HEAD_KEY, &NotedHead { seq: 99 }).expect("put");
        assert_eq!(reopened_head(&store), expected, "a note naming no entry");
    }

    #[test]
    fn newest_first_reads_back_from_the_head_over_gaps() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, audit) = log_with_entries(dir.path());
        let raw = store.global::<AuditEntry>("audit").expect("log");
        raw.remove(&entry_key(3)).expect("remove");
        let seqs: Vec<u64> = audit
            .newest_first()
            .map(|e| e.expect("entry").seq)
            .collect();
        assert_eq!(seqs, vec![4, 2, 1, 0]);
        let newest_two: Vec<String> = audit
            .newest_first()
            .take(2)
            .map(|e| e.expect("entry").detail)
            .collect();
        assert_eq!(newest_two, vec!["attempt 4", "attempt 2"]);
    }

    #[test]
    fn an_entry_moved_to_another_key_does_not_stall_start_up() {
        let dir = tempfile::tempdir().expect("dir");
        let (store, _audit) = log_with_entries(dir.path());
        // Key 4 now holds entry 1: reading forward by the entries' own numbers would go
        // 2, 3, 4 → 1 → 2 … for ever.
        let raw = store.global::<AuditEntry>("audit").expect("log");
        let one = raw.get(&entry_key(1)).expect("get").expect("1");
        raw.put(&entry_key(4), &one).expect("put");
        let notes = store.global::<NotedHead>("audit_head").expect("notes");
        notes.put(HEAD_KEY, &NotedHead { seq: 2 }).expect("put");
        let (done, opened) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(reopened_head(&store));
        });
        // Only a guard against hanging the test run; start-up takes microseconds.
        let (next, previous) = opened
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("start-up finished");
        assert_eq!((next, previous), (5, one.hash));
    }
}
