//! Private files and directories: state, request traces, diagnostics and events can hold
//! indicator bodies (possibly TLP:RED) and must not be readable by other users.
//!
//! Directories are created 0700 and files 0600 whatever the umask; an existing file or
//! directory we open for writing is tightened to those modes.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Mode of every directory we create.
pub(crate) const DIR_MODE: u32 = 0o700;
/// Mode of every file we create.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode 0700, and tightens `dir` itself to 0700.
pub(crate) fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    create_missing_private_dirs(dir)?;
    restrict(dir, DIR_MODE)
}

/// Creates `dir` and its missing parents with mode 0700, leaving directories that already exist
/// as they are: for places the user chose (an output file's directory may be `.` or `/tmp`).
pub(crate) fn create_missing_private_dirs(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(DIR_MODE);
    }
    builder.create(dir)
}

/// [`open_private_append`], first creating the file's missing parent directories (0700).
pub(crate) fn open_private_append_creating_dirs(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        create_missing_private_dirs(dir)?;
    }
    open_private_append(path)
}

/// Options that create a file with mode 0600 (the umask can only remove bits from it).
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(FILE_MODE);
    }
    options
}

/// Opens `path` for appending, creating it 0600, and tightens an existing file to 0600.
pub(crate) fn open_private_append(path: &Path) -> io::Result<File> {
    let file = private_options().create(true).append(true).open(path)?;
    restrict_file(&file)?;
    Ok(file)
}

/// Writes `contents` to `path` (created or truncated) with mode 0600.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut file = private_options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    restrict_file(&file)?;
    file.write_all(contents)
}

/// Tightens an open file to 0600 when it has any group or other bit.
pub(crate) fn restrict_file(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode != FILE_MODE {
            file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Sets `path`'s permission bits to `mode` when they differ.
pub(crate) fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if current != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Bytes kept as they are in a [`path_component`]: `A-Z a-z 0-9 . _ -`.
const PATH_SAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'_')
    .remove(b'-');

/// The longest [`path_component`] (file names are limited to 255 bytes on most systems).
const MAX_COMPONENT: usize = 160;

/// An id from a policy (input, stream or unit id) made safe to use inside one file name:
/// everything outside `A-Z a-z 0-9 . _ -` is percent-encoded, and so is a leading `.`, so the
/// result never holds a `/`, is never `.` or `..`, and never names a hidden file. Distinct ids
/// give distinct names; one longer than 160 bytes is cut and ends in `~` and a hash of the id
/// (`~` never appears otherwise).
pub(crate) fn path_component(id: &str) -> String {
    use sha2::Digest as _;
    let mut encoded = percent_encoding::utf8_percent_encode(id, PATH_SAFE).to_string();
    if encoded.starts_with('.') {
        encoded.replace_range(..1, "%2E");
    }
    if encoded.len() > MAX_COMPONENT {
        let digest = sha2::Sha256::digest(id.as_bytes());
        let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        encoded.truncate(MAX_COMPONENT - 17);
        encoded.push('~');
        encoded.push_str(&hash);
    }
    encoded
}

#[cfg(test)]
mod component_tests {
    use super::path_component;

    #[test]
    fn ids_never_become_separators_dot_dot_or_hidden_files() {
        assert_eq!(
            path_component("tc-prod_indicator.v2"),
            "tc-prod_indicator.v2"
        );
        assert_eq!(path_component("x/../../escaped"), "x%2F..%2F..%2Fescaped");
        assert_eq!(path_component(".."), "%2E.");
        assert_eq!(path_component(".hidden"), "%2Ehidden");
        assert_eq!(path_component("a\\b c\0é"), "a%5Cb%20c%00%C3%A9");
        let long = path_component(&"y".repeat(1000));
        assert!(long.len() <= 160 && long.contains('~'), "{long}");
        assert_ne!(long, path_component(&"y".repeat(999)));
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_private_whatever_was_there() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_private_dir_all(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700);

        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_private_append(&file).unwrap());
        assert_eq!(mode(&file), 0o600, "an existing file is tightened");

        let fresh = dir.join("g");
        write_private(&fresh, b"y").unwrap();
        assert_eq!(mode(&fresh), 0o600);
    }

    #[test]
    fn output_parents_are_created_private_but_existing_ones_left_alone() {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = root.path().join("new/deeper/events.ndjson");
        drop(open_private_append_creating_dirs(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&root.path().join("new")), 0o700);
        assert_eq!(mode(&root.path().join("new/deeper")), 0o700);
        assert_eq!(
            mode(root.path()),
            0o755,
            "an existing directory is not changed"
        );
    }
}
