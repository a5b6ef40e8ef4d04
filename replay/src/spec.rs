//! What to replay: policies as `NAME[:KEY=VALUE,...]` (one `--policy` each)
//! and re-plan intervals (`--interval 1,2,4,never`), parsed once into types
//! the replay trusts.
//!
//! | name | plans from | keys |
//! |---|---|---|
//! | `service` | [`ballast_policy::evaluate`], as `ballast serve` runs it | `threshold`, `hysteresis`, `confirm`, `move_cost`, `alpha`, `tolerance`, `split`, `solver`, `time_limit_ms` |
//! | `eplb` | DeepSeek's EPLB on the newest window | `mode` (`auto`, `global`) |
//! | `greedy`, `optimal` (and `-global`/`-hierarchical`) | the solver, fresh, on the newest window | `previous`, `split`, `tolerance`, `time_limit_ms` |
//! | `static` | the first plan, never changed | `planner` (`optimal`, `greedy`, `eplb`) |
//!
//! Every policy also takes `interval` (`N` or `never`), which overrides the
//! sweep for that policy.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use ballast_policy::Settings;
use ballast_solver::eplb::EplbPolicy;
use ballast_solver::{Policy, Split};
use thiserror::Error;

/// How often a run re-plans: after every `N`th window, or never after the
/// first plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    Every(NonZeroU32),
    Never,
}

impl Interval {
    pub const ONE: Interval = Interval::Every(NonZeroU32::MIN);

    /// The interval as a number of windows (`None`: never).
    pub fn windows(self) -> Option<u32> {
        match self {
            Interval::Every(n) => Some(n.get()),
            Interval::Never => None,
        }
    }

    /// Parses a comma-separated sweep (`1,2,4,never`), sorted, without
    /// repeats.
    pub fn parse_list(text: &str) -> Result<Vec<Interval>, SpecError> {
        let mut list = text
            .split(',')
            .map(|item| item.trim().parse())
            .collect::<Result<Vec<Interval>, _>>()?;
        list.sort();
        list.dedup();
        Ok(list)
    }
}

impl FromStr for Interval {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        if text == "never" {
            return Ok(Interval::Never);
        }
        text.parse::<NonZeroU32>()
            .map(Interval::Every)
            .map_err(|_| SpecError::Interval(text.to_owned()))
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interval::Every(n) => write!(f, "{n}"),
            Interval::Never => f.write_str("never"),
        }
    }
}

/// How a run makes each plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Planner {
    /// The service's policy: EWMA estimate, migration-aware candidate,
    /// publish only when the gain pays (Schmitt trigger).
    Service(Settings),
    /// DeepSeek's EPLB on the newest window.
    Eplb(EplbPolicy),
    /// The solver on the newest window; `previous` makes it migration-aware.
    Solver {
        policy: Policy,
        split: Split,
        previous: bool,
        balance_tolerance: f64,
        time_limit: Option<Duration>,
    },
}

impl Planner {
    /// True for DeepSeek's EPLB, the baseline the others are compared with.
    pub fn is_eplb(&self) -> bool {
        matches!(self, Planner::Eplb(_))
    }
}

/// One `--policy` argument, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    /// The argument as given, without spaces (`optimal:previous`): the run's
    /// name in reports.
    pub name: String,
    pub planner: Planner,
    /// Set by the policy itself (`static`, or `interval=`): the sweep does
    /// not apply.
    pub interval: Option<Interval>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    #[error("unknown policy `{0}` (known: service, eplb, static, greedy, optimal and their -global/-hierarchical forms)")]
    UnknownPolicy(String),
    #[error("policy `{policy}`: unknown setting `{key}` (known: {known})")]
    UnknownKey {
        policy: String,
        key: String,
        known: &'static str,
    },
    #[error("policy `{policy}`: setting `{key}` {problem}")]
    BadValue {
        policy: String,
        key: String,
        problem: String,
    },
    #[error("interval `{0}` is neither a positive number of windows nor `never`")]
    Interval(String),
}

const SERVICE_KEYS: &str =
    "threshold, hysteresis, confirm, move_cost, alpha, tolerance, split, solver, time_limit_ms, interval";
const EPLB_KEYS: &str = "mode, interval";
const SOLVER_KEYS: &str = "previous, split, tolerance, time_limit_ms, interval";
const STATIC_KEYS: &str = "planner";

