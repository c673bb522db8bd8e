//! The DeepFake Detection Challenge (DFDC) layout: part folders (`dfdc_train_part_0/`, ...)
//! each holding its videos and a `metadata.json` that maps every file name to its label, its
//! split and, for a fake, the real video it was made from:
//!
//! ```json
//! {
//!   "aaqaifqrwn.mp4": {"label": "FAKE", "split": "train", "original": "ybbrkacebd.mp4"},
//!   "ybbrkacebd.mp4": {"label": "REAL", "split": "train", "original": null}
//! }
//! ```
//!
//! A fake and its source share the same face and background, so a split that puts one in
//! training and the other in validation leaks; [`DfdcEntry::group`] names the source for both
//! so that a group-disjoint split (`deeprecog_dataset::split::group_disjoint`) keeps them on
//! one side.
//!
//! ```
//! use std::path::Path;
//! use deeprecog_detector::dfdc::{parse_metadata, Label};
//!
//! let json = br#"{
//!   "aaqaifqrwn.mp4": {"label": "FAKE", "split": "train", "original": "ybbrkacebd.mp4"},
//!   "ybbrkacebd.mp4": {"label": "REAL", "split": "train", "original": null}
//! }"#;
//! let entries = parse_metadata(json, Path::new("part_0/metadata.json"))?;
//! assert_eq!(entries[0].label, Label::Fake);
//! assert_eq!(entries[0].file, Path::new("part_0/aaqaifqrwn.mp4"));
//! assert_eq!(entries[0].group(), entries[1].group());
//! # Ok::<(), deeprecog_detector::Error>(())
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::{Error, Result};

/// The name of a part folder's metadata file.
pub const METADATA_FILE: &str = "metadata.json";

/// Real or fake. The class indices match the dataset crate's manifest (`real` = 0,
/// `fake` = 1), so manifests written from DFDC entries read back with the same labels.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// An untouched video or image.
    Real,
    /// A manipulated one.
    Fake,
}

impl Label {
    /// Both labels, in class-index order.
    pub const ALL: [Label; 2] = [Label::Real, Label::Fake];

    /// The class index: 0 for real, 1 for fake.
    pub fn index(self) -> u32 {
        match self {
            Label::Real => 0,
            Label::Fake => 1,
        }
    }

    /// The label of class index 0 or 1.
    pub fn from_index(index: u32) -> Option<Label> {
        match index {
            0 => Some(Label::Real),
            1 => Some(Label::Fake),
            _ => None,
        }
    }

    /// `"real"` or `"fake"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Real => "real",
            Label::Fake => "fake",
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Label {
    type Err = Error;

    /// `real` or `fake` in any case (DFDC writes `REAL` / `FAKE`).
    fn from_str(s: &str) -> Result<Label> {
        if s.eq_ignore_ascii_case("real") {
            Ok(Label::Real)
        } else if s.eq_ignore_ascii_case("fake") {
            Ok(Label::Fake)
        } else {
            Err(Error::InvalidConfig {
                what: "label",
                reason: format!("{s:?} is not real or fake"),
            })
        }
    }
}

/// One video listed in a `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DfdcEntry {
    /// The video file: its name joined to the metadata file's folder.
    pub file: PathBuf,
    /// The file name as the metadata lists it.
    pub name: String,
    /// Real or fake.
    pub label: Label,
    /// For a fake, the file name of the real video it was made from.
    pub original: Option<String>,
    /// The split the metadata assigns (`train` throughout the training parts), when given.
    pub split: Option<String>,
}

impl DfdcEntry {
    /// The group for leak-free splits: the source video's name for a fake, the video's own
    /// name for a real, so a real video and every fake made from it share one group.
    pub fn group(&self) -> &str {
        match (self.label, &self.original) {
            (Label::Fake, Some(original)) => original,
            _ => &self.name,
        }
    }
}

/// The videos of a DFDC root ([`scan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DfdcSet {
    /// The listed videos that exist on disk, sorted by path.
    pub entries: Vec<DfdcEntry>,
    /// Videos a metadata file lists but the folder lacks (DFDC parts are often downloaded or
    /// extracted partially), sorted.
    pub missing: Vec<PathBuf>,
}

