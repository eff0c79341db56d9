//! Plain-text tables for reports: aligned columns, a header rule, numbers right-aligned.

/// Renders `rows` under `header` as an aligned text table.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let n = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(n) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..n)
        .map(|i| {
            !rows.is_empty()
                && rows
                    .iter()
                    .all(|r| r.get(i).is_none_or(|c| looks_numeric(c)))
        })
        .collect();
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let mut parts = Vec::with_capacity(n);
        for (i, w) in widths.iter().enumerate() {
            let c = cells.get(i).map(String::as_str).unwrap_or("");
            let pad = w.saturating_sub(c.chars().count());
            if numeric[i] {
                parts.push(format!("{}{}", " ".repeat(pad), c));
            } else {
                parts.push(format!("{}{}", c, " ".repeat(pad)));
            }
        }
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        &mut out,
    );
    out.push_str(
        &widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .join("  "),
    );
    out.push('\n');
    for r in rows {
        line(r, &mut out);
    }
    out
}

fn looks_numeric(s: &str) -> bool {
    !s.is_empty() && s.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn aligns_text_left_and_numbers_right() {
        let t = super::render(
            &["table", "rows"],
            &[
                vec!["trades".into(), "1200".into()],
                vec!["orderbooks".into(), "7".into()],
            ],
        );
        assert_eq!(
            t,
            "table       rows\n----------  ----\ntrades      1200\norderbooks     7\n"
        );
    }
}
