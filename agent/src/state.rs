//! The state directory (`/var/lib/census` by default): who this agent is and where its
//! sequence numbers stand.
//!
//! Files:
//! - `agent_id`: the agent's UUID (v4), created on the first `run` or `once`.
//! - `seq`: the next sequence number to hand out.
//! - `inventory.digest`: content digest of the last inventory the collector acknowledged.
//! - `token`: the agent's bearer token from enrollment (mode 0600, like every file here; the
//!   directory itself is 0700 when the agent creates it).
//! - `lock`: held (an exclusive file lock: `flock` on Unix, `LockFileEx` on Windows) by a
//!   running `run` or `once`, so two agents never share a sequence.
//!
//! **Promises:** every file is replaced atomically (temp file, fsync, rename, fsync of the
//! directory), so after a crash it holds the old or the new content, never a mix. The next
//! sequence number is made durable *before* a number is handed out, so a crash may skip numbers
//! but never reuses one. A damaged `agent_id` or `seq` is an error naming the file, never a
//! silent new identity or a restarted sequence.
//!
//! **On Windows** (untested) there are no modes: the files get the directory's ACL, so the
//! directory must be readable by Administrators and SYSTEM only (see
//! `packaging/windows/README.md`). A directory cannot be fsynced there either, so a crash
//! right after a replacement may bring back the old content (never a mix); for `seq`, the
//! collector's `last_seq` repairs that as it repairs a restored backup (below).
//!
//! **When the directory goes back in time.** Nothing here can notice that the whole directory
//! was put back to an older copy (a VM snapshot reverted, a backup restored, a machine cloned
//! from an image): `seq` then names numbers the collector has already stored, and the
//! collector would take every new report for a repeat. The collector's ack says the highest
//! number it stored (`last_seq`); [`StateDir::continue_after`] moves `seq` above it, durably,
//! before any number past it is used (the service decides what to do with the reports that
//! were numbered too low; see `service.rs`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::auth::Token;

const AGENT_ID: &str = "agent_id";
const SEQ: &str = "seq";
const INVENTORY_DIGEST: &str = "inventory.digest";
const LOCK: &str = "lock";
const TOKEN: &str = "token";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("could not create state directory {}: {source}", path.display())]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("could not read {what} from {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("could not write {what} to {}: {source}", path.display())]
    Write {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{} does not hold a valid {what} ({detail}); restore the file from a backup, or remove it \
         only if this machine should become a new agent",
        path.display()
    )]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "{} does not hold a usable agent token ({detail}); run `census-agent enroll` to replace it",
        path.display()
    )]
    BadToken { path: PathBuf, detail: String },
    #[error("another census-agent is already using state directory {}", path.display())]
    Locked { path: PathBuf },
    /// No number is left: the sequence would pass `u64::MAX`.
    #[error(
        "the sequence in {} is exhausted: no number is left after {last}",
        path.display()
    )]
    Exhausted { path: PathBuf, last: u64 },
}

/// A jump of the sequence past the collector's `last_seq`: see [`StateDir::continue_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqJump {
    /// The next number the directory held before the jump.
    pub was: u64,
    /// The first number reserved for the caller (`last_seq + 1`).
    pub first: u64,
}

#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

