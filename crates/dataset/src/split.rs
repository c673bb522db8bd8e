//! Train / validation / test splits: CelebA's official partition, seeded ratios, and
//! group-disjoint splits where no identity (or video, or source) appears on two sides.

use std::collections::HashMap;
use std::hash::Hash;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::{Error, Result};

/// One side of a split. The numeric values are those of `list_eval_partition.txt`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Partition {
    /// Training samples (0).
    Train,
    /// Validation samples (1).
    Valid,
    /// Test samples (2).
    Test,
}

impl Partition {
    /// All three, in order.
    pub const ALL: [Partition; 3] = [Partition::Train, Partition::Valid, Partition::Test];

    /// From the digit used in `list_eval_partition.txt`.
    pub fn from_code(code: u8) -> Option<Partition> {
        match code {
            0 => Some(Partition::Train),
            1 => Some(Partition::Valid),
            2 => Some(Partition::Test),
            _ => None,
        }
    }

    /// The digit used in `list_eval_partition.txt`.
    pub fn code(self) -> u8 {
        match self {
            Partition::Train => 0,
            Partition::Valid => 1,
            Partition::Test => 2,
        }
    }
}

/// Sample indices on each side of a split.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Splits {
    /// Training indices.
    pub train: Vec<usize>,
    /// Validation indices.
    pub valid: Vec<usize>,
    /// Test indices.
    pub test: Vec<usize>,
}

impl Splits {
    /// The indices of one side.
    pub fn get(&self, partition: Partition) -> &[usize] {
        match partition {
            Partition::Train => &self.train,
            Partition::Valid => &self.valid,
            Partition::Test => &self.test,
        }
    }

    fn get_mut(&mut self, partition: Partition) -> &mut Vec<usize> {
        match partition {
            Partition::Train => &mut self.train,
            Partition::Valid => &mut self.valid,
            Partition::Test => &mut self.test,
        }
    }

    /// Train and validation together (for the final fit after model selection).
    pub fn train_and_valid(&self) -> Vec<usize> {
        self.train.iter().chain(&self.valid).copied().collect()
    }
}

/// Fractions for the three sides; they must be non-negative and sum to 1.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ratios {
    /// Training fraction.
    pub train: f64,
    /// Validation fraction.
    pub valid: f64,
    /// Test fraction.
    pub test: f64,
}

impl Default for Ratios {
    /// 60/20/20, as the attractiveness report split CelebA.
    fn default() -> Self {
        Ratios { train: 0.6, valid: 0.2, test: 0.2 }
    }
}

impl Ratios {
    fn check(&self) -> Result<()> {
        let parts = [self.train, self.valid, self.test];
        if parts.iter().any(|p| !p.is_finite() || *p < 0.0)
            || (parts.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            return Err(Error::Config(format!(
                "split ratios must be non-negative and sum to 1, got {}/{}/{}",
                self.train, self.valid, self.test
            )));
        }
        Ok(())
    }

    /// Sizes of the three sides for `n` items: floors, with the remainder going to the sides
    /// with the largest fractional parts (so 10 items at 60/20/20 give exactly 6/2/2).
    pub fn sizes(&self, n: usize) -> Result<[usize; 3]> {
        self.check()?;
        let exact = [self.train * n as f64, self.valid * n as f64, self.test * n as f64];
        let mut sizes = exact.map(|x| x.floor() as usize);
        let mut left = n - sizes.iter().sum::<usize>();
        let mut order = [0usize, 1, 2];
        order.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        for &side in order.iter().cycle() {
            if left == 0 {
                break;
            }
            if let Some(s) = sizes.get_mut(side) {
                *s += 1;
            }
            left -= 1;
        }
        Ok(sizes)
    }
}

impl std::str::FromStr for Ratios {
    type Err = Error;

    /// Parses `60/20/20` (percentages) or `0.6/0.2/0.2`.
    fn from_str(s: &str) -> Result<Ratios> {
        let parts: Vec<f64> = s
            .split('/')
            .map(|p| p.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Config(format!("split {s:?}: {e}")))?;
        let [train, valid, test] = parts[..] else {
            return Err(Error::Config(format!("split {s:?}: expected train/valid/test")));
        };
        let total = train + valid + test;
        let scale = if (total - 100.0).abs() < 1e-6 { 100.0 } else { 1.0 };
        let ratios = Ratios { train: train / scale, valid: valid / scale, test: test / scale };
        ratios.check()?;
        Ok(ratios)
    }
}

/// Groups samples by a provided partition (CelebA's `list_eval_partition.txt`). Samples with
/// no partition are left out.
pub fn official(partitions: &[Option<Partition>]) -> Splits {
    let mut splits = Splits::default();
    for (i, p) in partitions.iter().enumerate() {
        if let Some(p) = p {
            splits.get_mut(*p).push(i);
        }
    }
    splits
}

