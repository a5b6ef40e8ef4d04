//! A placement plan: which logical expert each physical slot holds, per layer.

use serde_json::{json, Value};

use crate::error::ParseError;
use crate::tolerance;
use crate::topology::Topology;

/// A valid plan for one topology: `L` layers of `P = N*G*S` slots, each slot
/// holding an expert in `0..E`, every expert placed at least once per layer.
/// With `replica_share`, each expert's shares are non-negative and sum to 1.
/// With `replica_scope`, each slot says which of its expert's tokens it may
/// take: [`ANY_TOKEN`], or node `n` (the slot's own node) for tokens that
/// already visit `n` (co-visit replicas, see [`crate::covisit`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    phy2log: Vec<Vec<u32>>,
    replica_share: Option<Vec<Vec<f64>>>,
    replica_scope: Option<Vec<Vec<i64>>>,
}

/// `replica_scope` of a slot that may take any token of its expert.
pub const ANY_TOKEN: i64 = -1;

impl Plan {
    /// Checks `phy2log` (and optional shares) against `topology`.
    pub fn new(
        phy2log: Vec<Vec<u32>>,
        replica_share: Option<Vec<Vec<f64>>>,
        topology: &Topology,
    ) -> Result<Self, ParseError> {
        check_shape(
            "phy2log",
            phy2log.len(),
            phy2log.iter().map(Vec::len),
            topology,
        )?;
        let num_experts = topology.num_logical_experts();
        for (layer, row) in phy2log.iter().enumerate() {
            let mut placed = vec![false; num_experts];
            for (slot, &expert) in row.iter().enumerate() {
                let e = expert as usize;
                if e >= num_experts {
                    return Err(ParseError::entry(
                        "phy2log",
                        layer,
                        slot,
                        format!("unknown expert {expert} (the model has {num_experts})"),
                    ));
                }
                placed[e] = true;
            }
            if let Some(missing) = placed.iter().position(|p| !p) {
                return Err(ParseError::layer(
                    "phy2log",
                    layer,
                    format!("expert {missing} has no slot"),
                ));
            }
        }
        if let Some(shares) = &replica_share {
            check_shape(
                "replica_share",
                shares.len(),
                shares.iter().map(Vec::len),
                topology,
            )?;
            for (layer, (row, experts)) in shares.iter().zip(&phy2log).enumerate() {
                let mut sums = vec![0.0; num_experts];
                for (slot, (&share, &expert)) in row.iter().zip(experts).enumerate() {
                    if !(share.is_finite() && (0.0..=1.0 + tolerance::SHARE_SUM).contains(&share)) {
                        return Err(ParseError::entry(
                            "replica_share",
                            layer,
                            slot,
                            format!("{share} is not a fraction in [0, 1]"),
                        ));
                    }
                    sums[expert as usize] += share;
                }
                if let Some((e, sum)) = sums
                    .iter()
                    .enumerate()
                    .find(|(_, s)| (**s - 1.0).abs() > tolerance::SHARE_SUM)
                {
                    return Err(ParseError::layer(
                        "replica_share",
                        layer,
                        format!("shares of expert {e} sum to {sum}, not 1"),
                    ));
                }
            }
        }
        Ok(Plan {
            phy2log,
            replica_share,
            replica_scope: None,
        })
    }

    /// Adds `replica_scope` (one entry per slot): [`ANY_TOKEN`] or the
    /// slot's own node.
    pub fn with_scope(
        mut self,
        scope: Vec<Vec<i64>>,
        topology: &Topology,
    ) -> Result<Self, ParseError> {
        check_shape(
            "replica_scope",
            scope.len(),
            scope.iter().map(Vec::len),
            topology,
        )?;
        for (layer, row) in scope.iter().enumerate() {
            for (slot, &node) in row.iter().enumerate() {
                let own = topology.node_of_gpu(topology.gpu_of_slot(slot)) as i64;
                if node != ANY_TOKEN && node != own {
                    return Err(ParseError::entry(
                        "replica_scope",
                        layer,
                        slot,
                        format!(
                            "{node} is neither {ANY_TOKEN} (any token) nor the slot's node {own}"
                        ),
                    ));
                }
            }
        }
        // A plan whose every slot takes any token is a plan without scope.
        self.replica_scope = scope
            .iter()
            .any(|row| row.iter().any(|&n| n != ANY_TOKEN))
            .then_some(scope);
        Ok(self)
    }

    /// The engines' default layout, in force before any plan is applied:
    /// every layer is [`linear_row`] (slot `p` holds expert `p mod E`).
    pub fn linear(topology: &Topology) -> Self {
        Plan {
            // Valid by the topology's invariants: at least `E` slots, so
            // every expert gets one.
            phy2log: vec![linear_row(topology); topology.num_layers()],
            replica_share: None,
            replica_scope: None,
        }
    }

