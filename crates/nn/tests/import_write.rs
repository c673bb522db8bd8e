//! `convert` writes through the workspace's one atomic write: a failed write names the output,
//! leaves an existing output untouched and leaves no temporary file behind.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::golden;
use deeprecog_nn::import::convert;
use deeprecog_nn::Error;

#[test]
fn a_failed_write_names_the_output_and_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the output's folder should be: the write cannot even start.
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"x").unwrap();
    let err = convert(golden("zip_checkpoint.pth"), blocker.join("w.safetensors")).unwrap_err();
    assert!(matches!(err, Error::Import { .. }), "{err}");
    assert!(err.to_string().contains("w.safetensors"), "{err}");

    // A folder where the output file should be: the final rename fails after the temporary
    // file was written; the folder stays and the temporary file is removed.
    let taken = dir.path().join("taken.safetensors");
    std::fs::create_dir(&taken).unwrap();
    std::fs::write(taken.join("keep"), b"k").unwrap();
    let err = convert(golden("zip_checkpoint.pth"), &taken).unwrap_err();
    assert!(err.to_string().contains("taken.safetensors"), "{err}");
    assert!(taken.join("keep").exists());
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}
