//! One account's part of the store: its collections and its encrypted files.

use std::fs;
use std::io::Write;
use std::path::PathBuf;

use super::{Collection, Store, StoreError};

/// The collections and files of one account; names are scoped so that no key of one
/// account can be read through another.
#[derive(Clone)]
pub struct AccountStore {
    pub(super) store: Store,
    pub(super) account_id: String,
}

impl AccountStore {
    pub fn collection<T>(&self, name: &str) -> Result<Collection<T>, StoreError> {
        self.store.collection(
            &self.account_id,
            format!("account/{}/{name}", self.account_id),
        )
    }

    /// A stand-in for a personal value (an e-mail address, a phone number) where only its
    /// identity matters, as in the security log: the same value gives the same text
    /// within this account, but without the account's key it can be neither read back nor
    /// found by trying candidates (all phone numbers are few enough to try).
    pub fn pseudonym(&self, purpose: &str, value: &str) -> Result<String, StoreError> {
        let key = self.store.keys.get_or_create(&self.account_id)?;
        let mac = key.physical_key(purpose, &value.to_lowercase());
        Ok(mac[..8].iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Stores a file as an age stream to this account (atomically, durably).
    pub fn put_file(&self, name: &str, content: &[u8]) -> Result<(), StoreError> {
        let key = self.store.keys.get_or_create(&self.account_id)?;
        let dir = self.store.files_dir(&self.account_id);
        let path = dir.join(file_name(name));
        let io = |source| StoreError::File {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        let tmp = path.with_extension("tmp");
        let mut file = crate::files::create_private(&tmp).map_err(io)?;
        key.encrypt_stream(content, &mut file).map_err(io)?;
        file.flush().map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    }

    pub fn get_file(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(mut reader) = self.open_file(name)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut reader, &mut out).map_err(|source| StoreError::File {
            path: self.store.files_dir(&self.account_id).join(file_name(name)),
            source,
        })?;
        Ok(Some(out))
    }

    /// Starts writing a file as an encrypted stream, for content too large to hold in
    /// memory; it appears under its name only once [`FileWriter::finish`] succeeds.
    pub fn create_file(&self, name: &str) -> Result<FileWriter, StoreError> {
        let key = self.store.keys.get_or_create(&self.account_id)?;
        let dir = self.store.files_dir(&self.account_id);
        let path = dir.join(file_name(name));
        let tmp = path.with_extension("tmp");
        let io = |source| StoreError::File {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(io)?;
        let file = crate::files::create_private(&tmp).map_err(io)?;
        let writer = key
            .encrypting_writer(std::io::BufWriter::new(file))
            .map_err(io)?;
        Ok(FileWriter { writer, tmp, path })
    }

    /// Opens a file for reading its plaintext, seekably (e.g. to answer range requests).
    pub fn open_file(
        &self,
        name: &str,
    ) -> Result<Option<impl std::io::Read + std::io::Seek + use<>>, StoreError> {
        let key = self.store.keys.get_or_create(&self.account_id)?;
        let path = self.store.files_dir(&self.account_id).join(file_name(name));
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::File { path, source }),
        };
        key.decrypting_reader(std::io::BufReader::new(file))
            .map(Some)
            .map_err(|source| StoreError::File { path, source })
    }

    /// Names of the account's files (as given to [`Self::put_file`], sanitised).
    pub fn file_names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.store.files_dir(&self.account_id);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(StoreError::File { path: dir, source }),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::File {
                path: dir.clone(),
                source,
            })?;
            if let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".age"))
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn remove_file(&self, name: &str) -> Result<(), StoreError> {
        let path = self.store.files_dir(&self.account_id).join(file_name(name));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::File { path, source }),
        }
    }
}

/// An encrypted file being written; see [`AccountStore::create_file`].
pub struct FileWriter {
    writer: age::stream::StreamWriter<std::io::BufWriter<fs::File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

impl FileWriter {
    /// Seals the stream, makes it durable and gives it its name.
    pub fn finish(self) -> Result<(), StoreError> {
        let io = |source| StoreError::File {
            path: self.path.clone(),
            source,
        };
        let file = self
            .writer
            .finish()
            .map_err(io)?
            .into_inner()
            .map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        fs::rename(&self.tmp, &self.path).map_err(io)
    }
}

/// File names are derived from caller names without letting them escape the directory.
fn file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.age")
}
