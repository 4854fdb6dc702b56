//! Durable cursors: one crash-safe redb database per state directory.
//!
//! A cursor is written only after the sink acknowledged the page it follows, in a redb write
//! transaction committed with immediate durability, so after a crash or SIGKILL work resumes from
//! the last acknowledged page: duplicates are bounded by the batch in flight, and there is never
//! a gap. Keys are `<input id>/<stream id>`.
//!
//! A damaged file must never silently reset every cursor, nor crash the process:
//! * redb panics on some corrupt files (truncated, flipped bytes). Every call into it runs under
//!   [`guarded`], which turns a panic into [`StateError::Corrupt`] naming the file and how to
//!   recover (the panic message is captured instead of printed).
//! * redb initialises a 0-byte file as a new, empty database. We never let it: a new store is
//!   built under a temporary name and renamed into place once initialised, so a 0-byte
//!   `state.redb` can only be damage, and it is refused.
//! * redb does not checksum what it reads back, so each value carries its own checksum over key
//!   and cursor: a flipped byte in a key or a cursor is reported, never used.

use std::cell::{Cell, RefCell};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Digest as _;

use crate::fsutil;

const CURSORS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("cursors");

/// The database file inside the state directory.
pub const FILE_NAME: &str = "state.redb";

/// Where a new database is initialised before it is renamed to [`FILE_NAME`].
const NEW_FILE_NAME: &str = "state.redb.new";

/// Marks a value written with a checksum: `MAGIC`, 8 checksum bytes, then the cursor's JSON.
/// Values without it (written before checksums) are plain JSON and read as such.
const MAGIC: &[u8; 4] = b"tis1";
const SUM_LEN: usize = 8;

/// A state-store failure. Names the file, and says how to recover when the user has to act.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// The database could not be opened (permissions, I/O).
    #[error("cannot open state store {}: {message}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Another process holds the database.
    #[error(
        "state store {} is in use by another process (is another ti-sidecar running with this state directory?)",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The file is damaged: it is refused rather than read or reset.
    #[error(
        "state store {} is damaged ({reason}); move it aside: mv {} {}.damaged; the streams then start again from initial_interval",
        path.display(), path.display(), path.display()
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A read or write failed.
    #[error("state store {}: {op} failed for {key:?}: {message}", path.display())]
    Io {
        /// The database file.
        path: PathBuf,
        /// `load`, `commit`, `remove` or `list`.
        op: &'static str,
        /// The cursor key (`*` for every key).
        key: String,
        /// Why.
        message: String,
    },
    /// One stored cursor does not have the shape its stream expects.
    #[error(
        "state store {}: the cursor of {key:?} is unreadable ({message}); reset it: ti-sidecar state reset --state-dir {} --stream {key}",
        path.display(),
        path.parent().unwrap_or(Path::new(".")).display()
    )]
    BadCursor {
        /// The database file.
        path: PathBuf,
        /// The cursor key.
        key: String,
        /// Why it cannot be read.
        message: String,
    },
}

/// The redb handle, dropped under [`guarded`] too (redb flushes on drop).
struct Handle(Option<Database>);

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(db) = self.0.take() {
            let _ = catch_quietly(move || drop(db));
        }
    }
}

impl Handle {
    fn db(&self) -> &Database {
        // Only `Drop` takes the database out.
        self.0.as_ref().unwrap_or_else(|| unreachable!())
    }
}

