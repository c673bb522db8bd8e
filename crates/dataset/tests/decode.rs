//! Strict decoding on real bytes: fixture JPEGs and PNGs cut short, garbage, missing files;
//! directly and through the readers and the loader, which must skip and list each bad sample.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use deeprecog_dataset::folder::ImageFolder;
use deeprecog_dataset::loader::Loader;
use deeprecog_dataset::manifest::Manifest;
use deeprecog_dataset::transforms::Resize;
use deeprecog_dataset::{DecodeOptions, Error, Image, Result};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-fixtures")
}

/// A 178x218 CelebA-format face from the committed fixtures (9137 bytes).
fn fixture_jpeg() -> Vec<u8> {
    std::fs::read(fixtures().join("celeba/img_align_celeba/000001.jpg")).unwrap()
}

/// A 96x96 face crop from the committed fixtures.
fn fixture_png() -> Vec<u8> {
    std::fs::read(fixtures().join("deepfakes/images/real/000001.png")).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn assert_names(err: &Error, name: &str) {
    assert!(err.to_string().contains(name), "the error should name {name}: {err}");
}

#[test]
fn a_truncated_jpeg_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let jpg = fixture_jpeg();
    // Cut inside the scan (PIL: "image file is truncated"), near the end, and only the
    // end-of-image marker missing.
    for cut in [3000, jpg.len() / 2, jpg.len() - 10, jpg.len() - 2] {
        let path = write(dir.path(), &format!("cut{cut}.jpg"), &jpg[..cut]);
        let err = Image::open(&path).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{cut}: {err}");
        assert_names(&err, &format!("cut{cut}.jpg"));
        // Opting in accepts what the decoder can fill in.
        let img = Image::open_with(&path, &DecodeOptions::accept_damaged()).unwrap();
        assert_eq!((img.width(), img.height()), (178, 218), "{cut}");
    }
    // Bytes after the end-of-image marker (padding, appended data) are not damage.
    let mut padded = jpg.clone();
    padded.extend_from_slice(&[0; 64]);
    let strict = Image::decode(&padded, Path::new("padded.jpg")).unwrap();
    assert_eq!(strict, Image::decode(&jpg, Path::new("whole.jpg")).unwrap());
}

#[test]
fn corrupt_jpeg_scan_data_is_an_error() {
    let mut jpg = fixture_jpeg();
    // Overwrite part of the entropy-coded data, as a disk or transfer error would.
    for (i, b) in jpg.iter_mut().enumerate().take(1200).skip(1000) {
        *b = (i * 37) as u8;
    }
    let err = Image::decode(&jpg, Path::new("x/garbled.jpg")).unwrap_err();
    assert_names(&err, "garbled.jpg");
    assert!(Image::decode_with(&jpg, Path::new("g.jpg"), &DecodeOptions::accept_damaged()).is_ok());
}

#[test]
fn a_truncated_png_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let png = fixture_png();
    // Inside the image data, before IEND, and inside IEND (the png crate alone accepts the
    // last one).
    for cut in [png.len() / 2, png.len() - 12, png.len() - 4] {
        let path = write(dir.path(), &format!("cut{cut}.png"), &png[..cut]);
        let err = Image::open(&path).unwrap_err();
        assert_names(&err, &format!("cut{cut}.png"));
    }
    let lenient = Image::decode_with(
        &png[..png.len() - 4],
        Path::new("a.png"),
        &DecodeOptions::accept_damaged(),
    )
    .unwrap();
    assert_eq!((lenient.width(), lenient.height()), (96, 96));
}

#[test]
fn garbage_and_missing_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "garbage.jpg", b"this is not an image at all");
    assert_names(&Image::open(&garbage).unwrap_err(), "garbage.jpg");
    let header_only = write(dir.path(), "header.jpg", &[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10]);
    assert_names(&Image::open(&header_only).unwrap_err(), "header.jpg");
    let missing = dir.path().join("missing.png");
    let err = Image::open(&missing).unwrap_err();
    assert!(matches!(err, Error::MissingFile { .. }), "{err}");
    assert_names(&err, "missing.png");
}

#[test]
fn every_committed_fixture_decodes_strictly_and_as_before() {
    let mut checked = 0;
    for dir in ["celeba/img_align_celeba", "deepfakes/images/real", "deepfakes/images/fake"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(fixtures().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| deeprecog_dataset::is_image_file(p))
            .collect();
        paths.sort();
        for path in paths.iter().step_by(4) {
            let strict = Image::open(path).unwrap();
            let lenient = Image::open_with(path, &DecodeOptions::accept_damaged()).unwrap();
            assert_eq!(strict, lenient, "{}", path.display());
            checked += 1;
        }
    }
    assert!(checked > 300, "{checked}");
}

