#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Weight import against files written by real PyTorch (`golden/make_torch_files.py`:
//! `torch.save` in the zip and legacy formats, a training checkpoint, a pickled `nn.Module`, and
//! a `torch.jit.save` archive). Every tensor must come out with torch's name, dtype, shape and
//! exactly torch's bytes.

mod common;

use candle_core::{DType, Device};
use deeprecog_nn::import::{
    convert, load_pytorch, read_pytorch, read_pytorch_bytes, CheckpointFormat, TorchDType,
};
use serde_json::Value;

use common::{dtype_name, golden, values};

const FILES: [&str; 5] = [
    "torch_zip.pth",
    "torch_legacy.pth",
    "torch_checkpoint.pth",
    "torch_module.pth",
    "torch_script.pt",
];

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden("torch_expected.json")).unwrap()).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn format_name(f: CheckpointFormat) -> &'static str {
    match f {
        CheckpointFormat::Zip => "Zip",
        CheckpointFormat::Legacy => "Legacy",
        CheckpointFormat::TorchScript => "TorchScript",
        CheckpointFormat::Onnx => "Onnx",
    }
}

#[test]
fn real_torch_files_match_torch_exactly() {
    let exp = expected();
    assert!(exp["_comment"].as_str().unwrap().contains("torch 2."));
    let files = exp["files"].as_object().unwrap();
    assert_eq!(files.keys().collect::<Vec<_>>(), FILES.iter().collect::<Vec<_>>());
    for (file, e) in files {
        let ckpt = read_pytorch(golden(file)).unwrap_or_else(|err| panic!("{file}: {err}"));
        assert_eq!(format_name(ckpt.format), e["format"], "{file}");
        assert_eq!(ckpt.picked.as_deref(), e["picked"].as_str(), "{file}");
        let want = e["tensors"].as_array().unwrap();
        let names: Vec<&str> = ckpt.tensors.iter().map(|t| t.name.as_str()).collect();
        let want_names: Vec<&str> = want.iter().map(|w| w["name"].as_str().unwrap()).collect();
        assert_eq!(names, want_names, "{file}");
        for (t, w) in ckpt.tensors.iter().zip(want) {
            let what = format!("{file} {}", t.name);
            let shape: Vec<usize> = serde_json::from_value(w["shape"].clone()).unwrap();
            assert_eq!(t.shape, shape, "{what}");
            assert_eq!(dtype_name(t.dtype), w["dtype"], "{what}");
            assert_eq!(t.data, unhex(w["hex"].as_str().unwrap()), "{what}: bytes differ");
            assert_eq!(t.data.len(), shape.iter().product::<usize>() * t.dtype.size(), "{what}");
            let want_v: Vec<f64> = serde_json::from_value(w["values"].clone()).unwrap();
            let got = values(t);
            assert_eq!(got.len(), want_v.len(), "{what}");
            for (a, b) in got.iter().zip(&want_v) {
                // serde_json's decimal parsing may be one f64 ulp off; the bytes above are exact.
                assert!((a - b).abs() <= 1e-15 * b.abs(), "{what}: {a} vs {b}");
            }
        }
    }
}

/// The state dict holds the awkward cases on purpose; make sure they are really there.
#[test]
fn real_torch_state_dict_has_the_awkward_cases() {
    let ckpt = read_pytorch(golden("torch_zip.pth")).unwrap();
    let get = |n: &str| ckpt.tensors.iter().find(|t| t.name == n).unwrap();
    assert_eq!(get("bn.num_batches_tracked").shape, Vec::<usize>::new());
    assert_eq!(values(get("bn.num_batches_tracked")), [123456789012.0]);
    assert_eq!(values(get("scalar")), [-0.75]);
    assert_eq!(get("empty").shape, [0, 4]);
    assert!(get("empty").data.is_empty());
    // Transposed view of [[1.5, -2.25, 3], [0.125, 7, -0.5]].
    assert_eq!(values(get("fc.weight_t")), [1.5, 0.125, -2.25, 7.0, 3.0, -0.5]);
    // Slices of arange(10) * 0.5 - 2 sharing one storage.
    assert_eq!(values(get("shared.a")), [-1.5, -1.0, -0.5]);
    assert_eq!(values(get("shared.b")), [-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    assert_eq!(values(get("expanded")), [9.0, -8.0, 9.0, -8.0, 9.0, -8.0]);
    assert_eq!(values(get("nested.inner.w")), [1.0, 2.0]);
    assert_eq!(values(get("nested.inner.steps")), [3.0, 4.0, 5.0]);
    assert_eq!(values(get("mask")), [1.0, 0.0, 1.0, 1.0]);
    // Legacy and zip hold the same tensors.
    let legacy = read_pytorch(golden("torch_legacy.pth")).unwrap();
    assert_eq!(legacy.tensors, ckpt.tensors);
    // The eager module, its state dict inside a checkpoint and the TorchScript archive agree.
    let module = read_pytorch(golden("torch_module.pth")).unwrap();
    let script = read_pytorch(golden("torch_script.pt")).unwrap();
    assert_eq!(module.tensors, script.tensors);
    let names: Vec<&str> = script.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv.weight",
            "conv.bias",
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked",
            "fc.weight",
            "fc.bias"
        ]
    );
    let trained = read_pytorch(golden("torch_checkpoint.pth")).unwrap();
    let names2: Vec<&str> = trained.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, names2);
    // The checkpoint's model took one Adam step in train mode; the other two did not.
    assert_ne!(trained.tensors[0].data, script.tensors[0].data);
    assert_eq!(trained.tensors[6].dtype, TorchDType::I64);
    assert_eq!(values(&trained.tensors[6]), [8.0]);
    assert_eq!(values(&script.tensors[6]), [7.0]);
}

#[test]
fn real_torch_files_convert_and_load_in_candle() {
    let dir = tempfile::tempdir().unwrap();
    for file in FILES {
        let out = dir.path().join(format!("{file}.safetensors"));
        let ckpt = read_pytorch(golden(file)).unwrap();
        let s = convert(golden(file), &out).unwrap();
        assert_eq!(s.tensors, ckpt.tensors.len(), "{file}");
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for t in &ckpt.tensors {
            let v = st.tensor(&t.name).unwrap();
            assert_eq!(v.shape(), t.shape.as_slice(), "{file} {}", t.name);
            assert_eq!(v.data(), t.data.as_slice(), "{file} {}", t.name);
        }
    }
    // The model files hold only dtypes candle has: straight into candle tensors.
    let ts = load_pytorch(golden("torch_script.pt"), &Device::Cpu).unwrap();
    let w = &ts["conv.weight"];
    assert_eq!(w.dims(), [3, 2, 3, 3]);
    assert_eq!(w.dtype(), DType::F32);
    assert_eq!(
        ts["bn.num_batches_tracked"].to_dtype(DType::I64).unwrap().to_scalar::<i64>().unwrap(),
        7
    );
}

#[test]
fn truncated_or_corrupted_real_files_fail_without_panicking() {
    for file in FILES {
        let data = std::fs::read(golden(file)).unwrap();
        for cut in (0..data.len()).step_by(7).chain([data.len() - 1]) {
            assert!(read_pytorch_bytes(&data[..cut]).is_err(), "{file} cut at {cut} was accepted");
        }
        for i in (0..data.len()).step_by(3) {
            let mut d = data.clone();
            d[i] ^= 0xa5;
            let _ = read_pytorch_bytes(&d);
        }
    }
}
