//! Boolean filters over attributes, such as `(Male | Smiling) & !Eyeglasses`.
//!
//! A [`Filter`] is parsed from a small expression language so that command lines and config
//! files can select images by their labels:
//!
//! | syntax                    | meaning                                   |
//! |---------------------------|-------------------------------------------|
//! | `Eyeglasses`              | the attribute is positive                 |
//! | `!a`, `not a`             | negation (binds tightest)                 |
//! | `a & b`, `a && b`, `a and b` | both                                   |
//! | `a \| b`, `a \|\| b`, `a or b` | either (binds loosest)               |
//! | `( ... )`                 | grouping                                  |
//!
//! Attribute names go through [`Attribute`]'s `FromStr`, so CelebA's spelling
//! (`5_o_Clock_Shadow`) and its lenient forms (`mouth-slightly-open`) are both accepted; the
//! operator words are case-insensitive. Whitespace is free.
//!
//! ```
//! use deeprecog_attributes::{Attribute, AttributeSet, Filter};
//!
//! let filter: Filter = "(Male or Smiling) && !Eyeglasses".parse()?;
//! assert_eq!(filter.to_string(), "(Male | Smiling) & !Eyeglasses");
//!
//! let smiling: AttributeSet = [Attribute::Smiling].into_iter().collect();
//! assert!(filter.matches(smiling));
//! assert!(!filter.matches(smiling.with(Attribute::Eyeglasses, true)));
//! # Ok::<(), deeprecog_attributes::ParseFilterError>(())
//! ```

use std::fmt;
use std::ops;
use std::str::FromStr;

use crate::{Attribute, AttributeSet};

/// A boolean expression over attributes, evaluated against one image's [`AttributeSet`].
///
/// Equality is structural, not logical: `Male & Smiling` and `Smiling & Male` select the same
/// images but are different filters. Chains of the same operator are flattened, so
/// `(a & b) & c` and `a & (b & c)` are equal, which is what lets [`Display`](fmt::Display)
/// drop their parentheses and still parse back to an equal filter.
///
/// Serializes as its canonical string form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter(Expr);

// Invariant kept by `Expr::and` / `Expr::or`: an `And` has at least two operands and none of
// them is an `And` (likewise `Or`); parsing and the operator impls both go through them, so
// structurally equal filters print the same and printing then parsing is the identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Expr {
    Attr(Attribute),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

impl Expr {
    fn and(operands: Vec<Expr>) -> Expr {
        Expr::join(operands, Expr::And, |e| match e {
            Expr::And(inner) => Ok(inner),
            other => Err(other),
        })
    }

    fn or(operands: Vec<Expr>) -> Expr {
        Expr::join(operands, Expr::Or, |e| match e {
            Expr::Or(inner) => Ok(inner),
            other => Err(other),
        })
    }

    fn join(
        operands: Vec<Expr>,
        build: fn(Vec<Expr>) -> Expr,
        split: fn(Expr) -> Result<Vec<Expr>, Expr>,
    ) -> Expr {
        let mut flat = Vec::with_capacity(operands.len());
        for e in operands {
            match split(e) {
                Ok(inner) => flat.extend(inner),
                Err(single) => flat.push(single),
            }
        }
        if flat.len() == 1 {
            flat.swap_remove(0)
        } else {
            build(flat)
        }
    }

    fn matches(&self, set: AttributeSet) -> bool {
        match self {
            Expr::Attr(a) => set.contains(*a),
            Expr::Not(e) => !e.matches(set),
            Expr::And(es) => es.iter().all(|e| e.matches(set)),
            Expr::Or(es) => es.iter().any(|e| e.matches(set)),
        }
    }

    fn collect(&self, out: &mut Vec<Attribute>) {
        match self {
            Expr::Attr(a) => {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
            Expr::Not(e) => e.collect(out),
            Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| e.collect(out)),
        }
    }

