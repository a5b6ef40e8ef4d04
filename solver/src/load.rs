//! Per-layer, per-expert load observed in a window.

use serde_json::Value;

use crate::error::ParseError;
use crate::topology::Topology;

/// `L × E` token counts, finite and non-negative, shaped for one topology,
/// with optional co-visit counts (`covisit[l][e][k]`: tokens that chose
/// expert `e` and some expert of group `k`; [`crate::covisit`] uses them).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadMatrix {
    num_experts: usize,
    values: Vec<f64>,
    covisit: Option<Covisit>,
}

/// `L × E × K` co-visit counts, row-major; every count is finite,
/// non-negative and at most its expert's load (a token that chose `e` is
/// counted at most once per group).
#[derive(Debug, Clone, PartialEq)]
struct Covisit {
    num_groups: usize,
    values: Vec<f64>,
}

/// Relative slack allowed when checking `covisit[l][e][k] <= load[l][e]`
/// (estimates are averages of windows and carry rounding).
const COVISIT_SLACK: f64 = 1e-9;

fn check_value(layer: usize, index: usize, value: f64) -> Result<f64, ParseError> {
    if !value.is_finite() {
        return Err(ParseError::entry(
            "load",
            layer,
            index,
            format!("{value} is not a finite number"),
        ));
    }
    if value < 0.0 {
        return Err(ParseError::entry(
            "load",
            layer,
            index,
            format!("{value} is negative"),
        ));
    }
    Ok(value)
}

impl LoadMatrix {
    /// Builds a load matrix from rows, checking it fits `topology`.
    pub fn new(rows: Vec<Vec<f64>>, topology: &Topology) -> Result<Self, ParseError> {
        check_layer_count(rows.len(), topology)?;
        let num_experts = topology.num_logical_experts();
        let mut values = Vec::with_capacity(rows.len() * num_experts);
        for (layer, row) in rows.into_iter().enumerate() {
            check_row_len(layer, row.len(), num_experts)?;
            for (index, v) in row.into_iter().enumerate() {
                values.push(check_value(layer, index, v)?);
            }
        }
        Ok(LoadMatrix {
            num_experts,
            values,
            covisit: None,
        })
    }

    /// Parses `load.json` (`{"load": [[E numbers] × L]}`).
    pub fn from_json(text: &str, topology: &Topology) -> Result<Self, ParseError> {
        let doc: Value = serde_json::from_str(text).map_err(|e| ParseError::Malformed {
            what: "load JSON",
            detail: e.to_string(),
        })?;
        let load = doc
            .get("load")
            .ok_or_else(|| ParseError::field("load", "missing"))?;
        let matrix = Self::from_json_value(load, topology)?;
        match doc.get("covisit") {
            Some(covisit) => matrix.with_covisit_json(covisit, topology),
            None => Ok(matrix),
        }
    }

    /// Adds co-visit counts (`[L][E][K]`), checked against `topology` and
    /// against the load: no count may exceed its expert's load.
    pub fn with_covisit(
        mut self,
        rows: Vec<Vec<Vec<f64>>>,
        topology: &Topology,
    ) -> Result<Self, ParseError> {
        let num_groups = topology.num_groups();
        if rows.len() != self.num_layers() {
            return Err(ParseError::field(
                "covisit",
                format!(
                    "has {} layers, topology has {}",
                    rows.len(),
                    self.num_layers()
                ),
            ));
        }
        let mut values = Vec::with_capacity(self.values.len() * num_groups);
        for (layer, experts) in rows.into_iter().enumerate() {
            if experts.len() != self.num_experts {
                return Err(ParseError::layer(
                    "covisit",
                    layer,
                    format!(
                        "has {} experts, topology has {}",
                        experts.len(),
                        self.num_experts
                    ),
                ));
            }
            for (expert, groups) in experts.into_iter().enumerate() {
                if groups.len() != num_groups {
                    return Err(ParseError::entry(
                        "covisit",
                        layer,
                        expert,
                        format!("has {} groups, topology has {num_groups}", groups.len()),
                    ));
                }
                let load = self.layer(layer)[expert];
                for (group, count) in groups.into_iter().enumerate() {
                    values.push(check_covisit(layer, expert, group, count, load)?);
                }
            }
        }
        self.covisit = Some(Covisit { num_groups, values });
        Ok(self)
    }

    fn with_covisit_json(self, covisit: &Value, topology: &Topology) -> Result<Self, ParseError> {
        let rows: Vec<Vec<Vec<f64>>> =
            serde_json::from_value(covisit.clone()).map_err(|e| ParseError::Malformed {
                what: "covisit",
                detail: format!("must be [layers][experts][groups] of numbers: {e}"),
            })?;
        self.with_covisit(rows, topology)
    }