    /// Parses `plan.json`; `log2phy`, `logcnt`, `stats` and other extra
    /// fields are ignored (they are derived or informational).
    pub fn from_json(text: &str, topology: &Topology) -> Result<Self, ParseError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| ParseError::Malformed {
            what: "plan JSON",
            detail: e.to_string(),
        })?;
        let phy2log = doc
            .get("phy2log")
            .or_else(|| doc.get("physical_to_logical_map"))
            .ok_or_else(|| ParseError::field("phy2log", "missing"))?;
        let phy2log = parse_rows("phy2log", phy2log, |layer, index, v| {
            v.as_u64()
                .filter(|&x| x <= u32::MAX as u64)
                .map(|x| x as u32)
                .ok_or_else(|| {
                    ParseError::entry("phy2log", layer, index, format!("{v} is not an expert id"))
                })
        })?;
        let replica_share = match doc.get("replica_share") {
            None | Some(Value::Null) => None,
            Some(shares) => Some(parse_rows("replica_share", shares, |layer, index, v| {
                v.as_f64().ok_or_else(|| {
                    ParseError::entry(
                        "replica_share",
                        layer,
                        index,
                        format!("{v} is not a number"),
                    )
                })
            })?),
        };
        let plan = Self::new(phy2log, replica_share, topology)?;
        match doc.get("replica_scope") {
            None | Some(Value::Null) => Ok(plan),
            Some(scope) => {
                let scope = parse_rows("replica_scope", scope, |layer, index, v| {
                    v.as_i64().ok_or_else(|| {
                        ParseError::entry(
                            "replica_scope",
                            layer,
                            index,
                            format!("{v} is not a node id or -1"),
                        )
                    })
                })?;
                plan.with_scope(scope, topology)
            }
        }
    }

    pub fn num_layers(&self) -> usize {
        self.phy2log.len()
    }

    /// The logical expert of every slot of one layer.
    pub fn layer(&self, layer: usize) -> &[u32] {
        &self.phy2log[layer]
    }

    pub fn phy2log(&self) -> &[Vec<u32>] {
        &self.phy2log
    }

    pub fn replica_share(&self) -> Option<&[Vec<f64>]> {
        self.replica_share.as_deref()
    }

    /// Per slot: [`ANY_TOKEN`] or the node whose visitors it serves; `None`
    /// when every slot takes any token.
    pub fn replica_scope(&self) -> Option<&[Vec<i64>]> {
        self.replica_scope.as_deref()
    }

    /// Drops `replica_scope` (for formats that cannot say it).
    pub fn without_scope(mut self) -> Self {
        self.replica_scope = None;
        self
    }

    /// The share of its expert's tokens slot `slot` of `layer` takes.
    /// Without explicit shares, tokens split evenly among replicas.
    pub fn layer_shares(&self, layer: usize, num_experts: usize) -> Vec<f64> {
        match &self.replica_share {
            Some(shares) => shares[layer].clone(),
            None => {
                let counts = replica_counts(&self.phy2log[layer], num_experts);
                self.phy2log[layer]
                    .iter()
                    .map(|&e| 1.0 / counts[e as usize] as f64)
                    .collect()
            }
        }
    }

    /// The tokens one GPU's slots processed (`slot_load`, `L × S` values,
    /// row-major: what a worker measures), credited to the logical experts
    /// its slots held under this plan: `L × E` values, row-major.
    pub fn logical_load_of_gpu(
        &self,
        topology: &Topology,
        gpu: usize,
        slot_load: &[f64],
    ) -> Vec<f64> {
        let (e, s) = (topology.num_logical_experts(), topology.slots_per_gpu());
        let first_slot = gpu * s;
        let mut logical = vec![0.0; topology.num_layers() * e];
        for (layer, row) in slot_load.chunks_exact(s).enumerate() {
            let experts = &self.phy2log[layer][first_slot..first_slot + s];
            for (&expert, &tokens) in experts.iter().zip(row) {
                logical[layer * e + expert as usize] += tokens;
            }
        }
        logical
    }

    /// `logcnt[l][e]`: how many replicas expert `e` has in layer `l`.
    pub fn logcnt(&self, num_experts: usize) -> Vec<Vec<u32>> {
        self.phy2log
            .iter()
            .map(|row| replica_counts(row, num_experts))
            .collect()
    }

    /// `log2phy[l][e]`: the slots of expert `e`, padded with -1 to the
    /// largest replica count of the plan (the EPLB / vLLM layout).
    pub fn log2phy(&self, num_experts: usize) -> Vec<Vec<Vec<i64>>> {
        let width = self
            .logcnt(num_experts)
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(1) as usize;
        self.phy2log
            .iter()
            .map(|row| {
                let mut table = vec![Vec::with_capacity(width); num_experts];
                for (slot, &e) in row.iter().enumerate() {
                    table[e as usize].push(slot as i64);
                }
                for slots in &mut table {
                    slots.resize(width, -1);
                }
                table
            })
            .collect()
    }

    /// The plan as a `plan.json` document (with derived `log2phy`/`logcnt`);
    /// callers add `stats`, `version` and the like.
    pub fn to_document(&self, num_experts: usize) -> serde_json::Map<String, Value> {
        let mut doc = self.to_core_document();
        doc.insert("log2phy".into(), json!(self.log2phy(num_experts)));
        doc.insert("logcnt".into(), json!(self.logcnt(num_experts)));
        doc
    }

    /// `plan.json` without the derived fields: `phy2log` and, when weighted,
    /// `replica_share` (a tenth of the size at decode scale).
    pub fn to_core_document(&self) -> serde_json::Map<String, Value> {
        let mut doc = serde_json::Map::new();
        doc.insert("phy2log".into(), json!(self.phy2log));
        if let Some(shares) = &self.replica_share {
            doc.insert("replica_share".into(), json!(shares));
        }
        if let Some(scope) = &self.replica_scope {
            doc.insert("replica_scope".into(), json!(scope));
        }
        doc
    }
}

