//! The real-footage face-swap set ([`deeprecog_detector::swapset`]): once with a fixed
//! synthetic "detector" on generated pictures (no assets), once on the photos and clips that
//! `scripts/fetch-assets.sh` downloads with BlazeFace (skipped with a printed reason when they
//! are absent, failing when `CI` is set). Both check the written set against its summary:
//! DFDC metadata that reads back, a manifest that opens, fakes that differ from their targets
//! only around the face, and counts that match the files on disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use deeprecog_dataset::face::FaceBox;
use deeprecog_dataset::manifest::Manifest;
use deeprecog_dataset::Image;
use deeprecog_detector::dfdc::{self, Label};
use deeprecog_detector::prepare::sources_from_dfdc;
use deeprecog_detector::scan::{open_detector, DetectorKind};
use deeprecog_detector::swapset::{
    build_swap_set, build_swap_set_with_groups, ItemKind, SwapSetConfig, SwapSetSummary,
};
use deeprecog_detector::{Detection, Error, FaceDetector, Result};

fn asset(name: &str) -> Option<PathBuf> {
    deeprecog_nn::assets::for_test(Path::new(env!("CARGO_MANIFEST_DIR")), name)
}

fn files_in(dir: &Path, ext: &str) -> usize {
    match std::fs::read_dir(dir) {
        Ok(items) => items
            .filter_map(|i| i.ok())
            .filter(|i| i.path().extension().is_some_and(|e| e == ext))
            .count(),
        Err(_) => 0,
    }
}

/// Mean absolute byte difference of `a` and `b` over the pixels where `inside(x, y)`.
fn mean_diff(a: &Image, b: &Image, inside: impl Fn(u32, u32) -> bool) -> (f64, usize) {
    let (mut sum, mut n) = (0f64, 0usize);
    for y in 0..a.height() {
        for x in 0..a.width() {
            if inside(x, y) {
                let (p, q) = (a.pixel(x, y).unwrap(), b.pixel(x, y).unwrap());
                sum += p.iter().zip(q).map(|(&p, &q)| (p as f64 - q as f64).abs()).sum::<f64>();
                n += 1;
            }
        }
    }
    (if n > 0 { sum / (n as f64 * 3.0) } else { 0.0 }, n)
}

/// The summary's counts and skipped inputs on a few lines.
fn counts(s: &SwapSetSummary) -> String {
    let skipped: Vec<String> = s
        .skipped
        .iter()
        .map(|k| format!("\n  skipped {}: {}", k.input.display(), k.reason))
        .collect();
    format!(
        "{} real + {} fake videos, {} real + {} fake images, {} frames swapped, {} without a \
         face, {} failed{}",
        s.real_videos,
        s.fake_videos,
        s.real_images,
        s.fake_images,
        s.frames_swapped,
        s.frames_without_face,
        s.frames_failed,
        skipped.concat()
    )
}