/// Shuffles `0..n` with `seed` and cuts it at `ratios`. Sample-level: the same identity may land
/// on two sides (see [`group_disjoint`] for the honest version).
pub fn by_ratios(n: usize, ratios: Ratios, seed: u64) -> Result<Splits> {
    let [train, valid, _] = ratios.sizes(n)?;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let test = order.split_off(train + valid);
    let valid = order.split_off(train);
    Ok(Splits { train: order, valid, test })
}

/// Splits so that every group (identity, video, source) lands on exactly one side. Groups are
/// shuffled with `seed`, then assigned greedily so each side's *sample* count approaches its
/// ratio. `groups[i]` is sample `i`'s group; `None` makes the sample its own group.
pub fn group_disjoint<G: Hash + Eq + Clone + Ord>(
    groups: &[Option<G>],
    ratios: Ratios,
    seed: u64,
) -> Result<Splits> {
    ratios.check()?;
    let mut members: HashMap<GroupKey<G>, Vec<usize>> = HashMap::new();
    for (i, g) in groups.iter().enumerate() {
        let key = match g {
            Some(g) => GroupKey::Named(g.clone()),
            None => GroupKey::Alone(i),
        };
        members.entry(key).or_default().push(i);
    }
    let mut keys: Vec<GroupKey<G>> = members.keys().cloned().collect();
    // Sorting first makes the shuffle independent of HashMap iteration order.
    keys.sort();
    keys.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));

    let n = groups.len() as f64;
    let targets = [ratios.train * n, ratios.valid * n, ratios.test * n];
    let mut splits = Splits::default();
    let mut filled = [0.0f64; 3];
    for key in keys {
        let idx = members.remove(&key).unwrap_or_default();
        // The side furthest below its target (relative to the target) takes the group.
        let side = (0..3)
            .filter(|&s| targets[s] > 0.0)
            .min_by(|&a, &b| (filled[a] / targets[a]).total_cmp(&(filled[b] / targets[b])))
            .unwrap_or(0);
        filled[side] += idx.len() as f64;
        splits.get_mut(Partition::ALL[side]).extend(idx);
    }
    for p in Partition::ALL {
        splits.get_mut(p).sort_unstable();
    }
    Ok(splits)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum GroupKey<G> {
    Named(G),
    Alone(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ratio_sizes_and_parsing() {
        assert_eq!(Ratios::default().sizes(10).unwrap(), [6, 2, 2]);
        assert_eq!(Ratios::default().sizes(7).unwrap().iter().sum::<usize>(), 7);
        let r: Ratios = "80/10/10".parse().unwrap();
        assert!((r.train - 0.8).abs() < 1e-12);
        let r: Ratios = "0.5/0.25/0.25".parse().unwrap();
        assert!((r.test - 0.25).abs() < 1e-12);
        assert!("50/50".parse::<Ratios>().is_err());
        assert!("50/30/30".parse::<Ratios>().is_err());
        assert!("a/b/c".parse::<Ratios>().is_err());
    }

    #[test]
    fn by_ratios_is_a_seeded_partition() {
        let a = by_ratios(101, Ratios::default(), 3).unwrap();
        let b = by_ratios(101, Ratios::default(), 3).unwrap();
        let c = by_ratios(101, Ratios::default(), 4).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!((a.train.len(), a.valid.len(), a.test.len()), (61, 20, 20));
        let all: HashSet<usize> = a.train.iter().chain(&a.valid).chain(&a.test).copied().collect();
        assert_eq!(all.len(), 101);
    }

    #[test]
    fn group_disjoint_never_shares_a_group() {
        // 50 identities with 1..=6 images each.
        let groups: Vec<Option<u32>> = (0..50u32)
            .flat_map(|g| std::iter::repeat_n(Some(g), 1 + (g as usize * 7) % 6))
            .collect();
        let s = group_disjoint(&groups, Ratios::default(), 11).unwrap();
        let side_groups =
            |idx: &[usize]| -> HashSet<u32> { idx.iter().map(|&i| groups[i].unwrap()).collect() };
        let (tr, va, te) = (side_groups(&s.train), side_groups(&s.valid), side_groups(&s.test));
        assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
        assert_eq!(s.train.len() + s.valid.len() + s.test.len(), groups.len());
        let frac = s.train.len() as f64 / groups.len() as f64;
        assert!((frac - 0.6).abs() < 0.1, "train fraction {frac}");
        assert_eq!(s, group_disjoint(&groups, Ratios::default(), 11).unwrap());
        assert_ne!(s, group_disjoint(&groups, Ratios::default(), 12).unwrap());
    }

    #[test]
    fn ungrouped_samples_stand_alone() {
        let groups: Vec<Option<&str>> = vec![None; 20];
        let s = group_disjoint(&groups, Ratios::default(), 1).unwrap();
        assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (12, 4, 4));
    }

    #[test]
    fn official_uses_given_partition() {
        let p = [Some(Partition::Test), None, Some(Partition::Train), Some(Partition::Valid)];
        let s = official(&p);
        assert_eq!((s.train, s.valid, s.test), (vec![2], vec![3], vec![0]));
        assert_eq!(Partition::from_code(2), Some(Partition::Test));
        assert_eq!(Partition::from_code(3), None);
    }
}
