//! Batches for training: `u8` image tensors `(N, C, H, W)`, targets and sample ids.
//!
//! Samples of a batch are read and transformed in parallel on rayon's global pool (the one the
//! tensor kernels use, so the two share the cores) or a dedicated one; a producer thread
//! prepares up to `prefetch` batches ahead so decoding overlaps compute. The order of an epoch
//! depends only on the seed and the epoch number, and each sample's random augmentation only on
//! (seed, epoch, index), so results do not depend on thread scheduling. A sample that fails to
//! load is skipped and recorded in the epoch's [`EpochReport`]; the batch is then smaller.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::transforms::{sample_rng, to_chw, Transform};
use crate::{Dataset, Error, Result, Sample, Target};

/// A batch ready for a model.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, `u8`, shape `(N, C, H, W)`.
    pub images: Tensor,
    /// Targets: `f32 (N, K)` for [`Target::Labels`], `u32 (N,)` for [`Target::Class`].
    pub targets: Tensor,
    /// Sample ids, in batch order.
    pub ids: Vec<String>,
    /// Sample groups (identity / video), in batch order.
    pub groups: Vec<Option<String>>,
    /// Indices into the dataset, in batch order.
    pub indices: Vec<usize>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A sample that was left out of an epoch (or a cache build), and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkippedSample {
    /// Index into the dataset.
    pub index: usize,
    /// The sample's id, when the dataset can say it without reading the sample
    /// ([`Dataset::origin`]) or the sample was read.
    #[serde(default)]
    pub id: Option<String>,
    /// The file the sample is read from, for file-backed datasets.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// The error message (for a file that failed to decode, it names the file).
    pub error: String,
}

impl SkippedSample {
    /// Sample `index` of `dataset`, skipped because of `error`; id and path come from
    /// [`Dataset::origin`].
    pub fn new<D: Dataset + ?Sized>(dataset: &D, index: usize, error: String) -> SkippedSample {
        let origin = dataset.origin(index);
        SkippedSample {
            index,
            id: origin.as_ref().map(|o| o.id.clone()),
            path: origin.and_then(|o| o.path),
            error,
        }
    }
}

/// What happened during an epoch: how many samples were delivered, and which were skipped
/// with the reason for each.
///
/// A training run can keep the list: [`EpochReport::write_skipped_csv`] writes it as
/// `index,id,path,error`, and the report is also `serde::Serialize`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpochReport {
    /// Samples delivered in batches.
    pub delivered: usize,
    /// Samples skipped because they failed to load or did not fit their batch, in the order
    /// the loader met them.
    pub skipped: Vec<SkippedSample>,
}

impl EpochReport {
    /// The skipped samples as CSV with a header line: `index,id,path,error` (empty fields when
    /// unknown).
    pub fn skipped_csv(&self) -> String {
        skipped_csv(&self.skipped)
    }

    /// Writes [`EpochReport::skipped_csv`] to `path`, atomically.
    pub fn write_skipped_csv(&self, path: &Path) -> Result<()> {
        Ok(crate::fsutil::write_atomically(path, self.skipped_csv().as_bytes())?)
    }
}

/// `index,id,path,error` CSV of `skipped`, with a header line.
pub fn skipped_csv(skipped: &[SkippedSample]) -> String {
    let mut out = csv::Writer::from_writer(Vec::new());
    let mut rows = vec![["index".to_string(), "id".into(), "path".into(), "error".into()]];
    rows.extend(skipped.iter().map(|s| {
        [
            s.index.to_string(),
            s.id.clone().unwrap_or_default(),
            s.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            s.error.clone(),
        ]
    }));
    for row in rows {
        // Writing to a Vec cannot fail.
        let _ = out.write_record(&row);
    }
    String::from_utf8(out.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// Loader settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Seed of the epoch order (`None` keeps dataset order) .
    pub shuffle: Option<u64>,
    /// Seed of the per-sample augmentation randomness.
    pub seed: u64,
    /// Drop a final batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Decoding threads in a pool of their own (`None`: rayon's global pool, shared with the
    /// tensor kernels, so decoding and compute never oversubscribe the cores).
    pub workers: Option<usize>,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch_size: 32,
            shuffle: None,
            seed: 0,
            drop_last: false,
            workers: None,
            prefetch: 2,
        }
    }
}

