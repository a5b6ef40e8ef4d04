//! JSON integers as JSON Schema counts them: `395` and `395.0` are the same
//! integer (a number with a zero fractional part), so a field the OpenAPI
//! document types `integer` accepts both. serde's `i64` refuses the second.
//! Use with `#[serde(deserialize_with = "crate::integer::i64")]`.

use serde::de::{Deserializer, Error, Unexpected};
use serde::Deserialize;

/// An `i64` written as an integer or as a float with no fractional part.
pub fn i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(value) = number.as_i64() {
        return Ok(value);
    }
    // 2^63 as an f64: the first float past i64::MAX.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    match number.as_f64() {
        Some(f) if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) => Ok(f as i64),
        Some(f) => Err(Error::invalid_value(
            Unexpected::Float(f),
            &"an integer that fits in 64 bits",
        )),
        None => Err(Error::invalid_value(
            Unexpected::Other(&number.to_string()),
            &"an integer that fits in 64 bits",
        )),
    }
}

/// An optional [`i64`] (use with `#[serde(default)]`): `null` stays `None`.
pub fn option_i64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Integer(#[serde(deserialize_with = "i64")] i64);
    Ok(Option::<Integer>::deserialize(deserializer)?.map(|Integer(v)| v))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct V {
        #[serde(deserialize_with = "super::i64")]
        v: i64,
    }

    fn parse(text: &str) -> Option<i64> {
        serde_json::from_str::<V>(text).ok().map(|v| v.v)
    }

    #[test]
    fn integral_floats_are_integers() {
        assert_eq!(parse(r#"{"v": 395}"#), Some(395));
        assert_eq!(parse(r#"{"v": 395.0}"#), Some(395));
        assert_eq!(parse(r#"{"v": -2.0e2}"#), Some(-200));
        assert_eq!(parse(r#"{"v": 395.5}"#), None);
        // Parsed exactly (serde_json's `float_roundtrip`): the fast path read
        // this as 2251799813685247.25 and refused it (schemathesis found it).
        assert_eq!(
            parse(r#"{"v": 2251799813685247.0}"#),
            Some(2_251_799_813_685_247)
        );
        #[derive(Deserialize)]
        struct O {
            #[serde(default, deserialize_with = "super::option_i64")]
            v: Option<i64>,
        }
        let parse = |text| serde_json::from_str::<O>(text).ok().map(|o| o.v);
        assert_eq!(parse(r#"{"v": 7.0}"#), Some(Some(7)));
        assert_eq!(parse(r#"{"v": null}"#), Some(None));
        assert_eq!(parse(r#"{}"#), Some(None));
        assert_eq!(parse(r#"{"v": 7.5}"#), None);
        assert_eq!(parse(r#"{"v": 9223372036854775808}"#), None);
        assert_eq!(parse(r#"{"v": 1e300}"#), None);
        assert_eq!(parse(r#"{"v": "3"}"#), None);
    }
}
