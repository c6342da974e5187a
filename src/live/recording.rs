//! Where the relay's recordings go: a thread per recording that encrypts the clusters
//! into the account's files as they arrive, then writes the head and tail.

use std::io::Write;
use std::sync::mpsc;

use crate::media::RecordingSink;
use crate::store::{AccountStore, StoreError};
use crate::webm::{self, Summary};

enum Chunk {
    Cluster(Vec<u8>),
    Finish(Option<Vec<u8>>, Summary),
}

/// The stored names of a recording's three parts. Like every file of a session they
/// start with its id, which is how exports and deletions find them.
pub fn part_names(session_id: &str, recording_id: &str) -> [String; 3] {
    ["head", "body", "tail"].map(|part| format!("{session_id}-rec-{recording_id}-{part}"))
}

/// What the writer reports when the recording is finished: the summary of what was
/// stored, `None` if nothing was (no keyframe ever arrived).
pub type Done = Box<dyn FnOnce(Result<Option<Summary>, StoreError>) + Send>;

pub struct StoreSink {
    chunks: mpsc::Sender<Chunk>,
}

impl StoreSink {
    pub fn start(
        files: AccountStore,
        session_id: &str,
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
) -> Result<Option<Summary>, StoreError> {
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
            files.put_file(head, &webm::head(&summary))?;
            files.put_file(tail, &webm::tail(&summary))?;
            Ok(Some(summary))
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
