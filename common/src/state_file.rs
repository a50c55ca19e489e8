//! Saved files in a tenant's state directory, written only the way the S3 CSI driver (Mountpoint
//! for S3) allows: no rename, no overwrite, one sequential write of a new file.
//!
//! Each save is a new generation `{name}.{gen}` followed by its marker `{name}.{gen}.sha256`; a
//! restore takes the newest generation whose marker matches its bytes, so a partial or failed save
//! never replaces a good one. A plain `{name}` (the layout of earlier versions and of the Go
//! platform) is read when no generation exists.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const MARKER: &str = "sha256";

/// One generation of a saved file found in a state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// 0 for the plain legacy file.
    pub generation: u64,
    pub path: PathBuf,
}

/// `{name}.{generation:010}`: a generation's data file.
pub fn data_name(name: &str, generation: u64) -> String {
    format!("{name}.{generation:010}")
}

/// `{name}.{generation:010}.sha256`: its marker (the data's SHA-256, hex).
pub fn marker_name(name: &str, generation: u64) -> String {
    format!("{}.{MARKER}", data_name(name, generation))
}

/// Generations of `name` with a data file in `dir` (complete or not), oldest first, and the highest
/// generation number taken by a data file or a marker (a marker whose data is gone still holds it:
/// its name cannot be created again where files are never overwritten).
fn generations(dir: &Path, name: &str) -> io::Result<(Vec<u64>, u64)> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut highest = 0;
    for entry in entries {
        let file = entry?.file_name();
        if let Some((generation, is_marker)) = file.to_str().and_then(|f| parse_name(name, f)) {
            highest = highest.max(generation);
            if !is_marker {
                out.push(generation);
            }
        }
    }
    out.sort_unstable();
    Ok((out, highest))
}

/// The generation a file name of `name` holds and whether it is a marker; `None` for other files.
pub fn parse_name(name: &str, file: &str) -> Option<(u64, bool)> {
    let rest = file.strip_prefix(name)?.strip_prefix('.')?;
    let (digits, is_marker) = match rest.strip_suffix(&format!(".{MARKER}")) {
        Some(d) => (d, true),
        None => (rest, false),
    };
    (digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| (digits.parse().expect("ten digits"), is_marker))
}

fn sha256_of(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Writes `bytes` into a newly created file in one sequential pass and syncs it (on Mountpoint the
/// sync completes the upload and reports its failure).
fn write_all(mut file: fs::File, bytes: &mut dyn Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = bytes.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
    }
    file.sync_all()?;
    Ok(hex::encode(hasher.finalize()))
}

/// The newest complete generation of `name` in `dir` (marker present and matching), else the
/// legacy plain file, else `None`.
pub fn newest(dir: &Path, name: &str) -> io::Result<Option<Saved>> {
    for generation in generations(dir, name)?.0.into_iter().rev() {
        let data = dir.join(data_name(name, generation));
        let Ok(expected) = fs::read_to_string(dir.join(marker_name(name, generation))) else {
            continue;
        };
        let actual = match sha256_of(&data) {
            Ok(d) => d,
            // Removed by a concurrent save's clean-up between the listing and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if actual == expected.trim() {
            return Ok(Some(Saved {
                generation,
                path: data,
            }));
        }
    }
    let legacy = dir.join(name);
    Ok(legacy.is_file().then_some(Saved {
        generation: 0,
        path: legacy,
    }))
}

/// Saves the complete local file `src` into `dir` as the next generation of `name`, then removes
/// older generations (best effort: a leftover is ignored by [`newest`]). Returns the generation.
pub fn save(dir: &Path, name: &str, src: &Path) -> io::Result<u64> {
    let mut file = fs::File::open(src)?;
    save_from(dir, name, &mut file)
}

/// Like [`save`], from bytes in memory.
pub fn save_bytes(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<u64> {
    save_from(dir, name, &mut io::Cursor::new(bytes))
}

fn save_from(dir: &Path, name: &str, src: &mut dyn Read) -> io::Result<u64> {
    fs::create_dir_all(dir)?;
    let (existing, highest) = generations(dir, name)?;
    let generation = highest + 1;
    let data = dir.join(data_name(name, generation));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&data)?;
    let digest = match write_all(file, src) {
        Ok(d) => d,
        Err(e) => {
            // Best effort: an incomplete generation has no marker and is skipped anyway.
            let _ = fs::remove_file(&data);
            return Err(e);
        }
    };
    let marker = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(marker_name(name, generation)))?;
    write_all(marker, &mut io::Cursor::new(digest.as_bytes()))?;
    // Best effort (a store mounted without `allow-delete` keeps them; `newest` skips them). A
    // marker goes before its data, so no marker is ever left without the data it vouches for.
    for old in existing {
        let marker = fs::remove_file(dir.join(marker_name(name, old)));
        if marker.is_ok() || marker.is_err_and(|e| e.kind() == io::ErrorKind::NotFound) {
            let _ = fs::remove_file(dir.join(data_name(name, old)));
        }
    }
    let _ = fs::remove_file(dir.join(name));
    Ok(generation)
}

