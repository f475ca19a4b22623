//! Archives of finished work (ext, PROTOCOL.md 6.34): records moved out of the
//! live store into compressed, checksummed files in the backup directory, and
//! the index that still finds them.
//!
//! A file `agentcom-archive-<kind>-<ms>.acar` is a gzip stream of JSON lines:
//! a header `{"format":"agentcom-archive","version":1,"kind","count",
//! "created_at"}`, one record per line, and a trailer `{"sha256"}` over every
//! line before it (with their newlines). It is written to a temporary name,
//! synced and renamed, so a file under its final name is whole; only then do
//! the owners remove the records from the live store.
//!
//! The `archive` tree: `t/<task id>` → `{file, status}` (written by the queue
//! as it removes a task), `r/<order>\0<scheduled_for>` → file (standing
//! orders), `f/<file>` → the file's summary. Storage health counts from `f/`.
//!
//! Architecture invariant: knows files, lines and the index, not what a record
//! means; never deletes a file.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::StoreError;
use crate::storage::store::{decode, encode, Store};

/// The format name in every header.
const FORMAT: &str = "agentcom-archive";

/// What one archive file holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ArchiveFile {
    pub file: String,
    pub kind: String,
    pub count: u64,
    pub bytes: u64,
    pub sha256: String,
    pub created_at: i64,
}

/// Where an archived task is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ArchivedTask {
    pub file: String,
    pub status: String,
}

/// Why an archive could not be written or read.
#[derive(Debug)]
pub(crate) struct ArchiveError(pub String);

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError(format!("{what} {}: {e}", path.display()))
}

/// Writes `records` as a new archive of `kind` in `dir` (blocking I/O).
pub(crate) fn write_archive(
    dir: &Path,
    kind: &str,
    records: &[Value],
    now: i64,
) -> Result<ArchiveFile, ArchiveError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
    let name = format!(
        "agentcom-archive-{kind}-{now}-{:08x}.acar",
        rand::random::<u32>()
    );
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let file = File::create(&tmp).map_err(|e| io_error("cannot create", &tmp, e))?;
    let mut out = GzEncoder::new(BufWriter::new(file), Compression::default());
    let mut hash = Sha256::new();
    let mut line = |out: &mut GzEncoder<BufWriter<File>>, v: &Value| -> Result<(), ArchiveError> {
        let mut bytes = serde_json::to_vec(v).map_err(|e| ArchiveError(e.to_string()))?;
        bytes.push(b'\n');
        hash.update(&bytes);
        out.write_all(&bytes)
            .map_err(|e| io_error("cannot write", &tmp, e))
    };
    let header = json!({"format": FORMAT, "version": 1, "kind": kind,
                        "count": records.len(), "created_at": now});
    line(&mut out, &header)?;
    for r in records {
        line(&mut out, r)?;
    }
    let sha256 = hex::encode(hash.finalize());
    let trailer = serde_json::to_vec(&json!({ "sha256": sha256 }))
        .map_err(|e| ArchiveError(e.to_string()))?;
    out.write_all(&trailer)
        .and_then(|_| out.write_all(b"\n"))
        .map_err(|e| io_error("cannot write", &tmp, e))?;
    let writer = out
        .finish()
        .map_err(|e| io_error("cannot finish", &tmp, e))?;
    let file = writer
        .into_inner()
        .map_err(|e| io_error("cannot flush", &tmp, e.error()))?;
    file.sync_all()
        .map_err(|e| io_error("cannot sync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io_error("cannot rename", &tmp, e))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(ArchiveFile {
        file: name,
        kind: kind.to_string(),
        count: records.len() as u64,
        bytes,
        sha256,
        created_at: now,
    })
}

/// Reads an archive whole, checking its header, count and checksum; `visit`
/// sees each record (and may stop the read early by answering `false`, which
/// skips the checks of what follows).
pub(crate) fn read_archive(
    path: &Path,
    mut visit: impl FnMut(&Value) -> bool,
) -> Result<(Value, u64), ArchiveError> {
    let file = File::open(path).map_err(|e| io_error("cannot open", path, e))?;
    let reader = BufReader::new(GzDecoder::new(BufReader::new(file)));
    let mut hash = Sha256::new();
    let mut header = None;
    let mut count = 0u64;
    let mut lines = reader.split(b'\n');
    while let Some(line) = lines.next() {
        let line = line.map_err(|e| io_error("cannot read", path, e))?;
        let v: Value = serde_json::from_slice(&line)
            .map_err(|e| io_error("a line that is not JSON in", path, e))?;
        let Some(head) = &header else {
            if v["format"] != FORMAT {
                return Err(io_error("not an archive:", path, "no header"));
            }
            hash.update(&line);
            hash.update(b"\n");
            header = Some(v);
            continue;
        };
        if let Some(sum) = v
            .get("sha256")
            .filter(|_| v.as_object().is_some_and(|o| o.len() == 1))
        {
            if lines.next().is_some() {
                return Err(io_error("lines after the trailer in", path, "corrupt"));
            }
            let want = hex::encode(hash.finalize());
            if sum != &json!(want) {
                return Err(io_error("checksum mismatch in", path, "corrupt"));
            }
            if head["count"].as_u64() != Some(count) {
                return Err(io_error("record count mismatch in", path, "corrupt"));
            }
            return Ok((head.clone(), count));
        }
        hash.update(&line);
        hash.update(b"\n");
        count += 1;
        if !visit(&v) {
            return Ok((head.clone(), count));
        }
    }
    Err(io_error("no trailer in", path, "the file is cut short"))
}

