//! Where batches come from: the dataset [`Loader`] or batches held in memory.

use std::path::PathBuf;

use deeprecog_dataset::loader::{self, Batch, Epoch, Loader};
use deeprecog_dataset::{Dataset, Sample};
use serde::{Deserialize, Serialize};

use crate::Result;

/// A sample left out of an epoch, with the reason (the error names the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedSample {
    /// The epoch, from 1.
    pub epoch: usize,
    /// `train` or `valid`.
    pub split: String,
    /// Index into the dataset.
    pub index: usize,
    /// The sample's id, when the dataset knows it.
    pub id: Option<String>,
    /// The sample's file, when it has one.
    pub path: Option<PathBuf>,
    /// What went wrong, naming the file.
    pub error: String,
}

/// The batches of one epoch.
pub trait EpochBatches<B>: Iterator<Item = Result<B>> {
    /// The samples skipped so far (unreadable files...).
    fn skipped(&self) -> Vec<loader::SkippedSample>;
}

/// A source of batches, epoch after epoch, in an order fixed by the epoch number (so that a
/// resumed run sees the batches an uninterrupted one would).
pub trait BatchSource<B> {
    /// Batches per epoch.
    fn num_batches(&self) -> usize;

    /// The batches of epoch `epoch` (from 0).
    fn epoch(&self, epoch: usize) -> Result<Box<dyn EpochBatches<B> + '_>>;

    /// The sample ids of a batch, for error messages.
    fn ids(&self, _batch: &B) -> Vec<String> {
        Vec::new()
    }
}

struct LoaderEpoch(Epoch);

impl Iterator for LoaderEpoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        self.0.next().map(|b| b.map_err(Into::into))
    }
}

impl EpochBatches<Batch> for LoaderEpoch {
    fn skipped(&self) -> Vec<loader::SkippedSample> {
        self.0.report().skipped
    }
}

impl<D: Dataset<Item = Sample> + 'static> BatchSource<Batch> for Loader<D> {
    fn num_batches(&self) -> usize {
        Loader::num_batches(self)
    }

    fn epoch(&self, epoch: usize) -> Result<Box<dyn EpochBatches<Batch> + '_>> {
        Ok(Box::new(LoaderEpoch(Loader::epoch(self, epoch as u64)?)))
    }

    fn ids(&self, batch: &Batch) -> Vec<String> {
        batch.ids.clone()
    }
}

/// Batches held in memory, the same every epoch: for tests, toy problems and data that fits.
#[derive(Debug, Clone)]
pub struct InMemoryBatches<B>(pub Vec<B>);

struct InMemoryEpoch<'a, B>(std::slice::Iter<'a, B>);

impl<B: Clone> Iterator for InMemoryEpoch<'_, B> {
    type Item = Result<B>;

    fn next(&mut self) -> Option<Result<B>> {
        self.0.next().cloned().map(Ok)
    }
}

impl<B: Clone> EpochBatches<B> for InMemoryEpoch<'_, B> {
    fn skipped(&self) -> Vec<loader::SkippedSample> {
        Vec::new()
    }
}

impl<B: Clone + 'static> BatchSource<B> for InMemoryBatches<B> {
    fn num_batches(&self) -> usize {
        self.0.len()
    }

    fn epoch(&self, _epoch: usize) -> Result<Box<dyn EpochBatches<B> + '_>> {
        Ok(Box::new(InMemoryEpoch(self.0.iter())))
    }
}