impl DfdcSet {
    /// How many entries carry `label`.
    pub fn count(&self, label: Label) -> usize {
        self.entries.iter().filter(|e| e.label == label).count()
    }
}

/// The top-level object of a metadata file, in document order and with duplicate keys kept
/// (a map type would silently keep only the last of two entries with the same name).
struct Listing(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Listing {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct ListingVisitor;

        impl<'de> Visitor<'de> for ListingVisitor {
            type Value = Listing;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object mapping video file names to their metadata")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Listing, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Listing(entries))
            }
        }

        deserializer.deserialize_map(ListingVisitor)
    }
}

/// Parses the bytes of a `metadata.json`; `path` is the file (its folder is joined to every
/// file name, and errors name it).
///
/// Strict: a syntax error, a top level that is not an object, an entry that is not an object,
/// a missing or unknown label, a FAKE without an original, a malformed `split` or `original`,
/// a file name that is empty or reaches outside the folder, and a name listed twice are all
/// [`Error::Parse`] errors with the 1-based line of the offending entry's key (for a syntax
/// error, the line where the parser stopped). Unknown fields are ignored.
pub fn parse_metadata(bytes: &[u8], path: &Path) -> Result<Vec<DfdcEntry>> {
    // Editors on Windows may start the file with a byte-order mark, which JSON forbids.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let Listing(listing) = serde_json::from_slice(bytes)
        .map_err(|e| Error::parse(path, e.line(), format!("not a DFDC metadata file: {e}")))?;
    let lines = top_level_key_lines(bytes);
    let folder = path.parent().unwrap_or(Path::new(""));
    let mut seen = std::collections::HashMap::new();
    let mut entries = Vec::with_capacity(listing.len());
    for (i, (name, value)) in listing.into_iter().enumerate() {
        // The scanner sees the same keys in the same order as the parser; 0 ("the file") is
        // only a fallback should the two ever disagree.
        let line = lines.get(i).copied().unwrap_or(0);
        let err = |reason: String| Error::parse(path, line, format!("{name:?}: {reason}"));
        check_name(&name).map_err(&err)?;
        if let Some(first) = seen.insert(name.clone(), line) {
            return Err(err(format!("listed twice (first on line {first})")));
        }
        let Value::Object(fields) = &value else {
            return Err(err(format!("entry is {}, not an object", kind(&value))));
        };
        let label = match fields.get("label") {
            Some(Value::String(s)) => s
                .parse::<Label>()
                .map_err(|_| err(format!("label {s:?} is neither REAL nor FAKE")))?,
            Some(other) => return Err(err(format!("label is {}, not a string", kind(other)))),
            None => return Err(err("no label".into())),
        };
        let original = optional_string(fields.get("original"), "original").map_err(&err)?;
        if label == Label::Fake && original.is_none() {
            return Err(err("a FAKE entry needs the name of its original".into()));
        }
        let split = optional_string(fields.get("split"), "split").map_err(&err)?;
        entries.push(DfdcEntry { file: folder.join(&name), name, label, original, split });
    }
    Ok(entries)
}

/// Reads and parses the `metadata.json` at `path` ([`parse_metadata`]).
pub fn read_metadata(path: &Path) -> Result<Vec<DfdcEntry>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_metadata(&bytes, path)
}

