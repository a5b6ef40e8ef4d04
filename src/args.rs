//! Command-line argument types that several commands share (`solve`,
//! `serve`), so a flag parses the same way wherever it appears.

use ballast_solver::{Policy, Split};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::ValueEnum;

/// `--split`, mirrored here because the solver crate knows nothing of clap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    Even,
    Weighted,
}

impl From<SplitArg> for Split {
    fn from(split: SplitArg) -> Self {
        match split {
            SplitArg::Even => Split::Even,
            SplitArg::Weighted => Split::Weighted,
        }
    }
}

/// `--policy`: accepts exactly the solver's policy names (and lists them in
/// `--help`).
pub fn policy_parser() -> impl TypedValueParser<Value = Policy> {
    PossibleValuesParser::new(Policy::ALL.map(Policy::name))
        .try_map(|name| Policy::parse(&name).ok_or("unknown policy"))
}