/// Everything the summary claims, checked against the files under `out`.
fn check_set(out: &Path, summary: &SwapSetSummary) {
    let on_disk: SwapSetSummary =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(&on_disk, summary, "summary.json is what the build returned");

    // Counts match the files.
    assert_eq!(files_in(&out.join("images/real"), "png"), summary.real_images);
    assert_eq!(files_in(&out.join("images/fake"), "png"), summary.fake_images);
    assert_eq!(files_in(&out.join("videos"), "mp4"), summary.real_videos + summary.fake_videos);
    assert_eq!(
        summary.items.len(),
        summary.real_images + summary.fake_images + summary.real_videos + summary.fake_videos
    );
    for item in &summary.items {
        assert!(out.join(&item.path).is_file(), "{} is missing", item.path);
    }
    // No staging folder left behind.
    if let Ok(items) = std::fs::read_dir(out.join("videos")) {
        for item in items {
            let name = item.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "left over: {name}");
        }
    }

    // Videos: DFDC metadata whose fakes name an existing original, readable by prepare.
    let videos = summary.real_videos + summary.fake_videos;
    if videos > 0 {
        let entries = dfdc::read_metadata(&out.join("videos/metadata.json")).unwrap();
        assert_eq!(entries.len(), videos);
        for e in &entries {
            assert!(e.file.is_file(), "{}", e.file.display());
            assert_eq!(e.split.as_deref(), Some("test"));
            if e.label == Label::Fake {
                let original = e.original.as_deref().unwrap();
                assert!(out.join("videos").join(original).is_file(), "{original}");
                assert!(entries.iter().any(|r| r.name == original && r.label == Label::Real));
            }
        }
        let fakes = entries.iter().filter(|e| e.label == Label::Fake).count();
        assert_eq!(fakes, summary.fake_videos);
        let sources = sources_from_dfdc(&out.join("videos"), 2, 1.0).unwrap();
        assert_eq!(sources.len(), videos);
        assert!(sources.iter().all(|s| s.label.is_some()));
    }

    // Images: the manifest opens and lists every picture with its label.
    let manifest = Manifest::open(out.join("images/manifest.csv")).unwrap();
    assert_eq!(manifest.entries().len(), summary.real_images + summary.fake_images);
    for row in manifest.entries() {
        assert!(out.join("images").join(&row.path).is_file(), "{}", row.path);
        assert_eq!(row.label, u32::from(row.path.starts_with("fake/")), "{}", row.path);
        assert!(row.group.as_deref().is_some_and(|g| !g.is_empty()));
    }

    // Fakes differ from their targets inside the face box and are identical far outside.
    for item in summary.items.iter().filter(|i| i.kind == ItemKind::Image) {
        if item.label != Label::Fake {
            continue;
        }
        let target_stem = item.target.file_stem().unwrap().to_string_lossy().into_owned();
        let real = Image::open(&out.join(format!("images/real/{target_stem}.png"))).unwrap();
        let fake = Image::open(&out.join(&item.path)).unwrap();
        assert_eq!((real.width(), real.height()), (fake.width(), fake.height()));
        let b: FaceBox = item.face.unwrap();
        let inner = |x: u32, y: u32| {
            let (x, y) = (x as f32, y as f32);
            x >= b.x + 0.3 * b.width
                && x < b.right() - 0.3 * b.width
                && y >= b.y + 0.3 * b.height
                && y < b.bottom() - 0.3 * b.height
        };
        let far = |x: u32, y: u32| {
            let (x, y) = (x as f32, y as f32);
            x < b.x - b.width
                || x > b.right() + b.width
                || y < b.y - b.height
                || y > b.bottom() + b.height
        };
        let (inside, n) = mean_diff(&real, &fake, inner);
        assert!(n > 0 && inside > 2.0, "{}: mean difference {inside} inside the face", item.path);
        let (outside, _) = mean_diff(&real, &fake, far);
        assert_eq!(outside, 0.0, "{}: changed far outside the face box", item.path);
    }
}

/// A "detector" that finds one face at a fixed place in every picture, with BlazeFace's 6
/// keypoints.
struct FixedFace;

impl FaceDetector for FixedFace {
    fn name(&self) -> &str {
        "fixed"
    }

    fn detect(&self, _image: &Image) -> Result<Vec<Detection>> {
        Ok(vec![Detection {
            bbox: FaceBox::new(50.0, 35.0, 20.0, 25.0),
            score: 0.99,
            keypoints: vec![
                [55.0, 42.0],
                [65.0, 42.0],
                [60.0, 48.0],
                [60.0, 54.0],
                [51.0, 45.0],
                [69.0, 45.0],
            ],
        }])
    }
}

/// A textured 120x100 picture (non-square: catches width/height swaps): a colour gradient
/// plus a pattern that depends on `seed`, so that colour transfer cannot flatten the swap.
fn textured(seed: u32) -> Image {
    let (w, h) = (120u32, 100u32);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let stripe =
                if ((x / (3 + seed)) + (y / (4 + seed))).is_multiple_of(2) { 60 } else { 0 };
            data.push((x * 2 + seed * 40) as u8 / 2 + stripe);
            data.push((y * 2 + seed * 10) as u8 / 2 + stripe);
            data.push(((x + y) * 3 + seed * 70) as u8 / 2);
        }
    }
    Image::from_raw(w, h, 3, data).unwrap()
}

