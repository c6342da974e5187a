//! Where the relay's recordings go: a thread per recording that encrypts the clusters
//! into the account's files as they arrive, then writes the head and tail.

use std::io::Write;
use std::sync::mpsc;

use crate::ids::SessionId;
use crate::media::RecordingSink;
use crate::store::{AccountStore, StoreError};
use crate::webm::{self, Summary};

enum Chunk {
    Cluster(Vec<u8>),
    Finish(Option<Vec<u8>>, Summary),
}

/// The stored names of a recording's three parts. Like every file of a session they
/// start with its id, which is how exports and deletions find them.
pub fn part_names(session_id: &SessionId, recording_id: &str) -> [String; 3] {
    ["head", "body", "tail"].map(|part| format!("{session_id}-rec-{recording_id}-{part}"))
}

/// A recording as stored: what the muxer wrote, and the sizes of the head and tail.
pub struct Stored {
    pub summary: Summary,
    pub head_len: u64,
    pub tail_len: u64,
}

/// What the writer reports when the recording is finished: what was stored, `None` if
/// nothing was (no keyframe ever arrived).
pub type Done = Box<dyn FnOnce(Result<Option<Stored>, StoreError>) + Send>;

pub struct StoreSink {
    chunks: mpsc::Sender<Chunk>,
}

impl StoreSink {
    pub fn start(
        files: AccountStore,
        session_id: &SessionId,
        recording_id: &str,
        done: Done,
    ) -> Result<Self, StoreError> {
        let [head, body, tail] = part_names(session_id, recording_id);
        let writer = files.create_file(&body)?;
        let (chunks, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("sightline-recorder".into())
            .spawn(move || done(write(rx, writer, &files, [&head, &body, &tail])))
            .map_err(|source| StoreError::File {
                path: "recorder thread".into(),
                source,
            })?;
        Ok(Self { chunks })
    }
}

fn write(
    chunks: mpsc::Receiver<Chunk>,
    mut writer: crate::store::FileWriter,
    files: &AccountStore,
    [head, body, tail]: [&str; 3],
) -> Result<Option<Stored>, StoreError> {
    let io = |source| StoreError::File {
        path: body.into(),
        source,
    };
    let mut failed = None;
    let finished = loop {
        match chunks.recv() {
            Ok(Chunk::Cluster(bytes)) => {
                // Keep receiving after a failure so the relay is never held up.
                if failed.is_none()
                    && let Err(e) = writer.write_all(&bytes)
                {
                    failed = Some(e);
                }
            }
            Ok(Chunk::Finish(last, summary)) => {
                if let Some(bytes) = last
                    && failed.is_none()
                    && let Err(e) = writer.write_all(&bytes)
                {
                    failed = Some(e);
                }
                break Some(summary);
            }
            // The relay went away without finishing: what was written has no head.
            Err(_) => break None,
        }
    };
    if let Some(e) = failed {
        return Err(io(e));
    }
    writer.finish()?;
    match finished {
        Some(summary) if summary.body_len > 0 => {
            let (head_bytes, tail_bytes) = (webm::head(&summary), webm::tail(&summary));
            files.put_file(head, &head_bytes)?;
            files.put_file(tail, &tail_bytes)?;
            Ok(Some(Stored {
                summary,
                head_len: head_bytes.len() as u64,
                tail_len: tail_bytes.len() as u64,
            }))
        }
        _ => {
            files.remove_file(body)?;
            Ok(None)
        }
    }
}

impl RecordingSink for StoreSink {
    fn cluster(&mut self, bytes: Vec<u8>) {
        let _ = self.chunks.send(Chunk::Cluster(bytes));
    }

    fn finish(self: Box<Self>, last: Option<Vec<u8>>, summary: Summary) {
        let _ = self.chunks.send(Chunk::Finish(last, summary));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Read};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::store::Store;
    use crate::store::keys::MasterKey;
    use crate::webm::{CUSTOMER_AUDIO_TRACK, Muxer, VIDEO_TRACK};

    #[test]
    fn a_recording_is_stored_encrypted_and_reads_back_as_webm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), MasterKey::generate()).expect("open");
        let files = store.account("acct");
        let (tx, rx) = mpsc::channel();
        let mut sink: Box<dyn RecordingSink> = Box::new(
            StoreSink::start(
                files.clone(),
                &SessionId::from("sess"),
                "rec",
                Box::new(move |result| {
                    let _ = tx.send(result.map(|s| s.map(|s| s.summary.body_len)));
                }),
            )
            .expect("sink"),
        );
        let t0 = Instant::now();
        let mut muxer = Muxer::new();
        let keyframe = [
            0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01, 7, 7,
        ];
        for i in 0..300u64 {
            let at = t0 + Duration::from_millis(20 * i);
            let video = if i % 50 == 0 {
                muxer.push(VIDEO_TRACK, at, true, &keyframe)
            } else {
                muxer.push(VIDEO_TRACK, at, false, &[1, 2, 3])
            };
            for cluster in
                video
                    .into_iter()
                    .chain(muxer.push(CUSTOMER_AUDIO_TRACK, at, true, &[9; 20]))
            {
                sink.cluster(cluster);
            }
        }
        let (last, summary) = muxer.finish();
        sink.finish(last, summary);
        let body_len = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("done")
            .expect("stored")
            .expect("not empty");

        let mut file = Vec::new();
        for name in part_names(&SessionId::from("sess"), "rec") {
            let mut reader = files.open_file(&name).expect("open").expect("exists");
            reader.read_to_end(&mut file).expect("read");
        }
        assert!(file.len() as u64 > body_len);
        let mkv = matroska_demuxer::MatroskaFile::open(Cursor::new(file)).expect("WebM");
        assert_eq!(mkv.tracks().len(), 2);
        assert!(mkv.info().duration().is_some_and(|d| d > 5_000.0));
        // On disk there is nothing but age ciphertext.
        let raw = std::fs::read_dir(dir.path().join("files"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|account| {
                std::fs::read_dir(account.path())
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|f| std::fs::read(f.path()).expect("read"))
            .collect::<Vec<_>>();
        assert!(!raw.is_empty());
        assert!(
            raw.iter()
                .all(|bytes| bytes.starts_with(b"age-encryption.org/v1"))
        );
    }
}