/// Two good images, then a truncated JPEG, a truncated PNG, garbage and a missing file.
fn damaged_manifest(dir: &Path) -> PathBuf {
    let jpg = fixture_jpeg();
    let png = fixture_png();
    write(dir, "ok/a.jpg", &jpg);
    write(dir, "ok/b.jpg", &jpg);
    write(dir, "bad/cut.jpg", &jpg[..3000]);
    write(dir, "bad/cut.png", &png[..png.len() / 2]);
    write(dir, "bad/garbage.png", b"\x89PNG\r\n\x1a\n but then nothing sensible");
    write(
        dir,
        "manifest.csv",
        b"path,label,group\nok/a.jpg,0,p1\nbad/cut.jpg,1,p2\nok/b.jpg,0,p3\nbad/cut.png,1,p4\n\
          bad/garbage.png,0,p5\nbad/missing.jpg,1,p6\n",
    )
}

#[test]
fn the_loader_skips_and_lists_every_damaged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = Manifest::open(damaged_manifest(dir.path())).unwrap();
    let loader = Loader::new(manifest).batch_size(4).transform(Resize::new(32, 40));
    let mut epoch = loader.epoch(0).unwrap();
    let batches: Vec<_> = epoch.by_ref().collect::<Result<_>>().unwrap();
    let ids: Vec<String> = batches.iter().flat_map(|b| b.ids.clone()).collect();
    assert_eq!(ids, ["ok/a.jpg", "ok/b.jpg"], "the epoch finishes with the good samples");
    let report = epoch.report();
    assert_eq!(report.delivered, 2);
    let skipped: Vec<(usize, &str)> =
        report.skipped.iter().map(|s| (s.index, s.id.as_deref().unwrap())).collect();
    assert_eq!(
        skipped,
        [(1, "bad/cut.jpg"), (3, "bad/cut.png"), (4, "bad/garbage.png"), (5, "bad/missing.jpg")]
    );
    for s in &report.skipped {
        let id = s.id.as_deref().unwrap();
        assert_eq!(s.path.as_deref(), Some(dir.path().join(id).as_path()));
        let file = Path::new(id).file_name().unwrap().to_str().unwrap();
        assert!(s.error.contains(file), "{id}: {}", s.error);
    }
    assert!(report.skipped[0].error.contains("JPEG"), "{}", report.skipped[0].error);
    assert!(report.skipped[3].error.contains("missing"), "{}", report.skipped[3].error);

    // The list a training run keeps.
    let csv_path = dir.path().join("run/skipped.csv");
    report.write_skipped_csv(&csv_path).unwrap();
    let text = std::fs::read_to_string(&csv_path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines[0], "index,id,path,error");
    assert!(lines[1].starts_with("1,bad/cut.jpg,"), "{}", lines[1]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["skipped"][2]["id"], "bad/garbage.png");
}

#[test]
fn readers_can_opt_in_to_damaged_files() {
    let dir = tempfile::tempdir().unwrap();
    let jpg = fixture_jpeg();
    write(dir.path(), "real/a.jpg", &jpg);
    write(dir.path(), "fake/cut.jpg", &jpg[..3000]);
    let strict = ImageFolder::open(dir.path()).unwrap();
    let epoch = |folder: ImageFolder| {
        let loader = Loader::new(folder).batch_size(8);
        let mut epoch = loader.epoch(0).unwrap();
        let n: usize = epoch.by_ref().map(|b| b.unwrap().len()).sum();
        (n, epoch.report())
    };
    let (n, report) = epoch(strict);
    assert_eq!(n, 1);
    assert_eq!(report.skipped[0].id.as_deref(), Some("fake/cut.jpg"));
    let lenient =
        ImageFolder::open(dir.path()).unwrap().with_decode(DecodeOptions::accept_damaged());
    let (n, report) = epoch(lenient);
    assert_eq!((n, report.skipped.len()), (2, 0));
    let manifest = Manifest::open(damaged_manifest(dir.path())).unwrap();
    let lenient = manifest.with_decode(DecodeOptions::accept_damaged());
    let loader = Loader::new(lenient).batch_size(8).transform(Resize::new(32, 40));
    let mut epoch = loader.epoch(0).unwrap();
    let ids: Vec<String> = epoch.by_ref().flat_map(|b| b.unwrap().ids).collect();
    // The cut JPEG is filled in; the half PNG, the garbage and the missing file stay errors.
    assert_eq!(ids, ["ok/a.jpg", "bad/cut.jpg", "ok/b.jpg"]);
    assert_eq!(epoch.report().skipped.len(), 3);
}
