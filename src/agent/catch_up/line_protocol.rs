//! Points of a `SELECT * … GROUP BY *` answer written back as line
//! protocol. JSON loses InfluxDB's field types (an integer and a float both
//! come back as numbers), so each field's type comes from `SHOW FIELD KEYS`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// A field's type as `SHOW FIELD KEYS` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    Float,
    Integer,
    String,
    Boolean,
}

impl FieldType {
    /// `None` for a type this InfluxDB does not know (a newer one's).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "float" => Some(FieldType::Float),
            "integer" => Some(FieldType::Integer),
            "string" => Some(FieldType::String),
            "boolean" => Some(FieldType::Boolean),
            _ => None,
        }
    }
}

/// Field name → type, of one measurement.
pub type FieldTypes = BTreeMap<String, FieldType>;

/// Why a series cannot be written back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LineError {
    #[error("a series without a name")]
    NoName,
    #[error("{measurement}: a row without a nanosecond time")]
    NoTime { measurement: String },
    #[error("{measurement}: field {field:?} holds {value}, which is not a {expected:?}")]
    WrongType {
        measurement: String,
        field: String,
        value: String,
        expected: FieldType,
    },
    #[error("{measurement}: field {field:?} is not listed by SHOW FIELD KEYS")]
    UnknownField { measurement: String, field: String },
}

/// Appends one line per row of `series` (an element of a result's
/// `series`, times as nanoseconds) to `out`; returns how many lines and
/// field values. Null
/// values (fields a point does not have) are left out, and rows with no
/// value at all are skipped.
pub fn append_series(
    out: &mut String,
    series: &Value,
    types: &FieldTypes,
) -> Result<(u64, u64), LineError> {
    let measurement = series["name"].as_str().ok_or(LineError::NoName)?;
    let mut key = escape(measurement, &[',', ' ']);
    if let Some(tags) = series["tags"].as_object() {
        // InfluxDB sorts tags itself; an empty value is no tag at all.
        for (k, v) in tags {
            let Some(v) = v.as_str().filter(|v| !v.is_empty()) else {
                continue;
            };
            let _ = write!(
                key,
                ",{}={}",
                escape(k, &[',', '=', ' ']),
                escape(v, &[',', '=', ' '])
            );
        }
    }
    let columns: Vec<&str> = series["columns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c.as_str().unwrap_or_default())
        .collect();
    let mut fields = Vec::with_capacity(columns.len());
    for column in columns.iter().skip(1) {
        let ty = *types.get(*column).ok_or_else(|| LineError::UnknownField {
            measurement: measurement.to_owned(),
            field: (*column).to_owned(),
        })?;
        fields.push((escape(column, &[',', '=', ' ']), *column, ty));
    }
    let (mut lines, mut values) = (0, 0);
    for row in series["values"].as_array().into_iter().flatten() {
        let Some(row) = row.as_array() else { continue };
        let time = row
            .first()
            .and_then(Value::as_i64)
            .ok_or_else(|| LineError::NoTime {
                measurement: measurement.to_owned(),
            })?;
        let start = out.len();
        out.push_str(&key);
        let mut separator = ' ';
        for ((escaped, name, ty), value) in fields.iter().zip(row.iter().skip(1)) {
            if value.is_null() {
                continue;
            }
            out.push(separator);
            separator = ',';
            out.push_str(escaped);
            out.push('=');
            values += 1;
            field_value(out, value, *ty).map_err(|()| LineError::WrongType {
                measurement: measurement.to_owned(),
                field: (*name).to_owned(),
                value: value.to_string(),
                expected: *ty,
            })?;
        }
        if separator == ' ' {
            out.truncate(start);
            continue;
        }
        let _ = writeln!(out, " {time}");
        lines += 1;
    }
    Ok((lines, values))
}

fn field_value(out: &mut String, value: &Value, ty: FieldType) -> Result<(), ()> {
    match (ty, value) {
        (FieldType::Float, Value::Number(n)) => {
            let _ = write!(out, "{n}");
        }
        (FieldType::Integer, Value::Number(n)) if n.is_i64() || n.is_u64() => {
            let _ = write!(out, "{n}i");
        }
        (FieldType::Boolean, Value::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        (FieldType::String, Value::String(s)) => {
            out.push('"');
            out.push_str(&escape(s, &['"']));
            out.push('"');
        }
        _ => return Err(()),
    }
    Ok(())
}

/// `s` with a backslash before every character of `special` (and, in a
/// string value, before every backslash), as line protocol escapes.
fn escape(s: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if special.contains(&c) || c == '\\' && special.contains(&'"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn types() -> FieldTypes {
        [
            ("user".to_owned(), FieldType::Float),
            ("idle".to_owned(), FieldType::Integer),
            ("ok".to_owned(), FieldType::Boolean),
            ("note".to_owned(), FieldType::String),
        ]
        .into()
    }

    #[test]
    fn every_type_is_written_back_as_influxdb_reads_it() {
        let series = json!({
            "name": "cpu load",
            "tags": {"host": "h 1", "region": "", "zone": "a,b=c"},
            "columns": ["time", "idle", "note", "ok", "user"],
            "values": [
                [1_000_000_000i64, 7, "say \"hi\"", true, 1],
                [2_000_000_000i64, null, null, null, 0.25],
                [3_000_000_000i64, null, null, null, null],
            ]
        });
        let mut out = String::new();
        assert_eq!(append_series(&mut out, &series, &types()), Ok((2, 5)));
        assert_eq!(
            out,
            "cpu\\ load,host=h\\ 1,zone=a\\,b\\=c idle=7i,note=\"say \\\"hi\\\"\",ok=true,user=1 1000000000\n\
             cpu\\ load,host=h\\ 1,zone=a\\,b\\=c user=0.25 2000000000\n"
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_or_an_unknown_field_is_an_error() {
        let series = json!({
            "name": "cpu", "columns": ["time", "idle"], "values": [[1, 0.5]]
        });
        let err = append_series(&mut String::new(), &series, &types()).unwrap_err();
        assert!(matches!(
            err,
            LineError::WrongType {
                expected: FieldType::Integer,
                ..
            }
        ));
        let series = json!({"name": "cpu", "columns": ["time", "other"], "values": [[1, 1]]});
        let err = append_series(&mut String::new(), &series, &types()).unwrap_err();
        assert!(matches!(err, LineError::UnknownField { .. }));
    }
}
