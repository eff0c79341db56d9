//! The CI smoke run of `demo`: every one of the eight tables receives rows.

use std::process::Command;

use marketprism_storage::embedded::free_port;

#[test]
fn demo_for_20_seconds_fills_all_eight_tables() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..4).map(|_| free_port().unwrap()).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_marketprism-storage"))
        .args(["demo", "--duration", "20s"])
        .args(["--nats-port", &ports[0].to_string()])
        .args(["--nats-monitor-port", &ports[1].to_string()])
        .args(["--clickhouse-listen", &format!("127.0.0.1:{}", ports[2])])
        .args(["--http-port", &ports[3].to_string()])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MARKETPRISM_TOOLS_DIR", crate::harness::tools_dir())
        .env("MARKETPRISM_DATA_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in [
        "trades",
        "orderbooks",
        "funding_rates",
        "open_interests",
        "liquidations",
        "lsr_top_positions",
        "lsr_all_accounts",
        "volatility_indices",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("{table} missing from the summary:\n{stdout}"));
        let rows: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(rows > 0, "{table} has no rows:\n{stdout}");
    }
    let dead = stdout
        .lines()
        .find(|l| l.starts_with("dead_letters"))
        .unwrap();
    assert!(
        dead.ends_with(" 0"),
        "the generator's messages are all valid: {dead}"
    );
    assert!(
        stdout.contains("query \"SELECT"),
        "example queries printed:\n{stdout}"
    );
}