    /// Drops the co-visit counts (for planners and scores that ignore them).
    pub fn without_covisit(mut self) -> Self {
        self.covisit = None;
        self
    }

    pub fn has_covisit(&self) -> bool {
        self.covisit.is_some()
    }

    /// One layer's co-visit counts, `E × K` row-major (`[e * K + k]`).
    pub fn covisit_layer(&self, layer: usize) -> Option<&[f64]> {
        self.covisit.as_ref().map(|c| {
            let width = self.num_experts * c.num_groups;
            &c.values[layer * width..(layer + 1) * width]
        })
    }

    /// Every co-visit count (`L × E × K`, row-major).
    pub fn covisit_values(&self) -> Option<&[f64]> {
        self.covisit.as_ref().map(|c| c.values.as_slice())
    }

    /// Co-visit counts as nested vectors (for serialization).
    pub fn covisit_rows(&self) -> Option<Vec<Vec<Vec<f64>>>> {
        let c = self.covisit.as_ref()?;
        Some(
            c.values
                .chunks_exact(self.num_experts * c.num_groups)
                .map(|layer| {
                    layer
                        .chunks_exact(c.num_groups)
                        .map(<[f64]>::to_vec)
                        .collect()
                })
                .collect(),
        )
    }

    /// `load.json`'s document: `load`, and `covisit` when carried.
    pub fn to_json_value(&self) -> Value {
        let mut doc = serde_json::json!({ "load": self.to_rows() });
        if let Some(covisit) = self.covisit_rows() {
            doc["covisit"] = serde_json::json!(covisit);
        }
        doc
    }

    /// Parses the `load` array of a load file or trace window.
    pub fn from_json_value(load: &Value, topology: &Topology) -> Result<Self, ParseError> {
        let rows = load
            .as_array()
            .ok_or_else(|| ParseError::field("load", "must be an array of layers"))?;
        check_layer_count(rows.len(), topology)?;
        let num_experts = topology.num_logical_experts();
        let mut values = Vec::with_capacity(rows.len() * num_experts);
        for (layer, row) in rows.iter().enumerate() {
            let row = row
                .as_array()
                .ok_or_else(|| ParseError::layer("load", layer, "must be an array of numbers"))?;
            check_row_len(layer, row.len(), num_experts)?;
            for (index, v) in row.iter().enumerate() {
                let v = v.as_f64().ok_or_else(|| {
                    ParseError::entry("load", layer, index, format!("{v} is not a number"))
                })?;
                values.push(check_value(layer, index, v)?);
            }
        }
        Ok(LoadMatrix {
            num_experts,
            values,
            covisit: None,
        })
    }

    /// Parses CSV: one row per layer, `E` numbers each, an optional header row.
    pub fn from_csv(text: &str, topology: &Topology) -> Result<Self, ParseError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(text.as_bytes());
        let num_experts = topology.num_logical_experts();
        let mut values = Vec::new();
        let mut layer = 0;
        for (line, record) in reader.records().enumerate() {
            let record = record.map_err(|e| ParseError::Malformed {
                what: "load CSV",
                detail: e.to_string(),
            })?;
            let is_header = line == 0
                && record
                    .iter()
                    .next()
                    .is_some_and(|f| f.parse::<f64>().is_err());
            if is_header || record.iter().all(str::is_empty) {
                continue;
            }
            check_row_len(layer, record.len(), num_experts)?;
            for (index, field) in record.iter().enumerate() {
                let v: f64 = field.parse().map_err(|_| {
                    ParseError::entry("load", layer, index, format!("`{field}` is not a number"))
                })?;
                values.push(check_value(layer, index, v)?);
            }
            layer += 1;
        }
        check_layer_count(layer, topology)?;
        Ok(LoadMatrix {
            num_experts,
            values,
            covisit: None,
        })
    }

    pub fn num_layers(&self) -> usize {
        self.values.len() / self.num_experts
    }

    pub fn num_experts(&self) -> usize {
        self.num_experts
    }

    /// One layer's per-expert load.
    pub fn layer(&self, layer: usize) -> &[f64] {
        &self.values[layer * self.num_experts..(layer + 1) * self.num_experts]
    }

    pub fn layers(&self) -> impl ExactSizeIterator<Item = &[f64]> {
        self.values.chunks_exact(self.num_experts)
    }

    /// Every value, layer by layer (`L × E`, row-major).
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Rows as nested vectors (for serialization).
    pub fn to_rows(&self) -> Vec<Vec<f64>> {
        self.layers().map(<[f64]>::to_vec).collect()
    }
}

