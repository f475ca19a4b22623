//! The backup file format (version 1): one file holds every tree of the store.
//!
//! ```text
//! magic        8 bytes  "AGCMBKUP"
//! version      u16      1
//! created_at   i64      ms since the Unix epoch
//! hub_version  u16 length + UTF-8
//! tree_count   u32
//! per tree:    u16 length + name bytes
//!              records: 0x01, u32 key length, key, u32 value length, value
//!              end:     0x00, u64 number of records in the tree
//! trailer      32 bytes SHA-256 of every byte before it
//! ```
//! Integers are big-endian. Values are copied as stored (format byte included), so
//! a backup is independent of what the records mean.
//!
//! Reading checks the whole-file checksum first (one pass), then walks the framing
//! (a second pass) with every length checked against what is left of the file, so
//! a damaged file is refused before anything is decoded or written from it.
//!
//! Architecture invariant: this module knows bytes and framing only; it neither
//! opens a `Store` nor knows any record type.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Progress;
use crate::error::BackupError;

/// First bytes of every backup file.
pub(super) const MAGIC: &[u8; 8] = b"AGCMBKUP";
/// The format version this hub writes and reads.
pub(super) const FORMAT_VERSION: u16 = 1;
const TRAILER: u64 = 32;
/// magic + version + created_at + hub_version length + tree count (no name bytes).
const MIN_HEADER: u64 = 8 + 2 + 8 + 2 + 4;
const TAG_RECORD: u8 = 1;
const TAG_END: u8 = 0;
/// Records per progress report.
const PROGRESS_EVERY: u64 = 4096;

/// What a backup file holds, as read back or as written.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub format_version: u16,
    pub created_at: i64,
    pub hub_version: String,
    /// (tree name, records), in file order.
    pub trees: Vec<(String, u64)>,
    pub records: u64,
    pub size_bytes: u64,
    /// Hex SHA-256 of the file's contents before the trailer (the trailer itself).
    pub sha256: String,
}

/// One item of a backup, in file order.
pub(crate) enum Item<'a> {
    /// A tree starts; its records follow.
    Tree(&'a [u8]),
    Record(&'a [u8], &'a [u8]),
}

/// Hashes and counts everything written through it.
struct Hashing<W: Write> {
    out: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

fn len_u16(what: &str, n: usize) -> Result<u16, String> {
    u16::try_from(n).map_err(|_| format!("{what} is longer than 65535 bytes"))
}

fn len_u32(what: &str, n: usize) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{what} is longer than 4 GiB"))
}

