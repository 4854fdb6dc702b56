//! Durable cursors: one crash-safe redb database per state directory.
//!
//! A cursor is written only after the sink acknowledged the page it follows, in a redb write
//! transaction committed with immediate durability, so after a crash or SIGKILL work resumes from
//! the last acknowledged page: duplicates are bounded by the batch in flight, and there is never
//! a gap. Keys are `<input id>/<stream id>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

const CURSORS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("cursors");

/// A state-store failure. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database could not be opened (e.g. another process holds it).
    #[error("cannot open state store {path}: {message}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A read or write failed.
    #[error("state store {op} failed for {key:?}: {message}")]
    Io {
        /// `load` or `commit`.
        op: &'static str,
        /// The cursor key.
        key: String,
        /// Why.
        message: String,
    },
}

/// The cursor store of one process.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("path", &self.path)
            .finish()
    }
}

impl StateStore {
    /// Opens (creating) `<dir>/state.redb`.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join("state.redb");
        let open_err = |message: String| StateError::Open {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let db = Database::create(&path).map_err(|e| open_err(e.to_string()))?;
        Ok(Self {
            db: Arc::new(db),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The committed cursor for `key`, if any.
    pub fn load<C: DeserializeOwned>(&self, key: &str) -> Result<Option<C>, StateError> {
        let err = |message: String| StateError::Io {
            op: "load",
            key: key.to_owned(),
            message,
        };
        let tx = self.db.begin_read().map_err(|e| err(e.to_string()))?;
        let table = match tx.open_table(CURSORS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
        };
        let Some(bytes) = table.get(key).map_err(|e| err(e.to_string()))? else {
            return Ok(None);
        };
        serde_json::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| err(format!("stored cursor is unreadable: {e}")))
    }

    /// Durably replaces the cursor for `key`. Blocking; call from a blocking context or accept
    /// a short stall (one fsync).
    pub fn commit<C: Serialize>(&self, key: &str, cursor: &C) -> Result<(), StateError> {
        let err = |message: String| StateError::Io {
            op: "commit",
            key: key.to_owned(),
            message,
        };
        let bytes = serde_json::to_vec(cursor).map_err(|e| err(e.to_string()))?;
        let tx = self.db.begin_write().map_err(|e| err(e.to_string()))?;
        {
            let mut table = tx.open_table(CURSORS).map_err(|e| err(e.to_string()))?;
            table
                .insert(key, bytes.as_slice())
                .map_err(|e| err(e.to_string()))?;
        }
        tx.commit().map_err(|e| err(e.to_string()))
    }

    /// Every committed cursor as raw JSON, for diagnostics.
    pub fn all(&self) -> Result<Vec<(String, serde_json::Value)>, StateError> {
        let err = |message: String| StateError::Io {
            op: "load",
            key: "*".to_owned(),
            message,
        };
        let tx = self.db.begin_read().map_err(|e| err(e.to_string()))?;
        let table = match tx.open_table(CURSORS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e.to_string())),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| err(e.to_string()))? {
            let (k, v) = entry.map_err(|e| err(e.to_string()))?;
            let value = serde_json::from_slice(v.value()).unwrap_or(serde_json::Value::Null);
            out.push((k.value().to_owned(), value));
        }
        Ok(out)
    }
}

/// The store key of a stream's cursor.
pub fn cursor_key(input_id: &str, stream_id: &str) -> String {
    format!("{input_id}/{stream_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_then_reopen_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            assert_eq!(store.load::<String>("a/b").unwrap(), None);
            store.commit("a/b", &"cursor-1".to_owned()).unwrap();
            store.commit("a/b", &"cursor-2".to_owned()).unwrap();
        }
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            store.load::<String>("a/b").unwrap().as_deref(),
            Some("cursor-2")
        );
        assert_eq!(store.all().unwrap().len(), 1);
    }
}