/// Holds the state directory's lock until dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateDir { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory (mode 0700: it will hold the agent's token) if it is missing.
    pub fn ensure(&self) -> Result<(), StateError> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&self.path)
            .map_err(|source| StateError::CreateDir {
                path: self.path.clone(),
                source,
            })
    }

    /// Takes the directory's exclusive lock, failing at once if another agent holds it.
    pub fn lock(&self) -> Result<StateLock, StateError> {
        self.ensure()?;
        let path = self.path.join(LOCK);
        let file = owner_only(OpenOptions::new().create(true).truncate(false).write(true))
            .open(&path)
            .map_err(|source| StateError::Write {
                what: "lock",
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(StateLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(StateError::Locked {
                path: self.path.clone(),
            }),
            Err(fs::TryLockError::Error(source)) => Err(StateError::Write {
                what: "lock",
                path,
                source,
            }),
        }
    }

    /// The agent id, if one was created before.
    pub fn read_agent_id(&self) -> Result<Option<String>, StateError> {
        let path = self.path.join(AGENT_ID);
        let Some(text) = read_optional(&path, "agent id")? else {
            return Ok(None);
        };
        let text = text.trim();
        match uuid::Uuid::parse_str(text) {
            Ok(id) => Ok(Some(id.hyphenated().to_string())),
            Err(e) => Err(StateError::Corrupt {
                what: "agent id",
                path,
                detail: format!("`{}` is not a UUID: {e}", text.escape_debug()),
            }),
        }
    }

    /// The agent id, created (and made durable) if this is the agent's first run.
    pub fn load_or_create_agent_id(&self) -> Result<String, StateError> {
        if let Some(id) = self.read_agent_id()? {
            return Ok(id);
        }
        self.ensure()?;
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        self.write(AGENT_ID, "agent id", format!("{id}\n").as_bytes())?;
        tracing::info!(agent_id = %id, state_dir = %self.path.display(), "created agent id");
        Ok(id)
    }

    /// The id to show in `inventory` and `health`, which only read the state directory: the
    /// stored id when there is one, otherwise a one-off id that is not written anywhere, so that
    /// these commands work for any user and on read-only systems. A damaged id file is still an
    /// error, as everywhere else.
    pub fn display_agent_id(&self) -> Result<String, StateError> {
        match self.read_agent_id() {
            Ok(Some(id)) => Ok(id),
            Ok(None) => {
                warn!(
                    state_dir = %self.path.display(),
                    "no agent id yet (it is created by `run` or `once`); showing a one-off id"
                );
                Ok(uuid::Uuid::new_v4().hyphenated().to_string())
            }
            // Not being allowed to read the directory (or it not being one) is no reason to
            // refuse showing the machine's inventory.
            Err(StateError::Read { path, source, .. }) => {
                warn!(path = %path.display(), error = %source, "cannot read agent id; showing a one-off id");
                Ok(uuid::Uuid::new_v4().hyphenated().to_string())
            }
            Err(e) => Err(e),
        }
    }

    /// Hands out the next sequence number. The number after it is durable before this returns.
    pub fn next_seq(&self) -> Result<u64, StateError> {
        let seq = self.peek_seq()?;
        let next = seq.checked_add(1).ok_or_else(|| self.exhausted(seq))?;
        self.write(SEQ, "sequence number", format!("{next}\n").as_bytes())?;
        Ok(seq)
    }

    /// The number [`StateDir::next_seq`] would hand out next, without handing it out.
    pub fn peek_seq(&self) -> Result<u64, StateError> {
        let path = self.path.join(SEQ);
        match read_optional(&path, "sequence number")? {
            None => Ok(1),
            Some(text) => text.trim().parse::<u64>().map_err(|e| StateError::Corrupt {
                what: "sequence number",
                path,
                detail: format!("`{}`: {e}", text.trim().escape_debug()),
            }),
        }
    }

    /// Continues the sequence above the collector's `last_seq` if it is not above it already.
    ///
    /// When the next number is at most `last_seq`, the collector has stored numbers this
    /// directory never handed out, so the directory went back in time. Then the next number
    /// becomes `last_seq + 1 + reserve`, durably, before this returns, and the `reserve`
    /// numbers from `last_seq + 1` are the caller's to use (for reports it numbers again).
    /// Returns `None`, writing nothing, when the sequence is already ahead.
    pub fn continue_after(
        &self,
        last_seq: u64,
        reserve: u64,
    ) -> Result<Option<SeqJump>, StateError> {
        let was = self.peek_seq()?;
        if was > last_seq {
            return Ok(None);
        }
        let first = last_seq
            .checked_add(1)
            .ok_or_else(|| self.exhausted(last_seq))?;
        let next = first
            .checked_add(reserve)
            .ok_or_else(|| self.exhausted(last_seq))?;
        self.write(SEQ, "sequence number", format!("{next}\n").as_bytes())?;
        Ok(Some(SeqJump { was, first }))
    }

    fn exhausted(&self, last: u64) -> StateError {
        StateError::Exhausted {
            path: self.path.join(SEQ),
            last,
        }
    }

    /// Digest of the last inventory the collector acknowledged. A damaged file only costs one
    /// extra inventory upload, so it is treated as absent.
    pub fn read_inventory_digest(&self) -> Result<Option<String>, StateError> {
        let path = self.path.join(INVENTORY_DIGEST);
        let Some(text) = read_optional(&path, "inventory digest")? else {
            return Ok(None);
        };
        let digest = text.trim();
        if digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Some(digest.to_owned()))
        } else {
            warn!(path = %path.display(), "ignoring malformed inventory digest; the inventory will be sent again");
            Ok(None)
        }
    }

    pub fn write_inventory_digest(&self, digest: &str) -> Result<(), StateError> {
        self.write(
            INVENTORY_DIGEST,
            "inventory digest",
            format!("{digest}\n").as_bytes(),
        )
    }

    /// Forgets which inventory the collector acknowledged, so the next one is sent whatever
    /// its digest. Durable before this returns; no file is no error.
    pub fn forget_inventory_digest(&self) -> Result<(), StateError> {
        let path = self.path.join(INVENTORY_DIGEST);
        let removed = match fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => {
                return Err(StateError::Write {
                    what: "inventory digest",
                    path,
                    source,
                });
            }
        };
        if removed {
            sync_dir(&self.path).map_err(|source| StateError::Write {
                what: "inventory digest",
                path,
                source,
            })?;
        }
        Ok(())
    }

    /// Where the agent token is kept.
    pub fn token_path(&self) -> PathBuf {
        self.path.join(TOKEN)
    }

    /// The agent token, if the agent has enrolled. A file that does not hold a usable token
    /// is [`StateError::BadToken`]; the error never quotes the file's content.
    pub fn read_token(&self) -> Result<Option<Token>, StateError> {
        let path = self.token_path();
        let Some(text) = read_optional(&path, "agent token")? else {
            return Ok(None);
        };
        Token::parse(&text)
            .map(Some)
            .map_err(|detail| StateError::BadToken { path, detail })
    }

    /// Replaces the agent token, atomically and durably, mode 0600 from the first byte.
    pub fn write_token(&self, token: &Token) -> Result<(), StateError> {
        self.ensure()?;
        self.write(
            TOKEN,
            "agent token",
            format!("{}\n", token.expose()).as_bytes(),
        )
    }

    fn write(&self, name: &str, what: &'static str, contents: &[u8]) -> Result<(), StateError> {
        write_atomic(&self.path, name, contents).map_err(|source| StateError::Write {
            what,
            path: self.path.join(name),
            source,
        })
    }
}

