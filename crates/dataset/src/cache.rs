//! A preprocessed `u8` cache: images decoded and resized once, written as raw shards, then
//! memory-mapped, so epochs after the first do no JPEG decoding.
//!
//! Layout of a cache folder: `shard-00000.u8`, `shard-00001.u8`, ... (HWC images of one size,
//! back to back) and `index.json` (image size, sample ids, targets, groups, shard sizes, the
//! samples skipped while building). `index.json` is written last and atomically: a folder
//! without it is an unfinished build and is not opened. Memory while building is bounded by one
//! shard; an opened cache holds only the index in memory and lets the OS page the shards.

use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use crate::loader::SkippedSample;
use crate::transforms::{sample_rng, Transform};
use crate::{fsutil, Dataset, Error, Image, Result, Sample, SampleOrigin, Target};

const INDEX_FILE: &str = "index.json";
const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Index {
    version: u32,
    width: u32,
    height: u32,
    channels: u8,
    shards: Vec<usize>,
    samples: Vec<Entry>,
    skipped: Vec<SkippedSample>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Entry {
    id: String,
    target: Target,
    group: Option<String>,
}

/// How to build a cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Images per shard file (bounds memory while building).
    pub shard_samples: usize,
    /// Seed passed to the transform (use deterministic transforms such as a resize).
    pub seed: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { shard_samples: 1024, seed: 0 }
    }
}

/// An opened cache; a [`Dataset`] of [`Sample`]s.
pub struct U8Cache {
    dir: PathBuf,
    index: Index,
    shards: Vec<Mmap>,
    /// Global index of each shard's first sample.
    starts: Vec<usize>,
}

impl std::fmt::Debug for U8Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("U8Cache")
            .field("dir", &self.dir)
            .field("samples", &self.index.samples.len())
            .field("size", &(self.index.width, self.index.height, self.index.channels))
            .finish()
    }
}