    // Parentheses only where precedence needs them, so the output is the canonical form.
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Attr(a) => f.write_str(a.name()),
            Expr::Not(e) => {
                f.write_str("!")?;
                match **e {
                    Expr::Attr(_) | Expr::Not(_) => e.write(f),
                    _ => e.write_parenthesized(f),
                }
            }
            Expr::And(es) => {
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" & ")?;
                    }
                    match e {
                        Expr::Or(_) => e.write_parenthesized(f)?,
                        _ => e.write(f)?,
                    }
                }
                Ok(())
            }
            Expr::Or(es) => {
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(" | ")?;
                    }
                    e.write(f)?;
                }
                Ok(())
            }
        }
    }

    fn write_parenthesized(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        self.write(f)?;
        f.write_str(")")
    }
}

impl Filter {
    /// The filter that holds when `attribute` is positive.
    pub fn attribute(attribute: Attribute) -> Filter {
        Filter(Expr::Attr(attribute))
    }

    /// The filter that holds when every one of `attributes` is positive, or `None` for an
    /// empty slice (an empty conjunction has no string form to print).
    pub fn all_of(attributes: &[Attribute]) -> Option<Filter> {
        if attributes.is_empty() {
            return None;
        }
        Some(Filter(Expr::and(attributes.iter().map(|a| Expr::Attr(*a)).collect())))
    }

    /// The filter that holds when at least one of `attributes` is positive, or `None` for an
    /// empty slice.
    pub fn any_of(attributes: &[Attribute]) -> Option<Filter> {
        if attributes.is_empty() {
            return None;
        }
        Some(Filter(Expr::or(attributes.iter().map(|a| Expr::Attr(*a)).collect())))
    }

    /// Whether an image whose positive attributes are `set` passes the filter.
    pub fn matches(&self, set: AttributeSet) -> bool {
        self.0.matches(set)
    }

    /// The attributes the filter mentions, each once, in order of first appearance.
    pub fn attributes(&self) -> Vec<Attribute> {
        let mut out = Vec::new();
        self.0.collect(&mut out);
        out
    }
}

impl From<Attribute> for Filter {
    fn from(attribute: Attribute) -> Filter {
        Filter::attribute(attribute)
    }
}

impl ops::Not for Filter {
    type Output = Filter;

    fn not(self) -> Filter {
        Filter(Expr::Not(Box::new(self.0)))
    }
}

impl ops::BitAnd for Filter {
    type Output = Filter;

    fn bitand(self, rhs: Filter) -> Filter {
        Filter(Expr::and(vec![self.0, rhs.0]))
    }
}

impl ops::BitOr for Filter {
    type Output = Filter;

    fn bitor(self, rhs: Filter) -> Filter {
        Filter(Expr::or(vec![self.0, rhs.0]))
    }
}

impl fmt::Display for Filter {
    /// The canonical form: CelebA names, ` & `, ` | `, `!`, and only the parentheses that
    /// precedence requires. It parses back to an equal filter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write(f)
    }
}

/// Why a filter expression did not parse. Every offset counts characters (not bytes) from the
/// start of the input, starting at 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseFilterError {
    /// The input was empty or only whitespace.
    #[error("empty filter expression")]
    Empty,
    /// A word that is neither an attribute nor `and` / `or` / `not`.
    #[error("unknown attribute {name:?} at offset {offset}{}", did_you_mean(*.suggestion))]
    UnknownAttribute {
        /// The word as written.
        name: String,
        /// Where the word starts.
        offset: usize,
        /// A close attribute name, when one stands out.
        suggestion: Option<Attribute>,
    },
    /// A `(` with no matching `)`.
    #[error("unclosed parenthesis: '(' at offset {offset} has no matching ')'")]
    UnclosedParenthesis {
        /// Where the `(` is.
        offset: usize,
    },
    /// A `)` with no matching `(`.
    #[error("unmatched ')' at offset {offset}")]
    UnmatchedParenthesis {
        /// Where the `)` is.
        offset: usize,
    },
    /// `()` with nothing inside.
    #[error("empty parentheses at offset {offset}")]
    EmptyParentheses {
        /// Where the `(` is.
        offset: usize,
    },
    /// An operator with nothing on one of its sides (`Male &`, `| Smiling`, `!`).
    #[error("operator {operator:?} at offset {offset} is missing an operand")]
    DanglingOperator {
        /// The operator as written (`&`, `&&`, `and`, ...).
        operator: String,
        /// Where the operator starts.
        offset: usize,
    },
    /// Two operands side by side (`Male Smiling`, `Male (Bald)`, `Male !Bald`).
    #[error("expected '&' or '|' before offset {offset}")]
    MissingOperator {
        /// Where the second operand starts.
        offset: usize,
    },
    /// A character that belongs to no attribute name or operator.
    #[error("unexpected character {character:?} at offset {offset}")]
    UnexpectedCharacter {
        /// The character.
        character: char,
        /// Where it is.
        offset: usize,
    },
}