/// Turns a dataset of [`Sample`]s into batches.
///
/// ```
/// use deeprecog_dataset::loader::Loader;
/// use deeprecog_dataset::{Image, InMemory, Sample, Target};
///
/// let samples: Vec<Sample> = (0..10)
///     .map(|i| Sample {
///         id: format!("s{i}"),
///         image: Image::filled(6, 4, 3, i as u8).unwrap(),
///         target: Target::Class(i % 2),
///         group: None,
///     })
///     .collect();
/// let loader = Loader::new(InMemory(samples)).batch_size(4).shuffle(7).drop_last(true);
/// let mut epoch = loader.epoch(0)?;
/// let batches: Vec<_> = epoch.by_ref().collect::<Result<_, _>>()?;
/// assert_eq!(batches.len(), 2);
/// assert_eq!(batches[0].images.dims(), &[4, 3, 4, 6]);
/// assert_eq!(epoch.report().delivered, 8);
/// # Ok::<(), deeprecog_dataset::Error>(())
/// ```
pub struct Loader<D> {
    dataset: Arc<D>,
    transform: Option<Arc<dyn Transform>>,
    config: LoaderConfig,
    device: Device,
}

impl<D: Dataset<Item = Sample> + 'static> Loader<D> {
    /// A loader with [`LoaderConfig::default`] on the CPU.
    pub fn new(dataset: D) -> Loader<D> {
        Loader {
            dataset: Arc::new(dataset),
            transform: None,
            config: LoaderConfig::default(),
            device: Device::Cpu,
        }
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: LoaderConfig) -> Self {
        self.config = config;
        self
    }

    /// Samples per batch.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }

    /// Shuffle each epoch with this seed.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.config.shuffle = Some(seed);
        self
    }

    /// Seed of the augmentation randomness.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Drop the last incomplete batch.
    pub fn drop_last(mut self, yes: bool) -> Self {
        self.config.drop_last = yes;
        self
    }

    /// Decoding threads in a pool of their own, beside rayon's global pool.
    pub fn workers(mut self, n: usize) -> Self {
        self.config.workers = Some(n);
        self
    }

    /// Batches prepared ahead.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.config.prefetch = n;
        self
    }

    /// Transform applied to every sample's image (it must produce one size for all samples).
    pub fn transform(mut self, t: impl Transform + 'static) -> Self {
        self.transform = Some(Arc::new(t));
        self
    }

    /// Device the batch tensors are created on.
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// The dataset.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// Batches per epoch (before any sample is skipped).
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.dataset.len(), self.config.batch_size.max(1));
        if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The dataset indices of epoch `epoch`, in order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if let Some(seed) = self.config.shuffle {
            // Kept as it was when the seeded results in the README were made: changing it moves
            // every seeded run.
            let mixed = seed ^ epoch.wrapping_mul(crate::seed::GOLDEN_GAMMA);
            order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(mixed));
        }
        order
    }

    /// Starts epoch `epoch`: the returned iterator yields batches as the producer thread
    /// finishes them. Dropping it stops the producer.
    pub fn epoch(&self, epoch: u64) -> Result<Epoch> {
        if self.config.batch_size == 0 {
            return Err(Error::Config("batch size must be at least 1".into()));
        }
        // By default decoding shares rayon's global pool with the tensor kernels, so the two
        // never run more threads than there are cores; `workers` asks for a dedicated pool.
        let pool = match self.config.workers {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .thread_name(|i| format!("deeprecog-decode-{i}"))
                    .num_threads(n)
                    .build()
                    .map_err(|e| Error::Config(format!("decode thread pool: {e}")))?,
            ),
            None => None,
        };
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let report = Arc::new(Mutex::new(EpochReport::default()));
        let job = Job {
            dataset: Arc::clone(&self.dataset),
            transform: self.transform.clone(),
            config: self.config.clone(),
            device: self.device.clone(),
            report: Arc::clone(&report),
            epoch,
        };
        let order = self.order(epoch);
        let handle = std::thread::Builder::new()
            .name("deeprecog-loader".into())
            .spawn(move || {
                let chunks: Vec<&[usize]> = order
                    .chunks(job.config.batch_size)
                    .filter(|c| !job.config.drop_last || c.len() == job.config.batch_size)
                    .collect();
                for chunk in chunks {
                    let batch = match &pool {
                        Some(pool) => pool.install(|| job.batch(chunk)),
                        None => job.batch(chunk),
                    };
                    let stop = batch.is_err();
                    match batch {
                        Ok(None) => continue,
                        Ok(Some(b)) => {
                            if tx.send(Ok(b)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                    if stop {
                        return;
                    }
                }
            })
            .map_err(|e| Error::Config(format!("loader thread: {e}")))?;
        Ok(Epoch { rx, handle: Some(handle), report })
    }
}

struct Job<D> {
    dataset: Arc<D>,
    transform: Option<Arc<dyn Transform>>,
    config: LoaderConfig,
    device: Device,
    report: Arc<Mutex<EpochReport>>,
    epoch: u64,
}

impl<D: Dataset<Item = Sample>> Job<D> {
    fn load(&self, index: usize) -> Result<Sample> {
        let mut sample = self.dataset.get(index)?;
        if let Some(t) = &self.transform {
            let mut rng = sample_rng(self.config.seed, self.epoch, index as u64);
            sample.image = t
                .apply(sample.image, &mut rng)
                .map_err(|e| Error::BadSample { id: sample.id.clone(), message: e.to_string() })?;
        }
        Ok(sample)
    }

    /// Loads one batch; `Ok(None)` when every sample of it was skipped.
    fn batch(&self, indices: &[usize]) -> Result<Option<Batch>> {
        let loaded: Vec<(usize, Result<Sample>)> =
            indices.par_iter().map(|&i| (i, self.load(i))).collect();
        let mut skipped = Vec::new();
        let mut good: Vec<(usize, Sample)> = Vec::with_capacity(loaded.len());
        for (index, result) in loaded {
            match result {
                Ok(s) => good.push((index, s)),
                Err(e) => skipped.push(SkippedSample::new(&*self.dataset, index, e.to_string())),
            }
        }
        // The first good sample fixes the batch's image and target shapes.
        let shape = good.first().map(|(_, s)| {
            (s.image.width(), s.image.height(), s.image.channels(), target_kind(&s.target))
        });
        let mut kept = Vec::with_capacity(good.len());
        for (index, s) in good {
            let this =
                (s.image.width(), s.image.height(), s.image.channels(), target_kind(&s.target));
            if Some(this) == shape {
                kept.push((index, s));
            } else {
                let mut skip = SkippedSample::new(
                    &*self.dataset,
                    index,
                    format!(
                        "sample {}: {}x{}x{} image or target {:?} differs from the batch's {:?} (resize all images to one size)",
                        s.id, this.0, this.1, this.2, this.3, shape
                    ),
                );
                skip.id = Some(s.id);
                skipped.push(skip);
            }
        }
        if let Ok(mut r) = self.report.lock() {
            r.delivered += kept.len();
            r.skipped.extend(skipped);
        }
        let Some((w, h, c, kind)) = shape else { return Ok(None) };
        let n = kept.len();
        let plane = (w * h) as usize * c as usize;
        let mut pixels = Vec::with_capacity(n * plane);
        for (_, s) in &kept {
            pixels.extend_from_slice(&to_chw(&s.image));
        }
        let images =
            Tensor::from_vec(pixels, (n, c as usize, h as usize, w as usize), &self.device)?;
        let targets = match kind {
            TargetKind::Class => {
                let v: Vec<u32> = kept
                    .iter()
                    .map(|(_, s)| match s.target {
                        Target::Class(c) => c,
                        Target::Labels(_) => 0,
                    })
                    .collect();
                Tensor::from_vec(v, n, &self.device)?
            }
            TargetKind::Labels(k) => {
                let mut v = Vec::with_capacity(n * k);
                for (_, s) in &kept {
                    if let Target::Labels(l) = &s.target {
                        v.extend_from_slice(l);
                    }
                }
                Tensor::from_vec(v, (n, k), &self.device)?
            }
        };
        let mut ids = Vec::with_capacity(n);
        let mut groups = Vec::with_capacity(n);
        let mut idx = Vec::with_capacity(n);
        for (i, s) in kept {
            ids.push(s.id);
            groups.push(s.group);
            idx.push(i);
        }
        Ok(Some(Batch { images, targets, ids, groups, indices: idx }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    Class,
    Labels(usize),
}

fn target_kind(t: &Target) -> TargetKind {
    match t {
        Target::Class(_) => TargetKind::Class,
        Target::Labels(l) => TargetKind::Labels(l.len()),
    }
}

/// The batches of one epoch, produced in the background.
pub struct Epoch {
    rx: Receiver<Result<Batch>>,
    handle: Option<JoinHandle<()>>,
    report: Arc<Mutex<EpochReport>>,
}

impl Epoch {
    /// Samples delivered and skipped so far (complete once the iterator is exhausted).
    pub fn report(&self) -> EpochReport {
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        match self.rx.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                if let Some(h) = self.handle.take() {
                    if h.join().is_err() {
                        return Some(Err(Error::Config("loader thread panicked".into())));
                    }
                }
                None
            }
        }
    }
}
