//! Identities of stored rows: one key string per row, the same on the stream side (from the
//! decoded `Record`) and on the ClickHouse side (a SQL expression over the stored columns).
//!
//! A row's identity is its market `(exchange, market_type, symbol)` plus the key below; the
//! audit compares multisets of identities, so a key that is not unique only weakens *which*
//! row is named, never the counts (see `docs/audit.md`, "Identities"):
//!
//! | type | key within a market | unique for the collector's data because |
//! |---|---|---|
//! | trade | `trade_id` | exchanges number trades per market |
//! | orderbook | `timestamp:last_update_id` | a snapshot per update id (okx sends none: 0, then the ms) |
//! | funding_rate, open_interest, volatility_index | `timestamp` | the Msg-Id holds the ms: JetStream drops a repeat |
//! | lsr_top_position, lsr_all_account | `timestamp:period` | the Msg-Id holds ms and period |
//! | liquidation | `timestamp:side:liquidation_time:price:quantity` | two liquidations that agree on all five are one event |
//!
//! `timestamp` and `liquidation_time` are UTC milliseconds; prices and quantities the stored
//! integers (× 10^8). Every key is hashed with SipHash-2-4 under the zero key, which is
//! exactly ClickHouse's `sipHash64(String)`, so per-bucket fingerprints (count and the
//! wrapping sum of key hashes) can be computed on both sides and compared.

use std::fmt::Write as _;
use std::hash::Hasher as _;

use crate::model::{DataType, Record};

/// Writes the key of `r` (without its market) into `out`, replacing its contents.
pub fn write_key(r: &Record, out: &mut String) {
    out.clear();
    let ts = r.common().timestamp_ms;
    // Writing into a String cannot fail.
    let _ = match r {
        Record::Trade(t) => {
            out.push_str(&t.trade_id);
            Ok(())
        }
        Record::Orderbook(o) => write!(out, "{ts}:{}", o.last_update_id),
        Record::FundingRate(_) | Record::OpenInterest(_) | Record::VolatilityIndex(_) => {
            write!(out, "{ts}")
        }
        Record::LsrTopPosition(l) => write!(out, "{ts}:{}", l.period),
        Record::LsrAllAccount(l) => write!(out, "{ts}:{}", l.period),
        Record::Liquidation(l) => write!(
            out,
            "{ts}:{}:{}:{}:{}",
            l.side, l.liquidation_time_ms, l.price, l.quantity
        ),
    };
}

/// The ClickHouse expression giving the same key string for a stored row of `t`.
pub fn key_sql(t: DataType) -> &'static str {
    match t {
        DataType::Trade => "trade_id",
        DataType::Orderbook => {
            "concat(toString(toUnixTimestamp64Milli(timestamp)), ':', toString(last_update_id))"
        }
        DataType::FundingRate | DataType::OpenInterest | DataType::VolatilityIndex => {
            "toString(toUnixTimestamp64Milli(timestamp))"
        }
        DataType::LsrTopPosition | DataType::LsrAllAccount => {
            "concat(toString(toUnixTimestamp64Milli(timestamp)), ':', toString(period))"
        }
        DataType::Liquidation => {
            "concat(toString(toUnixTimestamp64Milli(timestamp)), ':', toString(side), ':', \
             toString(toUnixTimestamp64Milli(liquidation_time)), ':', \
             toString(reinterpretAsInt64(price)), ':', toString(reinterpretAsInt64(quantity)))"
        }
    }
}

/// ClickHouse's `sipHash64` of a string: SipHash-2-4 with the zero key.
pub fn hash(key: &str) -> u64 {
    #[allow(deprecated)]
    // std's SipHasher is exactly SipHash-2-4; the deprecation is about HashDoS defaults
    let mut h = std::hash::SipHasher::new();
    h.write(key.as_bytes());
    h.finish()
}

/// A market as one string, `exchange \0 market_type \0 symbol` (the SQL side builds the same
/// with `concat`), so that a map lookup needs no tuple of owned strings.
pub fn write_market(exchange: &str, market_type: &str, symbol: &str, out: &mut String) {
    out.clear();
    out.push_str(exchange);
    out.push('\0');
    out.push_str(market_type);
    out.push('\0');
    out.push_str(symbol);
}

/// The SQL expression of [`write_market`] over the stored columns.
pub const MARKET_SQL: &str = "concat(exchange, '\\0', market_type, '\\0', symbol)";

/// Splits a [`write_market`] string back into its three parts.
pub fn split_market(m: &str) -> (&str, &str, &str) {
    let mut it = m.splitn(3, '\0');
    let e = it.next().unwrap_or("");
    let t = it.next().unwrap_or("");
    let s = it.next().unwrap_or("");
    (e, t, s)
}

pub use crate::schema::quote as sql_str;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Common, LiquidationRow, OrderbookRow, TradeRow};

    #[test]
    fn hash_is_clickhouse_siphash64() {
        // Values printed by `SELECT sipHash64('abc'), sipHash64(''), sipHash64('2345678901')`
        // on the embedded engine (ClickHouse 26.9).
        assert_eq!(hash("abc"), 4_596_069_200_710_135_518);
        assert_eq!(hash(""), 2_202_906_307_356_721_367);
        assert_eq!(hash("2345678901"), 4_382_584_436_986_500_004);
    }

    #[test]
    fn keys_per_type() {
        let common = Common {
            timestamp_ms: 1_761_040_800_123,
            ..Default::default()
        };
        let mut k = String::new();
        write_key(
            &Record::Trade(TradeRow {
                common: common.clone(),
                trade_id: "t-1".into(),
                ..Default::default()
            }),
            &mut k,
        );
        assert_eq!(k, "t-1");
        write_key(
            &Record::Orderbook(OrderbookRow {
                common: common.clone(),
                last_update_id: 7,
                ..Default::default()
            }),
            &mut k,
        );
        assert_eq!(k, "1761040800123:7");
        write_key(
            &Record::Liquidation(LiquidationRow {
                common,
                side: "sell".into(),
                price: -150_000_000,
                quantity: 1,
                liquidation_time_ms: 5,
            }),
            &mut k,
        );
        assert_eq!(k, "1761040800123:sell:5:-150000000:1");
    }

    #[test]
    fn markets_and_literals() {
        let mut m = String::new();
        write_market("binance", "spot", "BTC-USDT", &mut m);
        assert_eq!(split_market(&m), ("binance", "spot", "BTC-USDT"));
        assert_eq!(sql_str("a'b\\c\0"), "'a\\'b\\\\c\\0'");
    }
}
