//! `init`: create the hot and cold databases and tables (idempotent), bring existing tables
//! (the Python service's) up to what the service needs in place, or print the DDL;
//! `init --check` only reports the drift.
//!
//! Existing tables are upgraded with `ALTER TABLE … MODIFY SETTING` (deduplication window)
//! and `MODIFY COLUMN` (widening) statements, which keep every row; each change is logged
//! and printed. What `schema::drift` rates an error makes `--check` exit non-zero and `run`
//! refuse to start.

use crate::config::Config;
use crate::schema::drift::{self, Drift, Expected};
use crate::schema::{self, Layout, Tier};
use crate::sink::ddl;

/// Arguments of `init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Generate the ON CLUSTER variant (ReplicatedMergeTree + Distributed) for this cluster
    /// (default: `clickhouse.cluster`; one server when that is empty too).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Print the DDL instead of applying it.
    #[arg(long)]
    pub print: bool,
    /// Single-table tiering instead of hot + cold databases: the tables once, in the hot
    /// database, moved to the `cold` volume of this storage policy after 3 days (`TTL … TO
    /// VOLUME 'cold'`; the policy must exist on the server; see docs/migration.md).
    #[arg(long, value_name = "POLICY", num_args = 0..=1, default_missing_value = "hot_cold")]
    pub tiered: Option<String>,
    /// Change nothing: report every table, setting or column that differs from what the
    /// service needs (table, item, found, needed); exit non-zero if exactly-once or inserts
    /// cannot hold.
    #[arg(long)]
    pub check: bool,
}

/// The tables `init` manages in the hot database for this layout (tiered: the tables once,
/// rows moved to the cold volume, never deleted).
fn hot_expected(cfg: &Config, args: &InitArgs, layout: &Layout) -> Vec<Expected> {
    let hot = &cfg.clickhouse.hot_db;
    match &args.tiered {
        Some(_) => drift::expected_tables(hot, Tier::Hot, layout)
            .into_iter()
            .filter(|e| e.table != schema::DEAD_LETTERS_TABLE)
            .map(|e| Expected { ttl: None, ..e })
            .collect(),
        None => drift::expected_tables(hot, Tier::Hot, layout),
    }
}

/// The drift as a table: database, table, item, found, needed, severity, why.
pub fn render_drift(drifts: &[Drift]) -> String {
    let rows: Vec<Vec<String>> = drifts
        .iter()
        .map(|d| {
            vec![
                d.database.clone(),
                d.table.clone(),
                d.item.clone(),
                d.found.clone(),
                d.needed.clone(),
                d.severity.as_str().to_string(),
                d.why.to_string(),
            ]
        })
        .collect();
    super::table::render(
        &[
            "database", "table", "item", "found", "needed", "severity", "why",
        ],
        &rows,
    )
}

/// The upgrades made, as a table: database, table, change, before, now.
fn render_changes(done: &[Drift]) -> String {
    let rows: Vec<Vec<String>> = done
        .iter()
        .map(|d| {
            let now = d.needed.trim_start_matches(">= ").to_string();
            vec![
                d.database.clone(),
                d.table.clone(),
                d.item.clone(),
                d.found.clone(),
                now,
            ]
        })
        .collect();
    super::table::render(&["database", "table", "changed", "was", "now"], &rows)
}

