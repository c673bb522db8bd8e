//! One memoised value per layer, recomputed when its key changes: what inference paths keep
//! between calls (folded BatchNorm constants) when the tensors they derive from are constants.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

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

/// How a kept buffer lays out what it derives from its weight: two layouts of one weight can
/// have the same length (a convolution's weight packed for [`crate::planes`] and for
/// [`crate::direct`]), and which one a layer runs can change with the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeptLayout {
    /// Winograd F(2x2, 3x3)'s sixteen transformed matrices, packed for `planes`.
    Winograd,
    /// Blocks of rows for `planes`' register blocks.
    Planes,
    /// Blocks of output channels for `direct`'s register blocks.
    Direct,
    /// A linear layer's `(in, out)` transpose.
    Transpose,
}

/// A buffer derived from a constant weight (its Winograd transform, its transpose), computed on
/// first use and kept: layers over constant tensors (an inference model's) hold one per weight,
/// so the derivation runs once rather than on every call. Clones share the value, as clones of
/// a layer share its tensors.
#[derive(Clone, Default)]
pub(crate) struct KeptBuffer(Arc<OnceLock<(KeptLayout, Vec<f32>)>>);

impl std::fmt::Debug for KeptBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0.get() {
            Some((layout, _)) => format!("{layout:?}"),
            None => "not computed".into(),
        };
        f.debug_tuple("KeptBuffer").field(&state).finish()
    }
}

impl KeptBuffer {
    /// The kept buffer, or `compute()`'s, kept when nothing was. A kept buffer of another
    /// layout or length than asked for (the holder's weight changed shape, or another batch
    /// took another kernel) is not used: `compute()`'s is returned without being kept.
    pub fn get(
        &self,
        layout: KeptLayout,
        len: usize,
        compute: impl FnOnce() -> Result<Vec<f32>>,
    ) -> Result<Cow<'_, [f32]>> {
        if let Some((kept_layout, kept)) = self.0.get() {
            return Ok(if *kept_layout == layout && kept.len() == len {
                Cow::Borrowed(kept.as_slice())
            } else {
                Cow::Owned(compute()?)
            });
        }
        let value = compute()?;
        // A concurrent first call may have stored its buffer first (of this layout, then an
        // identical one): this call uses its own.
        if let Err((_, value)) = self.0.set((layout, value)) {
            return Ok(Cow::Owned(value));
        }
        match self.0.get() {
            Some((_, kept)) => Ok(Cow::Borrowed(kept.as_slice())),
            None => candle_core::bail!("kept buffer: set but empty"),
        }
    }
}