impl ParseFilterError {
    /// Character offset of the problem in the input (0 for [`ParseFilterError::Empty`]).
    pub fn offset(&self) -> usize {
        match self {
            ParseFilterError::Empty => 0,
            ParseFilterError::UnknownAttribute { offset, .. }
            | ParseFilterError::UnclosedParenthesis { offset }
            | ParseFilterError::UnmatchedParenthesis { offset }
            | ParseFilterError::EmptyParentheses { offset }
            | ParseFilterError::DanglingOperator { offset, .. }
            | ParseFilterError::MissingOperator { offset }
            | ParseFilterError::UnexpectedCharacter { offset, .. } => *offset,
        }
    }
}

fn did_you_mean(suggestion: Option<Attribute>) -> String {
    suggestion.map(|a| format!(" (did you mean {:?}?)", a.name())).unwrap_or_default()
}

impl FromStr for Filter {
    type Err = ParseFilterError;

    fn from_str(s: &str) -> Result<Filter, ParseFilterError> {
        let tokens = tokenize(s)?;
        if tokens.is_empty() {
            return Err(ParseFilterError::Empty);
        }
        let mut parser = Parser { tokens: &tokens, pos: 0 };
        let expr = parser.or()?;
        match parser.peek() {
            None => Ok(Filter(expr)),
            Some(t) if t.kind == Kind::Close => {
                Err(ParseFilterError::UnmatchedParenthesis { offset: t.offset })
            }
            Some(t) => Err(ParseFilterError::MissingOperator { offset: t.offset }),
        }
    }
}

impl serde::Serialize for Filter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Filter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Filter, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Attr(Attribute),
    Not,
    And,
    Or,
    Open,
    Close,
}

#[derive(Debug)]
struct Token<'a> {
    kind: Kind,
    text: &'a str,
    offset: usize,
}

impl Token<'_> {
    fn is_operator(&self) -> bool {
        matches!(self.kind, Kind::Not | Kind::And | Kind::Or)
    }
}

// Attribute names are words of letters, digits, `_` and `-` (the `-` so the lenient
// `mouth-slightly-open` spelling that `Attribute::from_str` accepts also works here).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

fn tokenize(s: &str) -> Result<Vec<Token<'_>>, ParseFilterError> {
    let mut tokens = Vec::new();
    // (character offset, byte offset, char)
    let mut chars = s.char_indices().enumerate().map(|(o, (b, c))| (o, b, c)).peekable();
    while let Some((offset, start, c)) = chars.next() {
        let single = |kind| Token { kind, text: &s[start..start + c.len_utf8()], offset };
        let token = match c {
            _ if c.is_whitespace() => continue,
            '(' => single(Kind::Open),
            ')' => single(Kind::Close),
            '!' => single(Kind::Not),
            '&' | '|' => {
                let kind = if c == '&' { Kind::And } else { Kind::Or };
                let doubled = chars.next_if(|&(_, _, next)| next == c).is_some();
                let len = if doubled { 2 } else { 1 };
                Token { kind, text: &s[start..start + len], offset }
            }
            _ if is_word_char(c) => {
                let mut end = start + c.len_utf8();
                while let Some((_, b, next)) = chars.next_if(|&(_, _, next)| is_word_char(next)) {
                    end = b + next.len_utf8();
                }
                let text = &s[start..end];
                let kind = if text.eq_ignore_ascii_case("and") {
                    Kind::And
                } else if text.eq_ignore_ascii_case("or") {
                    Kind::Or
                } else if text.eq_ignore_ascii_case("not") {
                    Kind::Not
                } else {
                    match text.parse::<Attribute>() {
                        Ok(a) => Kind::Attr(a),
                        Err(_) => {
                            return Err(ParseFilterError::UnknownAttribute {
                                name: text.to_string(),
                                offset,
                                suggestion: closest_attribute(text),
                            })
                        }
                    }
                };
                Token { kind, text, offset }
            }
            _ => return Err(ParseFilterError::UnexpectedCharacter { character: c, offset }),
        };
        tokens.push(token);
    }
    Ok(tokens)
}

