//! Loader and cache: layout, determinism, skipping bad samples, drop-last.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use deeprecog_dataset::cache::{CacheConfig, U8Cache};
use deeprecog_dataset::loader::Loader;
use deeprecog_dataset::transforms::{Compose, HorizontalFlip, Resize};
use deeprecog_dataset::{Dataset, Error, Image, Result, Sample, Target};

/// Non-square images whose pixels encode (sample, x, y, channel), and every 7th sample broken.
struct Synthetic {
    n: usize,
}

impl Dataset for Synthetic {
    type Item = Sample;
    fn len(&self) -> usize {
        self.n
    }
    fn get(&self, index: usize) -> Result<Sample> {
        if index % 7 == 3 {
            return Err(Error::BadSample {
                id: format!("img{index}.jpg"),
                message: "truncated".into(),
            });
        }
        let (w, h) = (5u32, 3u32);
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                for c in 0..3u32 {
                    data.push((index as u32 * 50 + y * 10 + x * 2 + c) as u8);
                }
            }
        }
        Ok(Sample {
            id: format!("img{index}.jpg"),
            image: Image::from_raw(w, h, 3, data)?,
            target: Target::Labels(vec![(index % 2) as f32, 1.0]),
            group: Some(format!("g{}", index / 4)),
        })
    }
}

#[test]
fn batches_are_nchw_u8_with_targets_and_ids() {
    let loader = Loader::new(Synthetic { n: 5 }).batch_size(3);
    let mut epoch = loader.epoch(0).unwrap();
    let batches: Vec<_> = epoch.by_ref().collect::<Result<_>>().unwrap();
    assert_eq!(batches.len(), 2);
    let b = &batches[0];
    assert_eq!(b.images.dims(), &[3, 3, 3, 5]);
    assert_eq!(b.images.dtype(), candle_core::DType::U8);
    // images[n=1, c=2, y=1, x=4] = 1*50 + 10 + 8 + 2.
    let v = b.images.get(1).unwrap().get(2).unwrap().get(1).unwrap().get(4).unwrap();
    assert_eq!(v.to_scalar::<u8>().unwrap(), 70);
    assert_eq!(
        b.targets.to_vec2::<f32>().unwrap(),
        vec![vec![0.0, 1.0], vec![1.0, 1.0], vec![0.0, 1.0]]
    );
    assert_eq!(b.ids, ["img0.jpg", "img1.jpg", "img2.jpg"]);
    assert_eq!(b.groups[2].as_deref(), Some("g0"));
    // Sample 3 is broken: skipped, counted, the batch is one short.
    assert_eq!(batches[1].ids, ["img4.jpg"]);
    let report = epoch.report();
    assert_eq!(report.delivered, 4);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].index, 3);
    assert!(report.skipped[0].error.contains("img3.jpg"));
}

fn epoch_bytes(loader: &Loader<Synthetic>, epoch: u64) -> (Vec<String>, Vec<u8>) {
    let mut ids = Vec::new();
    let mut bytes = Vec::new();
    for b in loader.epoch(epoch).unwrap() {
        let b = b.unwrap();
        ids.extend(b.ids);
        bytes.extend(b.images.flatten_all().unwrap().to_vec1::<u8>().unwrap());
    }
    (ids, bytes)
}

#[test]
fn order_and_augmentation_depend_only_on_seed_and_epoch() {
    let make = |workers| {
        Loader::new(Synthetic { n: 40 })
            .batch_size(6)
            .shuffle(9)
            .seed(4)
            .workers(workers)
            .transform(Compose::new().then(HorizontalFlip { p: 0.5 }).then(Resize::new(4, 6)))
    };
    let (a_ids, a_px) = epoch_bytes(&make(1), 0);
    let (b_ids, b_px) = epoch_bytes(&make(2), 0);
    assert_eq!(a_ids, b_ids);
    assert_eq!(a_px, b_px);
    let (c_ids, _) = epoch_bytes(&make(2), 1);
    assert_ne!(a_ids, c_ids, "another epoch, another order");
    let unshuffled = epoch_bytes(&Loader::new(Synthetic { n: 40 }).batch_size(6), 0).0;
    assert_ne!(a_ids, unshuffled);
    let mut sorted = a_ids.clone();
    sorted.sort();
    let mut plain = unshuffled.clone();
    plain.sort();
    assert_eq!(sorted, plain);
}

#[test]
fn drop_last_and_class_targets() {
    let samples: Vec<Sample> = (0..10)
        .map(|i| Sample {
            id: i.to_string(),
            image: Image::filled(2, 3, 1, i as u8).unwrap(),
            target: Target::Class(i % 3),
            group: None,
        })
        .collect();
    let loader = Loader::new(deeprecog_dataset::InMemory(samples)).batch_size(4).drop_last(true);
    assert_eq!(loader.num_batches(), 2);
    let batches: Vec<_> = loader.epoch(0).unwrap().collect::<Result<_>>().unwrap();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].targets.to_vec1::<u32>().unwrap(), vec![1, 2, 0, 1]);
    assert_eq!(batches[0].images.dims(), &[4, 1, 3, 2]);
    assert!(Loader::new(deeprecog_dataset::InMemory(Vec::<Sample>::new()))
        .batch_size(0)
        .epoch(0)
        .is_err());
}

#[test]
fn mismatched_sizes_are_skipped_not_fatal() {
    let mk = |w| Sample {
        id: format!("w{w}"),
        image: Image::filled(w, 3, 3, 0).unwrap(),
        target: Target::Class(0),
        group: None,
    };
    let loader = Loader::new(deeprecog_dataset::InMemory(vec![mk(4), mk(5), mk(4)])).batch_size(3);
    let mut epoch = loader.epoch(0).unwrap();
    let b = epoch.next().unwrap().unwrap();
    assert_eq!(b.ids, ["w4", "w4"]);
    assert!(epoch.next().is_none());
    assert!(epoch.report().skipped[0].error.contains("w5"));
}

#[test]
fn cache_roundtrip_across_shards_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let resize = Resize::new(4, 6);
    let cache = U8Cache::build(
        &Synthetic { n: 12 },
        Some(&resize),
        dir.path(),
        &CacheConfig { shard_samples: 5, seed: 0 },
    )
    .unwrap();
    // Samples 3 and 10 fail.
    assert_eq!(cache.len(), 10);
    assert_eq!(cache.skipped().iter().map(|s| s.index).collect::<Vec<_>>(), vec![3, 10]);
    assert_eq!(cache.image_size(), (4, 6, 3));
    let direct = {
        let mut rng = deeprecog_dataset::transforms::sample_rng(0, 0, 11);
        use deeprecog_dataset::transforms::Transform;
        resize.apply(Synthetic { n: 12 }.get(11).unwrap().image, &mut rng).unwrap()
    };
    let reopened = U8Cache::open(dir.path()).unwrap();
    let last = reopened.get(9).unwrap();
    assert_eq!(last.id, "img11.jpg");
    assert_eq!(last.image, direct);
    assert_eq!(last.target, Target::Labels(vec![1.0, 1.0]));
    assert_eq!(last.group.as_deref(), Some("g2"));
    assert!(reopened.get(10).is_err());

    // A shard cut short is detected at open, naming the shard.
    let shard = dir.path().join("shard-00001.u8");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 1]).unwrap();
    let err = U8Cache::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("shard-00001.u8"), "{err}");
    // No index: not a cache.
    std::fs::remove_file(dir.path().join("index.json")).unwrap();
    assert!(matches!(U8Cache::open(dir.path()), Err(Error::MissingFile { .. })));
}