impl FromStr for PolicySpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let (base, settings) = match text.split_once(':') {
            Some((base, rest)) => (base.trim(), rest),
            None => (text.trim(), ""),
        };
        let mut pairs = Vec::new();
        for item in settings.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, "true"));
            pairs.push((key.trim().to_owned(), value.trim().to_owned()));
        }
        let reader = Arguments {
            policy: base.to_owned(),
            pairs,
        };
        let name: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let mut spec = match base {
            "service" => reader.service()?,
            "eplb" => reader.eplb()?,
            "static" => reader.kept()?,
            other => match Policy::parse(other) {
                Some(policy) => reader.solver(policy)?,
                None => return Err(SpecError::UnknownPolicy(other.to_owned())),
            },
        };
        spec.name = name;
        Ok(spec)
    }
}

/// The `KEY=VALUE` pairs of one policy argument, consumed as they are read.
struct Arguments {
    policy: String,
    pairs: Vec<(String, String)>,
}

impl Arguments {
    fn take(&mut self, key: &str) -> Option<String> {
        let index = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(index).1)
    }

    fn parse<T: FromStr>(&mut self, key: &str, what: &str) -> Result<Option<T>, SpecError> {
        let Some(value) = self.take(key) else {
            return Ok(None);
        };
        value.parse().map(Some).map_err(|_| SpecError::BadValue {
            policy: self.policy.clone(),
            key: key.to_owned(),
            problem: format!("must be {what}, not `{value}`"),
        })
    }

    fn fraction(&mut self, key: &str, default: f64, upper: f64) -> Result<f64, SpecError> {
        let value = self.parse::<f64>(key, "a number")?.unwrap_or(default);
        if !(0.0..=upper).contains(&value) {
            return Err(self.bad(key, format!("must be in [0, {upper}], not {value}")));
        }
        Ok(value)
    }

    fn bad(&self, key: &str, problem: String) -> SpecError {
        SpecError::BadValue {
            policy: self.policy.clone(),
            key: key.to_owned(),
            problem,
        }
    }

    fn time_limit(&mut self) -> Result<Option<Duration>, SpecError> {
        match self.parse::<u64>("time_limit_ms", "a whole number of milliseconds")? {
            Some(0) => Err(self.bad("time_limit_ms", "must be positive".to_owned())),
            limit => Ok(limit.map(Duration::from_millis)),
        }
    }

    fn split(&mut self) -> Result<Split, SpecError> {
        Ok(self
            .parse::<Split>("split", "`even` or `weighted`")?
            .unwrap_or(Split::Even))
    }

    /// Finishes the argument: any key left over is unknown.
    fn finish(
        mut self,
        known: &'static str,
        planner: Planner,
        fixed: Option<Interval>,
    ) -> Result<PolicySpec, SpecError> {
        let interval = match fixed {
            Some(interval) => Some(interval),
            None if known.contains("interval") => {
                self.parse::<Interval>("interval", "a positive number of windows or `never`")?
            }
            None => None,
        };
        if let Some((key, _)) = self.pairs.first() {
            return Err(SpecError::UnknownKey {
                policy: self.policy,
                key: key.clone(),
                known,
            });
        }
        Ok(PolicySpec {
            name: self.policy,
            planner,
            interval,
        })
    }

    fn service(mut self) -> Result<PolicySpec, SpecError> {
        let defaults = Settings::default();
        let mut settings = defaults;
        let t = &mut settings.thresholds;
        t.threshold = self.fraction("threshold", defaults.thresholds.threshold, 1.0)?;
        t.hysteresis = self.fraction("hysteresis", defaults.thresholds.hysteresis, 1.0)?;
        t.move_cost = self.fraction("move_cost", defaults.thresholds.move_cost, 100.0)?;
        if let Some(confirm) = self.parse::<u32>("confirm", "a whole number of cycles")? {
            t.confirm_cycles = confirm;
        }
        if t.hysteresis > t.threshold {
            return Err(self.bad(
                "hysteresis",
                format!(
                    "({}) must not exceed threshold ({})",
                    t.hysteresis, t.threshold
                ),
            ));
        }
        settings.ewma_alpha = self.fraction("alpha", defaults.ewma_alpha, 1.0)?;
        if settings.ewma_alpha <= 0.0 {
            return Err(self.bad("alpha", "must be in (0, 1]".to_owned()));
        }
        settings.balance_tolerance = self.fraction("tolerance", defaults.balance_tolerance, 1.0)?;
        settings.split = self.split()?;
        if let Some(policy) =
            self.parse::<Policy>("solver", "a solver policy (optimal, greedy, ...)")?
        {
            settings.policy = policy;
        }
        settings.solve_time_limit = self.time_limit()?;
        self.finish(SERVICE_KEYS, Planner::Service(settings), None)
    }

    fn eplb(mut self) -> Result<PolicySpec, SpecError> {
        let mode = match self.take("mode").as_deref() {
            None | Some("auto") => EplbPolicy::Auto,
            Some("global") => EplbPolicy::Global,
            Some(other) => {
                return Err(self.bad("mode", format!("must be `auto` or `global`, not `{other}`")))
            }
        };
        self.finish(EPLB_KEYS, Planner::Eplb(mode), None)
    }

    fn solver(mut self, policy: Policy) -> Result<PolicySpec, SpecError> {
        let previous = self
            .parse::<bool>("previous", "`true` or `false`")?
            .unwrap_or(false);
        let split = self.split()?;
        let balance_tolerance = self.fraction(
            "tolerance",
            ballast_solver::planner::DEFAULT_BALANCE_TOLERANCE,
            1.0,
        )?;
        let time_limit = self.time_limit()?;
        self.finish(
            SOLVER_KEYS,
            Planner::Solver {
                policy,
                split,
                previous,
                balance_tolerance,
                time_limit,
            },
            None,
        )
    }

    fn kept(mut self) -> Result<PolicySpec, SpecError> {
        let planner = match self.take("planner").as_deref() {
            None | Some("optimal") => solver_planner(Policy::Optimal),
            Some("eplb") => Planner::Eplb(EplbPolicy::Auto),
            Some(other) => match Policy::parse(other) {
                Some(policy) => solver_planner(policy),
                None => {
                    return Err(self.bad(
                        "planner",
                        format!("must be `eplb` or a solver policy, not `{other}`"),
                    ))
                }
            },
        };
        self.finish(STATIC_KEYS, planner, Some(Interval::Never))
    }
}

