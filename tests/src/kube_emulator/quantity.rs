//! Resource quantities (`500m`, `1Gi`, `1e3`) parsed and written back in the canonical form the
//! real server stores, so `cpu: 0.5` reads back as `500m` and `memory: 1024Mi` as `1Gi`. This
//! normalization is a classic source of false drift, which is why the emulator reproduces it.

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    BinarySI,
    DecimalSI,
    DecimalExponent,
}

const NANO: i128 = 1_000_000_000;
const BINARY: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
const DECIMAL: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// The message of the real server's decode error for a malformed quantity.
pub(crate) const QUANTITY_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Parses a quantity into nano-units (rounded up, as the real server does) and its format.
fn parse(s: &str) -> Option<(i128, Format)> {
    let s = s.trim();
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(num_end);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() || frac_part.contains('.') {
        return None;
    }
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().ok()?;
    let frac_len = frac_part.len() as i32;
    let (format, exp10, binary_pow) = parse_suffix(suffix)?;
    let mut value = mantissa.checked_mul(1024i128.checked_pow(binary_pow)?)?;
    let shift = 9 + exp10 - frac_len;
    if shift >= 0 {
        value = value.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let div = 10i128.checked_pow((-shift) as u32)?;
        value = (value + div - 1) / div;
    }
    Some((if negative { -value } else { value }, format))
}

fn parse_suffix(suffix: &str) -> Option<(Format, i32, u32)> {
    if let Some(i) = BINARY.iter().position(|b| !b.is_empty() && *b == suffix) {
        return Some((Format::BinarySI, 0, i as u32));
    }
    if let Some((_, e)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
        return Some((Format::DecimalSI, *e, 0));
    }
    let exp = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))?;
    let exp: i32 = exp.parse().ok()?;
    (-30..=30)
        .contains(&exp)
        .then_some((Format::DecimalExponent, exp, 0))
}

fn format(nanos: i128, format: Format) -> String {
    if nanos == 0 {
        return "0".into();
    }
    if format == Format::BinarySI && nanos % NANO == 0 && nanos.abs() >= 1024 * NANO {
        let mut v = nanos / NANO;
        let mut i = 0;
        while i < BINARY.len() - 1 && v % 1024 == 0 {
            v /= 1024;
            i += 1;
        }
        return format!("{v}{}", BINARY[i]);
    }
    let (mut v, mut e) = (nanos, -9);
    while v % 1000 == 0 && e < 18 {
        v /= 1000;
        e += 3;
    }
    if format == Format::DecimalExponent {
        return if e == 0 {
            v.to_string()
        } else {
            format!("{v}e{e}")
        };
    }
    let suffix = DECIMAL
        .iter()
        .find(|(_, x)| *x == e)
        .map(|(s, _)| *s)
        .unwrap_or("");
    format!("{v}{suffix}")
}

/// The canonical form of a quantity string, or `None` if it does not parse.
pub(crate) fn canonical(s: &str) -> Option<String> {
    parse(s).map(|(n, f)| format(n, f))
}

/// The value in nano-units, for comparisons (requests <= limits).
pub(crate) fn nanos(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse(s).map(|(n, _)| n),
        Value::Number(n) => parse(&n.to_string()).map(|(n, _)| n),
        _ => None,
    }
}

/// Canonicalizes every value of a `{name: quantity}` map in place; `Err(field)` names a bad one.
pub(crate) fn canonicalize_map(map: Option<&mut Value>) -> Result<(), String> {
    let Some(Value::Object(m)) = map else {
        return Ok(());
    };
    for (k, v) in m.iter_mut() {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(k.clone()),
        };
        *v = Value::String(canonical(&text).ok_or_else(|| k.clone())?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn canonical_forms() {
        for (input, want) in [
            ("0.5", "500m"),
            ("1024Mi", "1Gi"),
            ("1000m", "1"),
            ("1.5", "1500m"),
            ("1e3", "1e3"),
            ("1000", "1k"),
            ("512Ki", "512Ki"),
            ("0.5Gi", "512Mi"),
            ("100m", "100m"),
            ("128974848", "128974848"),
            ("2000Mi", "2000Mi"),
            ("0", "0"),
            ("1Ki", "1Ki"),
            ("500", "500"),
        ] {
            assert_eq!(canonical(input).as_deref(), Some(want), "{input}");
        }
        assert_eq!(canonical("abc"), None);
        assert_eq!(canonical("1Zi"), None);
    }
}