/// The cursor store of one process.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Handle>,
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
    /// Opens `<dir>/state.redb`, creating the directory (0700) and a new database (0600) when
    /// there is none. An existing file is checked before use: every cursor must read back with
    /// a valid checksum. A damaged or 0-byte file is refused with [`StateError::Corrupt`].
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(FILE_NAME);
        let open_err = |message: String| StateError::Open {
            path: path.clone(),
            message,
        };
        fsutil::create_private_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let db = match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_new(dir, &path)?,
            Err(e) => return Err(open_err(e.to_string())),
            Ok(meta) if meta.len() == 0 => {
                return Err(StateError::Corrupt {
                    path,
                    reason: "the file is empty (0 bytes), which is not a redb database; it is \
                             refused rather than silently starting every stream again"
                        .to_owned(),
                });
            }
            Ok(_) => {
                fsutil::restrict(&path, fsutil::FILE_MODE).map_err(|e| open_err(e.to_string()))?;
                open_existing(&path)?
            }
        };
        let store = Self {
            db: Arc::new(Handle(Some(db))),
            path,
        };
        // Reads every entry (and checks its checksum) now, so damage stops the start rather than
        // a stream in the middle of a run.
        store.all()?;
        Ok(store)
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn io_err<'a>(
        &'a self,
        op: &'static str,
        key: &'a str,
    ) -> impl Fn(redb::Error) -> StateError + 'a {
        move |e| classify(&self.path, op, key, e)
    }

    /// The committed cursor for `key`, if any.
    pub fn load<C: DeserializeOwned>(&self, key: &str) -> Result<Option<C>, StateError> {
        let err = self.io_err("load", key);
        let stored = guarded(&self.path, || {
            let tx = self.db.db().begin_read().map_err(|e| err(e.into()))?;
            let table = match tx.open_table(CURSORS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(err(e.into())),
            };
            let Some(bytes) = table.get(key).map_err(|e| err(e.into()))? else {
                return Ok(None);
            };
            Ok(Some(bytes.value().to_vec()))
        })?;
        let Some(bytes) = stored else {
            return Ok(None);
        };
        let json = self.verified(key, &bytes)?;
        serde_json::from_slice(json)
            .map(Some)
            .map_err(|e| StateError::BadCursor {
                path: self.path.clone(),
                key: key.to_owned(),
                message: e.to_string(),
            })
    }

    /// Durably replaces the cursor for `key`. Blocking; call from a blocking context or accept
    /// a short stall (one fsync).
    pub fn commit<C: Serialize>(&self, key: &str, cursor: &C) -> Result<(), StateError> {
        let json = serde_json::to_vec(cursor).map_err(|e| StateError::Io {
            path: self.path.clone(),
            op: "commit",
            key: key.to_owned(),
            message: e.to_string(),
        })?;
        let bytes = seal(key, &json);
        let err = self.io_err("commit", key);
        guarded(&self.path, || {
            let tx = self.db.db().begin_write().map_err(|e| err(e.into()))?;
            {
                let mut table = tx.open_table(CURSORS).map_err(|e| err(e.into()))?;
                table
                    .insert(key, bytes.as_slice())
                    .map_err(|e| err(e.into()))?;
            }
            tx.commit().map_err(|e| err(e.into()))
        })
    }

    /// Durably deletes the cursor for `key` (the stream then starts again from its initial
    /// cursor). Returns whether there was one.
    pub fn remove(&self, key: &str) -> Result<bool, StateError> {
        let err = self.io_err("remove", key);
        guarded(&self.path, || {
            let tx = self.db.db().begin_write().map_err(|e| err(e.into()))?;
            let existed = {
                let mut table = tx.open_table(CURSORS).map_err(|e| err(e.into()))?;
                table.remove(key).map_err(|e| err(e.into()))?.is_some()
            };
            tx.commit().map_err(|e| err(e.into()))?;
            Ok(existed)
        })
    }

    /// Every committed cursor as raw JSON (`null` for a cursor that is not JSON), in key order.
    pub fn all(&self) -> Result<Vec<(String, serde_json::Value)>, StateError> {
        let err = self.io_err("list", "*");
        let entries = guarded(&self.path, || {
            let tx = self.db.db().begin_read().map_err(|e| err(e.into()))?;
            let table = match tx.open_table(CURSORS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(err(e.into())),
            };
            let mut out = Vec::new();
            for entry in table.iter().map_err(|e| err(e.into()))? {
                let (k, v) = entry.map_err(|e| err(e.into()))?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })?;
        entries
            .into_iter()
            .map(|(key, bytes)| {
                let value = serde_json::from_slice(self.verified(&key, &bytes)?)
                    .unwrap_or(serde_json::Value::Null);
                Ok((key, value))
            })
            .collect()
    }

    /// The cursor JSON inside a stored value, after checking its checksum.
    fn verified<'a>(&self, key: &str, bytes: &'a [u8]) -> Result<&'a [u8], StateError> {
        unseal(key, bytes).ok_or_else(|| StateError::Corrupt {
            path: self.path.clone(),
            reason: format!(
                "the stored cursor of {:?} fails its checksum",
                crate::text::bounded_to(key, 200)
            ),
        })
    }
}

