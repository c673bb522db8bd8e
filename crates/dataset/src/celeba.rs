//! CelebA in its real on-disk format.
//!
//! ```text
//! root/
//!   img_align_celeba/000001.jpg ...      required
//!   list_attr_celeba.txt                 required: count line, 40 names, rows of -1/1
//!   list_eval_partition.txt              optional: "000001.jpg 0" (0 train, 1 valid, 2 test)
//!   identity_CelebA.txt                  optional: "000001.jpg 2880"
//!   list_landmarks_align_celeba.txt      optional: count, header, 10 ints per row
//!   list_bbox_celeba.txt                 optional: count, header, x_1 y_1 width height
//! ```
//!
//! Values are separated by runs of spaces; CRLF line endings and trailing blanks are accepted.
//! Every error names the file and the one-based line. An optional file that is present must
//! cover exactly the images of `list_attr_celeba.txt`. (The boxes of `list_bbox_celeba.txt`
//! refer to CelebA's *unaligned* images, so they are kept but not used for cropping.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use deeprecog_attributes::{Attribute, AttributeSet, COUNT};

use crate::face::{FaceBox, Landmarks};
use crate::split::{Partition, Splits};
use crate::stats::AttributeStats;
use crate::{Dataset, DecodeOptions, Error, Image, Result, Sample, SampleOrigin, Target};

/// File name of the attribute table.
pub const ATTR_FILE: &str = "list_attr_celeba.txt";
/// File name of the official partition.
pub const PARTITION_FILE: &str = "list_eval_partition.txt";
/// File name of the identity list.
pub const IDENTITY_FILE: &str = "identity_CelebA.txt";
/// File name of the aligned landmarks.
pub const LANDMARKS_FILE: &str = "list_landmarks_align_celeba.txt";
/// File name of the (unaligned-image) bounding boxes.
pub const BBOX_FILE: &str = "list_bbox_celeba.txt";
/// Folder of the aligned 178x218 JPEGs.
pub const IMAGES_DIR: &str = "img_align_celeba";

/// Everything CelebA's annotation files say about one image.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CelebARecord {
    /// File name inside `img_align_celeba/`.
    pub file: String,
    /// Positive attributes.
    pub attributes: AttributeSet,
    /// Official partition, when `list_eval_partition.txt` is present.
    pub partition: Option<Partition>,
    /// Identity id, when `identity_CelebA.txt` is present.
    pub identity: Option<u32>,
    /// Aligned landmarks, when `list_landmarks_align_celeba.txt` is present.
    pub landmarks: Option<Landmarks>,
    /// Box in the unaligned image, when `list_bbox_celeba.txt` is present.
    pub bbox: Option<FaceBox>,
}

/// How to open a CelebA folder.
#[derive(Debug, Clone, PartialEq)]
pub struct CelebAConfig {
    /// The attributes that form each sample's target (in this order).
    pub targets: Vec<Attribute>,
    /// Folder of images, relative to the root.
    pub images_dir: PathBuf,
    /// How images are decoded (strict by default: a truncated JPEG is an error).
    pub decode: DecodeOptions,
}

impl Default for CelebAConfig {
    /// Target `Attractive`, images in `img_align_celeba/`, strict decoding.
    fn default() -> Self {
        CelebAConfig {
            targets: vec![Attribute::Attractive],
            images_dir: PathBuf::from(IMAGES_DIR),
            decode: DecodeOptions::default(),
        }
    }
}

impl CelebAConfig {
    /// Default config with the given target attributes.
    pub fn targets(targets: Vec<Attribute>) -> Self {
        CelebAConfig { targets, ..CelebAConfig::default() }
    }
}

/// A CelebA folder: annotations in memory, images decoded on [`Dataset::get`].
///
/// Samples carry a [`Target::Labels`] with one 0/1 value per configured target attribute and
/// the identity (when known) as their group.
#[derive(Debug, Clone)]
pub struct CelebA {
    root: PathBuf,
    images_dir: PathBuf,
    targets: Vec<Attribute>,
    records: Vec<CelebARecord>,
    decode: DecodeOptions,
}

