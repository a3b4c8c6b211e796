//! The node identity on disk: two key files in the data directory, mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use x0_protocols::{Identity, IdentityError};

pub const ED25519_FILE: &str = "identity.ed25519";
pub const MLKEM_FILE: &str = "identity.mlkem768";

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Corrupt {
        path: PathBuf,
        source: IdentityError,
    },
    #[error(
        "{present} exists but {missing} does not: refusing to guess (restore it, or move both away to make a new identity)"
    )]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error("{0} already holds an identity; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("no entropy from the operating system: {0}")]
    Entropy(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Loads the identity in `dir`, or creates one there if it has none.
pub fn load_or_create(dir: &Path) -> Result<Identity, KeystoreError> {
    let (ed, kem) = (dir.join(ED25519_FILE), dir.join(MLKEM_FILE));
    match (ed.exists(), kem.exists()) {
        (true, true) => load(dir),
        (false, false) => write_new(dir),
        (true, false) => Err(KeystoreError::Incomplete {
            present: ed,
            missing: kem,
        }),
        (false, true) => Err(KeystoreError::Incomplete {
            present: kem,
            missing: ed,
        }),
    }
}

/// Reads the identity in `dir`; damaged files are reported, never replaced.
pub fn load(dir: &Path) -> Result<Identity, KeystoreError> {
    let (ed, kem) = (dir.join(ED25519_FILE), dir.join(MLKEM_FILE));
    let ed_bytes = zeroize::Zeroizing::new(fs::read(&ed).map_err(io_error(&ed))?);
    let kem_bytes = zeroize::Zeroizing::new(fs::read(&kem).map_err(io_error(&kem))?);
    // Say which file is bad: check each on its own first.
    Identity::from_file_bytes(&ed_bytes, &Identity::from_seed([0; 32]).mlkem_file_bytes())
        .map_err(|source| KeystoreError::Corrupt {
            path: ed.clone(),
            source,
        })?;
    Identity::from_file_bytes(&ed_bytes, &kem_bytes)
        .map_err(|source| KeystoreError::Corrupt { path: kem, source })
}

/// Creates a new identity in `dir` (made if missing); refuses if one is there.
pub fn write_new(dir: &Path) -> Result<Identity, KeystoreError> {
    let (ed, kem) = (dir.join(ED25519_FILE), dir.join(MLKEM_FILE));
    if ed.exists() || kem.exists() {
        return Err(KeystoreError::Exists(dir.to_path_buf()));
    }
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| KeystoreError::Entropy(e.to_string()))?;
    let identity = Identity::from_seed(*seed);
    write_private(&kem, &identity.mlkem_file_bytes())?;
    // The Ed25519 file last: a crash between the two leaves an incomplete pair that
    // load_or_create refuses loudly, never a half-written file that parses.
    write_private(&ed, &identity.ed25519_file_bytes())?;
    Ok(identity)
}

/// Writes `bytes` to `path` with mode 0600 through a synced temporary file and a rename,
/// so the file is either absent or complete.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeystoreError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    // A leftover from a crash may have other permissions: never write a key into it.
    match fs::remove_file(&partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(&partial)(e)),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io_error(&partial))?;
    file.write_all(bytes).map_err(io_error(&partial))?;
    file.sync_all().map_err(io_error(&partial))?;
    fs::rename(&partial, path).map_err(io_error(path))?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = fs::File::open(parent)
    {
        // Make the rename itself durable.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_then_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(dir.path()).expect("created");
        let again = load_or_create(dir.path()).expect("loaded");
        assert_eq!(first.id(), again.id());
        for name in [ED25519_FILE, MLKEM_FILE] {
            let mode = fs::metadata(dir.path().join(name))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    #[test]
    fn a_stale_partial_file_never_lends_its_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stale = dir.path().join(format!("{ED25519_FILE}.partial"));
        fs::write(&stale, b"old").expect("stale");
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_new(dir.path()).expect("created");
        let mode = fs::metadata(dir.path().join(ED25519_FILE))
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn keygen_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_new(dir.path()).expect("first");
        assert!(matches!(
            write_new(dir.path()),
            Err(KeystoreError::Exists(_))
        ));
    }

    #[test]
    fn corrupt_or_missing_halves_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_new(dir.path()).expect("created");
        fs::write(dir.path().join(MLKEM_FILE), b"garbage").expect("overwrite");
        let err = load_or_create(dir.path()).expect_err("corrupt").to_string();
        assert!(err.contains(MLKEM_FILE), "{err}");

        fs::remove_file(dir.path().join(MLKEM_FILE)).expect("remove");
        let err = load_or_create(dir.path())
            .expect_err("incomplete")
            .to_string();
        assert!(err.contains("refusing to guess"), "{err}");
        assert!(dir.path().join(ED25519_FILE).exists(), "nothing replaced");
    }
}