fn solver_planner(policy: Policy) -> Planner {
    Planner::Solver {
        policy,
        split: Split::Even,
        previous: false,
        balance_tolerance: ballast_solver::planner::DEFAULT_BALANCE_TOLERANCE,
        time_limit: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> PolicySpec {
        text.parse().unwrap()
    }

    #[test]
    fn service_defaults_are_serves() {
        assert_eq!(
            spec("service").planner,
            Planner::Service(Settings::default())
        );
        let tuned = spec("service:threshold=0.02,hysteresis=0.01,confirm=1,alpha=1");
        let Planner::Service(settings) = tuned.planner else {
            panic!("not a service policy")
        };
        assert_eq!(settings.thresholds.threshold, 0.02);
        assert_eq!(settings.thresholds.confirm_cycles, 1);
        assert_eq!(settings.ewma_alpha, 1.0);
    }

    #[test]
    fn solver_policies_take_previous_and_split() {
        let s = spec("optimal:previous,split=weighted");
        assert_eq!(s.name, "optimal:previous,split=weighted");
        assert!(matches!(
            s.planner,
            Planner::Solver {
                previous: true,
                split: Split::Weighted,
                ..
            }
        ));
        assert!(matches!(
            spec("greedy-global").planner,
            Planner::Solver {
                policy: Policy::GreedyGlobal,
                previous: false,
                ..
            }
        ));
    }

    #[test]
    fn static_never_replans_and_eplb_takes_a_mode() {
        let s = spec("static:planner=eplb");
        assert_eq!(s.interval, Some(Interval::Never));
        assert!(s.planner.is_eplb());
        assert_eq!(
            spec("eplb:mode=global").planner,
            Planner::Eplb(EplbPolicy::Global)
        );
        assert_eq!(
            spec("eplb:interval=8").interval,
            Interval::parse_list("8").ok().map(|l| l[0])
        );
    }

    #[test]
    fn unknown_names_keys_and_values_are_refused_precisely() {
        let err = |text: &str| text.parse::<PolicySpec>().unwrap_err().to_string();
        assert!(err("lplb").contains("unknown policy `lplb`"));
        assert!(err("service:treshold=0.1").contains("unknown setting `treshold`"));
        assert!(err("optimal:split=uneven").contains("`split` must be"));
        assert!(err("service:threshold=-1").contains("must be in [0, 1]"));
        assert!(err("service:threshold=0.01,hysteresis=0.02").contains("must not exceed"));
        assert!(err("static:interval=2").contains("unknown setting `interval`"));
        assert!(err("eplb:interval=0").contains("`interval` must be"));
    }

    #[test]
    fn interval_lists_sort_and_dedup() {
        let list = Interval::parse_list("8, 1,never,2,1").unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["1", "2", "8", "never"]);
        assert!(Interval::parse_list("1,,2").is_err());
        assert!(Interval::parse_list("0").is_err());
    }
}
