#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Weight import against golden files written by `golden/make_torch_like.py` (PyTorch's layouts
//! emulated with pickle/zipfile/numpy), corrupt inputs, and the real MobileNetV2 asset.

mod common;

use std::path::Path;

use candle_core::Device;
use deeprecog_nn::import::{
    convert, load_safetensors, read_pytorch, read_pytorch_bytes, CheckpointFormat, ImportError,
};
use deeprecog_nn::Error;
use serde_json::Value;

use common::{dtype_name, golden, values};

#[test]
fn golden_files_match_the_python_emulation() {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(golden("expected.json")).unwrap()).unwrap();
    let files = expected.as_object().unwrap();
    assert_eq!(files.len(), 4);
    for (file, exp) in files {
        let ckpt = read_pytorch(golden(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let format = match ckpt.format {
            CheckpointFormat::Zip => "Zip",
            CheckpointFormat::Legacy => "Legacy",
            CheckpointFormat::TorchScript => "TorchScript",
            CheckpointFormat::Onnx => "Onnx",
        };
        assert_eq!(format, exp["format"], "{file}");
        assert_eq!(ckpt.picked.as_deref(), exp["picked"].as_str(), "{file}");
        let want = exp["tensors"].as_array().unwrap();
        let names: Vec<&str> = ckpt.tensors.iter().map(|t| t.name.as_str()).collect();
        let want_names: Vec<&str> = want.iter().map(|w| w["name"].as_str().unwrap()).collect();
        assert_eq!(names, want_names, "{file}");
        for (t, w) in ckpt.tensors.iter().zip(want) {
            let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{file} {}", t.name);
            assert_eq!(dtype_name(t.dtype), w["dtype"], "{file} {}", t.name);
            let want_v: Vec<f64> = serde_json::from_value(w["values"].clone()).unwrap();
            // Every value went through the same dtype on both sides; the slack is only for
            // serde_json's decimal parsing.
            let got = values(t);
            assert_eq!(got.len(), want_v.len(), "{file} {}", t.name);
            for (a, b) in got.iter().zip(&want_v) {
                assert!((a - b).abs() <= 1e-12 * b.abs(), "{file} {}: {a} vs {b}", t.name);
            }
        }
    }
}

#[test]
fn convert_writes_loadable_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("w.safetensors");
    let s = convert(golden("zip_checkpoint.pth"), &out).unwrap();
    assert_eq!((s.tensors, s.elements), (11, 38));
    let bytes = std::fs::read(&out).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 11);
    assert_eq!(st.tensor("mask").unwrap().dtype(), safetensors::Dtype::BOOL);
    assert_eq!(st.tensor("ints").unwrap().dtype(), safetensors::Dtype::I32);
    // candle reads the float tensors back with the values written.
    let dir2 = tempfile::tempdir().unwrap();
    let out2 = dir2.path().join("ts.safetensors");
    convert(golden("torchscript.pt"), &out2).unwrap();
    let ts = load_safetensors(&out2, &Device::Cpu).unwrap();
    let w = ts["block.weight"].to_vec2::<f32>().unwrap();
    assert_eq!(w, [[1.0, 2.0], [3.0, 4.0]]);
}

fn assert_fails_cleanly(data: &[u8], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.pth");
    let out = dir.path().join("bad.safetensors");
    std::fs::write(&input, data).unwrap();
    let err = convert(&input, &out).expect_err(what);
    let msg = err.to_string();
    assert!(msg.contains("bad.pth"), "{what}: error does not name the file: {msg}");
    assert!(matches!(err, Error::Import { .. }), "{what}: {msg}");
    let left: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 1, "{what}: files left behind: {left:?}");
}

#[test]
fn corrupt_and_truncated_inputs_are_errors_without_output() {
    for file in ["legacy.pth", "zip_checkpoint.pth", "torchscript.pt", "nested_legacy.pth"] {
        let data = std::fs::read(golden(file)).unwrap();
        // Every truncation point of the small files.
        for cut in 0..data.len() {
            let r = read_pytorch_bytes(&data[..cut]);
            assert!(r.is_err(), "{file} cut at {cut} was accepted");
        }
        assert_fails_cleanly(&data[..data.len() - 1], &format!("{file} minus one byte"));
        // Single-byte corruptions must never panic (they may still parse, e.g. inside data).
        for i in 0..data.len() {
            let mut d = data.clone();
            d[i] ^= 0xa5;
            let _ = read_pytorch_bytes(&d);
        }
    }
    assert_fails_cleanly(b"", "empty file");
    assert_fails_cleanly(b"hello, not a checkpoint", "text file");
    assert_fails_cleanly(b"\x80\x02K\x01.", "a pickle that is not a checkpoint");
}

#[test]
fn truncated_errors_say_what_was_unexpected() {
    let data = std::fs::read(golden("legacy.pth")).unwrap();
    let err = read_pytorch_bytes(&data[..data.len() - 3]).unwrap_err();
    assert!(matches!(err, ImportError::Truncated(_)), "{err}");
    assert!(err.to_string().contains("storage"), "{err}");
    let err = read_pytorch_bytes(&data[..40]).unwrap_err();
    assert!(matches!(err, ImportError::Pickle { .. }), "{err}");
}

#[test]
fn mobilenet_v2_asset_matches_the_numpy_reader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let Some(asset) = deeprecog_nn::assets::for_test(root, "mobilenet_v2-b0353104.pth") else {
        return;
    };
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(golden("mobilenet_v2_reference.json")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mobilenet_v2.safetensors");
    let s = convert(&asset, &out).unwrap();
    assert_eq!(s.format, CheckpointFormat::Legacy);
    assert_eq!(s.tensors as u64, reference["count"].as_u64().unwrap());
    assert_eq!(s.tensors, 314);
    let ts = load_safetensors(&out, &Device::Cpu).unwrap();
    assert_eq!(ts["features.0.0.weight"].dims(), [32, 3, 3, 3]);
    assert_eq!(ts["classifier.1.weight"].dims(), [1000, 1280]);
    for (name, r) in reference["tensors"].as_object().unwrap() {
        let t = &ts[name];
        let shape: Vec<usize> = serde_json::from_value(r["shape"].clone()).unwrap();
        assert_eq!(t.dims(), shape, "{name}");
        let flat = t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap();
        let v = flat.to_vec1::<f64>().unwrap();
        let first: Vec<f64> = serde_json::from_value(r["first"].clone()).unwrap();
        // serde_json's float parsing may be off by one ulp of f64; f32 values are far coarser.
        for (a, b) in v.iter().zip(&first) {
            assert!((a - b).abs() <= 1e-12 * b.abs(), "{name}: {a} vs {b}");
        }
        let sum: f64 = v.iter().sum();
        let want = r["sum"].as_f64().unwrap();
        assert!((sum - want).abs() < 1e-6 * (1.0 + want.abs()), "{name}: {sum} vs {want}");
    }
}
