//! A topology as the service accepts it: `topology.json` (SPEC) parsed
//! strictly and held to [`limits`] before anything is allocated for it.
//!
//! The solver's own parser is lenient on purpose (SPEC files may carry extra
//! fields, and `ballast solve` plans whatever fits in memory). The service
//! is not: a typo'd field name (`gpu_speeds`) must not silently mean
//! "uniform speed", and one `PUT` must not be able to make it allocate
//! gigabytes (a `num_nodes` of 500 million) or answer `GET .../workers` with
//! a hundred megabytes.

use ballast_protocol::integer;
use ballast_protocol::telemetry::MAX_LOAD_VALUES;
use ballast_solver::{Topology, TopologySpec};
use serde::{Deserialize, Deserializer};
use thiserror::Error;

/// The largest cluster the service plans. DeepSeek-V3/R1 (58 MoE layers,
/// 256 experts in 8 groups, 4 x 8 GPUs for prefill and 40 x 8 for decode,
/// 9 slots a GPU at most) sits one to two orders of magnitude inside every
/// limit; the limits exist so that a single request can cost at most a few
/// megabytes and a few hundred milliseconds, not to predict model sizes.
pub mod limits {
    use super::MAX_LOAD_VALUES;

    /// MoE layers (DeepSeek-V3: 58).
    pub const LAYERS: usize = 1024;
    /// Logical experts per layer (DeepSeek-V3: 256; the finest-grained
    /// public MoE models have a few thousand).
    pub const EXPERTS: usize = 16_384;
    /// Expert groups (DeepSeek-V3: 8).
    pub const GROUPS: usize = 1024;
    /// Nodes (DeepSeek-V3 decode: 40).
    pub const NODES: usize = 1024;
    /// GPUs per node (8 on HGX; 72 when an NVL72 rack is one node).
    pub const GPUS_PER_NODE: usize = 128;
    /// GPUs in all, i.e. workers (DeepSeek-V3 decode: 320): also bounds
    /// `GET .../workers` to about a megabyte.
    pub const GPUS: usize = 4096;
    /// Slots per GPU (DeepSeek-V3 prefill: 9).
    pub const SLOTS_PER_GPU: usize = 1024;
    /// Physical slots in all (DeepSeek-V3: 288 or 320).
    pub const SLOTS: usize = 262_144;
    /// `L x E`, the values of one load window (DeepSeek-V3: 14,848): one
    /// window stays under 8 MB in memory and 32 MB as JSON.
    pub const LOAD_VALUES: usize = MAX_LOAD_VALUES;
    /// `L x N*G*S`, the entries of one plan (DeepSeek-V3: 18,560), which
    /// the planner builds, stores and serves on every publish.
    pub const PLAN_ENTRIES: usize = 1 << 22;
    /// Dense layers before the first MoE layer (DeepSeek-V3: 3): engine
    /// exports write a row for each.
    pub const DENSE_LAYERS: usize = LAYERS;
    /// MTP layers after the hidden ones (DeepSeek-V3: 1): TensorRT-LLM
    /// exports write a row for each.
    pub const MTP_LAYERS: usize = 16;
}

/// Why a topology body was refused; every message names the field.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TopologyError {
    #[error("malformed topology JSON: {0}")]
    Malformed(String),
    #[error("field `{field}`: {value} is above the limit of {limit} ({what})")]
    TooLarge {
        field: &'static str,
        value: u128,
        limit: usize,
        what: &'static str,
    },
    #[error("field `{0}`: leave it out rather than send null")]
    Null(&'static str),
    #[error(transparent)]
    Invalid(#[from] ballast_solver::ParseError),
}

impl TopologyError {
    /// True when the body is not a topology document at all (bad JSON, an
    /// unknown field, a `null`), as opposed to a well-formed document the
    /// service refuses (limits, counts that do not fit together).
    pub fn is_malformed(&self) -> bool {
        matches!(self, TopologyError::Malformed(_) | TopologyError::Null(_))
    }
}

/// The body of `PUT /v1/clusters/{cluster}`: the SPEC's fields and no
/// others. Optional fields may be left out but not sent as `null` (the
/// OpenAPI document types them as an array and integers, not nullable).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyBody {
    #[serde(deserialize_with = "integer::i64")]
    num_layers: i64,
    #[serde(deserialize_with = "integer::i64")]
    num_logical_experts: i64,
    #[serde(deserialize_with = "integer::i64")]
    num_groups: i64,
    #[serde(deserialize_with = "integer::i64")]
    num_nodes: i64,
    #[serde(deserialize_with = "integer::i64")]
    gpus_per_node: i64,
    #[serde(deserialize_with = "integer::i64")]
    slots_per_gpu: i64,
    #[serde(default, deserialize_with = "nullable")]
    gpu_speed: Option<Option<Vec<f64>>>,
    #[serde(default, deserialize_with = "nullable_integer")]
    expert_bytes: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable_integer")]
    num_hidden_layers: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable_integer")]
    first_moe_layer: Option<Option<i64>>,
    #[serde(default, deserialize_with = "nullable_integer")]
    mtp_layers: Option<Option<i64>>,
}