/// Initialises a new database under a temporary name, then renames it into place, so a crash
/// mid-creation never leaves a 0-byte `state.redb` behind.
fn create_new(dir: &Path, path: &Path) -> Result<Database, StateError> {
    let open_err = |message: String| StateError::Open {
        path: path.to_owned(),
        message,
    };
    let others: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| open_err(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != NEW_FILE_NAME)
        .collect();
    if !others.is_empty() {
        tracing::warn!(
            state.path = %path.display(),
            "creating a new, empty state store in a state directory that already holds {}: every \
             stream starts again from its initial look-back; if a state.redb was here before, \
             put it back to resume from its cursors",
            crate::text::bounded_to(&others.join(", "), 200)
        );
    }
    let tmp = dir.join(NEW_FILE_NAME);
    let file = fsutil::private_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .and_then(|f| fsutil::restrict_file(&f).map(|()| f))
        .map_err(|e| open_err(format!("{}: {e}", tmp.display())))?;
    let db = guarded(path, || {
        Database::builder()
            .create_file(file)
            .map_err(|e| classify(path, "create", "*", e.into()))
    })?;
    std::fs::rename(&tmp, path).map_err(|e| open_err(e.to_string()))?;
    // The rename is durable only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(db)
}

fn open_existing(path: &Path) -> Result<Database, StateError> {
    let repairing = Arc::new(AtomicBool::new(false));
    let shown = path.display().to_string();
    guarded(path, || {
        let flag = repairing.clone();
        Database::builder()
            .set_repair_callback(move |_| {
                if !flag.swap(true, Ordering::Relaxed) {
                    // Normal after a crash or SIGKILL: redb rebuilds its allocator state.
                    tracing::info!(state.path = %shown, "state store was not closed cleanly: repairing it");
                }
            })
            .open(path)
            .map_err(|e| classify(path, "open", "*", e.into()))
    })
}

/// Sorts a redb error into what the user must do about it.
fn classify(path: &Path, op: &'static str, key: &str, e: redb::Error) -> StateError {
    use redb::Error as E;
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    match e {
        E::DatabaseAlreadyOpen => StateError::Locked {
            path: path.to_owned(),
        },
        E::Corrupted(m) => corrupt(crate::text::bound_owned(m)),
        E::UpgradeRequired(v) => corrupt(format!("file format version {v} is not supported")),
        E::RepairAborted => corrupt("redb could not repair it".to_owned()),
        E::LockPoisoned(_) | E::PreviousIo => {
            corrupt("an earlier read of it failed; it is no longer usable".to_owned())
        }
        E::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            corrupt(format!("not a readable redb database: {io}"))
        }
        other => StateError::Io {
            path: path.to_owned(),
            op,
            key: key.to_owned(),
            message: other.to_string(),
        },
    }
}

fn checksum(key: &str, json: &[u8]) -> [u8; SUM_LEN] {
    let mut h = sha2::Sha256::new();
    h.update(key.as_bytes());
    h.update([0]);
    h.update(json);
    let digest = h.finalize();
    let mut sum = [0; SUM_LEN];
    sum.copy_from_slice(&digest[..SUM_LEN]);
    sum
}

/// The stored form of a cursor: magic, checksum over key and JSON, JSON.
fn seal(key: &str, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + SUM_LEN + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&checksum(key, json));
    out.extend_from_slice(json);
    out
}

