//! The [`Dataset`] trait and its composable wrappers.

use std::path::PathBuf;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::{Error, Image, Result};

/// A random-access collection of samples.
///
/// `get` does the expensive work (decoding a JPEG, say) and may fail for one sample without
/// the dataset being unusable: loaders skip and count such samples.
pub trait Dataset: Send + Sync {
    /// What one sample is.
    type Item;

    /// Number of samples.
    fn len(&self) -> usize;

    /// The sample at `index` (`0..len()`).
    fn get(&self, index: usize) -> Result<Self::Item>;

    /// Whether the dataset has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Which sample `index` is (its id and, for file-backed datasets, its file), without
    /// reading it. Loaders use it to list the samples they skipped; `None` when the dataset
    /// cannot say (the default) or `index` is out of range.
    fn origin(&self, index: usize) -> Option<SampleOrigin> {
        let _ = index;
        None
    }
}

/// Where a sample comes from: what [`Dataset::origin`] says about it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SampleOrigin {
    /// The sample's id, as [`Sample::id`] would carry it.
    pub id: String,
    /// The file it is read from, for file-backed datasets.
    pub path: Option<PathBuf>,
}

/// Shared and borrowed datasets are datasets.
macro_rules! forward_dataset {
    ($($pointer:ty),*) => {$(
        impl<D: Dataset + ?Sized> Dataset for $pointer {
            type Item = D::Item;
            fn len(&self) -> usize {
                (**self).len()
            }
            fn get(&self, index: usize) -> Result<D::Item> {
                (**self).get(index)
            }
            fn origin(&self, index: usize) -> Option<SampleOrigin> {
                (**self).origin(index)
            }
        }
    )*};
}

forward_dataset!(Arc<D>, &D);

/// What a model is asked to predict for one sample.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Target {
    /// A class index (image folders: the sub-folder's position in the sorted class list;
    /// real/fake: 0 real, 1 fake).
    Class(u32),
    /// Independent 0/1 labels (multi-label attributes; a binary task is one label).
    Labels(Vec<f32>),
}

impl Target {
    /// Number of values this target puts in a batch row (1 for a class).
    pub fn width(&self) -> usize {
        match self {
            Target::Class(_) => 1,
            Target::Labels(v) => v.len(),
        }
    }
}

/// One decoded sample: an id that names it in errors and reports, the image, the target and
/// an optional group (identity, video or source) used for group-disjoint splits and
/// video-level metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// A stable id, usually the file name relative to the dataset root.
    pub id: String,
    /// The decoded image.
    pub image: Image,
    /// The prediction target.
    pub target: Target,
    /// Identity / video / source of the sample, when known.
    pub group: Option<String>,
}

/// A view of some samples of a dataset, in a given order (indices may repeat, which is how
/// oversampling works).
#[derive(Debug, Clone)]
pub struct Subset<D> {
    inner: D,
    indices: Vec<usize>,
}

impl<D: Dataset> Subset<D> {
    /// The samples of `inner` at `indices`; fails if an index is out of range.
    pub fn new(inner: D, indices: Vec<usize>) -> Result<Subset<D>> {
        let len = inner.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= len) {
            return Err(Error::IndexOutOfRange { index: bad, len });
        }
        Ok(Subset { inner, indices })
    }

    /// The indices into the wrapped dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The wrapped dataset.
    pub fn inner(&self) -> &D {
        &self.inner
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    type Item = D::Item;
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn get(&self, index: usize) -> Result<D::Item> {
        let inner_index = *self
            .indices
            .get(index)
            .ok_or(Error::IndexOutOfRange { index, len: self.indices.len() })?;
        self.inner.get(inner_index)
    }
    fn origin(&self, index: usize) -> Option<SampleOrigin> {
        self.inner.origin(*self.indices.get(index)?)
    }
}

/// A dataset whose items go through a function (a transform pipeline, a relabelling).
pub struct Mapped<D, F> {
    inner: D,
    f: F,
}

impl<D, F, T> Dataset for Mapped<D, F>
where
    D: Dataset,
    F: Fn(D::Item) -> Result<T> + Send + Sync,
{
    type Item = T;
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn get(&self, index: usize) -> Result<T> {
        (self.f)(self.inner.get(index)?)
    }
    fn origin(&self, index: usize) -> Option<SampleOrigin> {
        self.inner.origin(index)
    }
}

/// Wrappers available on every dataset.
pub trait DatasetExt: Dataset + Sized {
    /// The samples at `indices`, in that order.
    fn subset(self, indices: Vec<usize>) -> Result<Subset<Self>> {
        Subset::new(self, indices)
    }

    /// All samples in a seeded random order (the same seed gives the same order).
    fn shuffled(self, seed: u64) -> Subset<Self> {
        let mut indices: Vec<usize> = (0..self.len()).collect();
        indices.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        Subset { inner: self, indices }
    }

    /// Applies `f` to every item as it is read.
    fn map<T, F>(self, f: F) -> Mapped<Self, F>
    where
        F: Fn(Self::Item) -> Result<T> + Send + Sync,
    {
        Mapped { inner: self, f }
    }
}

impl<D: Dataset> DatasetExt for D {}

/// A dataset held in memory, handy for tests and small generated sets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InMemory<T>(pub Vec<T>);

impl<T: Clone + Send + Sync> Dataset for InMemory<T> {
    type Item = T;
    fn len(&self) -> usize {
        self.0.len()
    }
    fn get(&self, index: usize) -> Result<T> {
        self.0.get(index).cloned().ok_or(Error::IndexOutOfRange { index, len: self.0.len() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_compose() {
        let base = InMemory((0..10u32).collect::<Vec<_>>());
        let sub = base.clone().subset(vec![9, 1, 1]).unwrap();
        assert_eq!(sub.len(), 3);
        assert_eq!(sub.get(0).unwrap(), 9);
        assert!(matches!(sub.get(3), Err(Error::IndexOutOfRange { index: 3, len: 3 })));
        assert!(base.clone().subset(vec![10]).is_err());
        let doubled = sub.map(|x| Ok(x * 2));
        assert_eq!(doubled.get(0).unwrap(), 18);

        let a = base.clone().shuffled(7);
        let b = base.clone().shuffled(7);
        let c = base.shuffled(8);
        assert_eq!(a.indices(), b.indices());
        assert_ne!(a.indices(), c.indices());
        let mut sorted = a.indices().to_vec();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
    }
}