impl CelebA {
    /// Reads every annotation file under `root`; fails on a missing required file or any
    /// malformed line.
    pub fn open(root: impl AsRef<Path>, config: &CelebAConfig) -> Result<CelebA> {
        let root = root.as_ref().to_path_buf();
        let images_dir = root.join(&config.images_dir);
        if !images_dir.is_dir() {
            return Err(Error::MissingFile { path: images_dir });
        }
        let attr_path = root.join(ATTR_FILE);
        let table = parse_attributes(&read_required(&attr_path)?, &attr_path)?;
        let mut records: Vec<CelebARecord> = table
            .rows
            .into_iter()
            .map(|(file, attributes)| CelebARecord {
                file,
                attributes,
                partition: None,
                identity: None,
                landmarks: None,
                bbox: None,
            })
            .collect();
        let position: HashMap<String, usize> =
            records.iter().enumerate().map(|(i, r)| (r.file.clone(), i)).collect();

        if let Some((path, text)) = read_optional(&root.join(PARTITION_FILE))? {
            for (i, p) in align(parse_partition(&text, &path)?, &position, &path)? {
                if let Some(r) = records.get_mut(i) {
                    r.partition = Some(p);
                }
            }
        }
        if let Some((path, text)) = read_optional(&root.join(IDENTITY_FILE))? {
            for (i, id) in align(parse_identity(&text, &path)?, &position, &path)? {
                if let Some(r) = records.get_mut(i) {
                    r.identity = Some(id);
                }
            }
        }
        if let Some((path, text)) = read_optional(&root.join(LANDMARKS_FILE))? {
            for (i, l) in align(parse_landmarks(&text, &path)?, &position, &path)? {
                if let Some(r) = records.get_mut(i) {
                    r.landmarks = Some(l);
                }
            }
        }
        if let Some((path, text)) = read_optional(&root.join(BBOX_FILE))? {
            for (i, b) in align(parse_bbox(&text, &path)?, &position, &path)? {
                if let Some(r) = records.get_mut(i) {
                    r.bbox = Some(b);
                }
            }
        }
        Ok(CelebA {
            root,
            images_dir,
            targets: config.targets.clone(),
            records,
            decode: config.decode,
        })
    }

    /// The folder this dataset was opened from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The target attributes, in target order.
    pub fn targets(&self) -> &[Attribute] {
        &self.targets
    }

    /// Every record, in file order.
    pub fn records(&self) -> &[CelebARecord] {
        &self.records
    }

    /// Full path of image `index`.
    pub fn image_path(&self, index: usize) -> Option<PathBuf> {
        self.records.get(index).map(|r| self.images_dir.join(&r.file))
    }

    /// The positive attributes of every image.
    pub fn attribute_sets(&self) -> Vec<AttributeSet> {
        self.records.iter().map(|r| r.attributes).collect()
    }

    /// Identity of every image (for group-disjoint splits).
    pub fn identities(&self) -> Vec<Option<u32>> {
        self.records.iter().map(|r| r.identity).collect()
    }

    /// Official partition of every image.
    pub fn partitions(&self) -> Vec<Option<Partition>> {
        self.records.iter().map(|r| r.partition).collect()
    }

    /// Indices of the images in one official partition.
    pub fn partition(&self, partition: Partition) -> Vec<usize> {
        self.official_splits().get(partition).to_vec()
    }

    /// The official split (empty when `list_eval_partition.txt` was absent).
    pub fn official_splits(&self) -> Splits {
        crate::split::official(&self.partitions())
    }

    /// 0/1 labels of one attribute for every image (for balancing and stratification).
    pub fn labels(&self, attribute: Attribute) -> Vec<u32> {
        self.records.iter().map(|r| u32::from(r.attributes.contains(attribute))).collect()
    }

    /// Positive counts and fractions of the 40 attributes.
    pub fn stats(&self) -> AttributeStats {
        AttributeStats::from_sets(&self.attribute_sets())
    }

    /// Image paths listed in the annotations but absent on disk.
    pub fn missing_images(&self) -> Vec<PathBuf> {
        self.records
            .iter()
            .map(|r| self.images_dir.join(&r.file))
            .filter(|p| !p.is_file())
            .collect()
    }
}

impl Dataset for CelebA {
    type Item = Sample;

    fn len(&self) -> usize {
        self.records.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let record = self
            .records
            .get(index)
            .ok_or(Error::IndexOutOfRange { index, len: self.records.len() })?;
        let image = Image::open_with(&self.images_dir.join(&record.file), &self.decode)?;
        Ok(Sample {
            id: record.file.clone(),
            image,
            target: Target::Labels(deeprecog_attributes::targets(record.attributes, &self.targets)),
            group: record.identity.map(|id| id.to_string()),
        })
    }

    fn origin(&self, index: usize) -> Option<SampleOrigin> {
        let record = self.records.get(index)?;
        Some(SampleOrigin {
            id: record.file.clone(),
            path: Some(self.images_dir.join(&record.file)),
        })
    }
}

