//! Column values as JSON, without losing what the database said.
//!
//! Integers, floats and booleans become JSON numbers and booleans; NUMERIC/DECIMAL
//! become decimal *strings* (a JSON number would be read as a double and round);
//! timestamps become RFC 3339 (`Z` for zoned ones, no offset for zone-less ones);
//! dates `YYYY-MM-DD`; JSON columns their JSON; UUIDs their text; bytes base64; NULL
//! null. PostgreSQL values are decoded from the binary wire format here rather than by
//! sqlx's chrono decoders, which panic on `infinity` timestamps. A type without a
//! faithful mapping is an error that says how to cast it, never a silent guess.

use base64::Engine as _;
use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
use serde_json::{Number, Value, json};
use sqlx::mysql::{MySqlRow, MySqlValueRef};
use sqlx::postgres::{PgRow, PgTypeInfo, PgTypeKind, PgValueFormat};
use sqlx::{Column as _, Decode, Row as _, TypeInfo as _, ValueRef as _};

/// Why a value could not be mapped (the caller adds the row and column).
pub type DecodeError = String;

fn float(f: f64) -> Value {
    // NaN and the infinities have no JSON number.
    Number::from_f64(f).map_or_else(|| json!(f.to_string()), Value::Number)
}

fn base64(b: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(b))
}

fn rfc3339_utc(dt: NaiveDateTime) -> String {
    dt.and_utc()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn naive(dt: NaiveDateTime) -> String {
    dt.format("%Y-%m-%dT%H:%M:%S%.f").to_string()
}

/// The columns of `row` as a JSON object.
pub fn pg_row(row: &PgRow) -> Result<serde_json::Map<String, Value>, (String, DecodeError)> {
    let mut out = serde_json::Map::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let name = col.name().to_owned();
        let raw = row
            .try_get_raw(i)
            .map_err(|e| (name.clone(), e.to_string()))?;
        let v = if raw.is_null() {
            Value::Null
        } else if raw.format() == PgValueFormat::Text {
            json!(raw.as_str().map_err(|e| (name.clone(), e.to_string()))?)
        } else {
            let bytes = raw.as_bytes().map_err(|e| (name.clone(), e.to_string()))?;
            pg_binary(col.type_info(), bytes).map_err(|e| (name.clone(), e))?
        };
        out.insert(name, v);
    }
    Ok(out)
}

fn be<const N: usize>(b: &[u8]) -> Result<[u8; N], DecodeError> {
    b.try_into()
        .map_err(|_| format!("expected {N} bytes, got {}", b.len()))
}

fn utf8(b: &[u8]) -> Result<Value, DecodeError> {
    std::str::from_utf8(b)
        .map(|s| json!(s))
        .map_err(|e| e.to_string())
}

/// Microseconds since 2000-01-01 00:00 (PostgreSQL's epoch), or ±infinity.
fn pg_timestamp(b: &[u8]) -> Result<Result<NaiveDateTime, &'static str>, DecodeError> {
    let us = i64::from_be_bytes(be(b)?);
    if us == i64::MAX {
        return Ok(Err("infinity"));
    }
    if us == i64::MIN {
        return Ok(Err("-infinity"));
    }
    let epoch = NaiveDate::from_ymd_opt(2000, 1, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .ok_or("bad epoch")?;
    epoch
        .checked_add_signed(TimeDelta::microseconds(us))
        .map(Ok)
        .ok_or_else(|| "timestamp out of range".to_owned())
}