/// An optional field that tells "left out" (`None`) from `null`
/// (`Some(None)`), so that a `null` can be refused by name.
fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// [`nullable`] for integers, `395.0` included (JSON Schema's integers).
fn nullable_integer<'de, D>(deserializer: D) -> Result<Option<Option<i64>>, D::Error>
where
    D: Deserializer<'de>,
{
    integer::option_i64(deserializer).map(Some)
}

/// The value of an optional field; `null` is refused.
fn not_null<T>(field: &'static str, value: Option<Option<T>>) -> Result<Option<T>, TopologyError> {
    match value {
        Some(None) => Err(TopologyError::Null(field)),
        Some(Some(v)) => Ok(Some(v)),
        None => Ok(None),
    }
}

/// Parses a topology body and checks it against [`limits`], then against
/// the solver's own rules.
pub fn parse_topology(body: &[u8]) -> Result<Topology, TopologyError> {
    // `gpu_speed` is read before the limits are checked; the route's body
    // limit bounds it.
    let body: TopologyBody =
        serde_json::from_slice(body).map_err(|e| TopologyError::Malformed(e.to_string()))?;
    check_limits(&body, body.gpu_speed.as_ref().and_then(Option::as_deref))?;
    let gpu_speed = not_null("gpu_speed", body.gpu_speed)?;
    let expert_bytes = not_null("expert_bytes", body.expert_bytes)?;
    let num_hidden_layers = not_null("num_hidden_layers", body.num_hidden_layers)?;
    let first_moe_layer = not_null("first_moe_layer", body.first_moe_layer)?;
    let mtp_layers = not_null("mtp_layers", body.mtp_layers)?;
    Ok(Topology::new(TopologySpec {
        num_layers: body.num_layers,
        num_logical_experts: body.num_logical_experts,
        num_groups: body.num_groups,
        num_nodes: body.num_nodes,
        gpus_per_node: body.gpus_per_node,
        slots_per_gpu: body.slots_per_gpu,
        gpu_speed,
        expert_bytes,
        num_hidden_layers,
        first_moe_layer,
        mtp_layers,
    })?)
}