/// Reads the newest complete saved copy of `name`, if any.
pub fn load_bytes(dir: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    newest(dir, name)?.map(|s| fs::read(s.path)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_is_read_back_and_replaces_older_generations() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_bytes(dir.path(), "brain.db").unwrap(), None);
        assert_eq!(save_bytes(dir.path(), "brain.db", b"one").unwrap(), 1);
        assert_eq!(save_bytes(dir.path(), "brain.db", b"two").unwrap(), 2);
        assert_eq!(
            load_bytes(dir.path(), "brain.db").unwrap().as_deref(),
            Some(&b"two"[..])
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_generation_without_a_matching_marker_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        save_bytes(dir.path(), "brain.db", b"good").unwrap();
        // A save that died after its data and before its marker, and one with a torn body.
        fs::write(dir.path().join("brain.db.0000000002"), b"partial").unwrap();
        fs::write(dir.path().join("brain.db.0000000003"), b"torn").unwrap();
        fs::write(dir.path().join("brain.db.0000000003.sha256"), "00").unwrap();
        assert_eq!(
            load_bytes(dir.path(), "brain.db").unwrap().as_deref(),
            Some(&b"good"[..])
        );
    }

    #[test]
    fn the_legacy_plain_file_is_read_when_no_generation_exists() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("brain.db"), b"go platform").unwrap();
        let saved = newest(dir.path(), "brain.db").unwrap().unwrap();
        assert_eq!(saved.generation, 0);
        save_bytes(dir.path(), "brain.db", b"new").unwrap();
        assert!(!dir.path().join("brain.db").exists());
        assert_eq!(
            load_bytes(dir.path(), "brain.db").unwrap().as_deref(),
            Some(&b"new"[..])
        );
    }

    #[test]
    fn a_marker_left_without_its_data_neither_breaks_a_restore_nor_blocks_the_next_save() {
        let dir = tempfile::tempdir().unwrap();
        save_bytes(dir.path(), "brain.db", b"good").unwrap();
        // Generation 2's data was removed but its marker stayed (a delete that half failed).
        fs::write(dir.path().join("brain.db.0000000002.sha256"), "00").unwrap();
        assert_eq!(
            load_bytes(dir.path(), "brain.db").unwrap().as_deref(),
            Some(&b"good"[..])
        );
        assert_eq!(save_bytes(dir.path(), "brain.db", b"next").unwrap(), 3);
        assert_eq!(
            load_bytes(dir.path(), "brain.db").unwrap().as_deref(),
            Some(&b"next"[..])
        );
    }

    #[test]
    fn a_failed_save_leaves_the_previous_generation_in_force() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk gone"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let dir = tempfile::tempdir().unwrap();
        save_bytes(dir.path(), "brain.db", b"good").unwrap();
        assert!(save_from(dir.path(), "brain.db", &mut Failing(3)).is_err());
        assert_eq!(
            load_bytes(dir.path(), "brain.db").unwrap().as_deref(),
            Some(&b"good"[..])
        );
        assert_eq!(save_bytes(dir.path(), "brain.db", b"after").unwrap(), 2);
    }
}
