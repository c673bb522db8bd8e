//! Hyper-parameter search over any training run: grid or seeded random draws, ranked by a
//! [`Monitor`] at each candidate's best epoch.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::history::{History, Monitor};
use crate::{Error, Result};

/// How [`search`] picks candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchStrategy {
    /// Every combination of the values.
    Grid,
    /// `trials` distinct combinations drawn with `seed`.
    Random {
        /// How many combinations to try.
        trials: usize,
        /// The seed of the draw.
        seed: u64,
    },
}

/// One tried combination of hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    /// Hyper-parameter name to value.
    pub params: BTreeMap<String, serde_json::Value>,
    /// The monitored metric at the candidate's best epoch; `None` when it was never defined.
    pub score: Option<f64>,
    /// The candidate's best epoch (from 1).
    pub best_epoch: Option<usize>,
    /// The run's full history.
    pub history: History,
}

/// Trains one candidate per combination with `run` (which builds and fits a model for the
/// given values) and ranks them by `monitor` at their best epoch, best first; candidates
/// without a score come last.
///
/// # Errors
/// The first error of `run`, or [`Error::InvalidConfig`] for an empty space.
pub fn search<F>(
    space: &[(String, Vec<serde_json::Value>)],
    strategy: SearchStrategy,
    monitor: &Monitor,
    mut run: F,
) -> Result<Vec<SearchResult>>
where
    F: FnMut(&BTreeMap<String, serde_json::Value>) -> Result<History>,
{
    if space.is_empty() || space.iter().any(|(_, v)| v.is_empty()) {
        return Err(Error::InvalidConfig("search space has an empty dimension".into()));
    }
    let total: usize = space.iter().map(|(_, v)| v.len()).product();
    let mut picks: Vec<usize> = (0..total).collect();
    if let SearchStrategy::Random { trials, seed } = strategy {
        picks.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        picks.truncate(trials.min(total));
    }
    let mut results = Vec::with_capacity(picks.len());
    for pick in picks {
        let mut rest = pick;
        let mut params = BTreeMap::new();
        for (name, values) in space {
            if let Some(v) = values.get(rest % values.len()) {
                params.insert(name.clone(), v.clone());
            }
            rest /= values.len();
        }
        let history = run(&params)?;
        let best = monitor.best_epoch(&history.epochs);
        let score = best
            .and_then(|b| history.epochs.iter().find(|r| r.epoch == b))
            .and_then(|r| monitor.value(r));
        results.push(SearchResult { params, score, best_epoch: best, history });
    }
    results.sort_by(|a, b| match (a.score, b.score) {
        (Some(x), Some(y)) => {
            if monitor.better(x, y) {
                std::cmp::Ordering::Less
            } else if monitor.better(y, x) {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    Ok(results)
}
