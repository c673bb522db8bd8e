//! Image-folder datasets: one sub-folder per class (`real/`, `fake/`), images of any accepted
//! extension (`.jpg`, `.JPG`, `.jpeg`, `.png`) found recursively below each class folder.

use std::path::{Path, PathBuf};

use crate::{
    is_image_file, Dataset, DecodeOptions, Error, Image, Result, Sample, SampleOrigin, Target,
};

/// A folder whose sub-folders are classes.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    items: Vec<(PathBuf, u32)>,
    decode: DecodeOptions,
}

impl ImageFolder {
    /// Classes are the sub-folders of `root` in sorted order (torchvision's convention).
    pub fn open(root: impl AsRef<Path>) -> Result<ImageFolder> {
        let root = root.as_ref();
        let mut classes = Vec::new();
        for entry in read_dir_sorted(root)? {
            if entry.is_dir() {
                if let Some(name) = entry.file_name().and_then(|n| n.to_str()) {
                    classes.push(name.to_string());
                }
            }
        }
        let names: Vec<&str> = classes.iter().map(String::as_str).collect();
        ImageFolder::with_classes(root, &names)
    }

    /// Classes in the given order, so labels mean what the caller wants (for deepfakes,
    /// `&["real", "fake"]` gives real 0 and fake 1). Each must be a sub-folder of `root`.
    pub fn with_classes(root: impl AsRef<Path>, classes: &[&str]) -> Result<ImageFolder> {
        let root = root.as_ref().to_path_buf();
        if classes.is_empty() {
            return Err(Error::Config(format!("{}: no class sub-folders", root.display())));
        }
        let mut items = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            if !dir.is_dir() {
                return Err(Error::MissingFile { path: dir });
            }
            let mut files = Vec::new();
            collect_images(&dir, &mut files)?;
            items.extend(files.into_iter().map(|f| (f, label as u32)));
        }
        Ok(ImageFolder {
            root,
            classes: classes.iter().map(|c| c.to_string()).collect(),
            items,
            decode: DecodeOptions::default(),
        })
    }

    /// Decodes with `options` instead of the strict default (to accept damaged files, say).
    pub fn with_decode(mut self, options: DecodeOptions) -> ImageFolder {
        self.decode = options;
        self
    }

    /// Class names; a sample's class index points into this list.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The class index of every sample.
    pub fn labels(&self) -> Vec<u32> {
        self.items.iter().map(|(_, l)| *l).collect()
    }

    /// Full path of sample `index`.
    pub fn path(&self, index: usize) -> Option<&Path> {
        self.items.get(index).map(|(p, _)| p.as_path())
    }

    fn id(&self, path: &Path) -> String {
        path.strip_prefix(&self.root).unwrap_or(path).to_string_lossy().replace('\\', "/")
    }
}

impl Dataset for ImageFolder {
    type Item = Sample;

    fn len(&self) -> usize {
        self.items.len()
    }

    fn get(&self, index: usize) -> Result<Sample> {
        let (path, label) =
            self.items.get(index).ok_or(Error::IndexOutOfRange { index, len: self.items.len() })?;
        Ok(Sample {
            id: self.id(path),
            image: Image::open_with(path, &self.decode)?,
            target: Target::Class(*label),
            group: None,
        })
    }

    fn origin(&self, index: usize) -> Option<SampleOrigin> {
        let (path, _) = self.items.get(index)?;
        Some(SampleOrigin { id: self.id(path), path: Some(path.clone()) })
    }
}

pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingFile { path: dir.to_path_buf() },
        _ => Error::io(dir, e),
    })?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|e| Error::io(dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for path in read_dir_sorted(dir)? {
        if path.is_dir() {
            collect_images(&path, out)?;
        } else if is_image_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}
