//! The committed fixtures are exactly what the generator makes from `deeprecog::fixtures`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.file_name().is_some_and(|n| n != "README.md") {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn committed_fixtures_regenerate_byte_for_byte() {
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("data-fixtures");
    let fresh = tempfile::tempdir().unwrap();
    deeprecog::fixtures::generate(fresh.path()).unwrap();
    let (a, b) = (files(&committed), files(fresh.path()));
    let names_a: Vec<_> = a.keys().collect();
    let names_b: Vec<_> = b.keys().collect();
    assert_eq!(names_a, names_b, "the fixture file lists differ");
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{} differs from a fresh generation", name.display());
    }
}
