//! Background watchers of a running service: the ClickHouse probe behind `/ready`, the NATS
//! server the connection is on (for `/stats`), and the summary log line.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ops;
use crate::pipeline::Stats;
use crate::sink::Sink;

/// Time between ClickHouse probes (and the bound of one probe).
pub const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How often the NATS server the connection is on is read again (a reconnect may land on
/// another server of the cluster).
pub const NATS_SERVER_EVERY: Duration = Duration::from_secs(2);
/// Time between summary log lines.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// Pings ClickHouse every [`PROBE_EVERY`] (for `/ready`) and logs a summary line every
/// [`SUMMARY_EVERY`], until `stop`. A probe is a reading, not a retry: it never waits longer
/// when ClickHouse stays down.
pub fn spawn(sink: Arc<Sink>, stats: Arc<Stats>, stop: CancellationToken) {
    let s = stats.clone();
    let st = stop.clone();
    tokio::spawn(async move {
        loop {
            let up = tokio::time::timeout(PROBE_EVERY, sink.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            if s.set_clickhouse_up(up) != up {
                if up {
                    tracing::info!("clickhouse answering")
                } else {
                    tracing::warn!("clickhouse not answering")
                }
            }
            tokio::select! { _ = tokio::time::sleep(PROBE_EVERY) => {}, _ = st.cancelled() => return }
        }
    });
    tokio::spawn(async move {
        let every = SUMMARY_EVERY;
        let mut prev = ops::Snapshot::take(&stats);
        loop {
            tokio::select! { _ = tokio::time::sleep(every) => {}, _ = stop.cancelled() => return }
            tracing::info!("{}", ops::summary_line(&stats, &prev, every));
            prev = ops::Snapshot::take(&stats);
        }
    });
}

/// Keeps `stats.nats_server` current every [`NATS_SERVER_EVERY`] (an eighth of it while not
/// known) until `stop`: the client's last `INFO` from the server (a cheap read of what it
/// already holds), `None` while disconnected. The task holds a clone of the client only until the stop.
pub fn watch_nats_server(client: async_nats::Client, stats: Arc<Stats>, stop: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let connected = client.connection_state() == async_nats::connection::State::Connected;
            let server = client
                .try_server_info()
                .filter(|_| connected)
                .map(|i| server_label(&i));
            // Until the server is known (the first INFO after a connect), look again soon.
            let next = if server.is_some() {
                NATS_SERVER_EVERY
            } else {
                NATS_SERVER_EVERY / 8
            };
            stats.set_nats_server(server);
            tokio::select! { _ = tokio::time::sleep(next) => {}, _ = stop.cancelled() => return }
        }
    });
}

/// How a NATS server is shown: its name, the address it announces and its cluster, e.g.
/// `n1 0.0.0.0:4222 (cluster mp)`.
pub fn server_label(info: &async_nats::ServerInfo) -> String {
    let name = if info.server_name.is_empty() {
        info.server_id.as_str()
    } else {
        info.server_name.as_str()
    };
    let mut s = format!("{name} {}:{}", info.host, info.port);
    if let Some(c) = info.cluster.as_deref().filter(|c| !c.is_empty()) {
        s.push_str(&format!(" (cluster {c})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_is_shown_by_name_address_and_cluster() {
        let mut info = async_nats::ServerInfo {
            server_id: "NCXYZ".into(),
            host: "0.0.0.0".into(),
            port: 4222,
            ..Default::default()
        };
        assert_eq!(server_label(&info), "NCXYZ 0.0.0.0:4222");
        info.server_name = "n1".into();
        info.cluster = Some("mp".into());
        assert_eq!(server_label(&info), "n1 0.0.0.0:4222 (cluster mp)");
    }
}
