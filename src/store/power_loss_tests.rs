//! A simulated power loss under the engine: storage that keeps only what was synced,
//! plus any 4 KiB piece of the rest at random, as a disk may after the power is cut.
//! kill -9 cannot show this; the engine's own `sync` must.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::Engine;

/// Storage that loses power: everything written since the last `sync_data` may or may
/// not have reached the disk, any 4 KiB piece of it independently of the others.
#[derive(Debug, Default)]
struct Disk {
    synced: Vec<u8>,
    current: Vec<u8>,
    /// Since the last sync, in order: a write (offset, bytes) or a new length.
    unsynced: Vec<(u64, Option<Vec<u8>>)>,
}

#[derive(Debug, Clone, Default)]
struct PowerLossBackend(Arc<Mutex<Disk>>);

impl PowerLossBackend {
    fn from_image(image: Vec<u8>) -> Self {
        Self(Arc::new(Mutex::new(Disk {
            synced: image.clone(),
            current: image,
            unsynced: Vec::new(),
        })))
    }

    /// What the disk holds after the power is cut now.
    fn cut_power(&self, rng: &mut impl rand::Rng) -> Vec<u8> {
        let disk = self.0.lock().expect("disk");
        let mut image = disk.synced.clone();
        for (offset, write) in &disk.unsynced {
            match write {
                None => {
                    if rng.gen_bool(0.5) {
                        image.resize(*offset as usize, 0);
                    }
                }
                Some(bytes) => {
                    for (i, piece) in bytes.chunks(4096).enumerate() {
                        if rng.gen_bool(0.5) {
                            let at = *offset as usize + i * 4096;
                            if image.len() < at + piece.len() {
                                image.resize(at + piece.len(), 0);
                            }
                            image[at..at + piece.len()].copy_from_slice(piece);
                        }
                    }
                }
            }
        }
        image
    }
}

impl redb::StorageBackend for PowerLossBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.0.lock().expect("disk").current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let disk = self.0.lock().expect("disk");
        let at = offset as usize;
        let Some(bytes) = disk.current.get(at..at + out.len()) else {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        };
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let mut disk = self.0.lock().expect("disk");
        disk.current.resize(len as usize, 0);
        disk.unsynced.push((len, None));
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut disk = self.0.lock().expect("disk");
        disk.synced = disk.current.clone();
        disk.unsynced.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut disk = self.0.lock().expect("disk");
        let at = offset as usize;
        if disk.current.len() < at + data.len() {
            disk.current.resize(at + data.len(), 0);
        }
        disk.current[at..at + data.len()].copy_from_slice(data);
        disk.unsynced.push((offset, Some(data.to_vec())));
        Ok(())
    }
}

#[test]
fn a_power_loss_keeps_every_synced_write_and_pairs_stay_whole() {
    use rand::{Rng, SeedableRng};
    let label = Path::new("power-loss.redb");
    for trial in 0..40u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(trial);
        let backend = PowerLossBackend::default();
        let engine = Engine::open_backend(backend.clone(), label, 1 << 20).expect("open");
        // What a caller was told is stored: every write finished before a sync returned.
        let mut acknowledged: Vec<u64> = Vec::new();
        let mut since_sync: Vec<u64> = Vec::new();
        let steps = rng.gen_range(20..300u64);
        for i in 0..steps {
            let value = i.to_be_bytes().repeat(rng.gen_range(1..400));
            engine
                .write(|w| {
                    // A record and its audit entry, in one transaction.
                    w.insert("records", &i.to_be_bytes(), &value)?;
                    w.insert("audit", &i.to_be_bytes(), b"entry")
                })
                .expect("write");
            since_sync.push(i);
            if rng.gen_bool(0.2) {
                engine.sync().expect("sync");
                acknowledged.append(&mut since_sync);
            }
        }
        let image = backend.cut_power(&mut rng);
        drop(engine);
        let reopened = Engine::open_backend(PowerLossBackend::from_image(image), label, 1 << 20)
            .unwrap_or_else(|e| panic!("trial {trial}: reopens after the power loss: {e}"));
        for i in &acknowledged {
            let stored = reopened.get("records", &i.to_be_bytes()).expect("get");
            assert_eq!(
                stored.as_deref().map(|v| &v[..8]),
                Some(&i.to_be_bytes()[..]),
                "trial {trial}: acknowledged write {i} lost"
            );
        }
        for i in 0..steps {
            let record = reopened.get("records", &i.to_be_bytes()).expect("get");
            let entry = reopened.get("audit", &i.to_be_bytes()).expect("get");
            assert_eq!(
                record.is_some(),
                entry.is_some(),
                "trial {trial}: write {i} and its audit entry were split"
            );
        }
    }
}
