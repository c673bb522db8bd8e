//! A run report: a folder holding `report.md` and the PNGs it shows, rewritten after every
//! stage so an interrupted run keeps what it finished.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use deeprecog_dataset::fsutil::write_atomically;

/// A markdown report being built in a run folder.
#[derive(Debug, Clone)]
pub struct Report {
    dir: PathBuf,
    markdown: String,
}

impl Report {
    /// Starts a report titled `title` in `dir` (created if needed).
    pub fn create(dir: impl AsRef<Path>, title: &str) -> deeprecog_dataset::Result<Report> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| deeprecog_dataset::Error::io(&dir, e))?;
        let report = Report { dir, markdown: format!("# {title}\n\n") };
        report.save()?;
        Ok(report)
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path inside the run folder, for a file the report will show.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Starts a section.
    pub fn section(&mut self, title: &str) -> &mut Self {
        let _ = write!(self.markdown, "## {title}\n\n");
        self
    }

    /// A paragraph.
    pub fn text(&mut self, text: &str) -> &mut Self {
        let _ = write!(self.markdown, "{text}\n\n");
        self
    }

    /// A table with a header row ([`markdown_table`]).
    pub fn table<S: AsRef<str>>(&mut self, header: &[&str], rows: &[Vec<S>]) -> &mut Self {
        self.markdown.push_str(&markdown_table(header, rows));
        self.markdown.push('\n');
        self
    }

    /// An image of the run folder, by file name.
    pub fn image(&mut self, name: &str, caption: &str) -> &mut Self {
        let _ = write!(self.markdown, "![{caption}]({name})\n\n");
        self
    }

    /// Writes `report.md` (atomically).
    pub fn save(&self) -> deeprecog_dataset::Result<()> {
        Ok(write_atomically(&self.dir.join("report.md"), self.markdown.as_bytes())?)
    }

    /// The markdown so far.
    pub fn markdown(&self) -> &str {
        &self.markdown
    }
}

/// A Markdown table: the header row, the separator, one line per row, each line ending in a
/// newline.
///
/// ```
/// let table = deeprecog::report::markdown_table(&["a", "b"], &[vec!["1", "2"]]);
/// assert_eq!(table, "| a | b |\n|---|---|\n| 1 | 2 |\n");
/// ```
pub fn markdown_table<S: AsRef<str>>(header: &[&str], rows: &[Vec<S>]) -> String {
    let mut out = format!("| {} |\n|{}\n", header.join(" | "), "---|".repeat(header.len()));
    for row in rows {
        let cells: Vec<&str> = row.iter().map(AsRef::as_ref).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_saves_markdown() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Report::create(dir.path().join("run"), "Quickstart").unwrap();
        r.section("Data").text("hello").table(&["a", "b"], &[vec!["1", "2"]]).image("x.png", "X");
        r.save().unwrap();
        let md = std::fs::read_to_string(dir.path().join("run/report.md")).unwrap();
        assert!(md.starts_with("# Quickstart\n"));
        assert!(md.contains("| a | b |\n|---|---|\n| 1 | 2 |"));
        assert!(md.contains("![X](x.png)"));
    }
}
