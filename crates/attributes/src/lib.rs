//! The 40 binary face attributes of CelebA as types.
//!
//! [`Attribute`] lists them in the order of the columns of `list_attr_celeba.txt`, with
//! CelebA's own spelling for parsing and printing; [`AttributeSet`] stores which of them are
//! positive for one image in a single `u64`; [`targets`] turns sets into multi-label target
//! vectors for a chosen list of attributes; [`Filter`] selects images with a boolean expression
//! such as `(Male | Smiling) & !Eyeglasses` (see [`filter`] for the syntax).
//!
//! ```
//! use deeprecog_attributes::{Attribute, AttributeSet};
//!
//! let male: Attribute = "Male".parse()?;
//! assert_eq!(male, Attribute::Male);
//! assert_eq!(Attribute::FiveOClockShadow.to_string(), "5_o_Clock_Shadow");
//!
//! let mut set = AttributeSet::EMPTY;
//! set.insert(Attribute::Smiling);
//! set.insert(male);
//! assert!(set.contains(Attribute::Male));
//! assert_eq!(set.len(), 2);
//! assert_eq!(
//!     deeprecog_attributes::targets(set, &[Attribute::Male, Attribute::Bald]),
//!     vec![1.0, 0.0]
//! );
//! # Ok::<(), deeprecog_attributes::ParseAttributeError>(())
//! ```

use std::fmt;
use std::str::FromStr;

pub mod filter;

pub use filter::{Filter, ParseFilterError};

macro_rules! attributes {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// One of the 40 CelebA attributes, in the column order of `list_attr_celeba.txt`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[repr(u8)]
        pub enum Attribute {
            $(#[doc = $doc] #[serde(rename = $name)] $variant,)*
        }

        impl Attribute {
            /// Every attribute, in file order.
            pub const ALL: [Attribute; 40] = [$(Attribute::$variant,)*];

            /// The attribute's name as CelebA spells it (`5_o_Clock_Shadow`, `Male`, ...).
            pub const fn name(self) -> &'static str {
                match self { $(Attribute::$variant => $name,)* }
            }
        }
    };
}

attributes! {
    FiveOClockShadow => "5_o_Clock_Shadow", "Short stubble.";
    ArchedEyebrows => "Arched_Eyebrows", "Arched eyebrows.";
    Attractive => "Attractive", "Judged attractive by the annotators (subjective).";
    BagsUnderEyes => "Bags_Under_Eyes", "Bags under the eyes.";
    Bald => "Bald", "Bald.";
    Bangs => "Bangs", "Hair falling over the forehead.";
    BigLips => "Big_Lips", "Big lips.";
    BigNose => "Big_Nose", "Big nose.";
    BlackHair => "Black_Hair", "Black hair.";
    BlondHair => "Blond_Hair", "Blond hair.";
    Blurry => "Blurry", "Blurry image.";
    BrownHair => "Brown_Hair", "Brown hair.";
    BushyEyebrows => "Bushy_Eyebrows", "Bushy eyebrows.";
    Chubby => "Chubby", "Chubby face.";
    DoubleChin => "Double_Chin", "Double chin.";
    Eyeglasses => "Eyeglasses", "Wearing eyeglasses.";
    Goatee => "Goatee", "Goatee beard.";
    GrayHair => "Gray_Hair", "Gray hair.";
    HeavyMakeup => "Heavy_Makeup", "Heavy make-up.";
    HighCheekbones => "High_Cheekbones", "High cheekbones.";
    Male => "Male", "Male.";
    MouthSlightlyOpen => "Mouth_Slightly_Open", "Mouth slightly open.";
    Mustache => "Mustache", "Mustache.";
    NarrowEyes => "Narrow_Eyes", "Narrow eyes.";
    NoBeard => "No_Beard", "No beard.";
    OvalFace => "Oval_Face", "Oval face.";
    PaleSkin => "Pale_Skin", "Pale skin.";
    PointyNose => "Pointy_Nose", "Pointy nose.";
    RecedingHairline => "Receding_Hairline", "Receding hairline.";
    RosyCheeks => "Rosy_Cheeks", "Rosy cheeks.";
    Sideburns => "Sideburns", "Sideburns.";
    Smiling => "Smiling", "Smiling.";
    StraightHair => "Straight_Hair", "Straight hair.";
    WavyHair => "Wavy_Hair", "Wavy hair.";
    WearingEarrings => "Wearing_Earrings", "Wearing earrings.";
    WearingHat => "Wearing_Hat", "Wearing a hat.";
    WearingLipstick => "Wearing_Lipstick", "Wearing lipstick.";
    WearingNecklace => "Wearing_Necklace", "Wearing a necklace.";
    WearingNecktie => "Wearing_Necktie", "Wearing a necktie.";
    Young => "Young", "Young.";
}