/// The JSON of a stored value; `None` when its checksum does not match. Values written before
/// checksums existed are plain JSON objects or strings, and are returned as they are.
fn unseal<'a>(key: &str, bytes: &'a [u8]) -> Option<&'a [u8]> {
    match bytes.strip_prefix(MAGIC.as_slice()) {
        Some(rest) if rest.len() >= SUM_LEN => {
            let (sum, json) = rest.split_at(SUM_LEN);
            (sum == checksum(key, json)).then_some(json)
        }
        Some(_) => None,
        None if matches!(bytes.first(), Some(b'{' | b'"')) => Some(bytes),
        None => None,
    }
}

thread_local! {
    /// Set while this thread runs a [`catch_quietly`] call: its panics are captured, not printed.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    /// The message of the last captured panic.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Chains a panic hook that keeps quiet about panics inside [`catch_quietly`] (and hands their
/// message back instead); every other panic goes to the hook that was there before.
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let message = crate::text::panic_text(info.payload());
                CAUGHT.with(|c| *c.borrow_mut() = Some(message));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into `Err(message)` without printing it.
fn catch_quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_quiet_hook();
    let was = QUIET.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    result.map_err(|payload| {
        CAUGHT
            .with(|c| c.borrow_mut().take())
            .unwrap_or_else(|| crate::text::panic_text(&*payload))
    })
}

/// Runs a call into redb; a panic (redb asserts on some corrupt files) becomes
/// [`StateError::Corrupt`] naming `path`.
fn guarded<T>(path: &Path, call: impl FnOnce() -> Result<T, StateError>) -> Result<T, StateError> {
    catch_quietly(call).unwrap_or_else(|message| {
        Err(StateError::Corrupt {
            path: path.to_owned(),
            reason: format!(
                "redb cannot read it: {}",
                crate::text::bounded_to(&message, 200)
            ),
        })
    })
}

/// The store key of a stream's cursor.
pub(crate) fn cursor_key(input_id: &str, stream_id: &str) -> String {
    format!("{input_id}/{stream_id}")
}

/// Why `--stream` names no single cursor (the `state` subcommand).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamLookupError {
    /// No key matches.
    #[error("no cursor for stream {wanted:?} in {}; known: {}", path.display(), known_list(.known))]
    Unknown {
        /// The database file.
        path: PathBuf,
        /// What the user asked for.
        wanted: String,
        /// Every key in the store.
        known: Vec<String>,
    },
    /// A bare stream id matches cursors of several inputs.
    #[error("stream id {wanted:?} is ambiguous in {}: {}; give the full key", path.display(), known_list(.matches))]
    Ambiguous {
        /// The database file.
        path: PathBuf,
        /// What the user asked for.
        wanted: String,
        /// The keys it matches.
        matches: Vec<String>,
    },
}

fn known_list(keys: &[String]) -> String {
    if keys.is_empty() {
        "(none)".to_owned()
    } else {
        keys.join(", ")
    }
}

