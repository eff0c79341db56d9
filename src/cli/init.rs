//! `init`: create the hot and cold databases and tables (idempotent), or print the DDL.

use crate::config::Config;
use crate::schema::{self, Layout};

/// Arguments of `init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Generate the ON CLUSTER variant (ReplicatedMergeTree + Distributed) for this cluster.
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
}

/// Applies (or prints) the DDL and reports what exists afterwards.
pub async fn run(cfg: &Config, args: &InitArgs) -> anyhow::Result<()> {
    let layout = match &args.cluster {
        Some(c) => Layout::Cluster(c.clone()),
        None => Layout::Single,
    };
    let hot = &cfg.clickhouse.hot_db;
    let cold = &cfg.clickhouse.cold_db;
    if let Some(policy) = &args.tiered {
        let ddl = schema::tiered_ddl(hot, policy);
        if args.print {
            super::out(&schema::render_script(&ddl));
            return Ok(());
        }
        let (sink, embedded) = super::one_shot_clickhouse(cfg).await?;
        let result = schema::apply(&sink, &ddl).await;
        if let Some(s) = embedded {
            s.stop().await;
        }
        let created = result?;
        super::out(&format!(
            "{} statements applied, {created} objects created (the rest existed)\n",
            ddl.len()
        ));
        return Ok(());
    }
    if args.print {
        super::out(&schema::render_script(&schema::full_ddl(
            hot, cold, &layout,
        )));
        return Ok(());
    }
    let (sink, embedded) = super::one_shot_clickhouse(cfg).await?;
    let hot_stmts = schema::database_ddl(hot, schema::Tier::Hot, &layout);
    let mut cold_stmts = schema::database_ddl(cold, schema::Tier::Cold, &layout);
    let cold_sink = match &cfg.cold_clickhouse {
        Some(_) => Some(super::sink_for(cfg, &cfg.cold_endpoint())),
        None => {
            cold_stmts.clear();
            None
        }
    };
    let mut all = hot_stmts;
    if cold_sink.is_none() {
        all.extend(schema::database_ddl(cold, schema::Tier::Cold, &layout));
    }
    let created = schema::apply(&sink, &all).await?;
    let mut created_cold = 0;
    if let Some(cs) = &cold_sink {
        created_cold = schema::apply(cs, &cold_stmts).await?;
    }
    let mut rows = Vec::new();
    for db in [hot, cold] {
        let s = if db == cold {
            cold_sink.as_ref().unwrap_or(&sink)
        } else {
            &sink
        };
        let s = &s.on_database("system");
        for t in schema::table_names(db == hot) {
            let n = s
                .fetch_count(&format!(
                    "SELECT count() FROM system.tables WHERE database = '{db}' AND name = '{t}'"
                ))
                .await?;
            rows.push(vec![
                db.clone(),
                t.to_string(),
                if n == 1 {
                    "ok".into()
                } else {
                    "MISSING".into()
                },
            ]);
        }
    }
    super::out(&super::table::render(
        &["database", "table", "state"],
        &rows,
    ));
    super::out(&format!(
        "{} statements applied, {} objects created (the rest existed)\n",
        all.len() + cold_stmts.len(),
        created + created_cold
    ));
    if let Some(s) = embedded {
        s.stop().await;
    }
    if rows.iter().any(|r| r[2] != "ok") {
        anyhow::bail!("some tables are missing after init");
    }
    Ok(())
}