fn read_required(path: &Path) -> Result<String> {
    match std::fs::read(path) {
        Ok(bytes) => text(bytes, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Error::MissingFile { path: path.to_path_buf() })
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn read_optional(path: &Path) -> Result<Option<(PathBuf, String)>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some((path.to_path_buf(), text(bytes, path)?))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn text(bytes: Vec<u8>, path: &Path) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let line = e
            .as_bytes()
            .get(..e.utf8_error().valid_up_to())
            .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
            + 1;
        Error::parse(path, line, "not valid UTF-8 text")
    })
}

/// Non-blank lines with their one-based numbers; `\r` and surrounding blanks removed.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty())
}

/// Matches entries of an optional file to the attribute table's rows, requiring the same set
/// of images.
fn align<T>(
    entries: Vec<(usize, String, T)>,
    position: &HashMap<String, usize>,
    path: &Path,
) -> Result<Vec<(usize, T)>> {
    let mut seen = vec![false; position.len()];
    let mut out = Vec::with_capacity(entries.len());
    for (line, file, value) in entries {
        let &i = position.get(&file).ok_or_else(|| {
            Error::parse(path, line, format!("{file} is not listed in {ATTR_FILE}"))
        })?;
        match seen.get_mut(i) {
            Some(s) if *s => {
                return Err(Error::parse(path, line, format!("{file} is listed twice")))
            }
            Some(s) => *s = true,
            None => {}
        }
        out.push((i, value));
    }
    if let Some(missing) = seen.iter().position(|s| !s) {
        let file =
            position.iter().find(|(_, &i)| i == missing).map(|(f, _)| f.as_str()).unwrap_or("?");
        return Err(Error::Inconsistent {
            path: path.to_path_buf(),
            message: format!(
                "lists {} of the {} images in {ATTR_FILE} (missing {file}, among others)",
                out.len(),
                position.len()
            ),
        });
    }
    Ok(out)
}

/// The parsed `list_attr_celeba.txt`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeTable {
    /// The attribute of each value column, as named by the header line.
    pub columns: Vec<Attribute>,
    /// File name and positive attributes of each row.
    pub rows: Vec<(String, AttributeSet)>,
}

fn parse_count(line: Option<(usize, &str)>, path: &Path) -> Result<(usize, usize)> {
    let (n, l) =
        line.ok_or_else(|| Error::parse(path, 1, "empty file: expected the image count"))?;
    let count = l
        .parse::<usize>()
        .map_err(|_| Error::parse(path, n, format!("expected the image count, found {l:?}")))?;
    Ok((n, count))
}

fn check_count(declared: (usize, usize), found: usize, path: &Path) -> Result<()> {
    if declared.1 != found {
        return Err(Error::parse(
            path,
            declared.0,
            format!("count line says {} images but {found} rows follow", declared.1),
        ));
    }
    Ok(())
}