/// How many attributes CelebA annotates.
pub const COUNT: usize = 40;

impl Attribute {
    /// Zero-based column of this attribute in `list_attr_celeba.txt`.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The attribute at column `index`, or `None` past the 40th.
    pub fn from_index(index: usize) -> Option<Attribute> {
        Attribute::ALL.get(index).copied()
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of CelebA's 40 attribute names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CelebA attribute {name:?} (names are spelt as in list_attr_celeba.txt, e.g. \"5_o_Clock_Shadow\", \"Male\")")]
pub struct ParseAttributeError {
    /// The text that failed to parse.
    pub name: String,
}

impl FromStr for Attribute {
    type Err = ParseAttributeError;

    /// Parses CelebA's spelling exactly; also accepts any ASCII case and `-` for `_`, so
    /// command lines can say `mouth-slightly-open`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Attribute::ALL
            .iter()
            .copied()
            .find(|a| a.name() == wanted)
            .or_else(|| {
                let folded = wanted.replace('-', "_");
                Attribute::ALL.iter().copied().find(|a| a.name().eq_ignore_ascii_case(&folded))
            })
            .ok_or_else(|| ParseAttributeError { name: s.to_string() })
    }
}

/// Parses a comma-separated list of attribute names (`"Male,Smiling"`).
pub fn parse_list(s: &str) -> Result<Vec<Attribute>, ParseAttributeError> {
    s.split(',').filter(|part| !part.trim().is_empty()).map(str::parse).collect()
}

/// The attributes that are positive (+1) for one image, one bit per attribute.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct AttributeSet(u64);

impl AttributeSet {
    /// No attribute positive.
    pub const EMPTY: AttributeSet = AttributeSet(0);

    /// Every attribute positive.
    pub const FULL: AttributeSet = AttributeSet((1u64 << COUNT) - 1);

