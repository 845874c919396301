//! Writing files so that a crash never leaves half of one behind.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync
/// of the directory), readable by the owner only: used for keys and certificates.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("path has no parent directory"))?;
    fs::create_dir_all(dir)?;
    let temporary = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|name| name.to_str()).unwrap_or("file")
    ));
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path)?;
    sync_dir(dir)
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot use the key {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} must hold exactly 32 bytes")]
    Malformed { path: String },
}

/// A 32-byte secret key kept at `path`, created (readable by the owner only)
/// on first use.
pub fn load_or_create_key(path: &Path) -> Result<[u8; 32], KeyFileError> {
    let io = |source| KeyFileError::Io { path: path.display().to_string(), source };
    if path.exists() {
        return fs::read(path)
            .map_err(io)?
            .try_into()
            .map_err(|_| KeyFileError::Malformed { path: path.display().to_string() });
    }
    let key: [u8; 32] = rand::random();
    write_private_file(path, &key).map_err(io)?;
    Ok(key)
}