impl StateStore {
    /// Opens the store of an existing state directory without creating anything (the `state`
    /// subcommand must not turn a mistyped directory into a new, empty store).
    pub fn open_existing(dir: &Path) -> Result<Self, StateError> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Err(StateError::Open {
                path,
                message: "there is no state store here (check --state-dir)".to_owned(),
            });
        }
        Self::open(dir)
    }

    /// The one key that `wanted` names: a full key (`<input id>/<stream id>`, as `state show`
    /// prints them), or a stream id alone when exactly one key has it.
    pub fn resolve_key(
        &self,
        wanted: &str,
    ) -> Result<Result<String, StreamLookupError>, StateError> {
        let keys: Vec<String> = self.all()?.into_iter().map(|(k, _)| k).collect();
        if keys.iter().any(|k| k == wanted) {
            return Ok(Ok(wanted.to_owned()));
        }
        let matches: Vec<String> = keys
            .iter()
            .filter(|k| {
                k.split_once('/')
                    .is_some_and(|(_, stream)| stream == wanted)
            })
            .cloned()
            .collect();
        Ok(match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StreamLookupError::Unknown {
                path: self.path.clone(),
                wanted: wanted.to_owned(),
                known: keys,
            }),
            _ => Err(StreamLookupError::Ambiguous {
                path: self.path.clone(),
                wanted: wanted.to_owned(),
                matches,
            }),
        })
    }
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
        assert!(
            !dir.path().join(NEW_FILE_NAME).exists(),
            "the temporary name is gone"
        );
    }

    #[test]
    fn remove_deletes_one_cursor_durably() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            store.commit("a/b", &"x".to_owned()).unwrap();
            store.commit("a/c", &"y".to_owned()).unwrap();
            assert!(store.remove("a/b").unwrap());
            assert!(!store.remove("a/b").unwrap(), "already gone");
        }
        let store = StateStore::open(dir.path()).unwrap();
        assert_eq!(store.load::<String>("a/b").unwrap(), None);
        assert_eq!(store.all().unwrap(), vec![("a/c".into(), "y".into())]);
    }

    #[test]
    fn empty_state_file_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"").unwrap();
        let err = StateStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("state.redb") && text.contains("0 bytes"),
            "{text}"
        );
        assert!(text.contains("mv ") && text.contains(".damaged"), "{text}");
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            0,
            "the file is left as it was"
        );
    }

    #[test]
    fn truncated_state_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(dir.path()).unwrap();
            store.commit("a/b", &"x".to_owned()).unwrap();
        }
        let path = dir.path().join(FILE_NAME);
        let bytes = std::fs::read(&path).unwrap();
        for len in [1, 512, 4096, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..len]).unwrap();
            let err = StateStore::open(dir.path()).expect_err("damaged");
            assert!(matches!(err, StateError::Corrupt { .. }), "{len}: {err}");
            assert!(!err.to_string().contains("panicked"), "{err}");
        }
    }

    #[test]
    fn a_flipped_byte_in_a_cursor_fails_its_checksum() {
        let key = "in/stream";
        let sealed = seal(key, br#"{"watermark":"2024-01-01T00:00:00Z"}"#);
        assert!(unseal(key, &sealed).is_some());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x08;
            assert!(unseal(key, &bad).is_none(), "flip at {i} went unnoticed");
        }
        assert!(unseal("in/other", &sealed).is_none(), "a changed key too");
        assert_eq!(
            unseal(key, b"\"legacy\"").map(<[u8]>::to_vec),
            Some(b"\"legacy\"".to_vec())
        );
    }

    #[test]
    fn a_cursor_of_the_wrong_shape_names_the_reset_command() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        store.commit("a/b", &"a string").unwrap();
        let err = store.load::<Vec<u32>>("a/b").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("state reset") && text.contains("--stream a/b"),
            "{text}"
        );
    }

    #[test]
    fn stream_ids_resolve_to_one_key_or_say_which_exist() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        for key in ["tc/indicator", "tq-a/threat", "tq-b/threat"] {
            store.commit(key, &"c").unwrap();
        }
        let resolve = |w: &str| store.resolve_key(w).unwrap();
        assert_eq!(resolve("tc/indicator"), Ok("tc/indicator".to_owned()));
        assert_eq!(resolve("indicator"), Ok("tc/indicator".to_owned()));
        let ambiguous = resolve("threat").unwrap_err().to_string();
        assert!(
            ambiguous.contains("tq-a/threat, tq-b/threat"),
            "{ambiguous}"
        );
        let unknown = resolve("nope").unwrap_err().to_string();
        assert!(
            unknown.contains("known: tc/indicator, tq-a/threat, tq-b/threat"),
            "{unknown}"
        );
        assert!(StateStore::open_existing(&dir.path().join("typo")).is_err());
        assert!(!dir.path().join("typo").exists(), "nothing created");
    }

    #[cfg(unix)]
    #[test]
    fn state_dir_and_file_are_private_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt as _;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        drop(StateStore::open(&dir).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
        // An existing, too-open file is tightened on open.
        std::fs::set_permissions(dir.join(FILE_NAME), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        drop(StateStore::open(&dir).unwrap());
        assert_eq!(mode(&dir.join(FILE_NAME)), 0o600);
    }
}
