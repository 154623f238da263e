//! An append-only JSON Lines file of records, the one way every run keeps its results: what is in it is
//! read back on open (a rerun skips those), each new record is written and flushed as it is made.

use crate::error::{CoreError, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The records of a JSON Lines file, and the file open for appending.
pub struct JsonlLog<R> {
    path: PathBuf,
    file: std::fs::File,
    records: Vec<R>,
}

impl<R: serde::Serialize + serde::de::DeserializeOwned> JsonlLog<R> {
    /// Opens (or creates) the log at `path` and reads its records. A last line cut off by a crash is
    /// dropped from the file (that record is made again); a malformed line elsewhere is an error.
    pub fn open(path: &Path) -> Result<Self> {
        let mut records = Vec::new();
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
            let complete;
            (records, complete) = parse_complete_lines(path, &text)?;
            if complete < text.len() {
                tracing::warn!("{}: dropping an unfinished last line (a run stopped while writing it)", path.display());
                let f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| CoreError::io(path, e))?;
                f.set_len(complete as u64).map_err(|e| CoreError::io(path, e))?;
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| CoreError::io(path, e))?;
        Ok(JsonlLog { path: path.to_owned(), file, records })
    }

    /// The records of the file at `path`, read without opening it for writing (another process's run
    /// folder, a shard being merged). A last line cut off by a crash is left out, as [`JsonlLog::open`]
    /// leaves it out, but the file is not changed.
    pub fn read(path: &Path) -> Result<Vec<R>> {
        let text = std::fs::read_to_string(path).map_err(|e| CoreError::io(path, e))?;
        Ok(parse_complete_lines(path, &text)?.0)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All records, in the order they were written.
    pub fn records(&self) -> &[R] {
        &self.records
    }

    /// Appends a record and flushes it to disk before returning. Where the write fails (a full disk),
    /// the file is cut back to its records before it, and the error returned.
    pub fn append(&mut self, record: R) -> Result<()> {
        let mut line = serde_json::to_string(&record).map_err(|e| CoreError::invalid(format!("{}: {e}", self.path.display())))?;
        line.push('\n');
        let before = self.file.metadata().map_err(|e| CoreError::io(&self.path, e))?.len();
        if let Err(e) = self.file.write_all(line.as_bytes()).and_then(|()| self.file.sync_data()) {
            // A full disk can take part of the line: cut it off, so the file keeps whole records only.
            let _ = self.file.set_len(before);
            return Err(CoreError::io(&self.path, e));
        }
        self.records.push(record);
        Ok(())
    }
}

/// The records of the complete lines of `text` (the file at `path`), and the byte length of those lines.
fn parse_complete_lines<R: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<(Vec<R>, usize)> {
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    let mut records = Vec::new();
    for (i, line) in text[..complete].lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        records.push(serde_json::from_str(line).map_err(|e| CoreError::malformed(path, format!("line {}: {e}", i + 1)))?);
    }
    Ok((records, complete))
}
