//! Per-layer, per-expert load observed in a window.

use serde_json::Value;

use crate::error::ParseError;
use crate::topology::Topology;

/// `L × E` token counts, finite and non-negative, shaped for one topology.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadMatrix {
    num_experts: usize,
    values: Vec<f64>,
}

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
        Self::from_json_value(load, topology)
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
}