fn check_covisit(
    layer: usize,
    expert: usize,
    group: usize,
    count: f64,
    load: f64,
) -> Result<f64, ParseError> {
    let at = |detail: String| ParseError::Malformed {
        what: "covisit",
        detail: format!("layer {layer} expert {expert} group {group}: {detail}"),
    };
    if !count.is_finite() || count < 0.0 {
        return Err(at(format!("{count} is not a finite non-negative number")));
    }
    if count > load * (1.0 + COVISIT_SLACK) + COVISIT_SLACK {
        return Err(at(format!(
            "{count} exceeds the expert's load {load} (a token is counted once per group)"
        )));
    }
    Ok(count.min(load))
}

fn check_layer_count(found: usize, topology: &Topology) -> Result<(), ParseError> {
    if found != topology.num_layers() {
        return Err(ParseError::field(
            "load",
            format!("has {found} layers, topology has {}", topology.num_layers()),
        ));
    }
    Ok(())
}

fn check_row_len(layer: usize, found: usize, expected: usize) -> Result<(), ParseError> {
    if found != expected {
        return Err(ParseError::layer(
            "load",
            layer,
            format!("has {found} experts, topology has {expected}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        Topology::from_json(
            r#"{"num_layers": 2, "num_logical_experts": 4, "num_groups": 2,
                "num_nodes": 1, "gpus_per_node": 2, "slots_per_gpu": 3}"#,
        )
        .unwrap()
    }

    #[test]
    fn json_and_csv_agree() {
        let t = topo();
        let a = LoadMatrix::from_json(r#"{"load": [[1,2,3,4],[5,6,7,8.5]]}"#, &t).unwrap();
        let b = LoadMatrix::from_csv("e0,e1,e2,e3\n1,2,3,4\n5, 6, 7, 8.5\n", &t).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.layer(1), &[5.0, 6.0, 7.0, 8.5]);
    }

    #[test]
    fn errors_name_layer_and_index() {
        let t = topo();
        let e = LoadMatrix::from_json(r#"{"load": [[1,2,3,4],[5,-6,7,8]]}"#, &t).unwrap_err();
        assert_eq!(e.to_string(), "`load` layer 1 index 1: -6 is negative");
        let e = LoadMatrix::from_json(r#"{"load": [[1,2,3],[5,6,7,8]]}"#, &t).unwrap_err();
        assert!(e.to_string().contains("layer 0"), "{e}");
        let e = LoadMatrix::from_csv("1,2,3,4\n1,nan,3,4\n", &t).unwrap_err();
        assert!(e.to_string().contains("layer 1 index 1"), "{e}");
        let e = LoadMatrix::from_json(r#"{"load": [[1,2,3,4]]}"#, &t).unwrap_err();
        assert!(e.to_string().contains("1 layers"), "{e}");
        let e = LoadMatrix::from_json(r#"{"load": [[1,"x",3,4],[1,2,3,4]]}"#, &t).unwrap_err();
        assert!(e.to_string().contains("index 1"), "{e}");
    }

    #[test]
    fn covisit_round_trips_and_is_checked_against_the_load() {
        let t = topo();
        let text = r#"{"load": [[4,2,0,1],[1,1,1,1]],
            "covisit": [[[4,1],[2,2],[0,0],[1,1]], [[1,0],[1,1],[0,1],[1,1]]]}"#;
        let a = LoadMatrix::from_json(text, &t).unwrap();
        assert!(a.has_covisit());
        assert_eq!(
            a.covisit_layer(0).unwrap(),
            &[4.0, 1.0, 2.0, 2.0, 0.0, 0.0, 1.0, 1.0]
        );
        let again = LoadMatrix::from_json(&a.to_json_value().to_string(), &t).unwrap();
        assert_eq!(a, again);
        assert!(!a.clone().without_covisit().has_covisit());

        let too_many = r#"{"load": [[4,2,0,1],[1,1,1,1]],
            "covisit": [[[4,1],[2,3],[0,0],[1,1]], [[1,0],[1,1],[0,1],[1,1]]]}"#;
        let e = LoadMatrix::from_json(too_many, &t).unwrap_err().to_string();
        assert!(
            e.contains("layer 0 expert 1 group 1") && e.contains("exceeds"),
            "{e}"
        );
        let ragged = r#"{"load": [[4,2,0,1],[1,1,1,1]],
            "covisit": [[[4,1],[2,2],[0,0],[1]], [[1,0],[1,1],[0,1],[1,1]]]}"#;
        let e = LoadMatrix::from_json(ragged, &t).unwrap_err().to_string();
        assert!(e.contains("1 groups"), "{e}");
    }
}
