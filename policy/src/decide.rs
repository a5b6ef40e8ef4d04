//! When a candidate plan is worth publishing.
//!
//! The gain is the drop in model imbalance on the estimated load, current
//! plan against candidate. Moving experts is not free, so the candidate is
//! charged `move_cost` per unit of *churn* (the fraction of all slots whose
//! expert must be loaded): `net = gain - move_cost * churn`.
//!
//! A Schmitt trigger keeps plans from flapping on noise: the trigger *arms*
//! when `net >= threshold` and stays armed until `net` falls below
//! `threshold - hysteresis`; a plan is published once it has been armed for
//! `confirm_cycles` consecutive cycles. Forced rebalances, the first plan of
//! a lineage and plans that route load to excluded GPUs skip the trigger.

use serde::Serialize;

/// Tunables (from the command line).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub threshold: f64,
    pub hysteresis: f64,
    pub confirm_cycles: u32,
    pub move_cost: f64,
}

/// What the planner knows about one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// Model imbalance of the current plan on the estimate (`None`: no plan).
    pub current: Option<f64>,
    /// Model imbalance of the candidate on the estimate.
    pub candidate: f64,
    /// Experts the candidate loads that the current plan did not have.
    pub migrations: usize,
    /// Slots in the whole plan (`L x N x G x S`).
    pub total_slots: usize,
    /// An operator asked for a plan now.
    pub forced: bool,
    /// The current plan sends load to GPUs that must be excluded.
    pub must_replace: bool,
    /// Armed cycles before this one.
    pub streak: u32,
}

/// Why a candidate was published or skipped (stored and exported as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Initial,
    Forced,
    ExcludedWorkers,
    GainPays,
    Confirming,
    BelowThreshold,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Initial => "initial",
            Reason::Forced => "forced",
            Reason::ExcludedWorkers => "excluded_workers",
            Reason::GainPays => "gain_pays",
            Reason::Confirming => "confirming",
            Reason::BelowThreshold => "below_threshold",
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    pub publish: bool,
    pub reason: Reason,
    /// `gain - move_cost * churn` (`None` without a current plan).
    pub net_gain: Option<f64>,
    /// Armed cycles including this one (0 after a publish or a disarm).
    pub streak: u32,
}

pub fn decide(e: &Evidence, t: &Thresholds) -> Verdict {
    let net_gain = e.current.map(|current| {
        let churn = e.migrations as f64 / e.total_slots.max(1) as f64;
        (current - e.candidate) - t.move_cost * churn
    });
    let publish = |reason| Verdict {
        publish: true,
        reason,
        net_gain,
        streak: 0,
    };
    if e.forced {
        return publish(Reason::Forced);
    }
    let Some(net) = net_gain else {
        return publish(Reason::Initial);
    };
    if e.must_replace {
        return publish(Reason::ExcludedWorkers);
    }
    let armed = net >= t.threshold || (e.streak > 0 && net >= t.threshold - t.hysteresis);
    if !armed {
        return Verdict {
            publish: false,
            reason: Reason::BelowThreshold,
            net_gain,
            streak: 0,
        };
    }
    let streak = e.streak.saturating_add(1);
    if streak >= t.confirm_cycles.max(1) {
        publish(Reason::GainPays)
    } else {
        Verdict {
            publish: false,
            reason: Reason::Confirming,
            net_gain,
            streak,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Thresholds = Thresholds {
        threshold: 0.02,
        hysteresis: 0.01,
        confirm_cycles: 2,
        move_cost: 0.1,
    };

    fn evidence(current: f64, candidate: f64, migrations: usize, streak: u32) -> Evidence {
        Evidence {
            current: Some(current),
            candidate,
            migrations,
            total_slots: 1000,
            forced: false,
            must_replace: false,
            streak,
        }
    }

    #[test]
    fn confirms_then_publishes_and_holds_in_the_band() {
        let first = decide(&evidence(1.10, 1.05, 0, 0), &T);
        assert_eq!(
            (first.publish, first.reason, first.streak),
            (false, Reason::Confirming, 1)
        );
        let second = decide(&evidence(1.10, 1.05, 0, first.streak), &T);
        assert_eq!((second.publish, second.reason), (true, Reason::GainPays));
        // Inside the band (0.01 <= net < 0.02) an armed trigger stays armed...
        assert!(decide(&evidence(1.065, 1.05, 0, 1), &T).publish);
        // ...but an unarmed one does not arm.
        assert_eq!(
            decide(&evidence(1.065, 1.05, 0, 0), &T).reason,
            Reason::BelowThreshold
        );
    }

    #[test]
    fn moves_must_pay() {
        // gain 0.05, churn 0.5 costs 0.05: net 0.
        let v = decide(&evidence(1.10, 1.05, 500, 5), &T);
        assert_eq!((v.publish, v.reason), (false, Reason::BelowThreshold));
        assert!(v.net_gain.unwrap().abs() < 1e-12);
    }

    #[test]
    fn forced_initial_and_exclusion_skip_the_trigger() {
        let mut e = evidence(1.0, 1.5, 1000, 0);
        e.forced = true;
        assert_eq!(decide(&e, &T).reason, Reason::Forced);
        e.forced = false;
        e.must_replace = true;
        assert_eq!(decide(&e, &T).reason, Reason::ExcludedWorkers);
        e.current = None;
        assert_eq!(decide(&e, &T).reason, Reason::Initial);
    }

    proptest! {
        #[test]
        fn never_publishes_below_the_band(current in 1.0f64..3.0, candidate in 1.0f64..3.0,
                                          migrations in 0usize..1000, streak in 0u32..5) {
            let v = decide(&evidence(current, candidate, migrations, streak), &T);
            let net = v.net_gain.unwrap();
            if net < T.threshold - T.hysteresis {
                prop_assert!(!v.publish);
                prop_assert_eq!(v.streak, 0);
            }
            if v.publish {
                prop_assert_eq!(v.streak, 0);
                prop_assert!(streak + 1 >= T.confirm_cycles);
            }
        }
    }
}
