//! Errors raised while parsing input into solver types.
//!
//! Every message names the field and, where it applies, the layer and index,
//! so a caller can prefix the file name and show it as one line.

use thiserror::Error;

/// Input that cannot become a `Topology`, `LoadMatrix` or `Plan`.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ParseError {
    /// The text is not the expected JSON/CSV shape at all.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// A field is missing, has the wrong type, or an impossible value.
    #[error("field `{field}`: {detail}")]
    Field { field: String, detail: String },
    /// One value inside a per-layer array is wrong.
    #[error("`{field}` layer {layer} index {index}: {detail}")]
    Entry {
        field: &'static str,
        layer: usize,
        index: usize,
        detail: String,
    },
    /// A per-layer array has the wrong length, or a whole layer is wrong.
    #[error("`{field}` layer {layer}: {detail}")]
    Layer {
        field: &'static str,
        layer: usize,
        detail: String,
    },
}

impl ParseError {
    pub(crate) fn field(field: impl Into<String>, detail: impl Into<String>) -> Self {
        ParseError::Field {
            field: field.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn entry(
        field: &'static str,
        layer: usize,
        index: usize,
        detail: impl Into<String>,
    ) -> Self {
        ParseError::Entry {
            field,
            layer,
            index,
            detail: detail.into(),
        }
    }

    pub(crate) fn layer(field: &'static str, layer: usize, detail: impl Into<String>) -> Self {
        ParseError::Layer {
            field,
            layer,
            detail: detail.into(),
        }
    }
}