fn pg_binary(ty: &PgTypeInfo, b: &[u8]) -> Result<Value, DecodeError> {
    match ty.kind() {
        PgTypeKind::Enum(_) => return utf8(b),
        PgTypeKind::Domain(base) => return pg_binary(base, b),
        PgTypeKind::Array(elem) => return pg_array(elem, b),
        _ => {}
    }
    Ok(match ty.name() {
        "BOOL" => json!(b.first().is_some_and(|x| *x != 0)),
        "INT2" => json!(i16::from_be_bytes(be(b)?)),
        "INT4" => json!(i32::from_be_bytes(be(b)?)),
        "INT8" => json!(i64::from_be_bytes(be(b)?)),
        "OID" => json!(u32::from_be_bytes(be(b)?)),
        "FLOAT4" => float(f64::from(f32::from_be_bytes(be(b)?))),
        "FLOAT8" => float(f64::from_be_bytes(be(b)?)),
        "NUMERIC" => json!(pg_numeric(b)?),
        "TEXT" | "VARCHAR" | "CHAR" | "\"CHAR\"" | "NAME" | "UNKNOWN" | "CITEXT" | "XML" => {
            utf8(b)?
        }
        "JSON" => serde_json::from_slice(b).map_err(|e| e.to_string())?,
        // JSONB is a version byte (1) followed by the JSON text.
        "JSONB" => match b.split_first() {
            Some((1, rest)) => serde_json::from_slice(rest).map_err(|e| e.to_string())?,
            _ => return Err("unknown JSONB version".into()),
        },
        "UUID" => json!(uuid::Uuid::from_bytes(be(b)?).to_string()),
        "BYTEA" => base64(b),
        "DATE" => {
            let days = i32::from_be_bytes(be(b)?);
            match days {
                i32::MAX => json!("infinity"),
                i32::MIN => json!("-infinity"),
                d => {
                    let date = NaiveDate::from_ymd_opt(2000, 1, 1)
                        .and_then(|e| e.checked_add_signed(TimeDelta::days(i64::from(d))))
                        .ok_or("date out of range")?;
                    json!(date.format("%Y-%m-%d").to_string())
                }
            }
        }
        "TIMESTAMP" => json!(pg_timestamp(b)?.map_or_else(str::to_owned, naive)),
        "TIMESTAMPTZ" => json!(pg_timestamp(b)?.map_or_else(str::to_owned, rfc3339_utc)),
        "TIME" => {
            let us = i64::from_be_bytes(be(b)?);
            let t = NaiveTime::MIN
                .overflowing_add_signed(TimeDelta::microseconds(us))
                .0;
            json!(t.format("%H:%M:%S%.f").to_string())
        }
        other => {
            return Err(format!(
                "type {other} has no JSON mapping; cast it in the query (e.g. `col::text`)"
            ));
        }
    })
}

