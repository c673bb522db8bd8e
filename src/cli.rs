//! A minimal command-line parser shared by the example binaries, so they stay thin.
//!
//! Understands `--flag`, `--key value`, `--key=value` and positional words.

use std::collections::BTreeMap;
use std::str::FromStr;

/// Parsed arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    positional: Vec<String>,
    options: BTreeMap<String, Option<String>>,
}

impl Args {
    /// Parses the process arguments (without the program name). `switches` lists the options
    /// that take no value.
    pub fn from_env(switches: &[&str]) -> Args {
        Args::parse(std::env::args().skip(1), switches)
    }

    /// Parses `args`; `switches` lists the options that take no value.
    pub fn parse<I: IntoIterator<Item = String>>(args: I, switches: &[&str]) -> Args {
        let mut out = Args::default();
        let mut it = args.into_iter().peekable();
        while let Some(a) = it.next() {
            if let Some(name) = a.strip_prefix("--") {
                if let Some((k, v)) = name.split_once('=') {
                    out.options.insert(k.to_string(), Some(v.to_string()));
                } else if switches.contains(&name) {
                    out.options.insert(name.to_string(), None);
                } else {
                    let value = it.next_if(|v| !v.starts_with("--"));
                    out.options.insert(name.to_string(), value);
                }
            } else {
                out.positional.push(a);
            }
        }
        out
    }

    /// The positional words, in order.
    pub fn positional(&self) -> &[String] {
        &self.positional
    }

    /// Whether `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.options.contains_key(name)
    }

    /// The value of `--name`, if given with one.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options.get(name).and_then(|v| v.as_deref())
    }

    /// The value of `--name` parsed as `T`; an error message names the option.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.value(name)
            .map(|v| v.parse::<T>().map_err(|e| format!("--{name} {v:?}: {e}")))
            .transpose()
    }

    /// Like [`Args::get`] but required.
    pub fn require<T: FromStr>(&self, name: &str) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)?.ok_or_else(|| format!("--{name} is required"))
    }

    /// Options given that are not in `known` (to reject typos).
    pub fn unknown(&self, known: &[&str]) -> Vec<String> {
        self.options.keys().filter(|k| !known.contains(&k.as_str())).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mixed_forms() {
        let a = Args::parse(
            ["stats", "--celeba", "d", "--json", "--plot=x.png", "--epochs", "3"].map(String::from),
            &["json"],
        );
        assert_eq!(a.positional(), ["stats"]);
        assert_eq!(a.value("celeba"), Some("d"));
        assert!(a.flag("json"));
        assert_eq!(a.value("plot"), Some("x.png"));
        assert_eq!(a.require::<u32>("epochs"), Ok(3));
        assert!(a.require::<u32>("celeba").is_err());
        assert!(a.require::<u32>("missing").unwrap_err().contains("--missing"));
        assert_eq!(a.unknown(&["celeba", "json", "plot"]), vec!["epochs".to_string()]);
    }
}
