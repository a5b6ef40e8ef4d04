//! Command-line argument types that several commands share (`solve`,
//! `serve`), so a flag parses the same way wherever it appears. The solver
//! owns the names; these parsers only teach clap to list and accept them.

use ballast_solver::{Policy, Split};
use clap::builder::{PossibleValuesParser, TypedValueParser};

/// `--policy`: exactly the solver's policy names (listed in `--help`).
pub fn policy_parser() -> impl TypedValueParser<Value = Policy> {
    PossibleValuesParser::new(Policy::ALL.map(Policy::name))
        .try_map(|name| Policy::parse(&name).ok_or("unknown policy"))
}

/// `--split`: exactly the solver's split names (listed in `--help`).
pub fn split_parser() -> impl TypedValueParser<Value = Split> {
    PossibleValuesParser::new(Split::ALL.map(Split::name))
        .try_map(|name| Split::parse(&name).ok_or("unknown split"))
}