fn check_limits(t: &TopologyBody, gpu_speed: Option<&[f64]>) -> Result<(), TopologyError> {
    // Negative and zero counts are the solver's to refuse; as u128 the
    // products below cannot overflow.
    let n = |v: i64| u128::try_from(v).unwrap_or(0);
    let given = |v: &Option<Option<i64>>| v.flatten().map_or(0, n);
    let at_most = |field, value: u128, limit: usize, what| {
        if value > limit as u128 {
            Err(TopologyError::TooLarge {
                field,
                value,
                limit,
                what,
            })
        } else {
            Ok(())
        }
    };
    at_most("num_layers", n(t.num_layers), limits::LAYERS, "MoE layers")?;
    at_most(
        "first_moe_layer",
        given(&t.first_moe_layer),
        limits::DENSE_LAYERS,
        "dense layers",
    )?;
    at_most(
        "num_hidden_layers",
        given(&t.num_hidden_layers),
        limits::DENSE_LAYERS + limits::LAYERS,
        "hidden layers",
    )?;
    at_most(
        "mtp_layers",
        given(&t.mtp_layers),
        limits::MTP_LAYERS,
        "MTP layers",
    )?;
    at_most(
        "num_logical_experts",
        n(t.num_logical_experts),
        limits::EXPERTS,
        "experts per layer",
    )?;
    at_most(
        "num_groups",
        n(t.num_groups),
        limits::GROUPS,
        "expert groups",
    )?;
    at_most("num_nodes", n(t.num_nodes), limits::NODES, "nodes")?;
    at_most(
        "gpus_per_node",
        n(t.gpus_per_node),
        limits::GPUS_PER_NODE,
        "GPUs per node",
    )?;
    at_most(
        "slots_per_gpu",
        n(t.slots_per_gpu),
        limits::SLOTS_PER_GPU,
        "slots per GPU",
    )?;
    let gpus = n(t.num_nodes) * n(t.gpus_per_node);
    at_most(
        "gpus_per_node",
        gpus,
        limits::GPUS,
        "GPUs in all, num_nodes x gpus_per_node",
    )?;
    let slots = gpus * n(t.slots_per_gpu);
    at_most(
        "slots_per_gpu",
        slots,
        limits::SLOTS,
        "slots in all, num_nodes x gpus_per_node x slots_per_gpu",
    )?;
    at_most(
        "num_logical_experts",
        n(t.num_layers) * n(t.num_logical_experts),
        limits::LOAD_VALUES,
        "load values per window, num_layers x num_logical_experts",
    )?;
    at_most(
        "num_layers",
        n(t.num_layers) * slots,
        limits::PLAN_ENTRIES,
        "plan entries, num_layers x slots in all",
    )?;
    if let Some(speeds) = gpu_speed {
        at_most(
            "gpu_speed",
            speeds.len() as u128,
            limits::GPUS,
            "entries, one per GPU",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFILL: &str = include_str!("../../data/topologies/prefill.json");
    const DECODE: &str = include_str!("../../data/topologies/decode.json");

    fn with(field: &str, value: serde_json::Value) -> Vec<u8> {
        let mut t: serde_json::Value = serde_json::from_str(PREFILL).unwrap();
        t[field] = value;
        serde_json::to_vec(&t).unwrap()
    }

    #[test]
    fn deepseek_topologies_fit() {
        parse_topology(PREFILL.as_bytes()).unwrap();
        parse_topology(DECODE.as_bytes()).unwrap();
    }

    #[test]
    fn refuses_unknown_fields_and_null() {
        let err = parse_topology(&with("gpu_speeds", serde_json::json!([1.0]))).unwrap_err();
        assert!(err.to_string().contains("gpu_speeds"), "{err}");
        let err = parse_topology(&with("gpu_speed", serde_json::Value::Null)).unwrap_err();
        assert_eq!(err, TopologyError::Null("gpu_speed"));
    }

    #[test]
    fn refuses_absurd_sizes_before_allocating() {
        let err = parse_topology(&with("num_nodes", serde_json::json!(500_000_000))).unwrap_err();
        assert!(err.to_string().contains("num_nodes"), "{err}");
        let err = parse_topology(&with("num_nodes", serde_json::json!(1000))).unwrap_err();
        assert!(err.to_string().contains("GPUs in all"), "{err}");
        let err =
            parse_topology(&with("num_logical_experts", serde_json::json!(i64::MAX))).unwrap_err();
        assert!(err.to_string().contains("num_logical_experts"), "{err}");
        let err = parse_topology(&with("mtp_layers", serde_json::json!(1_000_000))).unwrap_err();
        assert!(err.to_string().contains("mtp_layers"), "{err}");
        let err =
            parse_topology(&with("first_moe_layer", serde_json::json!(i64::MAX))).unwrap_err();
        assert!(err.to_string().contains("first_moe_layer"), "{err}");
    }

    #[test]
    fn deepseek_layout_is_kept() {
        let layout = parse_topology(PREFILL.as_bytes())
            .unwrap()
            .layout()
            .unwrap();
        assert_eq!(
            (
                layout.num_hidden_layers,
                layout.first_moe_layer,
                layout.mtp_layers
            ),
            (61, 3, 1)
        );
        let err = parse_topology(&with("mtp_layers", serde_json::Value::Null)).unwrap_err();
        assert_eq!(err, TopologyError::Null("mtp_layers"));
    }
}