#[test]
fn synthetic_faces_make_a_complete_set() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let mut photos = Vec::new();
    for (name, seed) in [("alice", 1), ("alice2", 2), ("bob", 3)] {
        let path = inputs.join(format!("{name}.png"));
        textured(seed).save(&path).unwrap();
        photos.push(path);
    }
    let corrupt = inputs.join("carol.png");
    std::fs::write(&corrupt, b"not a png").unwrap();
    photos.push(corrupt.clone());
    photos.push(inputs.join("dave.png")); // missing

    // A 3-frame clip, and a missing one.
    let frames: Vec<PathBuf> = (0..3)
        .map(|i| {
            let path = inputs.join(format!("frame{i}.png"));
            textured(4 + i).save(&path).unwrap();
            path
        })
        .collect();
    let clip = inputs.join("clip.mp4");
    deeprecog_detector::video::encode_frames(&frames, 10.0, &clip).unwrap();
    let videos = vec![clip, inputs.join("gone.mp4")];

    let out = tmp.path().join("set");
    let config = SwapSetConfig { frames: 3, seconds: 1.0, ..SwapSetConfig::default() };
    let summary = build_swap_set(&photos, &videos, &FixedFace, &out, &config).unwrap();
    assert_eq!(summary.real_images, 3);
    // alice -> bob, alice2 -> bob, bob -> alice, bob -> alice2; never alice <-> alice2.
    assert_eq!(summary.fake_images, 4);
    assert!(!out.join("images/fake/alice__alice2.png").exists());
    assert!(out.join("images/fake/bob__alice2.png").is_file());
    assert_eq!((summary.real_videos, summary.fake_videos), (1, 2));
    assert_eq!((summary.frames_swapped, summary.frames_without_face), (6, 0));
    assert!(out.join("videos/clip__alice.mp4").is_file());
    assert!(out.join("videos/clip__bob.mp4").is_file());
    let skipped: Vec<&Path> = summary.skipped.iter().map(|s| s.input.as_path()).collect();
    assert_eq!(skipped.len(), 3, "{:?}", summary.skipped);
    for name in ["carol.png", "dave.png", "gone.mp4"] {
        assert!(skipped.contains(&inputs.join(name).as_path()), "{name} not skipped");
    }
    let manifest = Manifest::open(out.join("images/manifest.csv")).unwrap();
    let groups: Vec<Option<String>> = manifest.groups();
    assert!(groups.iter().all(|g| matches!(g.as_deref(), Some("alice" | "bob"))));
    check_set(&out, &summary);

    // Deterministic: a second build writes the same pictures.
    let again = tmp.path().join("again");
    let second = build_swap_set(&photos, &videos, &FixedFace, &again, &config).unwrap();
    assert_eq!(second.items.len(), summary.items.len());
    for item in summary.items.iter().filter(|i| i.kind == ItemKind::Image) {
        let a = std::fs::read(out.join(&item.path)).unwrap();
        let b = std::fs::read(again.join(&item.path)).unwrap();
        assert!(a == b, "{} differs between builds", item.path);
    }
}

#[test]
fn one_identity_makes_no_fakes_and_that_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let photos: Vec<PathBuf> = ["erin", "erin2"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let path = tmp.path().join(format!("{name}.png"));
            textured(i as u32).save(&path).unwrap();
            path
        })
        .collect();
    let out = tmp.path().join("set");
    let err =
        build_swap_set(&photos, &[], &FixedFace, &out, &SwapSetConfig::default()).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("no fake"), "{err}");
    assert!(out.join("summary.json").is_file(), "the summary still says what was skipped");
}

#[test]
fn an_invalid_config_is_refused_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let config = SwapSetConfig { fps: -1.0, ..SwapSetConfig::default() };
    let err = build_swap_set(&[], &[], &FixedFace, &out, &config).unwrap_err();
    assert!(err.to_string().contains("fps"), "{err}");
    assert!(!out.exists());
}

