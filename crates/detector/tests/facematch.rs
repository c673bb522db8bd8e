//! The face-match baseline on real photos: BlazeFace keypoints, chips aligned to dlib's mean
//! face, dlib's ResNet embedding. face_recognition's own test photos are the reference: its
//! README shows the Obama photos matching each other and not Biden at dlib's 0.6 threshold.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use deeprecog_dataset::Image;
use deeprecog_detector::blazeface::{BlazeFace, BlazeFaceConfig};
use deeprecog_detector::dlib::{distance, DlibFaceNet, MATCH_THRESHOLD};
use deeprecog_detector::facematch::FaceMatcher;

fn asset(name: &str) -> Option<PathBuf> {
    deeprecog_nn::assets::for_test(Path::new(env!("CARGO_MANIFEST_DIR")), name)
}

#[test]
fn obama_matches_obama_and_not_biden() {
    let (Some(net), Some(front)) = (
        asset("dlib/dlib_face_recognition_resnet_model_v1.dat"),
        asset("blazeface/face_detection_front_128x128.onnx"),
    ) else {
        return;
    };
    let photos: Vec<Image> = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
        .iter()
        .map(|p| Image::open(&asset(&format!("faces/{p}")).expect("photo")).unwrap().to_rgb())
        .collect();
    let net = DlibFaceNet::load(&net, &Device::Cpu).unwrap();
    let detector = BlazeFace::load(front, BlazeFaceConfig::front(), &Device::Cpu).unwrap();
    let matcher = FaceMatcher::new(&net, &detector);
    let e: Vec<[f32; 128]> =
        matcher.embed(&photos).unwrap().into_iter().map(Option::unwrap).collect();
    let same = [distance(&e[0], &e[1]), distance(&e[0], &e[2]), distance(&e[1], &e[2])];
    let other = [distance(&e[0], &e[3]), distance(&e[1], &e[3]), distance(&e[2], &e[3])];
    println!("obama-obama {same:?}, obama-biden {other:?}");
    assert!(same.iter().all(|&d| d < MATCH_THRESHOLD), "{same:?}");
    assert!(other.iter().all(|&d| d > MATCH_THRESHOLD), "{other:?}");
}
