//! Human output: aligned tables and relative times.

use std::fmt::Write;

/// Render rows as a left-aligned table under `header`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                let _ = write!(out, "{c:<w$}   ", w = widths[i]);
            }
        }
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `42s`, `5m`, `3h`, `2d` ago; `never` for 0.
pub fn ago(unix: i64, now: i64) -> String {
    if unix == 0 {
        return "never".into();
    }
    let d = (now - unix).max(0);
    match d {
        0..60 => format!("{d}s"),
        60..3600 => format!("{}m", d / 60),
        3600..86400 => format!("{}h", d / 3600),
        _ => format!("{}d", d / 86400),
    }
}

/// `in 5m` for a time ahead, `5m ago` for one past.
pub fn relative(unix: i64, now: i64) -> String {
    if unix >= now {
        format!("in {}", ago(now, unix))
    } else {
        format!("{} ago", ago(unix, now))
    }
}

/// The first 8 characters of a commit.
pub fn short(rev: &str) -> String {
    rev.chars().take(8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["east".into(), "Ready".into()],
                vec!["a".into(), "x".into()],
            ],
        );
        assert_eq!(t, "NAME   STATE\neast   Ready\na      x\n");
        assert_eq!(ago(0, 5), "never");
        assert_eq!(ago(100, 4000), "1h");
    }
}