/// Checks an archive file whole (`agentcom-hub verify-archive`): its header
/// with the count of records read, or why it is not a good archive.
pub fn verify_archive(path: &Path, id: Option<&str>) -> Result<(Value, Option<Value>), String> {
    let mut found = None;
    let (mut head, count) = read_archive(path, |r| {
        if id.is_some_and(|id| r["id"] == id) {
            found = Some(r.clone());
        }
        true
    })
    .map_err(|e| e.0)?;
    head["records_read"] = json!(count);
    Ok((head, found))
}

/// The archive index, and the directory of the files.
#[derive(Clone)]
pub(crate) struct Archive {
    store: Store,
    dir: PathBuf,
}

fn task_key(id: &str) -> Vec<u8> {
    let mut k = b"t/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn file_key(name: &str) -> Vec<u8> {
    let mut k = b"f/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn run_key(order: &str, scheduled_for: i64) -> Vec<u8> {
    let mut k = b"r/".to_vec();
    k.extend_from_slice(order.as_bytes());
    k.push(0);
    k.extend_from_slice(&scheduled_for.to_be_bytes());
    k
}

impl Archive {
    pub(crate) fn new(store: Store, dir: PathBuf) -> Archive {
        Archive { store, dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records a written file (staged with the removals it allows).
    pub(crate) fn add_file(&self, f: &ArchiveFile) -> Result<(), StoreError> {
        self.store.archive.insert(file_key(&f.file), encode(f))?;
        Ok(())
    }

    pub(crate) fn add_task(&self, id: &str, entry: &ArchivedTask) -> Result<(), StoreError> {
        self.store.archive.insert(task_key(id), encode(entry))?;
        Ok(())
    }

    pub(crate) fn add_run(&self, order: &str, at: i64, file: &str) -> Result<(), StoreError> {
        self.store
            .archive
            .insert(run_key(order, at), file.as_bytes())?;
        Ok(())
    }

    /// Where an archived task is, if it is.
    pub(crate) fn task(&self, id: &str) -> Result<Option<ArchivedTask>, StoreError> {
        let k = task_key(id);
        match self.store.archive.get(&k)? {
            Some(v) => Ok(Some(decode("archive", &k, &v)?)),
            None => Ok(None),
        }
    }

    /// An archived task's record (blocking: reads its file).
    pub(crate) fn read_task(&self, id: &str) -> Result<Option<Value>, ArchiveError> {
        let Some(entry) = self.task(id).map_err(|e| ArchiveError(e.to_string()))? else {
            return Ok(None);
        };
        let path = self.dir.join(&entry.file);
        let mut found = None;
        read_archive(&path, |r| {
            if r["id"] == id {
                found = Some(r.clone());
                return false;
            }
            true
        })?;
        Ok(found.map(|mut t| {
            t["archived"] = json!(true);
            t["archive_file"] = json!(entry.file);
            t
        }))
    }

    /// Totals for storage health: files, tasks, standing runs, bytes.
    pub(crate) fn totals(&self) -> Result<Value, StoreError> {
        let (mut files, mut tasks, mut runs, mut bytes) = (0u64, 0u64, 0u64, 0u64);
        for item in self.store.archive.scan_prefix(b"f/") {
            let (k, v) = item?;
            let f: ArchiveFile = decode("archive", &k, &v)?;
            files += 1;
            bytes += f.bytes;
            match f.kind.as_str() {
                "tasks" => tasks += f.count,
                _ => runs += f.count,
            }
        }
        Ok(json!({"dir": self.dir, "files": files, "tasks": tasks,
                  "standing_runs": runs, "bytes": bytes}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_archive_reads_back_and_a_changed_byte_is_found() {
        let dir = tempfile::tempdir().expect("dir");
        let records: Vec<Value> = (0..100)
            .map(|i| json!({"id": format!("task-{i}"), "result": {"n": i}}))
            .collect();
        let f = write_archive(dir.path(), "tasks", &records, 1).expect("write");
        assert_eq!(f.count, 100);
        let path = dir.path().join(&f.file);
        let mut seen = Vec::new();
        let (head, count) = read_archive(&path, |r| {
            seen.push(r["id"].clone());
            true
        })
        .expect("read");
        assert_eq!((head["kind"].as_str(), count), (Some("tasks"), 100));
        assert_eq!(seen.len(), 100);
        // The same lines with one value changed (a valid gzip): the checksum says so.
        let mut forged = records.clone();
        forged[50]["result"]["n"] = json!(999);
        let g = write_archive(dir.path(), "tasks", &forged, 2).expect("write");
        let mut spliced = Vec::new();
        read_archive(&dir.path().join(&g.file), |_| true).expect("itself");
        let reader = BufReader::new(GzDecoder::new(
            File::open(dir.path().join(&g.file)).expect("open"),
        ));
        let mut lines: Vec<Vec<u8>> = reader.split(b'\n').map(|l| l.expect("line")).collect();
        let original = BufReader::new(GzDecoder::new(File::open(&path).expect("open")));
        let trailer = original
            .split(b'\n')
            .last()
            .expect("trailer")
            .expect("line");
        let last = lines.len() - 1;
        lines[last] = trailer;
        let bad = dir.path().join("agentcom-archive-bad.acar");
        let mut enc = GzEncoder::new(File::create(&bad).expect("create"), Compression::default());
        for l in &lines {
            enc.write_all(l).expect("write");
            enc.write_all(b"\n").expect("write");
        }
        enc.finish().expect("finish");
        spliced.push(read_archive(&bad, |_| true).is_err());
        assert_eq!(spliced, [true]);
        // Cut short: refused.
        let bytes = std::fs::read(&path).expect("read");
        let cut = dir.path().join("cut.acar");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
        assert!(read_archive(&cut, |_| true).is_err());
    }
}