/// Writes every tree of `db` to `file` (already created by the caller; it syncs
/// it). The caller holds the store lock alone, so the trees do not change meanwhile.
pub(super) fn write_backup(
    db: &sled::Db,
    file: &File,
    path: &Path,
    created_at: i64,
    hub_version: &str,
    progress: &Progress,
) -> Result<BackupSummary, BackupError> {
    let io = |e: std::io::Error| BackupError::Io {
        action: "write backup",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let bad = |reason: String| BackupError::Malformed {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    let mut out = Hashing {
        out: BufWriter::with_capacity(256 * 1024, file),
        hash: Sha256::new(),
        bytes: 0,
    };
    let names = db.tree_names();
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&FORMAT_VERSION.to_be_bytes()).map_err(io)?;
    out.write_all(&created_at.to_be_bytes()).map_err(io)?;
    let version = hub_version.as_bytes();
    out.write_all(
        &len_u16("hub version", version.len())
            .map_err(bad)?
            .to_be_bytes(),
    )
    .map_err(io)?;
    out.write_all(version).map_err(io)?;
    out.write_all(
        &len_u32("tree list", names.len())
            .map_err(bad)?
            .to_be_bytes(),
    )
    .map_err(io)?;
    let mut trees = Vec::with_capacity(names.len());
    let mut records = 0u64;
    for name in names {
        out.write_all(&len_u16("tree name", name.len()).map_err(bad)?.to_be_bytes())
            .map_err(io)?;
        out.write_all(&name).map_err(io)?;
        let tree = db
            .open_tree(&name)
            .map_err(crate::error::StoreError::from)?;
        let mut count = 0u64;
        for item in tree.iter() {
            let (key, value) = item.map_err(crate::error::StoreError::from)?;
            out.write_all(&[TAG_RECORD]).map_err(io)?;
            out.write_all(&len_u32("key", key.len()).map_err(bad)?.to_be_bytes())
                .map_err(io)?;
            out.write_all(&key).map_err(io)?;
            out.write_all(&len_u32("value", value.len()).map_err(bad)?.to_be_bytes())
                .map_err(io)?;
            out.write_all(&value).map_err(io)?;
            count += 1;
            if count.is_multiple_of(PROGRESS_EVERY) {
                progress.at(out.bytes, records + count);
            }
        }
        out.write_all(&[TAG_END]).map_err(io)?;
        out.write_all(&count.to_be_bytes()).map_err(io)?;
        records += count;
        trees.push((String::from_utf8_lossy(&name).into_owned(), count));
    }
    let digest = out.hash.clone().finalize();
    out.out.write_all(&digest).map_err(io)?;
    out.out.flush().map_err(io)?;
    let size_bytes = out.bytes + TRAILER;
    progress.at(size_bytes, records);
    Ok(BackupSummary {
        path: path.to_path_buf(),
        format_version: FORMAT_VERSION,
        created_at,
        hub_version: hub_version.to_string(),
        trees,
        records,
        size_bytes,
        sha256: hex::encode(digest),
    })
}

/// Reads a backup file front to back with bounds checks.
struct Reader<R: Read> {
    input: R,
    path: PathBuf,
    offset: u64,
    /// Where the trailer starts: no field may reach past it.
    end: u64,
}

impl<R: Read> Reader<R> {
    fn malformed(&self, reason: impl Into<String>) -> BackupError {
        BackupError::Malformed {
            path: self.path.clone(),
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), BackupError> {
        if self.offset + buf.len() as u64 > self.end {
            return Err(self.malformed(format!(
                "{what} of {} bytes runs past the end of the data",
                buf.len()
            )));
        }
        self.input.read_exact(buf).map_err(|e| BackupError::Io {
            action: "read backup",
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], BackupError> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn u8(&mut self, what: &str) -> Result<u8, BackupError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, BackupError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, BackupError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, BackupError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// `len` bytes into `buf` (reused between records).
    fn bytes_into(&mut self, len: u64, buf: &mut Vec<u8>, what: &str) -> Result<(), BackupError> {
        if self.offset + len > self.end {
            return Err(self.malformed(format!(
                "{what} of {len} bytes runs past the end of the data"
            )));
        }
        buf.resize(len as usize, 0);
        self.fill(buf, what)
    }
}

fn open(path: &Path) -> Result<(File, u64), BackupError> {
    let io = |e: std::io::Error| BackupError::Io {
        action: "read backup",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let file = File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(BackupError::NotABackup {
            path: path.to_path_buf(),
        });
    }
    Ok((file, meta.len()))
}

/// Checks magic, version and the whole-file checksum. Returns the hex checksum.
fn check_file(path: &Path, progress: &Progress) -> Result<String, BackupError> {
    let (file, len) = open(path)?;
    let io = |e: std::io::Error| BackupError::Io {
        action: "read backup",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut input = BufReader::with_capacity(256 * 1024, file);
    let mut head = [0u8; 10];
    let got = read_up_to(&mut input, &mut head).map_err(io)?;
    if got < MAGIC.len() || &head[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotABackup {
            path: path.to_path_buf(),
        });
    }
    if got == head.len() {
        let version = u16::from_be_bytes([head[8], head[9]]);
        if version != FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
                supported: FORMAT_VERSION,
            });
        }
    }
    if len < MIN_HEADER + TRAILER {
        return Err(BackupError::Truncated {
            path: path.to_path_buf(),
            len,
            expected: MIN_HEADER + TRAILER,
        });
    }
    let mut hash = Sha256::new();
    hash.update(&head[..got]);
    let mut left = len - TRAILER - got as u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut done = got as u64;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = input.read(&mut buf[..want]).map_err(io)?;
        if n == 0 {
            return Err(BackupError::Truncated {
                path: path.to_path_buf(),
                len: done,
                expected: len,
            });
        }
        hash.update(&buf[..n]);
        left -= n as u64;
        done += n as u64;
        progress.at(done, 0);
    }
    let mut stored = [0u8; TRAILER as usize];
    input.read_exact(&mut stored).map_err(io)?;
    let computed = hash.finalize();
    if computed.as_slice() != stored {
        return Err(BackupError::ChecksumMismatch {
            path: path.to_path_buf(),
            stored: hex::encode(stored),
            computed: hex::encode(computed),
        });
    }
    Ok(hex::encode(computed))
}

fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// Verifies `path` (magic, version, checksum, then every frame) and hands each tree
/// and record to `visit` in file order. Nothing is handed out before the checksum
/// has matched; a `visit` error stops the read and is returned.
pub(crate) fn read_backup(
    path: &Path,
    progress: &Progress,
    visit: &mut dyn FnMut(Item<'_>) -> Result<(), BackupError>,
) -> Result<BackupSummary, BackupError> {
    let sha256 = check_file(path, progress)?;
    let (file, len) = open(path)?;
    let mut r = Reader {
        input: BufReader::with_capacity(256 * 1024, file),
        path: path.to_path_buf(),
        offset: 0,
        end: len.saturating_sub(TRAILER),
    };
    let magic: [u8; 8] = r.array("magic")?;
    if &magic != MAGIC {
        return Err(BackupError::NotABackup {
            path: path.to_path_buf(),
        });
    }
    let format_version = r.u16("format version")?;
    let created_at = i64::from_be_bytes(r.array("created_at")?);
    let version_len = r.u16("hub version length")?;
    let mut buf = Vec::new();
    r.bytes_into(u64::from(version_len), &mut buf, "hub version")?;
    let hub_version =
        String::from_utf8(buf.clone()).map_err(|_| r.malformed("hub version is not UTF-8"))?;
    let tree_count = r.u32("tree count")?;
    let mut trees = Vec::new();
    let mut records = 0u64;
    let (mut key, mut value) = (Vec::new(), Vec::new());
    for _ in 0..tree_count {
        let name_len = r.u16("tree name length")?;
        let mut name = Vec::new();
        r.bytes_into(u64::from(name_len), &mut name, "tree name")?;
        visit(Item::Tree(&name))?;
        let mut count = 0u64;
        loop {
            match r.u8("record tag")? {
                TAG_RECORD => {
                    let n = r.u32("key length")?;
                    r.bytes_into(u64::from(n), &mut key, "key")?;
                    let n = r.u32("value length")?;
                    r.bytes_into(u64::from(n), &mut value, "value")?;
                    visit(Item::Record(&key, &value))?;
                    count += 1;
                    if (records + count).is_multiple_of(PROGRESS_EVERY) {
                        progress.at(r.offset, records + count);
                    }
                }
                TAG_END => {
                    let stated = r.u64("tree record count")?;
                    if stated != count {
                        return Err(r.malformed(format!(
                            "tree {} states {stated} records but holds {count}",
                            String::from_utf8_lossy(&name)
                        )));
                    }
                    break;
                }
                other => return Err(r.malformed(format!("unknown record tag {other}"))),
            }
        }
        records += count;
        trees.push((String::from_utf8_lossy(&name).into_owned(), count));
    }
    if r.offset != r.end {
        return Err(r.malformed(format!("{} bytes follow the last tree", r.end - r.offset)));
    }
    progress.at(len, records);
    Ok(BackupSummary {
        path: path.to_path_buf(),
        format_version,
        created_at,
        hub_version,
        trees,
        records,
        size_bytes: len,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let db = sled::Config::new()
            .path(dir.join("db"))
            .open()
            .expect("open sled");
        let t = db.open_tree("tasks").expect("tree");
        for i in 0u64..100 {
            t.insert(i.to_be_bytes(), format!("value {i}").as_bytes())
                .expect("insert");
        }
        db.open_tree("empty").expect("tree");
        let path = dir.join("b.acbk");
        let file = File::create(&path).expect("create");
        let s = write_backup(&db, &file, &path, 42, "test", &Progress::silent()).expect("written");
        assert_eq!(s.records, 100);
        path
    }

    #[test]
    fn round_trip_gives_every_record_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = sample(dir.path());
        let mut seen = Vec::new();
        let s = read_backup(&path, &Progress::silent(), &mut |item| {
            if let Item::Record(k, v) = item {
                seen.push((k.to_vec(), v.to_vec()));
            }
            Ok(())
        })
        .expect("reads");
        assert_eq!(
            (s.created_at, s.records, s.hub_version.as_str()),
            (42, 100, "test")
        );
        assert!(s.trees.contains(&("empty".to_string(), 0)));
        assert_eq!(seen[7], (7u64.to_be_bytes().to_vec(), b"value 7".to_vec()));
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = sample(dir.path());
        let good = std::fs::read(&path).expect("read");
        let check = |bytes: &[u8]| {
            std::fs::write(&path, bytes).expect("write");
            read_backup(&path, &Progress::silent(), &mut |_| Ok(())).unwrap_err()
        };
        let mut flipped = good.clone();
        flipped[good.len() / 2] ^= 0x10;
        assert!(matches!(
            check(&flipped),
            BackupError::ChecksumMismatch { .. }
        ));
        assert!(matches!(
            check(&good[..good.len() - 10]),
            BackupError::ChecksumMismatch { .. }
        ));
        assert!(matches!(check(&good[..20]), BackupError::Truncated { .. }));
        assert!(matches!(
            check(b"hello world, not a backup"),
            BackupError::NotABackup { .. }
        ));
        let mut future = good.clone();
        future[9] = 9;
        assert!(matches!(
            check(&future),
            BackupError::UnsupportedVersion { version: 9, .. }
        ));
    }
}