/// The assets' inputs: single-face photos, the group photo and a clip, or `None` (skip).
fn real_inputs(photos: &[&str], videos: &[&str]) -> Option<(Vec<PathBuf>, Vec<PathBuf>)> {
    let photos = photos.iter().map(|p| asset(&format!("faces/{p}"))).collect::<Option<_>>()?;
    let videos = videos.iter().map(|v| asset(&format!("videos/{v}"))).collect::<Option<_>>()?;
    Some((photos, videos))
}

#[test]
fn real_assets_make_a_complete_set() {
    let Some(_) = asset("blazeface/face_detection_front_128x128.onnx") else { return };
    let Some(_) = asset("blazeface/face_detection_back_256x256.onnx") else { return };
    let Some((photos, videos)) =
        real_inputs(&["obama.jpg", "obama2.jpg", "biden.jpg"], &["carphone_pristine.mp4"])
    else {
        return;
    };
    let Some(group) = asset("faces/group_1927.png") else { return };
    let assets = group.parent().unwrap().parent().unwrap().to_path_buf();
    let front = open_detector(DetectorKind::BlazeFace, &assets, &Device::Cpu).unwrap();
    let back = open_detector(DetectorKind::BlazeFaceBack, &assets, &Device::Cpu).unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("set");
    let config = SwapSetConfig { frames: 4, seconds: 2.0, group_swaps: 2, ..Default::default() };
    let start = Instant::now();
    let summary = build_swap_set_with_groups(
        &photos,
        &[group],
        &videos,
        front.as_ref(),
        back.as_ref(),
        &out,
        &config,
    )
    .unwrap();
    eprintln!("built in {:.1} s: {}", start.elapsed().as_secs_f64(), counts(&summary));
    // obama, obama2 and biden have a clear face; the group photo counts as a real picture too.
    assert_eq!((summary.real_images, summary.fake_images), (4, 6), "{}", counts(&summary));
    assert!(out.join("images/fake/obama__biden.png").is_file());
    assert!(out.join("images/fake/biden__obama2.png").is_file());
    assert!(!out.join("images/fake/obama__obama2.png").exists());
    assert!(out.join("images/fake/group_1927__swap1.png").is_file());
    // carphone: one real clip, one fake per identity (obama, biden), a face in most frames.
    assert_eq!((summary.real_videos, summary.fake_videos), (1, 2), "{}", counts(&summary));
    assert!(summary.frames_swapped >= 6, "{}", counts(&summary));
    check_set(&out, &summary);
}

/// The default settings on every asset (24 frames over 8 s of both clips, all photos, the group
/// photo): how long the full build takes. `cargo test -p deeprecog-detector --test swapset
/// -- --ignored --nocapture`; set `SWAPSET_KEEP` to a folder to keep the set there.
#[test]
#[ignore = "the full build: about a minute; run it to time the default settings"]
fn full_default_build() {
    let Some(_) = asset("blazeface/face_detection_back_256x256.onnx") else { return };
    let Some((photos, videos)) = real_inputs(
        &[
            "obama.jpg",
            "obama2.jpg",
            "obama3.jpg",
            "obama_partial_face.jpg",
            "obama_partial_face2.jpg",
            "biden.jpg",
        ],
        &["franck.mp4", "carphone_pristine.mp4"],
    ) else {
        return;
    };
    let Some(group) = asset("faces/group_1927.png") else { return };
    let assets = group.parent().unwrap().parent().unwrap().to_path_buf();
    let front = open_detector(DetectorKind::BlazeFace, &assets, &Device::Cpu).unwrap();
    let back = open_detector(DetectorKind::BlazeFaceBack, &assets, &Device::Cpu).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = match std::env::var_os("SWAPSET_KEEP") {
        Some(dir) => PathBuf::from(dir),
        None => tmp.path().join("set"),
    };
    let start = Instant::now();
    let summary = build_swap_set_with_groups(
        &photos,
        &[group],
        &videos,
        front.as_ref(),
        back.as_ref(),
        &out,
        &SwapSetConfig::default(),
    )
    .unwrap();
    let took = start.elapsed().as_secs_f64();
    eprintln!("full default build: {took:.1} s; {}", counts(&summary));
    check_set(&out, &summary);
}
