//! Manifest datasets: a CSV listing `path,label[,group]` (extra columns are ignored), with
//! paths relative to the CSV's folder. The label is a class index (`0`, `1`, ...) or
//! `real`/`fake` (0/1, any case); the group names the identity, video or source.

use std::path::{Path, PathBuf};

use crate::{Dataset, DecodeOptions, Error, Image, Result, Sample, SampleOrigin, Target};

/// One row of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ManifestEntry {
    /// Path as written in the CSV.
    pub path: String,
    /// Class index.
    pub label: u32,
    /// Identity / video / source, when the CSV has a `group` column.
    pub group: Option<String>,
}

/// A dataset described by a CSV file.
#[derive(Debug, Clone)]
pub struct Manifest {
    base: PathBuf,
    entries: Vec<ManifestEntry>,
    decode: DecodeOptions,
}

impl Manifest {
    /// Reads the CSV at `path`; every malformed row is an error naming its line.
    pub fn open(path: impl AsRef<Path>) -> Result<Manifest> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile { path: path.to_path_buf() },
            _ => Error::io(path, e),
        })?;
        let entries = parse_manifest(&bytes, path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Manifest { base, entries, decode: DecodeOptions::default() })
    }

    /// Decodes with `options` instead of the strict default (to accept damaged files, say).
    pub fn with_decode(mut self, options: DecodeOptions) -> Manifest {
        self.decode = options;
        self
    }

    /// The rows.
    pub fn entries(&self) -> &[ManifestEntry] {
        &self.entries
    }

    /// Class index of every sample.
    pub fn labels(&self) -> Vec<u32> {
        self.entries.iter().map(|e| e.label).collect()
    }

    /// Group of every sample (for group-disjoint splits).
    pub fn groups(&self) -> Vec<Option<String>> {
        self.entries.iter().map(|e| e.group.clone()).collect()
    }
}

impl Dataset for Manifest {
    type Item = Sample;

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let e = self
            .entries
            .get(index)
            .ok_or(Error::IndexOutOfRange { index, len: self.entries.len() })?;
        Ok(Sample {
            id: e.path.clone(),
            image: Image::open_with(&self.base.join(&e.path), &self.decode)?,
            target: Target::Class(e.label),
            group: e.group.clone(),
        })
    }

    fn origin(&self, index: usize) -> Option<SampleOrigin> {
        let e = self.entries.get(index)?;
        Some(SampleOrigin { id: e.path.clone(), path: Some(self.base.join(&e.path)) })
    }
}

/// Parses manifest CSV bytes; `path` names the file in errors.
pub fn parse_manifest(bytes: &[u8], path: &Path) -> Result<Vec<ManifestEntry>> {
    let mut reader =
        csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(false).from_reader(bytes);
    let headers = reader.headers().map_err(|e| Error::parse(path, 1, e.to_string()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let path_col =
        column("path").ok_or_else(|| Error::parse(path, 1, "header has no `path` column"))?;
    let label_col =
        column("label").ok_or_else(|| Error::parse(path, 1, "header has no `label` column"))?;
    let group_col = column("group");
    let mut entries = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line() as usize);
            Error::parse(path, line, e.to_string())
        })?;
        let line = record.position().map_or(0, |p| p.line() as usize);
        let file = record.get(path_col).unwrap_or_default();
        if file.is_empty() {
            return Err(Error::parse(path, line, "empty path"));
        }
        let raw = record.get(label_col).unwrap_or_default();
        let label = match raw.to_ascii_lowercase().as_str() {
            "real" => 0,
            "fake" => 1,
            other => other.parse::<u32>().map_err(|_| {
                Error::parse(path, line, format!("label {raw:?} is not a class index or real/fake"))
            })?,
        };
        let group =
            group_col.and_then(|c| record.get(c)).filter(|g| !g.is_empty()).map(str::to_string);
        entries.push(ManifestEntry { path: file.to_string(), label, group });
    }
    Ok(entries)
}
