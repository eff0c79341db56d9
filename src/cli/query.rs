//! `query`: run SQL against the configured ClickHouse and print a table (or any format).

use crate::config::Config;

/// Arguments of `query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    /// The SQL statement.
    pub sql: String,
    /// A ClickHouse output format (e.g. JSONEachRow, CSVWithNames); default: a text table.
    #[arg(long)]
    pub format: Option<String>,
}

/// Runs the statement in the hot database and prints the result.
pub async fn run(cfg: &Config, args: &QueryArgs) -> anyhow::Result<()> {
    let (sink, embedded) = crate::service::one_shot_clickhouse(cfg).await?;
    let result = match &args.format {
        Some(f) => sink
            .query_bytes(&args.sql, f)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned()),
        None => sink.query_bytes(&args.sql, "TSVWithNames").await.map(|b| {
            let text = String::from_utf8_lossy(&b);
            let mut lines = text.lines();
            match lines.next() {
                None => String::from("(no rows)\n"),
                Some(h) => {
                    let header: Vec<&str> = h.split('\t').collect();
                    let rows: Vec<Vec<String>> = lines
                        .map(|l| l.split('\t').map(unescape_tsv).collect())
                        .collect();
                    let n = rows.len();
                    format!(
                        "{}({n} row{})\n",
                        super::table::render(&header, &rows),
                        if n == 1 { "" } else { "s" }
                    )
                }
            }
        }),
    };
    if let Some(s) = embedded {
        s.stop().await;
    }
    super::out(&result?);
    Ok(())
}

fn unescape_tsv(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some('\\') => out.push('\\'),
                Some(o) => {
                    out.push('\\');
                    out.push(o);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}