/// One layer of [`Plan::linear`]: slot `p` holds expert `p mod E`, so the
/// experts are dealt out round-robin and every one of them is placed.
pub fn linear_row(topology: &Topology) -> Vec<u32> {
    let experts = topology.num_logical_experts();
    (0..topology.num_slots())
        .map(|p| (p % experts) as u32)
        .collect()
}

/// Replica count of each expert in one layer's `phy2log` row.
pub fn replica_counts(row: &[u32], num_experts: usize) -> Vec<u32> {
    let mut counts = vec![0u32; num_experts];
    for &e in row {
        counts[e as usize] += 1;
    }
    counts
}

fn check_shape(
    field: &'static str,
    layers: usize,
    mut lengths: impl Iterator<Item = usize>,
    topology: &Topology,
) -> Result<(), ParseError> {
    if layers != topology.num_layers() {
        return Err(ParseError::field(
            field,
            format!(
                "has {layers} layers, topology has {}",
                topology.num_layers()
            ),
        ));
    }
    let slots = topology.num_slots();
    if let Some((layer, len)) = lengths.by_ref().enumerate().find(|(_, len)| *len != slots) {
        return Err(ParseError::layer(
            field,
            layer,
            format!("has {len} slots, topology has {slots}"),
        ));
    }
    Ok(())
}

fn parse_rows<T>(
    field: &'static str,
    value: &Value,
    parse: impl Fn(usize, usize, &Value) -> Result<T, ParseError>,
) -> Result<Vec<Vec<T>>, ParseError> {
    let rows = value
        .as_array()
        .ok_or_else(|| ParseError::field(field, "must be an array of layers"))?;
    rows.iter()
        .enumerate()
        .map(|(layer, row)| {
            let row = row
                .as_array()
                .ok_or_else(|| ParseError::layer(field, layer, "must be an array"))?;
            row.iter()
                .enumerate()
                .map(|(index, v)| parse(layer, index, v))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 1, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap()
    }

    #[test]
    fn derives_log2phy_and_logcnt() {
        let p = Plan::from_json(r#"{"phy2log": [[0,1,2,3,0,0]]}"#, &topo()).unwrap();
        assert_eq!(p.logcnt(4), vec![vec![3, 1, 1, 1]]);
        assert_eq!(p.log2phy(4)[0][0], vec![0, 4, 5]);
        assert_eq!(p.log2phy(4)[0][3], vec![3, -1, -1]);
        let shares = p.layer_shares(0, 4);
        assert!((shares[0] - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(shares[1], 1.0);
    }

    #[test]
    fn linear_plan_deals_experts_round_robin() {
        let t = topo();
        let linear = Plan::linear(&t);
        assert_eq!(linear.phy2log(), &[vec![0, 1, 2, 3, 0, 1]]);
        assert_eq!(linear.replica_share(), None);
        // What `Plan::new` would build from the same rows.
        assert_eq!(Plan::new(vec![linear_row(&t)], None, &t).unwrap(), linear);
    }

    #[test]
    fn rejects_bad_plans() {
        let t = topo();
        let e = Plan::from_json(r#"{"phy2log": [[0,1,2,9,0,0]]}"#, &t).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`phy2log` layer 0 index 3: unknown expert 9 (the model has 4)"
        );
        let e = Plan::from_json(r#"{"phy2log": [[0,1,2,0,0,0]]}"#, &t).unwrap_err();
        assert!(e.to_string().contains("expert 3 has no slot"), "{e}");
        let e = Plan::from_json(r#"{"phy2log": [[0,1,2,3,0]]}"#, &t).unwrap_err();
        assert!(e.to_string().contains("5 slots"), "{e}");
        let e = Plan::from_json(
            r#"{"phy2log": [[0,1,2,3,0,0]], "replica_share": [[0.5,1,1,1,0.5,0.5]]}"#,
            &t,
        )
        .unwrap_err();
        assert!(e.to_string().contains("expert 0 sum to 1.5"), "{e}");
    }

    #[test]
    fn a_gpus_slot_load_is_credited_to_the_experts_it_held() {
        let t = Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 1,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap();
        let plan = Plan::new(
            vec![vec![0, 1, 1, 2, 3, 0], vec![3, 2, 1, 0, 0, 0]],
            None,
            &t,
        )
        .unwrap();
        let logical = plan.logical_load_of_gpu(&t, 1, &[5.0, 6.0, 7.0, 1.0, 2.0, 3.0]);
        assert_eq!(logical, vec![7.0, 0.0, 5.0, 6.0, 6.0, 0.0, 0.0, 0.0]);
    }
}