fn read_optional(path: &Path, what: &'static str) -> Result<Option<String>, StateError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Read {
            what,
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces `dir/name` so that a crash at any point leaves the old or the new content. The
/// file is created with mode 0600 (before a byte is written): some of these files are secrets.
fn write_atomic(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    // A temporary file left by a crash keeps whatever mode it had; only a file created here is
    // known to be 0600. If the removal fails, whatever is in the way makes the create fail.
    let _ = fs::remove_file(&tmp);
    let mut file = owner_only(OpenOptions::new().write(true).create_new(true)).open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, dir.join(name))?;
    // The rename is only durable once the directory entry is.
    sync_dir(dir)
}

/// Mode 0600 for a file these options create, on Unix; elsewhere the directory's ACL applies.
fn owner_only(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(options, 0o600);
    options
}

/// Makes a directory's entries (a rename, a removal) durable. Windows cannot open a directory
/// as a file; see the module doc.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn agent_id_is_created_once_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("census"));
        assert_eq!(state.read_agent_id().unwrap(), None);
        let id = state.load_or_create_agent_id().unwrap();
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        // A new handle (a restarted agent) sees the same id.
        let again = StateDir::new(dir.path().join("census"));
        assert_eq!(again.load_or_create_agent_id().unwrap(), id);

        let file = dir.path().join("census/agent_id");
        assert_eq!(fs::read_to_string(&file).unwrap(), format!("{id}\n"));
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let dir_mode = fs::metadata(dir.path().join("census"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("census"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn corrupt_agent_id_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("agent_id"), "not-a-uuid\n").unwrap();
        let state = StateDir::new(dir.path());
        let err = state.load_or_create_agent_id().unwrap_err();
        assert!(matches!(err, StateError::Corrupt { .. }));
        let text = err.to_string();
        assert!(
            text.contains(&dir.path().join("agent_id").display().to_string()),
            "{text}"
        );
        assert!(text.contains("not-a-uuid"), "{text}");
        // The damaged file is left alone for the admin to inspect.
        assert_eq!(
            fs::read_to_string(dir.path().join("agent_id")).unwrap(),
            "not-a-uuid\n"
        );
        assert!(state.display_agent_id().is_err());
    }

    #[test]
    fn display_id_does_not_write_anything() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("missing"));
        let id = state.display_agent_id().unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn display_id_works_when_the_state_dir_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        fs::write(&not_a_dir, "").unwrap();
        let id = StateDir::new(&not_a_dir).display_agent_id().unwrap();
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        // Whereas the agent proper refuses, naming the path.
        let err = StateDir::new(&not_a_dir)
            .load_or_create_agent_id()
            .unwrap_err();
        assert!(err.to_string().contains("file/agent_id"), "{err}");
    }

    #[test]
    fn sequence_is_persisted_before_use_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.next_seq().unwrap(), 1);
        // The file already names the number after the one just handed out.
        assert_eq!(fs::read_to_string(dir.path().join("seq")).unwrap(), "2\n");
        assert_eq!(state.next_seq().unwrap(), 2);
        let restarted = StateDir::new(dir.path());
        assert_eq!(restarted.next_seq().unwrap(), 3);
    }

    #[test]
    fn sequence_continues_above_a_collector_that_is_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.next_seq().unwrap(), 1);
        assert_eq!(state.next_seq().unwrap(), 2);
        // The collector has stored up to 2 (our own): nothing to do, nothing written.
        assert_eq!(state.continue_after(2, 5).unwrap(), None);
        assert_eq!(fs::read_to_string(dir.path().join("seq")).unwrap(), "3\n");
        // The collector has stored up to 50: the directory went back in time. Two numbers
        // (51, 52) are reserved and the file names 53 before anything is used.
        assert_eq!(
            state.continue_after(50, 2).unwrap(),
            Some(SeqJump { was: 3, first: 51 })
        );
        assert_eq!(fs::read_to_string(dir.path().join("seq")).unwrap(), "53\n");
        assert_eq!(StateDir::new(dir.path()).next_seq().unwrap(), 53);
        // Equal counts as behind: 53 was stored, so 53 must not be used again.
        assert_eq!(
            state.continue_after(54, 0).unwrap(),
            Some(SeqJump { was: 54, first: 55 })
        );
        assert_eq!(state.peek_seq().unwrap(), 55);
        // No number is left above u64::MAX: an error, and the file is unchanged.
        assert!(matches!(
            state.continue_after(u64::MAX, 0),
            Err(StateError::Exhausted { .. })
        ));
        assert_eq!(state.peek_seq().unwrap(), 55);
    }

    #[test]
    fn an_exhausted_sequence_says_so_rather_than_calling_the_file_damaged() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("seq"), format!("{}\n", u64::MAX)).unwrap();
        let state = StateDir::new(dir.path());
        let err = state.next_seq().unwrap_err();
        assert!(
            matches!(err, StateError::Exhausted { last: u64::MAX, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("exhausted"), "{text}");
        assert!(text.contains(&u64::MAX.to_string()), "{text}");
        assert!(!text.contains("does not hold a valid"), "{text}");
        assert_eq!(
            fs::read_to_string(dir.path().join("seq")).unwrap(),
            format!("{}\n", u64::MAX)
        );
    }

    #[test]
    fn corrupt_sequence_is_an_error_not_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("seq"), "12x\n").unwrap();
        let err = StateDir::new(dir.path()).next_seq().unwrap_err();
        assert!(err.to_string().contains("seq"), "{err}");
        assert_eq!(fs::read_to_string(dir.path().join("seq")).unwrap(), "12x\n");
    }

    #[test]
    fn inventory_digest_round_trips_and_malformed_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert_eq!(state.read_inventory_digest().unwrap(), None);
        let digest = "ab".repeat(32);
        state.write_inventory_digest(&digest).unwrap();
        assert_eq!(state.read_inventory_digest().unwrap(), Some(digest));
        fs::write(dir.path().join("inventory.digest"), "garbage").unwrap();
        assert_eq!(state.read_inventory_digest().unwrap(), None);
        state.write_inventory_digest(&"cd".repeat(32)).unwrap();
        state.forget_inventory_digest().unwrap();
        assert!(!dir.path().join("inventory.digest").exists());
        assert_eq!(state.read_inventory_digest().unwrap(), None);
        // Forgetting what is not there is no error.
        state.forget_inventory_digest().unwrap();
    }

    #[test]
    fn token_is_written_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("census"));
        assert_eq!(state.read_token().unwrap(), None);
        // A stale temporary file with a loose mode (a crash, an admin's copy) is not reused.
        state.ensure().unwrap();
        let stale = dir.path().join("census/.token.tmp");
        fs::write(&stale, "old").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).unwrap();
        let token = Token::parse("tok-1").unwrap();
        state.write_token(&token).unwrap();
        assert_eq!(state.read_token().unwrap(), Some(token));
        let path = state.token_path();
        assert_eq!(fs::read_to_string(&path).unwrap(), "tok-1\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!stale.exists());
    }

    #[test]
    fn an_unusable_token_file_is_an_error_that_does_not_quote_it() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        fs::write(state.token_path(), "secret part\n").unwrap();
        let err = state.read_token().unwrap_err();
        assert!(matches!(err, StateError::BadToken { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("census-agent enroll"), "{text}");
        assert!(!text.contains("secret part"), "{text}");
    }

    #[test]
    fn second_lock_on_the_same_directory_fails() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let held = state.lock().unwrap();
        assert!(matches!(state.lock(), Err(StateError::Locked { .. })));
        drop(held);
        assert!(state.lock().is_ok());
    }
}