/// Recursive descent over the tokens; one method per precedence level.
struct Parser<'t, 's> {
    tokens: &'t [Token<'s>],
    pos: usize,
}

impl Parser<'_, '_> {
    fn peek(&self) -> Option<&Token<'_>> {
        self.tokens.get(self.pos)
    }

    fn eat(&mut self, kind: Kind) -> bool {
        let hit = self.peek().is_some_and(|t| t.kind == kind);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn or(&mut self) -> Result<Expr, ParseFilterError> {
        let mut operands = vec![self.and()?];
        while self.eat(Kind::Or) {
            operands.push(self.and()?);
        }
        Ok(Expr::or(operands))
    }

    fn and(&mut self) -> Result<Expr, ParseFilterError> {
        let mut operands = vec![self.unary()?];
        while self.eat(Kind::And) {
            operands.push(self.unary()?);
        }
        Ok(Expr::and(operands))
    }

    fn unary(&mut self) -> Result<Expr, ParseFilterError> {
        if self.eat(Kind::Not) {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseFilterError> {
        let Some(token) = self.tokens.get(self.pos) else {
            return Err(self.missing_operand());
        };
        match token.kind {
            Kind::Attr(a) => {
                self.pos += 1;
                Ok(Expr::Attr(a))
            }
            Kind::Open => {
                let open = token.offset;
                self.pos += 1;
                let inner = self.or()?;
                match self.peek() {
                    Some(t) if t.kind == Kind::Close => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    None => Err(ParseFilterError::UnclosedParenthesis { offset: open }),
                    Some(t) => Err(ParseFilterError::MissingOperator { offset: t.offset }),
                }
            }
            Kind::Not | Kind::And | Kind::Or | Kind::Close => Err(self.missing_operand()),
        }
    }

    // An operand was expected at `pos` but the input ended or had a binary operator or `)`
    // there; blame the token that wanted the operand, which is the one users must fix.
    fn missing_operand(&self) -> ParseFilterError {
        let here = self.tokens.get(self.pos);
        let before = self.pos.checked_sub(1).and_then(|i| self.tokens.get(i));
        match (before, here) {
            (Some(prev), _) if prev.is_operator() => ParseFilterError::DanglingOperator {
                operator: prev.text.to_string(),
                offset: prev.offset,
            },
            (Some(prev), None) => ParseFilterError::UnclosedParenthesis { offset: prev.offset },
            (Some(prev), Some(t)) if t.kind == Kind::Close => {
                ParseFilterError::EmptyParentheses { offset: prev.offset }
            }
            (_, Some(t)) if t.kind == Kind::Close => {
                ParseFilterError::UnmatchedParenthesis { offset: t.offset }
            }
            (_, Some(t)) => ParseFilterError::DanglingOperator {
                operator: t.text.to_string(),
                offset: t.offset,
            },
            (None, None) => ParseFilterError::Empty,
        }
    }
}

/// The attribute whose name is nearest `word` in edit distance (ignoring case and `-`/`_`),
/// if it is near enough to be a typo; failing that, the only name that contains `word`
/// (`Glasses` → `Eyeglasses`, `Hat` → `Wearing_Hat`).
fn closest_attribute(word: &str) -> Option<Attribute> {
    let word: Vec<char> = word.to_ascii_lowercase().replace('-', "_").chars().collect();
    let folded = |a: Attribute| a.name().to_ascii_lowercase().chars().collect::<Vec<_>>();
    let budget = (word.len() / 3).max(2);
    let nearest = Attribute::ALL
        .iter()
        .map(|&a| (edit_distance(&word, &folded(a)), a))
        .min_by_key(|&(d, a)| (d, a.index()))
        .filter(|&(d, _)| d <= budget)
        .map(|(_, a)| a);
    if nearest.is_some() || word.len() < 3 {
        return nearest;
    }
    let mut containing = Attribute::ALL.iter().copied().filter(|&a| {
        let name = folded(a);
        name.windows(word.len()).any(|w| w == word.as_slice())
    });
    match (containing.next(), containing.next()) {
        (Some(a), None) => Some(a),
        _ => None,
    }
}

fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use Attribute::*;

    fn f(s: &str) -> Filter {
        s.parse().unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn err(s: &str) -> ParseFilterError {
        s.parse::<Filter>().expect_err(s)
    }

    fn a(attribute: Attribute) -> Filter {
        Filter::attribute(attribute)
    }

    fn set(attributes: &[Attribute]) -> AttributeSet {
        attributes.iter().copied().collect()
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(f("Male | Smiling & Bald"), a(Male) | (a(Smiling) & a(Bald)));
        assert_eq!(f("Male & Smiling | Bald"), (a(Male) & a(Smiling)) | a(Bald));
        assert_ne!(f("Male | Smiling & Bald"), (a(Male) | a(Smiling)) & a(Bald));
        // Male alone satisfies `Male | (Smiling & Bald)` but not `(Male | Smiling) & Bald`.
        assert!(f("Male | Smiling & Bald").matches(set(&[Male])));
        assert!(!f("(Male | Smiling) & Bald").matches(set(&[Male])));
    }

    #[test]
    fn not_binds_tightest() {
        assert_eq!(f("!Male & Smiling"), !a(Male) & a(Smiling));
        assert_eq!(f("!(Male & Smiling)"), !(a(Male) & a(Smiling)));
        assert_eq!(f("!!Male"), !!a(Male));
        assert!(f("!Male & Smiling").matches(set(&[Smiling])));
        assert!(!f("!Male & Smiling").matches(set(&[])));
        assert!(f("!(Male & Smiling)").matches(set(&[])));
        assert!(!f("!(Male & Smiling)").matches(set(&[Male, Smiling])));
    }

    #[test]
    fn parentheses_and_flattening() {
        assert_eq!(f("(Male & Smiling) & Bald"), f("Male & (Smiling & Bald)"));
        assert_eq!(f("Male & (Smiling & Bald)"), f("Male & Smiling & Bald"));
        assert_eq!(f("((((Male))))"), a(Male));
        assert_eq!(
            f("(Male | Bald) & (Young | Smiling)").to_string(),
            "(Male | Bald) & (Young | Smiling)"
        );
        assert_ne!(f("Male & Smiling"), f("Smiling & Male"));
    }

    #[test]
    fn synonyms_and_whitespace() {
        let want = (a(Male) | a(Smiling)) & !a(Eyeglasses);
        for s in [
            "(Male | Smiling) & !Eyeglasses",
            "(Male||Smiling)&&!Eyeglasses",
            "  ( Male or Smiling )\tAND not Eyeglasses\n",
            "(Male OR Smiling) and NOT Eyeglasses",
            "(male | smiling) & !eyeglasses",
        ] {
            assert_eq!(f(s), want, "{s:?}");
        }
        assert_eq!(
            f("5_o_Clock_Shadow&Mouth_Slightly_Open"),
            a(FiveOClockShadow) & a(MouthSlightlyOpen)
        );
        assert_eq!(f("mouth-slightly-open"), a(MouthSlightlyOpen));
        assert_eq!(f("not(Male)and(Bald)"), !a(Male) & a(Bald));
        // Operator words only count as whole words.
        assert!(matches!(err("notMale"), ParseFilterError::UnknownAttribute { offset: 0, .. }));
    }

    #[test]
    fn display_round_trips() {
        for (input, canonical) in [
            ("Attractive", "Attractive"),
            ("Attractive&!Eyeglasses", "Attractive & !Eyeglasses"),
            ("(Male || Smiling) and not Eyeglasses", "(Male | Smiling) & !Eyeglasses"),
            ("!(Bald|Gray_Hair)", "!(Bald | Gray_Hair)"),
            ("not not 5_o_Clock_Shadow", "!!5_o_Clock_Shadow"),
            ("(Male) | (Smiling & Young)", "Male | Smiling & Young"),
            ("!(attractive)", "!Attractive"),
            (
                "((Bald | Young) | (Male & (Smiling | Bangs)))",
                "Bald | Young | Male & (Smiling | Bangs)",
            ),
            ("!(!Male & Young) | !(Bald)", "!(!Male & Young) | !Bald"),
        ] {
            let filter = f(input);
            assert_eq!(filter.to_string(), canonical, "{input:?}");
            assert_eq!(f(canonical), filter, "{canonical:?}");
        }
        // Filters built with the operators print in canonical form too.
        let built = !(a(Male) | a(Bald)) & (a(Young) | a(Smiling) & a(Bangs));
        assert_eq!(built.to_string(), "!(Male | Bald) & (Young | Smiling & Bangs)");
        assert_eq!(f(&built.to_string()), built);
    }

    #[test]
    fn evaluation() {
        let filter = f("(Male | Smiling) & !Eyeglasses");
        assert!(filter.matches(set(&[Male])));
        assert!(filter.matches(set(&[Smiling, Young])));
        assert!(!filter.matches(set(&[])));
        assert!(!filter.matches(set(&[Young])));
        assert!(!filter.matches(set(&[Male, Eyeglasses])));
        assert!(!filter.matches(AttributeSet::FULL));

        let bald_or_gray = f("!(Bald|Gray_Hair)");
        assert!(bald_or_gray.matches(AttributeSet::EMPTY));
        assert!(!bald_or_gray.matches(set(&[GrayHair])));
        assert!(!bald_or_gray.matches(set(&[Bald])));
        assert!(bald_or_gray.matches(AttributeSet::FULL.with(Bald, false).with(GrayHair, false)));

        // The first and last attributes, to catch an off-by-one in the bit layout.
        let edges = f("5_o_Clock_Shadow & !Young");
        assert!(edges.matches(set(&[FiveOClockShadow])));
        assert!(!edges.matches(set(&[FiveOClockShadow, Young])));
        assert!(!edges.matches(set(&[Young])));

        // Exhaustive check of the three-variable truth table against the Rust expression.
        let filter = f("Male | !Smiling & Bald");
        for bits in 0..8u8 {
            let (m, s, b) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let image = AttributeSet::EMPTY.with(Male, m).with(Smiling, s).with(Bald, b);
            assert_eq!(filter.matches(image), m || (!s && b), "{m} {s} {b}");
        }
    }

    #[test]
    fn attributes_in_order_of_appearance() {
        assert_eq!(
            f("Young & (Male | !Young) & 5_o_Clock_Shadow | Male").attributes(),
            vec![Young, Male, FiveOClockShadow]
        );
        assert_eq!(f("!Bald").attributes(), vec![Bald]);
    }

    #[test]
    fn constructors() {
        assert_eq!(Filter::all_of(&[Male, Smiling]), Some(f("Male & Smiling")));
        assert_eq!(Filter::any_of(&[Male, Smiling, Bald]), Some(f("Male | Smiling | Bald")));
        assert_eq!(Filter::all_of(&[Male]), Some(a(Male)));
        assert_eq!(Filter::all_of(&[]), None);
        assert_eq!(Filter::any_of(&[]), None);
        assert_eq!(Filter::from(Bald), a(Bald));
    }

    #[test]
    fn errors_and_offsets() {
        use ParseFilterError as E;
        assert_eq!(err(""), E::Empty);
        assert_eq!(err("  \t "), E::Empty);
        assert_eq!(
            err("Male & Smilng"),
            E::UnknownAttribute { name: "Smilng".into(), offset: 7, suggestion: Some(Smiling) }
        );
        assert_eq!(
            err("Glasses"),
            E::UnknownAttribute { name: "Glasses".into(), offset: 0, suggestion: Some(Eyeglasses) }
        );
        assert_eq!(
            err("Male | Handsome"),
            E::UnknownAttribute { name: "Handsome".into(), offset: 7, suggestion: None }
        );
        // Offsets count characters, not bytes.
        assert_eq!(
            err("Male &\u{a0}Bäld"),
            E::UnknownAttribute { name: "Bäld".into(), offset: 7, suggestion: Some(Bald) }
        );
        assert_eq!(err("(Male & Smiling"), E::UnclosedParenthesis { offset: 0 });
        assert_eq!(err("Male & ((Bald) | Young"), E::UnclosedParenthesis { offset: 7 });
        assert_eq!(err("("), E::UnclosedParenthesis { offset: 0 });
        assert_eq!(err("Male & ("), E::UnclosedParenthesis { offset: 7 });
        assert_eq!(err("Male)"), E::UnmatchedParenthesis { offset: 4 });
        assert_eq!(err(") Male"), E::UnmatchedParenthesis { offset: 0 });
        assert_eq!(err("(Male))"), E::UnmatchedParenthesis { offset: 6 });
        assert_eq!(err("Male & ()"), E::EmptyParentheses { offset: 7 });
        assert_eq!(err("Male &"), E::DanglingOperator { operator: "&".into(), offset: 5 });
        assert_eq!(err("Male and"), E::DanglingOperator { operator: "and".into(), offset: 5 });
        assert_eq!(err("|| Male"), E::DanglingOperator { operator: "||".into(), offset: 0 });
        assert_eq!(err("Male & | Bald"), E::DanglingOperator { operator: "&".into(), offset: 5 });
        assert_eq!(err("(| Male)"), E::DanglingOperator { operator: "|".into(), offset: 1 });
        assert_eq!(err("(Male &&)"), E::DanglingOperator { operator: "&&".into(), offset: 6 });
        assert_eq!(err("Male & !"), E::DanglingOperator { operator: "!".into(), offset: 7 });
        assert_eq!(err("Male &&& Bald"), E::DanglingOperator { operator: "&&".into(), offset: 5 });
        assert_eq!(err("Male Smiling"), E::MissingOperator { offset: 5 });
        assert_eq!(err("Male !Bald"), E::MissingOperator { offset: 5 });
        assert_eq!(err("(Male Bald)"), E::MissingOperator { offset: 6 });
        assert_eq!(err("(Male) (Bald)"), E::MissingOperator { offset: 7 });
        assert_eq!(err("Male ^ Bald"), E::UnexpectedCharacter { character: '^', offset: 5 });
    }

    #[test]
    fn error_messages_name_the_problem() {
        let message = err("Male & Smilng").to_string();
        assert!(message.contains("\"Smilng\"") && message.contains("offset 7"), "{message}");
        assert!(message.contains("did you mean \"Smiling\""), "{message}");
        let message = err("Male &").to_string();
        assert!(message.contains("\"&\"") && message.contains("offset 5"), "{message}");
        assert_eq!(
            err("(Male").to_string(),
            "unclosed parenthesis: '(' at offset 0 has no matching ')'"
        );
    }

    #[test]
    fn serde_uses_the_string_form() {
        let filter = f("(Male or Smiling) and not Eyeglasses");
        let json = serde_json::to_string(&filter).unwrap();
        assert_eq!(json, "\"(Male | Smiling) & !Eyeglasses\"");
        assert_eq!(serde_json::from_str::<Filter>(&json).unwrap(), filter);
        let bad = serde_json::from_str::<Filter>("\"Male &\"").unwrap_err().to_string();
        assert!(bad.contains("missing an operand"), "{bad}");
    }
}
