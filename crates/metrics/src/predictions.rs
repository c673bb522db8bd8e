//! Reading prediction files: CSV with header `id,label,score` and optional `video`, `group`.
//!
//! ```text
//! id,label,score,video,group
//! f0001,1,0.93,vid_a,male
//! f0002,0,0.12,vid_b,female
//! ```
//!
//! Columns may come in any order and extra columns are ignored. `label` is `0` or `1`,
//! `score` the probability of class 1 in `[0, 1]`. Every bad row is an [`Error::Parse`] that
//! names the file and the 1-based line.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{Error, Result};

/// The rows of a predictions file, as parallel columns.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Predictions {
    /// The sample ids.
    pub ids: Vec<String>,
    /// The labels (`true` for class 1).
    pub labels: Vec<bool>,
    /// The probabilities of class 1.
    pub scores: Vec<f64>,
    /// The video of each sample, when the file has a `video` column.
    pub videos: Option<Vec<String>>,
    /// The group of each sample, when the file has a `group` column.
    pub groups: Option<Vec<String>>,
}

impl Predictions {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Reads and validates a predictions CSV file.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Parse`] (with the line) for a missing
/// required column, a row with the wrong number of fields, an empty id, a label other than
/// `0`/`1`, or a score that is not a number in `[0, 1]`; [`Error::Empty`] without data rows.
pub fn read_csv(path: &Path) -> Result<Predictions> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    parse_csv(&text, path)
}

/// Parses predictions CSV text; `path` only names the source in errors.
///
/// # Errors
/// As [`read_csv`], without the I/O error.
pub fn parse_csv(text: &str, path: &Path) -> Result<Predictions> {
    let parse_err = |line: u64, message: String| Error::Parse {
        path: PathBuf::from(path),
        line: usize::try_from(line).unwrap_or(usize::MAX),
        message,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers =
        reader.headers().map_err(|e| parse_err(1, format!("cannot read the header: {e}")))?.clone();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let required = |name: &str| {
        column(name).ok_or_else(|| {
            parse_err(
                1,
                format!("the header has no `{name}` column (expected at least id,label,score)"),
            )
        })
    };
    let (id_col, label_col, score_col) = (required("id")?, required("label")?, required("score")?);
    let (video_col, group_col) = (column("video"), column("group"));
    let mut out = Predictions {
        videos: video_col.map(|_| Vec::new()),
        groups: group_col.map(|_| Vec::new()),
        ..Predictions::default()
    };
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            match e.kind() {
                csv::ErrorKind::UnequalLengths { expected_len, len, .. } => parse_err(
                    line,
                    format!("expected {expected_len} fields like the header, found {len}"),
                ),
                _ => parse_err(line, e.to_string()),
            }
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |col: usize, name: &str| {
            record.get(col).ok_or_else(|| parse_err(line, format!("missing `{name}` field")))
        };
        let id = field(id_col, "id")?;
        if id.is_empty() {
            return Err(parse_err(line, "empty `id`".into()));
        }
        let label = match field(label_col, "label")? {
            "0" => false,
            "1" => true,
            other => return Err(parse_err(line, format!("label {other:?} is not 0 or 1"))),
        };
        let raw_score = field(score_col, "score")?;
        let score: f64 = raw_score
            .parse()
            .map_err(|_| parse_err(line, format!("score {raw_score:?} is not a number")))?;
        if !(0.0..=1.0).contains(&score) {
            return Err(parse_err(
                line,
                format!("score {raw_score} is outside [0, 1] (it must be a probability)"),
            ));
        }
        if let (Some(col), Some(videos)) = (video_col, out.videos.as_mut()) {
            videos.push(field(col, "video")?.to_string());
        }
        if let (Some(col), Some(groups)) = (group_col, out.groups.as_mut()) {
            groups.push(field(col, "group")?.to_string());
        }
        out.ids.push(id.to_string());
        out.labels.push(label);
        out.scores.push(score);
    }
    if out.is_empty() {
        return Err(Error::Empty { what: "predictions file (no data rows)" });
    }
    Ok(out)
}
