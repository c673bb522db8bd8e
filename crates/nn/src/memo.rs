//! One memoised value per layer, recomputed when its key changes: what inference paths keep
//! between calls (folded BatchNorm constants) when the tensors they derive from are constants.

use std::sync::{Arc, Mutex, PoisonError};

use candle_core::Result;

/// The last `(key, value)` computed; clones share it, as clones of a layer share its tensors.
#[derive(Debug)]
pub(crate) struct Memo<K, V>(Arc<Mutex<Option<(K, V)>>>);

impl<K, V> Clone for Memo<K, V> {
    fn clone(&self) -> Self {
        Memo(Arc::clone(&self.0))
    }
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo(Arc::new(Mutex::new(None)))
    }
}

impl<K: PartialEq + Copy, V: Clone> Memo<K, V> {
    /// The value stored under `key`, or `compute()`'s, then stored. The lock is held while
    /// computing, so concurrent first calls compute once.
    pub fn get_or_try(&self, key: K, compute: impl FnOnce() -> Result<V>) -> Result<V> {
        // A panic elsewhere while holding the lock leaves at worst a stale entry whose key
        // still describes it, so a poisoned lock is safe to reuse.
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, v)) = slot.as_ref() {
            if *k == key {
                return Ok(v.clone());
            }
        }
        let value = compute()?;
        *slot = Some((key, value.clone()));
        Ok(value)
    }
}
