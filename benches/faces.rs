//! Face detection speed: BlazeFace (candle port) per 640x360 frame, the network alone at
//! batch 1 and 16, and sampling + detecting faces in a 10 s talking-head video.
//!
//! `cargo bench --bench faces` needs the assets (`scripts/fetch-assets.sh`) and ffmpeg;
//! `benches/compare_blazeface.sh` runs it next to onnxruntime on the same model and frame.
//! The frame is `DEEPRECOG_BENCH_FRAME` (a 640x360 image) or, when unset, a frame of
//! `assets/videos/franck.mp4` scaled to 640x360.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[global_allocator]
static GLOBAL: deeprecog::alloc::MiMalloc = deeprecog::alloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use deeprecog::dataset::transforms::Resize;
use deeprecog::dataset::Image;
use deeprecog::detector::blazeface::{BlazeFace, BlazeFaceConfig, Variant};
use deeprecog::detector::{video, FaceDetector};

fn assets() -> PathBuf {
    deeprecog::nn::assets::dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

fn frame() -> Image {
    if let Ok(path) = std::env::var("DEEPRECOG_BENCH_FRAME") {
        return Image::open(Path::new(&path)).unwrap().to_rgb();
    }
    let (info, frames) = video::sample_frames(&assets().join("videos/franck.mp4"), 3).unwrap();
    assert!(info.frames > 0);
    Resize::new(640, 360).resize(&frames[1].image).unwrap()
}

/// The first 10 s of franck.mp4, copied without re-encoding.
fn ten_second_video(dir: &Path) -> PathBuf {
    let out = dir.join("franck_10s.mp4");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(assets().join("videos/franck.mp4"))
        .args(["-t", "10", "-c", "copy"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

fn bench(c: &mut Criterion) {
    deeprecog::alloc::keep_freed_memory();
    deeprecog::nn::device::park_candle_workers();
    let device = Device::Cpu;
    let frame = frame();
    let mut group = c.benchmark_group("blazeface_640x360");
    group.sample_size(30);
    for (variant, config) in
        [(Variant::Front, BlazeFaceConfig::front()), (Variant::Back, BlazeFaceConfig::back())]
    {
        let model = assets().join(match variant {
            Variant::Front => "blazeface/face_detection_front_128x128.onnx",
            Variant::Back => "blazeface/face_detection_back_256x256.onnx",
        });
        let net = BlazeFace::load(&model, config, &device).unwrap();
        let name = variant.detector_name();
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("{name}/detect"), |b| b.iter(|| net.detect(&frame).unwrap()));
        let side = variant.input_size();
        for batch in [1usize, 16] {
            let x =
                Tensor::zeros((batch, 3, side, side), candle_core::DType::F32, &device).unwrap();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(format!("{name}/network_batch{batch}"), |b| {
                b.iter(|| net.forward_raw(&x).unwrap())
            });
        }
    }
    group.finish();

    let dir = tempfile::tempdir().unwrap();
    let clip = ten_second_video(dir.path());
    let net = BlazeFace::load(
        assets().join("blazeface/face_detection_front_128x128.onnx"),
        BlazeFaceConfig::front(),
        &device,
    )
    .unwrap();
    let mut group = c.benchmark_group("video_10s_sample_and_detect");
    group.sample_size(10);
    for frames in [16usize, 64] {
        group.throughput(Throughput::Elements(frames as u64));
        group.bench_function(format!("{frames}_frames"), |b| {
            b.iter(|| {
                let (_, sampled) = video::sample_frames(&clip, frames).unwrap();
                let images: Vec<Image> = sampled.into_iter().map(|f| f.image).collect();
                let found = net.detect_batch(&images).unwrap();
                assert!(found.iter().filter(|f| !f.is_empty()).count() * 10 >= frames * 9);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