/// Parses `list_attr_celeba.txt`: a count line, a line of 40 attribute names, then rows of a
/// file name and 40 values (`1` positive; `-1` or `0` negative). `path` names the file in errors.
pub fn parse_attributes(text: &str, path: &Path) -> Result<AttributeTable> {
    let mut it = lines(text);
    let count = parse_count(it.next(), path)?;
    let (hn, header) = it
        .next()
        .ok_or_else(|| Error::parse(path, count.0 + 1, "missing the attribute-names line"))?;
    let columns = header
        .split_whitespace()
        .map(|name| name.parse::<Attribute>().map_err(|e| Error::parse(path, hn, e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    if columns.len() != COUNT {
        return Err(Error::parse(
            path,
            hn,
            format!("expected {COUNT} attribute names, found {}", columns.len()),
        ));
    }
    let mut rows = Vec::with_capacity(count.1.min(1 << 20));
    let mut seen = std::collections::HashSet::with_capacity(count.1.min(1 << 20));
    for (n, line) in it {
        let mut fields = line.split_whitespace();
        let file = fields.next().unwrap_or_default();
        let mut set = AttributeSet::EMPTY;
        let mut values = 0;
        for (k, field) in fields.enumerate() {
            let Some(&attribute) = columns.get(k) else {
                return Err(Error::parse(path, n, format!("{file}: more than {COUNT} values")));
            };
            match field {
                "1" | "+1" => set.insert(attribute),
                "-1" | "0" => {}
                other => {
                    return Err(Error::parse(
                        path,
                        n,
                        format!("{file}: value {other:?} for {attribute} is not -1 or 1"),
                    ))
                }
            }
            values += 1;
        }
        if values != COUNT {
            return Err(Error::parse(
                path,
                n,
                format!("{file}: expected {COUNT} values, found {values}"),
            ));
        }
        if !seen.insert(file) {
            return Err(Error::parse(path, n, format!("{file} is listed twice")));
        }
        rows.push((file.to_string(), set));
    }
    check_count(count, rows.len(), path)?;
    Ok(AttributeTable { columns, rows })
}

fn two_fields<'a>(line: &'a str, n: usize, path: &Path) -> Result<(&'a str, &'a str)> {
    let mut f = line.split_whitespace();
    match (f.next(), f.next(), f.next()) {
        (Some(a), Some(b), None) => Ok((a, b)),
        _ => Err(Error::parse(path, n, format!("expected \"FILE VALUE\", found {line:?}"))),
    }
}

/// Parses `list_eval_partition.txt` into `(line, file, partition)` entries.
pub fn parse_partition(text: &str, path: &Path) -> Result<Vec<(usize, String, Partition)>> {
    lines(text)
        .map(|(n, line)| {
            let (file, code) = two_fields(line, n, path)?;
            let p = code.parse::<u8>().ok().and_then(Partition::from_code).ok_or_else(|| {
                Error::parse(path, n, format!("{file}: partition {code:?} is not 0, 1 or 2"))
            })?;
            Ok((n, file.to_string(), p))
        })
        .collect()
}

/// Parses `identity_CelebA.txt` into `(line, file, identity)` entries.
pub fn parse_identity(text: &str, path: &Path) -> Result<Vec<(usize, String, u32)>> {
    lines(text)
        .map(|(n, line)| {
            let (file, id) = two_fields(line, n, path)?;
            let id = id.parse::<u32>().map_err(|_| {
                Error::parse(path, n, format!("{file}: identity {id:?} is not a number"))
            })?;
            Ok((n, file.to_string(), id))
        })
        .collect()
}

/// Rows of `FILE` and `K` integers after a count line and a header line.
fn parse_int_table<const K: usize>(
    text: &str,
    path: &Path,
) -> Result<Vec<(usize, String, [i32; K])>> {
    let mut it = lines(text);
    let count = parse_count(it.next(), path)?;
    let (hn, header) =
        it.next().ok_or_else(|| Error::parse(path, count.0 + 1, "missing the header line"))?;
    let names = header.split_whitespace().filter(|h| *h != "image_id").count();
    if names != K {
        return Err(Error::parse(path, hn, format!("expected {K} column names, found {names}")));
    }
    let mut rows = Vec::new();
    for (n, line) in it {
        let mut fields = line.split_whitespace();
        let file = fields.next().unwrap_or_default();
        let mut values = [0i32; K];
        let mut k = 0;
        for field in fields {
            let slot = values
                .get_mut(k)
                .ok_or_else(|| Error::parse(path, n, format!("{file}: more than {K} values")))?;
            *slot = field.parse().map_err(|_| {
                Error::parse(path, n, format!("{file}: {field:?} is not an integer"))
            })?;
            k += 1;
        }
        if k != K {
            return Err(Error::parse(path, n, format!("{file}: expected {K} values, found {k}")));
        }
        rows.push((n, file.to_string(), values));
    }
    check_count(count, rows.len(), path)?;
    Ok(rows)
}

/// Parses `list_landmarks_align_celeba.txt` into `(line, file, landmarks)` entries.
pub fn parse_landmarks(text: &str, path: &Path) -> Result<Vec<(usize, String, Landmarks)>> {
    Ok(parse_int_table::<10>(text, path)?
        .into_iter()
        .map(|(n, f, v)| (n, f, Landmarks::from_array(v.map(|c| c as f32))))
        .collect())
}

/// Parses `list_bbox_celeba.txt` into `(line, file, box)` entries; widths and heights must be
/// positive.
pub fn parse_bbox(text: &str, path: &Path) -> Result<Vec<(usize, String, FaceBox)>> {
    parse_int_table::<4>(text, path)?
        .into_iter()
        .map(|(n, f, [x, y, width, height])| {
            if width <= 0 || height <= 0 {
                return Err(Error::parse(
                    path,
                    n,
                    format!("{f}: box size {width}x{height} is not positive"),
                ));
            }
            // The file's integers are exact in f32 (see `FaceBox`).
            Ok((n, f, FaceBox::new(x as f32, y as f32, width as f32, height as f32)))
        })
        .collect()
}