/// Reads a DFDC root: `root/metadata.json` when there is one, and the `metadata.json` of every
/// immediate subfolder that has one (the part folders). Entries come back sorted by path;
/// listed files that are absent go to [`DfdcSet::missing`] instead of failing the scan.
///
/// # Errors
/// [`Error::Io`] when `root` cannot be listed or holds no metadata file at all; any error of
/// [`read_metadata`].
pub fn scan(root: &Path) -> Result<DfdcSet> {
    let mut files = Vec::new();
    let own = root.join(METADATA_FILE);
    if own.is_file() {
        files.push(own);
    }
    let mut parts = Vec::new();
    for item in std::fs::read_dir(root).map_err(|e| Error::io(root, e))? {
        let item = item.map_err(|e| Error::io(root, e))?;
        let metadata = item.path().join(METADATA_FILE);
        if item.path().is_dir() && metadata.is_file() {
            parts.push(metadata);
        }
    }
    // Directory order is whatever the file system returns; sorting makes scans reproducible.
    parts.sort();
    files.extend(parts);
    if files.is_empty() {
        return Err(Error::io(
            root,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no {METADATA_FILE} in the folder or its immediate subfolders"),
            ),
        ));
    }
    let mut set = DfdcSet::default();
    for file in files {
        for entry in read_metadata(&file)? {
            if entry.file.is_file() {
                set.entries.push(entry);
            } else {
                set.missing.push(entry.file);
            }
        }
    }
    set.entries.sort_by(|a, b| a.file.cmp(&b.file));
    set.missing.sort();
    Ok(set)
}

/// How many frames to sample from each entry so that the minority class is not drowned out:
/// the class with fewer entries gets `round(base_frames * minority_factor)` frames per video,
/// the other `base_frames` (on a tie, and when only one class is present, everyone gets
/// `base_frames`). Reals are about a fifth of DFDC's training videos, and the winning
/// solution's write-up sampled four times as many frames from them; `minority_factor = 4.0`
/// does the same. A factor below 1 never takes the minority below one frame (unless
/// `base_frames` is 0). The result is parallel to `entries`.
///
/// # Errors
/// [`Error::InvalidConfig`] when `minority_factor` is not a positive finite number.
pub fn frames_per_video(
    entries: &[DfdcEntry],
    base_frames: usize,
    minority_factor: f32,
) -> Result<Vec<usize>> {
    if !(minority_factor.is_finite() && minority_factor > 0.0) {
        return Err(Error::InvalidConfig {
            what: "minority factor",
            reason: format!("{minority_factor} is not a positive number"),
        });
    }
    let reals = entries.iter().filter(|e| e.label == Label::Real).count();
    let fakes = entries.len() - reals;
    let minority = match reals.cmp(&fakes) {
        _ if reals == 0 || fakes == 0 => None,
        std::cmp::Ordering::Less => Some(Label::Real),
        std::cmp::Ordering::Greater => Some(Label::Fake),
        std::cmp::Ordering::Equal => None,
    };
    // `as` saturates, so an absurd factor yields usize::MAX rather than wrapping; a factor
    // below 1 still leaves every video at least one frame (0 frames cannot be sampled).
    let boosted = ((base_frames as f64 * f64::from(minority_factor)).round() as usize)
        .max(usize::from(base_frames > 0));
    Ok(entries
        .iter()
        .map(|e| if Some(e.label) == minority { boosted } else { base_frames })
        .collect())
}

/// Rejects names that are empty or that would leave the part folder once joined to it.
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty file name".into());
    }
    if name.contains(['/', '\\']) || name == "." || name == ".." || name.contains('\0') {
        return Err("a file name, not a path, is expected".into());
    }
    Ok(())
}