/// Checks (and, unless `check_only`, upgrades) the hot and cold tables; prints what it found
/// and did. Returns the drift left afterwards.
async fn upgrade(
    cfg: &Config,
    args: &InitArgs,
    layout: &Layout,
    hot_sink: &crate::sink::Sink,
    cold_sink: &crate::sink::Sink,
    check_only: bool,
) -> anyhow::Result<Vec<Drift>> {
    let window = crate::service::startup::needed_windows(cfg);
    let hot = hot_expected(cfg, args, layout);
    let cold = match &args.tiered {
        Some(_) => Vec::new(),
        None => drift::expected_tables(&cfg.clickhouse.cold_db, Tier::Cold, layout),
    };
    let mut found = ddl::check(hot_sink, &hot, window).await?;
    if !cold.is_empty() {
        found.extend(ddl::check(cold_sink, &cold, window).await?);
    }
    if check_only {
        return Ok(found);
    }
    let (hot_drift, cold_drift): (Vec<Drift>, Vec<Drift>) = found
        .into_iter()
        .partition(|d| d.database == cfg.clickhouse.hot_db);
    let mut done = ddl::apply_fixes(hot_sink, &hot_drift).await?;
    done.extend(ddl::apply_fixes(cold_sink, &cold_drift).await?);
    if !done.is_empty() {
        super::out(&format!(
            "upgraded {} existing table settings/columns in place (every row kept):\n{}\n",
            done.len(),
            render_changes(&done)
        ));
    }
    let mut left = ddl::check(hot_sink, &hot, window).await?;
    if !cold.is_empty() {
        left.extend(ddl::check(cold_sink, &cold, window).await?);
    }
    Ok(left)
}

/// Prints the drift left and fails when any of it breaks exactly-once or inserts.
fn report_drift(left: &[Drift], check_only: bool) -> anyhow::Result<()> {
    if left.is_empty() {
        if check_only {
            super::out("no drift: every table is as the service needs it\n");
        }
        return Ok(());
    }
    super::out(&format!(
        "{}:\n{}",
        if check_only { "drift" } else { "left as it is" },
        render_drift(left)
    ));
    if drift::has_errors(left) {
        let first = left
            .iter()
            .find(|d| d.severity == drift::Severity::Error)
            .map(ToString::to_string)
            .unwrap_or_default();
        anyhow::bail!(
            "schema drift breaks exactly-once or inserts (first: {first}){}",
            if check_only {
                "; run `marketprism-storage init` to upgrade the tables in place"
            } else {
                ""
            }
        );
    }
    Ok(())
}

/// Applies (or prints) the DDL and reports what exists afterwards.
pub async fn run(cfg: &Config, args: &InitArgs) -> anyhow::Result<()> {
    let layout = match &args.cluster {
        Some(c) => Layout::Cluster(c.clone()),
        None => cfg.clickhouse.layout(),
    };
    if args.check && !args.print {
        return check_only(cfg, args, &layout).await;
    }
    if let Some(policy) = &args.tiered {
        return init_tiered(cfg, args, policy).await;
    }
    if args.print {
        super::out(&schema::render_script(&schema::full_ddl(
            &cfg.clickhouse.hot_db,
            &cfg.clickhouse.cold_db,
            &layout,
        )));
        return Ok(());
    }
    init_full(cfg, args, &layout).await
}

/// `init --check`: reports the drift, changes nothing.
async fn check_only(cfg: &Config, args: &InitArgs, layout: &Layout) -> anyhow::Result<()> {
    let (sink, embedded) = crate::service::one_shot_clickhouse(cfg).await?;
    if let Err(e) = known_cluster(&sink, layout).await {
        if let Some(s) = embedded {
            s.stop().await;
        }
        return Err(e);
    }
    let cold_sink = match &cfg.cold_clickhouse {
        Some(_) => crate::service::sink_for(cfg, &cfg.cold_endpoint()),
        None => sink.clone(),
    };
    let result = upgrade(cfg, args, layout, &sink, &cold_sink, true).await;
    if let Some(s) = embedded {
        s.stop().await;
    }
    report_drift(&result?, true)
}