impl U8Cache {
    /// Reads every sample of `dataset` through `transform` (which must give every image the
    /// same size) and writes the cache into `dir`. Samples that fail are skipped and listed in
    /// [`U8Cache::skipped`]. Returns the opened cache.
    pub fn build<D: Dataset<Item = Sample>>(
        dataset: &D,
        transform: Option<&dyn Transform>,
        dir: impl AsRef<Path>,
        config: &CacheConfig,
    ) -> Result<U8Cache> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // An earlier index would describe shards we are about to overwrite.
        let index_path = dir.join(INDEX_FILE);
        if index_path.exists() {
            std::fs::remove_file(&index_path).map_err(|e| Error::io(&index_path, e))?;
        }
        let shard_samples = config.shard_samples.max(1);
        let mut index = Index {
            version: FORMAT_VERSION,
            width: 0,
            height: 0,
            channels: 0,
            shards: vec![],
            samples: vec![],
            skipped: vec![],
        };
        let mut size: Option<(u32, u32, u8)> = None;
        let all: Vec<usize> = (0..dataset.len()).collect();
        for chunk in all.chunks(shard_samples) {
            let loaded: Vec<(usize, Result<Sample>)> = chunk
                .par_iter()
                .map(|&i| {
                    let r = dataset.get(i).and_then(|mut s| {
                        if let Some(t) = transform {
                            s.image =
                                t.apply(s.image, &mut sample_rng(config.seed, 0, i as u64))?;
                        }
                        Ok(s)
                    });
                    (i, r)
                })
                .collect();
            let mut bytes = Vec::new();
            let mut count = 0;
            for (i, r) in loaded {
                let s = match r {
                    Ok(s) => s,
                    Err(e) => {
                        index.skipped.push(SkippedSample::new(dataset, i, e.to_string()));
                        continue;
                    }
                };
                let this = (s.image.width(), s.image.height(), s.image.channels());
                let fixed = *size.get_or_insert(this);
                if this != fixed {
                    let mut skip = SkippedSample::new(
                        dataset,
                        i,
                        format!(
                            "sample {}: {this:?} differs from the cache's image size {fixed:?}",
                            s.id
                        ),
                    );
                    skip.id = Some(s.id);
                    index.skipped.push(skip);
                    continue;
                }
                bytes.extend_from_slice(s.image.as_bytes());
                index.samples.push(Entry { id: s.id, target: s.target, group: s.group });
                count += 1;
            }
            if count > 0 {
                fsutil::write_atomically(&dir.join(shard_name(index.shards.len())), &bytes)?;
                index.shards.push(count);
            }
        }
        let (w, h, c) = size.unwrap_or((0, 0, 3));
        (index.width, index.height, index.channels) = (w, h, c);
        let json = serde_json::to_vec(&index)
            .map_err(|e| Error::Json { path: index_path.clone(), source: e })?;
        fsutil::write_atomically(&index_path, &json)?;
        U8Cache::open(dir)
    }

    /// Opens a finished cache.
    pub fn open(dir: impl AsRef<Path>) -> Result<U8Cache> {
        let dir = dir.as_ref().to_path_buf();
        let index_path = dir.join(INDEX_FILE);
        let text = std::fs::read(&index_path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile { path: index_path.clone() },
            _ => Error::io(&index_path, e),
        })?;
        let index: Index = serde_json::from_slice(&text)
            .map_err(|e| Error::Json { path: index_path.clone(), source: e })?;
        if index.version != FORMAT_VERSION {
            return Err(Error::Inconsistent {
                path: index_path,
                message: format!(
                    "cache format {} (this library reads {FORMAT_VERSION})",
                    index.version
                ),
            });
        }
        let listed: usize = index.shards.iter().sum();
        if listed != index.samples.len() {
            return Err(Error::Inconsistent {
                path: index_path,
                message: format!(
                    "shards hold {listed} images but {} samples are listed",
                    index.samples.len()
                ),
            });
        }
        let image_bytes = index.width as usize * index.height as usize * index.channels as usize;
        let mut shards = Vec::with_capacity(index.shards.len());
        let mut starts = Vec::with_capacity(index.shards.len());
        let mut start = 0;
        for (k, &count) in index.shards.iter().enumerate() {
            let path = dir.join(shard_name(k));
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the shard is only read; a cache is written once and not modified while
            // open (rebuilding writes new files and renames them into place). The workspace
            // denies unsafe code; a memory map cannot be made without it.
            #[allow(unsafe_code)]
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            if map.len() != count * image_bytes {
                return Err(Error::Inconsistent {
                    path,
                    message: format!(
                        "{} bytes, expected {count} images of {image_bytes} bytes",
                        map.len()
                    ),
                });
            }
            shards.push(map);
            starts.push(start);
            start += count;
        }
        Ok(U8Cache { dir, index, shards, starts })
    }

    /// Samples the build skipped, with the reason.
    pub fn skipped(&self) -> &[SkippedSample] {
        &self.index.skipped
    }

    /// `(width, height, channels)` of every image.
    pub fn image_size(&self) -> (u32, u32, u8) {
        (self.index.width, self.index.height, self.index.channels)
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn shard_name(k: usize) -> String {
    format!("shard-{k:05}.u8")
}

impl Dataset for U8Cache {
    type Item = Sample;

    fn len(&self) -> usize {
        self.index.samples.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let entry = self
            .index
            .samples
            .get(index)
            .ok_or(Error::IndexOutOfRange { index, len: self.index.samples.len() })?;
        let shard = self.starts.partition_point(|&s| s <= index).saturating_sub(1);
        let (w, h, c) = self.image_size();
        let image_bytes = w as usize * h as usize * c as usize;
        let offset = (index - self.starts.get(shard).copied().unwrap_or(0)) * image_bytes;
        let bytes =
            self.shards.get(shard).and_then(|m| m.get(offset..offset + image_bytes)).ok_or_else(
                || Error::BadSample {
                    id: entry.id.clone(),
                    message: "outside the cache shards".into(),
                },
            )?;
        Ok(Sample {
            id: entry.id.clone(),
            image: Image::from_raw(w, h, c, bytes.to_vec())?,
            target: entry.target.clone(),
            group: entry.group.clone(),
        })
    }

    fn origin(&self, index: usize) -> Option<SampleOrigin> {
        let entry = self.index.samples.get(index)?;
        Some(SampleOrigin { id: entry.id.clone(), path: None })
    }
}