/// A NUMERIC in binary form: digit count, weight (of the first base-10000 digit), sign,
/// display scale, then the base-10000 digits. Rendered exactly, as a string.
fn pg_numeric(b: &[u8]) -> Result<String, DecodeError> {
    let word = |i: usize| -> Result<u16, DecodeError> {
        b.get(i * 2..i * 2 + 2)
            .map(|w| u16::from_be_bytes([w[0], w[1]]))
            .ok_or_else(|| "truncated NUMERIC".to_owned())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)? as i16);
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits = (0..ndigits)
        .map(|i| word(4 + i))
        .collect::<Result<Vec<u16>, _>>()?;
    let digit = |i: i64| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i))
            .copied()
            .unwrap_or(0)
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        out.push_str(&digit(0).to_string());
        for i in 1..=weight {
            out.push_str(&format!("{:04}", digit(i)));
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut i = weight + 1;
        while frac.len() < dscale {
            frac.push_str(&format!("{:04}", digit(i)));
            i += 1;
        }
        frac.truncate(dscale);
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// A one- or more-dimensional array: dimensions, a has-nulls flag, the element type,
/// each dimension's length and lower bound, then length-prefixed elements.
fn pg_array(elem: &PgTypeInfo, b: &[u8]) -> Result<Value, DecodeError> {
    let int = |at: usize| -> Result<i32, DecodeError> {
        b.get(at..at + 4)
            .map(|w| i32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .ok_or_else(|| "truncated array".to_owned())
    };
    let ndim = usize::try_from(int(0)?).map_err(|e| e.to_string())?;
    if ndim == 0 {
        return Ok(json!([]));
    }
    let mut dims = Vec::with_capacity(ndim);
    for d in 0..ndim {
        dims.push(usize::try_from(int(12 + d * 8)?).map_err(|e| e.to_string())?);
    }
    let mut at = 12 + ndim * 8;
    let total: usize = dims.iter().product();
    let mut flat = Vec::with_capacity(total.min(1 << 16));
    for _ in 0..total {
        let len = int(at)?;
        at += 4;
        if len < 0 {
            flat.push(Value::Null);
            continue;
        }
        let len = usize::try_from(len).map_err(|e| e.to_string())?;
        let v = b.get(at..at + len).ok_or("truncated array")?;
        flat.push(pg_binary(elem, v)?);
        at += len;
    }
    // Fold the flat elements into nested arrays, innermost dimension first.
    for &d in dims.iter().skip(1).rev() {
        flat = flat
            .chunks(d.max(1))
            .map(|c| Value::Array(c.to_vec()))
            .collect();
    }
    Ok(Value::Array(flat))
}

/// The columns of `row` as a JSON object.
pub fn mysql_row(row: &MySqlRow) -> Result<serde_json::Map<String, Value>, (String, DecodeError)> {
    let mut out = serde_json::Map::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let name = col.name().to_owned();
        let raw = row
            .try_get_raw(i)
            .map_err(|e| (name.clone(), e.to_string()))?;
        let v = if raw.is_null() {
            Value::Null
        } else {
            mysql_value(&mysql_type_name(col.type_info()), raw).map_err(|e| (name.clone(), e))?
        };
        out.insert(name, v);
    }
    Ok(out)
}

/// The driver's name for a MySQL type, except that text in a `_bin` collation (which
/// the driver names like binary data: `VARBINARY`, `LONGBLOB`) is `TEXT`. MariaDB's
/// JSON columns are such text.
pub fn mysql_type_name(ty: &sqlx::mysql::MySqlTypeInfo) -> String {
    let name = ty.name();
    let binary_named = name.ends_with("BLOB") || name.contains("BINARY");
    if binary_named && <str as sqlx::Type<sqlx::MySql>>::compatible(ty) {
        "TEXT".into()
    } else {
        name.to_owned()
    }
}

fn dec<'r, T: Decode<'r, sqlx::MySql>>(v: MySqlValueRef<'r>) -> Result<T, DecodeError> {
    T::decode(v).map_err(|e| e.to_string())
}

fn mysql_value(type_name: &str, v: MySqlValueRef<'_>) -> Result<Value, DecodeError> {
    Ok(match type_name {
        "BOOLEAN" => json!(dec::<i8>(v)? != 0),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "YEAR" => json!(dec::<i64>(v)?),
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => json!(dec::<u64>(v)?),
        "FLOAT" => float(f64::from(dec::<f32>(v)?)),
        "DOUBLE" => float(dec::<f64>(v)?),
        // DECIMAL travels as its decimal text, which is kept as is.
        "DECIMAL" => json!(dec::<&str>(v)?),
        "JSON" => serde_json::from_str(dec::<&str>(v)?).map_err(|e| e.to_string())?,
        "DATE" | "DATETIME" | "TIMESTAMP" => {
            // A zero date (`0000-00-00`) is MySQL's "no date": null.
            let zero = dec::<&[u8]>(v.clone())?
                .iter()
                .skip(1)
                .take(4)
                .all(|b| *b == 0);
            if zero {
                Value::Null
            } else {
                match type_name {
                    "DATE" => json!(dec::<NaiveDate>(v)?.format("%Y-%m-%d").to_string()),
                    "DATETIME" => json!(naive(dec::<NaiveDateTime>(v)?)),
                    // The driver sets the session zone to UTC, so TIMESTAMPs are UTC.
                    _ => json!(rfc3339_utc(dec::<DateTime<chrono::Utc>>(v)?.naive_utc())),
                }
            }
        }
        "TIME" => json!(dec::<sqlx::mysql::types::MySqlTime>(v)?.to_string()),
        "BIT" => {
            let bytes = dec::<&[u8]>(v)?;
            json!(bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
        }
        "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" | "GEOMETRY" => {
            base64(dec::<&[u8]>(v)?)
        }
        // Text types, ENUM, SET, and whatever else the server sends as text.
        _ => {
            let bytes = dec::<&[u8]>(v)?;
            match std::str::from_utf8(bytes) {
                Ok(s) => json!(s),
                Err(_) => base64(bytes),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn numerics_render_exactly() {
        // 12345678.9012 = [1234, 5678, 9012] weight 1, scale 4
        assert_eq!(
            pg_numeric(&numeric(3, 1, 0, 4, &[1234, 5678, 9012])).unwrap(),
            "12345678.9012"
        );
        // -0.000123 = [1, 2300] weight -1 (0.0001 * 1 + 0.00000001 * 2300), scale 6
        assert_eq!(
            pg_numeric(&numeric(2, -1, 0x4000, 6, &[1, 2300])).unwrap(),
            "-0.000123"
        );
        // 1e20 = [1] weight 5, scale 0
        assert_eq!(
            pg_numeric(&numeric(1, 5, 0, 0, &[1])).unwrap(),
            "100000000000000000000"
        );
        assert_eq!(pg_numeric(&numeric(0, 0, 0, 2, &[])).unwrap(), "0.00");
        assert_eq!(pg_numeric(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert!(pg_numeric(&[0, 1]).is_err());
    }

    #[test]
    fn infinite_timestamps_do_not_panic() {
        assert_eq!(
            pg_timestamp(&i64::MAX.to_be_bytes()).unwrap(),
            Err("infinity")
        );
        assert_eq!(
            pg_timestamp(&0i64.to_be_bytes()).unwrap().map(rfc3339_utc),
            Ok("2000-01-01T00:00:00Z".into())
        );
    }
}