/// `init --tiered POLICY`: one set of tables whose old parts move to the cold volume.
async fn init_tiered(cfg: &Config, args: &InitArgs, policy: &str) -> anyhow::Result<()> {
    let ddl = schema::tiered_ddl(&cfg.clickhouse.hot_db, policy);
    if args.print {
        super::out(&schema::render_script(&ddl));
        return Ok(());
    }
    let (sink, embedded) = crate::service::one_shot_clickhouse(cfg).await?;
    let result = match crate::sink::ddl::apply(&sink, &ddl).await {
        Ok(created) => upgrade(cfg, args, &Layout::Single, &sink, &sink, false)
            .await
            .map(|left| (created, left)),
        Err(e) => Err(e.into()),
    };
    if let Some(s) = embedded {
        s.stop().await;
    }
    let (created, left) = result?;
    super::out(&format!(
        "{} statements applied, {created} objects created (the rest existed)\n",
        ddl.len()
    ));
    report_drift(&left, false)
}

/// `init`: the hot and cold databases (cold on its own server when configured), a table of
/// what exists afterwards, then the in-place upgrades.
async fn init_full(cfg: &Config, args: &InitArgs, layout: &Layout) -> anyhow::Result<()> {
    let hot = &cfg.clickhouse.hot_db;
    let cold = &cfg.clickhouse.cold_db;
    let (sink, embedded) = crate::service::one_shot_clickhouse(cfg).await?;
    if let Err(e) = known_cluster(&sink, layout).await {
        if let Some(s) = embedded {
            s.stop().await;
        }
        return Err(e);
    }
    let mut all = schema::database_ddl(hot, schema::Tier::Hot, layout);
    let cold_stmts = schema::database_ddl(cold, schema::Tier::Cold, layout);
    let (cold_sink, cold_stmts) = match &cfg.cold_clickhouse {
        Some(_) => (
            Some(crate::service::sink_for(cfg, &cfg.cold_endpoint())),
            cold_stmts,
        ),
        None => {
            all.extend(cold_stmts);
            (None, Vec::new())
        }
    };
    let created = crate::sink::ddl::apply(&sink, &all).await?;
    let mut created_cold = 0;
    if let Some(cs) = &cold_sink {
        created_cold = crate::sink::ddl::apply(cs, &cold_stmts).await?;
    }
    let cold_or_hot = cold_sink.as_ref().unwrap_or(&sink);
    let rows = table_states(&[(hot, true, &sink), (cold, false, cold_or_hot)]).await?;
    super::out(&super::table::render(
        &["database", "table", "state"],
        &rows,
    ));
    super::out(&format!(
        "{} statements applied, {} objects created (the rest existed)\n",
        all.len() + cold_stmts.len(),
        created + created_cold
    ));
    let left = upgrade(cfg, args, layout, &sink, cold_or_hot, false).await;
    if let Some(s) = embedded {
        s.stop().await;
    }
    if rows.iter().any(|r| r[2] != "ok") {
        anyhow::bail!("some tables are missing after init");
    }
    report_drift(&left?, false)
}

/// Fails, naming the cluster and the ones the server has, when the layout's cluster is not in
/// the server's `system.clusters` (the `ON CLUSTER` DDL would fail on its first statement).
async fn known_cluster(sink: &crate::sink::Sink, layout: &Layout) -> anyhow::Result<()> {
    let Layout::Cluster(name) = layout else {
        return Ok(());
    };
    crate::service::startup::cluster_known(name, &ddl::clusters(sink).await?)?;
    Ok(())
}

/// `[database, table, ok|MISSING]` for every table `init` manages in each `(database, hot,
/// server)`.
async fn table_states(
    dbs: &[(&String, bool, &crate::sink::Sink)],
) -> anyhow::Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for (db, is_hot, sink) in dbs {
        let s = &sink.on_database("system");
        for t in schema::table_names(*is_hot) {
            let n = s
                .fetch_count(&format!(
                    "SELECT count() FROM system.tables WHERE database = {} AND name = {}",
                    schema::quote(db),
                    schema::quote(t)
                ))
                .await?;
            let state = if n == 1 { "ok" } else { "MISSING" };
            rows.push(vec![db.to_string(), t.to_string(), state.into()]);
        }
    }
    Ok(rows)
}
