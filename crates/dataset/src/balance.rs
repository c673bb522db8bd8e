//! Class balancing: undersampling, oversampling, class weights, and drawing N balanced samples
//! from a larger imbalanced set (as the DFDC-image report drew 16,000 of 95,634 crops).

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::{Error, Result};

/// How to even out classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Balance {
    /// Keep as many samples of each class as the rarest class has.
    Undersample,
    /// Repeat samples of the rarer classes until each matches the most common one.
    Oversample,
    /// Keep every sample; weight the loss instead (see [`class_weights`]).
    ClassWeights,
}

fn by_class(indices: &[usize], labels: &[u32]) -> Result<BTreeMap<u32, Vec<usize>>> {
    let mut classes: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for &i in indices {
        let label = *labels.get(i).ok_or(Error::IndexOutOfRange { index: i, len: labels.len() })?;
        classes.entry(label).or_default().push(i);
    }
    Ok(classes)
}

/// Re-samples `indices` (into `labels`) according to `balance`, seeded; the result is shuffled.
/// [`Balance::ClassWeights`] returns the indices unchanged.
pub fn rebalance(
    indices: &[usize],
    labels: &[u32],
    balance: Balance,
    seed: u64,
) -> Result<Vec<usize>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let classes = by_class(indices, labels)?;
    let mut out = Vec::new();
    match balance {
        Balance::ClassWeights => return Ok(indices.to_vec()),
        Balance::Undersample => {
            let smallest = classes.values().map(Vec::len).min().unwrap_or(0);
            for mut members in classes.into_values() {
                members.shuffle(&mut rng);
                out.extend(members.into_iter().take(smallest));
            }
        }
        Balance::Oversample => {
            let largest = classes.values().map(Vec::len).max().unwrap_or(0);
            for mut members in classes.into_values() {
                members.shuffle(&mut rng);
                out.extend(members.iter().copied().cycle().take(largest));
            }
        }
    }
    out.shuffle(&mut rng);
    Ok(out)
}

/// Draws `total` samples with classes as equal as possible (without replacement; errors if a
/// class has too few samples), shuffled with `seed`.
pub fn balanced_sample(
    indices: &[usize],
    labels: &[u32],
    total: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let classes = by_class(indices, labels)?;
    let k = classes.len();
    if k == 0 {
        return Err(Error::Config("balanced_sample: no samples to draw from".into()));
    }
    let mut out = Vec::with_capacity(total);
    for (rank, (label, mut members)) in classes.into_iter().enumerate() {
        let want = total / k + usize::from(rank < total % k);
        if members.len() < want {
            return Err(Error::Config(format!(
                "balanced_sample: class {label} has {} samples, {want} needed for {total} balanced",
                members.len()
            )));
        }
        members.shuffle(&mut rng);
        out.extend(members.into_iter().take(want));
    }
    out.shuffle(&mut rng);
    Ok(out)
}

/// Weights `n / (k * count_c)` per class (scikit-learn's `class_weight="balanced"`), indexed by
/// label `0..=max label`; absent classes get weight 0.
pub fn class_weights(labels: &[u32]) -> Vec<f32> {
    let Some(&max) = labels.iter().max() else { return Vec::new() };
    let mut counts = vec![0usize; max as usize + 1];
    for &l in labels {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    let present = counts.iter().filter(|&&c| c > 0).count() as f64;
    let n = labels.len() as f64;
    counts.iter().map(|&c| if c == 0 { 0.0 } else { (n / (present * c as f64)) as f32 }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn imbalanced() -> Vec<u32> {
        // 80% fake (1), 20% real (0), like DFDC.
        (0..100).map(|i| u32::from(i % 5 != 0)).collect()
    }

    fn count(idx: &[usize], labels: &[u32], c: u32) -> usize {
        idx.iter().filter(|&&i| labels[i] == c).count()
    }

    #[test]
    fn under_and_over_sampling() {
        let labels = imbalanced();
        let all: Vec<usize> = (0..100).collect();
        let under = rebalance(&all, &labels, Balance::Undersample, 1).unwrap();
        assert_eq!((count(&under, &labels, 0), count(&under, &labels, 1)), (20, 20));
        let mut dedup = under.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 40);
        let over = rebalance(&all, &labels, Balance::Oversample, 1).unwrap();
        assert_eq!((count(&over, &labels, 0), count(&over, &labels, 1)), (80, 80));
        assert_eq!(rebalance(&all, &labels, Balance::ClassWeights, 1).unwrap(), all);
        assert_eq!(under, rebalance(&all, &labels, Balance::Undersample, 1).unwrap());
        assert!(rebalance(&[100], &labels, Balance::Undersample, 1).is_err());
    }

    #[test]
    fn n_balanced_from_imbalanced() {
        let labels = imbalanced();
        let all: Vec<usize> = (0..100).collect();
        let s = balanced_sample(&all, &labels, 31, 5).unwrap();
        assert_eq!(s.len(), 31);
        assert_eq!((count(&s, &labels, 0), count(&s, &labels, 1)), (16, 15));
        assert!(balanced_sample(&all, &labels, 50, 5).is_err());
    }

    #[test]
    fn weights_match_sklearn_balanced() {
        // sklearn.utils.class_weight.compute_class_weight("balanced", classes=[0,1], y=y)
        // for 20 zeros and 80 ones gives [2.5, 0.625].
        let w = class_weights(&imbalanced());
        assert_eq!(w, vec![2.5, 0.625]);
        assert!(class_weights(&[]).is_empty());
    }
}