/// A field that may be absent, `null` or a string; an empty string counts as absent.
fn optional_string(
    value: Option<&Value>,
    field: &str,
) -> std::result::Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{field} is {}, not a string or null", kind(other))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The 1-based line on which each key of the top-level object starts, in document order.
///
/// Only called on text the JSON parser accepted, so a small scanner suffices: it tracks the
/// nesting depth, skips string contents (escapes included, which is why the keys are not simply
/// searched for: `"a\u002emp4"` is the key `a.mp4`) and takes the first string after the
/// top-level `{` or after a comma at depth 1 as a key.
fn top_level_key_lines(text: &[u8]) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut line = 1;
    let mut depth = 0usize;
    let mut expect_key = false;
    let mut i = 0;
    while let Some(&byte) = text.get(i) {
        match byte {
            b'\n' => line += 1,
            b'{' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            b'"' => {
                if depth == 1 && expect_key {
                    lines.push(line);
                    expect_key = false;
                }
                i += 1;
                while let Some(&c) = text.get(i) {
                    match c {
                        b'\\' => i += 1,
                        b'"' => break,
                        // JSON strings hold no raw newlines, but stay in step if one slips by.
                        b'\n' => line += 1,
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
    "aaqaifqrwn.mp4": {
        "label": "FAKE",
        "split": "train",
        "original": "ybbrkacebd.mp4"
    },
    "ybbrkacebd.mp4": {"label": "REAL", "split": "train", "original": null},
    "abarnvbtwb.mp4": {"label": "REAL", "split": "train", "original": null},
    "acxnxvbsxk.mp4": {"label": "FAKE", "split": "train", "original": "ybbrkacebd.mp4"},
    "b\u0061d.mp4": {"label": "FAKE", "split": "train", "original": "abarnvbtwb.mp4", "extra": [1, {"x": "}"}]}
}
"#;

    fn parse(text: &str) -> Result<Vec<DfdcEntry>> {
        parse_metadata(text.as_bytes(), Path::new("/data/dfdc_train_part_0/metadata.json"))
    }

    fn parse_line(text: &str) -> (usize, String) {
        match parse(text) {
            Err(Error::Parse { line, reason, path }) => {
                assert_eq!(path, Path::new("/data/dfdc_train_part_0/metadata.json"));
                (line, reason)
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn dfdc_sample_parses_in_order() {
        let entries = parse(SAMPLE).unwrap();
        assert_eq!(entries.len(), 5);
        let first = &entries[0];
        assert_eq!(first.file, Path::new("/data/dfdc_train_part_0/aaqaifqrwn.mp4"));
        assert_eq!(first.name, "aaqaifqrwn.mp4");
        assert_eq!(first.label, Label::Fake);
        assert_eq!(first.original.as_deref(), Some("ybbrkacebd.mp4"));
        assert_eq!(first.split.as_deref(), Some("train"));
        assert_eq!(entries[1].label, Label::Real);
        assert_eq!(entries[1].original, None);
        // Escapes in keys are decoded.
        assert_eq!(entries[4].name, "bad.mp4");
        // A byte-order mark is tolerated.
        let bom = [b"\xEF\xBB\xBF".as_slice(), SAMPLE.as_bytes()].concat();
        assert_eq!(parse_metadata(&bom, Path::new("m.json")).unwrap().len(), 5);
        // Missing optional fields.
        let minimal = parse(r#"{"a.mp4": {"label": "real"}}"#).unwrap();
        assert_eq!((minimal[0].split.clone(), minimal[0].original.clone()), (None, None));
    }

    #[test]
    fn dfdc_label_is_like_the_manifest() {
        assert_eq!(Label::Real.to_string(), "real");
        assert_eq!(Label::Fake.to_string(), "fake");
        assert_eq!((Label::Real.index(), Label::Fake.index()), (0, 1));
        assert_eq!(Label::from_index(1), Some(Label::Fake));
        assert_eq!(Label::from_index(2), None);
        assert_eq!("REAL".parse::<Label>().unwrap(), Label::Real);
        assert!("fakeish".parse::<Label>().is_err());
        assert_eq!(serde_json::to_string(&Label::Fake).unwrap(), "\"fake\"");
        assert_eq!(serde_json::from_str::<Label>("\"real\"").unwrap(), Label::Real);
    }

    #[test]
    fn dfdc_bad_label_names_the_entry_line() {
        let text = SAMPLE.replace(
            r#""label": "REAL", "split": "train", "original": null},
    "acx"#,
            r#""label": "MAYBE", "split": "train", "original": null},
    "acx"#,
        );
        let (line, reason) = parse_line(&text);
        assert_eq!(line, 8, "{reason}");
        assert!(reason.contains("abarnvbtwb.mp4") && reason.contains("MAYBE"), "{reason}");
        let (line, reason) = parse_line("{\n\"a.mp4\": {\"label\": 1}}");
        assert_eq!(line, 2);
        assert!(reason.contains("not a string"), "{reason}");
        let (_, reason) = parse_line("{\"a.mp4\": {\"split\": \"train\"}}");
        assert!(reason.contains("no label"), "{reason}");
    }

    #[test]
    fn dfdc_fake_without_original_is_rejected() {
        let (line, reason) =
            parse_line("{\n  \"r.mp4\": {\"label\": \"REAL\"},\n\n  \"f.mp4\": {\"label\": \"FAKE\", \"original\": null}\n}");
        assert_eq!(line, 4);
        assert!(reason.contains("f.mp4") && reason.contains("original"), "{reason}");
        let (line, _) = parse_line("{\"f.mp4\": {\"label\": \"FAKE\", \"original\": \"\"}}");
        assert_eq!(line, 1);
        let (_, reason) = parse_line("{\"f.mp4\": {\"label\": \"FAKE\", \"original\": 3}}");
        assert!(reason.contains("original is a number"), "{reason}");
    }

    #[test]
    fn dfdc_structural_errors() {
        // Broken JSON: the parser's line.
        let broken = SAMPLE.replacen(
            "\"split\": \"train\",\n        \"original\"",
            "\"split\" \"train\",\n        \"original\"",
            1,
        );
        let (line, reason) = parse_line(&broken);
        assert_eq!(line, 4, "{reason}");
        let (line, _) = parse_line("{\n\"a.mp4\": {\"label\": \"REAL\"},\n");
        assert!(line >= 2);
        // Not an object at the top or per entry.
        let (line, reason) = parse_line("\n[1, 2]");
        assert_eq!(line, 2);
        assert!(reason.contains("object"), "{reason}");
        let (line, reason) =
            parse_line("{\"a.mp4\": {\"label\": \"REAL\"},\n \"b.mp4\": \"FAKE\"}");
        assert_eq!(line, 2);
        assert!(reason.contains("b.mp4") && reason.contains("not an object"), "{reason}");
        // Names that leave the folder, empty names, duplicates.
        let (_, reason) = parse_line("{\"../x.mp4\": {\"label\": \"REAL\"}}");
        assert!(reason.contains("not a path"), "{reason}");
        let (_, reason) = parse_line("{\"\": {\"label\": \"REAL\"}}");
        assert!(reason.contains("empty"), "{reason}");
        let (line, reason) =
            parse_line("{\"a.mp4\": {\"label\": \"REAL\"},\n\"a.mp4\": {\"label\": \"FAKE\", \"original\": \"x\"}}");
        assert_eq!(line, 2);
        assert!(reason.contains("twice") && reason.contains("line 1"), "{reason}");
        // Arbitrary bytes never panic.
        for bytes in
            [&b""[..], b"\xff\xfe", b"{", b"{\"a\":", b"{\"\\", b"[[[[[[", b"{\"a\\\"\": 1}"]
        {
            assert!(parse_metadata(bytes, Path::new("m.json")).is_err());
        }
        let deep = "[".repeat(10_000);
        assert!(parse_metadata(deep.as_bytes(), Path::new("m.json")).is_err());
    }

    #[test]
    fn dfdc_key_lines_skip_nested_strings() {
        let text = br#"{"a": {"k": "x,\"y"}, "b": [1, {"c": 2}],
  "d" : null}"#;
        assert_eq!(top_level_key_lines(text), vec![1, 1, 2]);
    }

    #[test]
    fn dfdc_groups_tie_fakes_to_their_source() {
        let entries = parse(SAMPLE).unwrap();
        let groups: Vec<&str> = entries.iter().map(DfdcEntry::group).collect();
        assert_eq!(
            groups,
            [
                "ybbrkacebd.mp4",
                "ybbrkacebd.mp4",
                "abarnvbtwb.mp4",
                "ybbrkacebd.mp4",
                "abarnvbtwb.mp4"
            ]
        );
        // A group-disjoint split never separates a source from its fakes.
        let owned: Vec<Option<String>> = groups.iter().map(|g| Some(g.to_string())).collect();
        let ratios = deeprecog_dataset::split::Ratios { train: 0.5, valid: 0.5, test: 0.0 };
        let splits = deeprecog_dataset::split::group_disjoint(&owned, ratios, 3).unwrap();
        for side in [&splits.train, &splits.valid] {
            for &i in side.iter() {
                for (j, g) in owned.iter().enumerate() {
                    if *g == owned[i] {
                        assert!(side.contains(&j));
                    }
                }
            }
        }
    }

    #[test]
    fn dfdc_minority_gets_more_frames() {
        let entries = parse(SAMPLE).unwrap();
        // 2 reals, 3 fakes: reals are the minority.
        let frames = frames_per_video(&entries, 8, 4.0).unwrap();
        assert_eq!(frames, [8, 32, 32, 8, 8]);
        let frames = frames_per_video(&entries, 5, 1.5).unwrap();
        assert_eq!(frames, [5, 8, 8, 5, 5]);
        // Fakes as the minority.
        let fakes_few: Vec<DfdcEntry> = entries
            .iter()
            .filter(|e| e.label == Label::Real || e.name == "bad.mp4")
            .cloned()
            .collect();
        assert_eq!(frames_per_video(&fakes_few, 4, 2.0).unwrap(), [4, 4, 8]);
        // Ties and single-class lists: no boost.
        assert_eq!(frames_per_video(&entries[..2], 4, 4.0).unwrap(), [4, 4]);
        assert_eq!(frames_per_video(&entries[1..3], 4, 4.0).unwrap(), [4, 4]);
        assert!(frames_per_video(&[], 4, 4.0).unwrap().is_empty());
        assert_eq!(frames_per_video(&entries, 4, 0.01).unwrap(), [4, 1, 1, 4, 4]);
        assert_eq!(frames_per_video(&entries, 0, 4.0).unwrap(), [0; 5]);
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(frames_per_video(&entries, 4, bad), Err(Error::InvalidConfig { .. })));
        }
    }

    #[test]
    fn dfdc_scan_reads_parts_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let part0 = root.join("dfdc_train_part_0");
        let part1 = root.join("dfdc_train_part_1");
        std::fs::create_dir_all(&part0).unwrap();
        std::fs::create_dir_all(&part1).unwrap();
        std::fs::create_dir_all(root.join("unrelated")).unwrap();
        std::fs::write(
            part0.join(METADATA_FILE),
            r#"{"zz.mp4": {"label": "REAL", "split": "train", "original": null},
                "aa.mp4": {"label": "FAKE", "split": "train", "original": "zz.mp4"}}"#,
        )
        .unwrap();
        std::fs::write(
            part1.join(METADATA_FILE),
            r#"{"bb.mp4": {"label": "REAL", "original": null},
                "gone.mp4": {"label": "FAKE", "original": "bb.mp4"}}"#,
        )
        .unwrap();
        for f in [part0.join("zz.mp4"), part0.join("aa.mp4"), part1.join("bb.mp4")] {
            std::fs::write(f, b"not really a video").unwrap();
        }
        let set = scan(root).unwrap();
        let files: Vec<&Path> = set.entries.iter().map(|e| e.file.as_path()).collect();
        assert_eq!(files, [part0.join("aa.mp4"), part0.join("zz.mp4"), part1.join("bb.mp4")]);
        assert_eq!(set.missing, [part1.join("gone.mp4")]);
        assert_eq!((set.count(Label::Real), set.count(Label::Fake)), (2, 1));
        assert_eq!(set.entries[0].group(), "zz.mp4");

        // A single part given directly.
        let one = scan(&part0).unwrap();
        assert_eq!(one.entries.len(), 2);
        assert!(one.missing.is_empty());

        // No metadata anywhere, a broken one, and a missing root.
        let err = scan(&root.join("unrelated")).unwrap_err();
        assert!(err.to_string().contains(METADATA_FILE), "{err}");
        std::fs::write(part1.join(METADATA_FILE), "{\n\"x.mp4\": {\"label\": \"?\"}}").unwrap();
        assert!(matches!(scan(root), Err(Error::Parse { line: 2, .. })));
        assert!(matches!(scan(&root.join("nope")), Err(Error::Io { .. })));
    }
}
