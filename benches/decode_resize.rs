//! Decode + resize throughput: CelebA-size JPEGs (178x218) to 128x128 RGB, the first step of
//! every epoch that does not use the u8 cache.
//!
//! `cargo bench --bench decode_resize` (reads `data-fixtures/celeba/img_align_celeba`, or the
//! folder in `DEEPRECOG_BENCH_IMAGES`). `benches/compare_decode_resize.sh` runs this and the
//! PIL reference (`benches/pil_decode_resize.py`) back to back on the same files.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use deeprecog::dataset::cache::{CacheConfig, U8Cache};
use deeprecog::dataset::transforms::{sample_rng, Resize, Transform};
use deeprecog::dataset::{is_image_file, Dataset, Image, Sample, Target};
use rayon::prelude::*;

fn images() -> Vec<PathBuf> {
    let dir = std::env::var("DEEPRECOG_BENCH_IMAGES")
        .unwrap_or_else(|_| "data-fixtures/celeba/img_align_celeba".to_string());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e} (generate the fixtures first)"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_image_file(p))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{dir} holds no images");
    files
}

fn decode_resize(path: &std::path::Path, resize: &Resize) -> usize {
    let image = Image::open(path).unwrap();
    let out = resize.apply(image, &mut sample_rng(0, 0, 0)).unwrap();
    out.as_bytes().len()
}

fn bench(c: &mut Criterion) {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let files = images();
    let resize = Resize::new(128, 128);
    let mut group = c.benchmark_group("decode_resize_178x218_to_128");
    group.throughput(Throughput::Elements(files.len() as u64));
    group.sample_size(20);
    for workers in [1usize, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(workers).build().unwrap();
        group.bench_function(format!("{workers}_workers"), |b| {
            b.iter(|| {
                pool.install(|| files.par_iter().map(|p| decode_resize(p, &resize)).sum::<usize>())
            })
        });
    }
    group.finish();

    // The same images once they sit in the u8 cache: what every epoch after the first costs.
    let cache_dir = tempfile::tempdir().unwrap();
    let folder = FileList(files.clone());
    let cache =
        U8Cache::build(&folder, Some(&resize), cache_dir.path(), &CacheConfig::default()).unwrap();
    let mut group = c.benchmark_group("u8_cache_read_128");
    group.throughput(Throughput::Elements(cache.len() as u64));
    group.sample_size(20);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    group.bench_function("2_workers", |b| {
        b.iter(|| {
            pool.install(|| {
                (0..cache.len())
                    .into_par_iter()
                    .map(|i| cache.get(i).unwrap().image.as_bytes().len())
                    .sum::<usize>()
            })
        })
    });
    group.finish();
}

/// The benchmark's files as a dataset, for building the cache.
struct FileList(Vec<PathBuf>);

impl Dataset for FileList {
    type Item = Sample;
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, index: usize) -> deeprecog::dataset::Result<Sample> {
        let path = &self.0[index];
        Ok(Sample {
            id: path.display().to_string(),
            image: Image::open(path)?,
            target: Target::Class(0),
            group: None,
        })
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
