//! Attribute statistics: how often each attribute is positive and which are balanced.
//!
//! Only the numbers: the distribution chart (Figure 1 of the attractiveness report) is drawn
//! by `deeprecog_metrics::plot::attribute_distribution` from [`AttributeStats::named_fractions`],
//! which keeps this crate free of plotting.

use deeprecog_attributes::{Attribute, AttributeSet, COUNT};

/// Positive counts of the 40 attributes over a set of images.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttributeStats {
    images: usize,
    positive: Vec<usize>,
}

impl AttributeStats {
    /// Counts positives over `sets`.
    pub fn from_sets(sets: &[AttributeSet]) -> AttributeStats {
        let mut positive = vec![0usize; COUNT];
        for set in sets {
            for a in set.iter() {
                if let Some(c) = positive.get_mut(a.index()) {
                    *c += 1;
                }
            }
        }
        AttributeStats { images: sets.len(), positive }
    }

    /// Number of images counted.
    pub fn images(&self) -> usize {
        self.images
    }

    /// Images where `attribute` is positive.
    pub fn positive(&self, attribute: Attribute) -> usize {
        self.positive.get(attribute.index()).copied().unwrap_or(0)
    }

    /// Fraction of images where `attribute` is positive (0 for an empty set).
    pub fn fraction(&self, attribute: Attribute) -> f64 {
        if self.images == 0 {
            0.0
        } else {
            self.positive(attribute) as f64 / self.images as f64
        }
    }

    /// Attributes from most to least balanced (positive fraction closest to 0.5 first), ties
    /// in file order.
    pub fn balance_ranking(&self) -> Vec<(Attribute, f64)> {
        let mut ranked: Vec<(Attribute, f64)> =
            Attribute::ALL.iter().map(|&a| (a, self.fraction(a))).collect();
        ranked.sort_by(|a, b| (a.1 - 0.5).abs().total_cmp(&(b.1 - 0.5).abs()));
        ranked
    }

    /// Attributes whose positive fraction lies within `tolerance` of 0.5.
    pub fn balanced(&self, tolerance: f64) -> Vec<Attribute> {
        Attribute::ALL
            .iter()
            .copied()
            .filter(|&a| (self.fraction(a) - 0.5).abs() <= tolerance)
            .collect()
    }

    /// `{"images": N, "attributes": {"5_o_Clock_Shadow": {"positive": k, "fraction": f}, ...}}`
    /// with attributes in file order.
    pub fn to_json(&self) -> serde_json::Value {
        let mut attributes = serde_json::Map::new();
        for a in Attribute::ALL {
            attributes.insert(
                a.name().to_string(),
                serde_json::json!({"positive": self.positive(a), "fraction": self.fraction(a)}),
            );
        }
        serde_json::json!({"images": self.images, "attributes": attributes})
    }

    /// The positive fraction of every attribute in file order.
    pub fn fractions(&self) -> Vec<(Attribute, f64)> {
        Attribute::ALL.iter().map(|&a| (a, self.fraction(a))).collect()
    }

    /// [`AttributeStats::fractions`] with each attribute's file name (`5_o_Clock_Shadow`, ...),
    /// the bars of an attribute distribution chart.
    pub fn named_fractions(&self) -> Vec<(&'static str, f64)> {
        Attribute::ALL.iter().map(|&a| (a.name(), self.fraction(a))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fractions_and_ranking() {
        let male = AttributeSet::EMPTY.with(Attribute::Male, true);
        let both = male.with(Attribute::Smiling, true);
        let s = AttributeStats::from_sets(&[male, both, AttributeSet::EMPTY, male]);
        assert_eq!(s.images(), 4);
        assert_eq!(s.positive(Attribute::Male), 3);
        assert!((s.fraction(Attribute::Smiling) - 0.25).abs() < 1e-12);
        let ranking = s.balance_ranking();
        // Male (0.75) and Smiling (0.25) are equally far from 0.5; file order breaks the tie.
        assert_eq!((ranking[0].0, ranking[1].0), (Attribute::Male, Attribute::Smiling));
        assert_eq!(s.balanced(0.25), vec![Attribute::Male, Attribute::Smiling]);
        assert_eq!(AttributeStats::from_sets(&[]).fraction(Attribute::Male), 0.0);
        let json = s.to_json();
        assert_eq!(json["images"], 4);
        assert_eq!(json["attributes"]["Male"]["positive"], 3);
        assert_eq!(json["attributes"]["Smiling"]["fraction"], 0.25);
        let first = json["attributes"].as_object().unwrap().keys().next().unwrap().clone();
        assert_eq!(first, "5_o_Clock_Shadow");
        let named = s.named_fractions();
        assert_eq!(named.len(), 40);
        assert_eq!(named[0], ("5_o_Clock_Shadow", 0.0));
        let male = named.iter().find(|(n, _)| *n == "Male").unwrap();
        assert_eq!(male.1, 0.75);
        assert_eq!(s.fractions()[Attribute::Male.index()], (Attribute::Male, 0.75));
    }
}