    /// A set from its raw bits (bit `i` is [`Attribute::from_index`]`(i)`); bits above 39 are dropped.
    pub const fn from_bits(bits: u64) -> AttributeSet {
        AttributeSet(bits & Self::FULL.0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether `attribute` is positive.
    pub const fn contains(self, attribute: Attribute) -> bool {
        self.0 & (1 << attribute as u8) != 0
    }

    /// Marks `attribute` positive.
    pub fn insert(&mut self, attribute: Attribute) {
        self.0 |= 1 << attribute as u8;
    }

    /// Marks `attribute` negative.
    pub fn remove(&mut self, attribute: Attribute) {
        self.0 &= !(1 << attribute as u8);
    }

    /// Sets `attribute` to `positive`.
    pub fn set(&mut self, attribute: Attribute, positive: bool) {
        if positive {
            self.insert(attribute)
        } else {
            self.remove(attribute)
        }
    }

    /// Builder form of [`AttributeSet::set`].
    pub fn with(mut self, attribute: Attribute, positive: bool) -> AttributeSet {
        self.set(attribute, positive);
        self
    }

    /// Number of positive attributes.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether no attribute is positive.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The positive attributes, in file order.
    pub fn iter(self) -> impl Iterator<Item = Attribute> {
        Attribute::ALL.into_iter().filter(move |a| self.contains(*a))
    }

    /// CelebA's encoding of this set: +1 or -1 for each of the 40 attributes, in file order.
    pub fn to_signs(self) -> [i8; COUNT] {
        let mut signs = [-1i8; COUNT];
        for a in self.iter() {
            signs[a.index()] = 1;
        }
        signs
    }
}

impl FromIterator<Attribute> for AttributeSet {
    fn from_iter<I: IntoIterator<Item = Attribute>>(iter: I) -> Self {
        let mut set = AttributeSet::EMPTY;
        for a in iter {
            set.insert(a);
        }
        set
    }
}

/// The multi-label target of one image: 1.0 where the chosen attribute is positive, else 0.0,
/// in the order of `chosen`.
pub fn targets(set: AttributeSet, chosen: &[Attribute]) -> Vec<f32> {
    chosen.iter().map(|a| if set.contains(*a) { 1.0 } else { 0.0 }).collect()
}

/// Row-major `(sets.len(), chosen.len())` targets for a batch, ready for a tensor.
pub fn target_matrix(sets: &[AttributeSet], chosen: &[Attribute]) -> Vec<f32> {
    let mut out = Vec::with_capacity(sets.len() * chosen.len());
    for set in sets {
        out.extend(chosen.iter().map(|a| if set.contains(*a) { 1.0f32 } else { 0.0 }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Header line of the real list_attr_celeba.txt, kept verbatim.
    const CELEBA_HEADER: &str = "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young";

    #[test]
    fn file_order_matches_celeba_header() {
        let names: Vec<&str> = CELEBA_HEADER.split_whitespace().collect();
        assert_eq!(names.len(), COUNT);
        for (i, name) in names.iter().enumerate() {
            let a: Attribute = name.parse().unwrap();
            assert_eq!(a.index(), i);
            assert_eq!(a.to_string(), *name);
            assert_eq!(Attribute::from_index(i), Some(a));
        }
        assert_eq!(Attribute::from_index(40), None);
    }

    #[test]
    fn lenient_parse_and_errors() {
        assert_eq!(
            "mouth-slightly-open".parse::<Attribute>().unwrap(),
            Attribute::MouthSlightlyOpen
        );
        assert_eq!(" male ".parse::<Attribute>().unwrap(), Attribute::Male);
        let err = "Handsome".parse::<Attribute>().unwrap_err();
        assert_eq!(err.name, "Handsome");
        assert!(err.to_string().contains("Handsome"));
        assert_eq!(
            parse_list("Male, Smiling,").unwrap(),
            vec![Attribute::Male, Attribute::Smiling]
        );
        assert!(parse_list("Male,Nope").is_err());
    }

    #[test]
    fn set_operations() {
        let mut s = AttributeSet::EMPTY;
        assert!(s.is_empty());
        s.insert(Attribute::Young);
        s.insert(Attribute::FiveOClockShadow);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![Attribute::FiveOClockShadow, Attribute::Young]
        );
        s.remove(Attribute::Young);
        assert!(!s.contains(Attribute::Young));
        assert_eq!(AttributeSet::FULL.len(), 40);
        assert_eq!(AttributeSet::from_bits(u64::MAX), AttributeSet::FULL);
        let signs = s.to_signs();
        assert_eq!(signs[0], 1);
        assert!(signs[1..].iter().all(|v| *v == -1));
        let collected: AttributeSet = [Attribute::Male, Attribute::Bald].into_iter().collect();
        assert_eq!(
            collected,
            AttributeSet::EMPTY.with(Attribute::Bald, true).with(Attribute::Male, true)
        );
    }

    #[test]
    fn target_vectors() {
        let a = AttributeSet::EMPTY.with(Attribute::Male, true);
        let b = AttributeSet::EMPTY.with(Attribute::Smiling, true);
        let chosen = [Attribute::Smiling, Attribute::Male];
        assert_eq!(targets(a, &chosen), vec![0.0, 1.0]);
        assert_eq!(target_matrix(&[a, b], &chosen), vec![0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn serde_uses_celeba_names() {
        let set = AttributeSet::EMPTY.with(Attribute::Male, true);
        assert_eq!(
            serde_json::to_string(&Attribute::FiveOClockShadow).unwrap(),
            "\"5_o_Clock_Shadow\""
        );
        assert_eq!(
            serde_json::from_str::<Attribute>("\"Wearing_Hat\"").unwrap(),
            Attribute::WearingHat
        );
        assert_eq!(serde_json::to_string(&set).unwrap(), (1u64 << 20).to_string());
    }
}

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
