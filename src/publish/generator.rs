//! Deterministic market-data generator: the MarketPrism collector's exact wire shapes, no IO, no clock.
//!
//! Consumes a seed and the caller's `now_ms`; emits [`Message`]s (subject, JSON payload,
//! optional `Nats-Msg-Id`) for all eight [`DataType`]s, with the field order, JSON types and
//! number text of `python-service.md` §2. It never reads the clock, never touches the network and
//! never panics: the same seed and the same sequence of calls give the same bytes.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::DataType;

use super::format::{
    push_decimal28_ratio, push_fixed, push_i64, push_iso_micros, push_py_float, push_stripped,
    push_u64,
};

/// The default number of levels per orderbook side (the collector's snapshot depth).
pub const DEFAULT_DEPTH: usize = 100;

/// The largest orderbook depth the generator accepts; deeper books would exceed NATS's default
/// 1 MiB max payload.
pub const MAX_DEPTH: usize = 5000;

/// One generated message, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The payload's data type (also the first subject token).
    pub data_type: DataType,
    /// `<data_type>.<exchange>.<market_type>.<symbol>`.
    pub subject: String,
    /// The JSON body, exactly as the collector serialises it.
    pub payload: Bytes,
    /// The `Nats-Msg-Id` the collector sets on JetStream publishes (§1.2); `None` for the two
    /// core-NATS types (trade, orderbook).
    pub msg_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Venue {
    BinanceSpot,
    BinancePerp,
    OkxSpot,
    OkxPerp,
    Deribit,
}

impl Venue {
    fn is_binance(self) -> bool {
        matches!(self, Venue::BinanceSpot | Venue::BinancePerp)
    }
}

/// One (exchange, market, symbol) and its evolving market state.
#[derive(Debug, Clone)]
struct Instrument {
    venue: Venue,
    exchange: &'static str,
    market: &'static str,
    /// The collector-internal exchange id used in Msg-Ids (`binance_derivatives`).
    raw: &'static str,
    symbol: &'static str,
    instrument_id: &'static str,
    is_btc: bool,
    /// Decimals of one price tick (BTC 0.1 → 1, ETH 0.01 → 2).
    price_dec: u32,
    base_mid: i64,
    mid: i64,
    /// Decimals of one quantity unit (8 for coins, 2 for OKX swap contracts).
    qty_dec: u32,
    /// Units per lot.
    lot: i64,
    trade_id: u64,
    update_id: u64,
    last_trade_ts: i64,
    last_liq_ts: i64,
    /// Last `ts_ms` per data type, so a JetStream Msg-Id is never reused.
    last_ts: [i64; 8],
    /// Funding rate in 1e-8 (Binance) or 1e-7 (OKX) units.
    funding: i64,
    /// Open interest in 1e-3 coins (Binance) or 1e-2 contracts (OKX).
    oi: i64,
    /// Long/short ratio (top positions, all accounts): Binance long share in 1e-4, OKX ratio
    /// in 1e-2.
    lsr_top: i64,
    lsr_all: i64,
    /// Volatility index in 1e-2.
    vol: i64,
    subjects: [String; 8],
}

/// Starting data for one instrument.
struct Spec {
    venue: Venue,
    symbol: &'static str,
    instrument_id: &'static str,
    is_btc: bool,
}

const SPECS: [Spec; 10] = [
    spec(Venue::BinanceSpot, "BTC-USDT", "BTCUSDT", true),
    spec(Venue::BinanceSpot, "ETH-USDT", "ETHUSDT", false),
    spec(Venue::BinancePerp, "BTC-USDT", "BTCUSDT", true),
    spec(Venue::BinancePerp, "ETH-USDT", "ETHUSDT", false),
    spec(Venue::OkxSpot, "BTC-USDT", "BTC-USDT", true),
    spec(Venue::OkxSpot, "ETH-USDT", "ETH-USDT", false),
    spec(Venue::OkxPerp, "BTC-USDT", "BTC-USDT-SWAP", true),
    spec(Venue::OkxPerp, "ETH-USDT", "ETH-USDT-SWAP", false),
    spec(Venue::Deribit, "BTC", "BTC", true),
    spec(Venue::Deribit, "ETH", "ETH", false),
];

const fn spec(
    venue: Venue,
    symbol: &'static str,
    instrument_id: &'static str,
    is_btc: bool,
) -> Spec {
    Spec {
        venue,
        symbol,
        instrument_id,
        is_btc,
    }
}

/// Instruments publishing trades and orderbooks: Binance and OKX, spot and perpetual.
const BOOK_MARKETS: &[usize] = &[0, 1, 2, 3, 4, 5, 6, 7];
/// Instruments publishing funding, open interest, liquidations and LSR: the perpetuals.
const PERP_MARKETS: &[usize] = &[2, 3, 6, 7];
/// Instruments publishing the volatility index: Deribit BTC and ETH.
const VOL_MARKETS: &[usize] = &[8, 9];

/// The instruments a data type is published for, as indices into the generator's table.
fn markets(data_type: DataType) -> &'static [usize] {
    match data_type {
        DataType::Trade | DataType::Orderbook => BOOK_MARKETS,
        DataType::FundingRate
        | DataType::OpenInterest
        | DataType::Liquidation
        | DataType::LsrTopPosition
        | DataType::LsrAllAccount => PERP_MARKETS,
        DataType::VolatilityIndex => VOL_MARKETS,
    }
}

fn type_index(data_type: DataType) -> usize {
    DataType::ALL
        .iter()
        .position(|t| *t == data_type)
        .unwrap_or(0)
}

/// Generates realistic market data in the MarketPrism collector's wire shapes.
///
/// Each call to [`Generator::next`] advances one instrument of that type, round-robin, so the
/// types' streams (`<type>.<exchange>.<market>.<symbol>`) are covered evenly.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: StdRng,
    depth: usize,
    instruments: Vec<Instrument>,
    cursor: [usize; 8],
    /// The current liquidation burst: instrument index, side, messages left.
    burst: Option<(usize, bool, u32)>,
    buf: String,
}

impl Generator {
    /// A generator with [`DEFAULT_DEPTH`] levels per orderbook side.
    #[cfg(test)]
    pub fn new(seed: u64) -> Self {
        Self::with_depth(seed, DEFAULT_DEPTH)
    }

    /// A generator with `depth` levels per orderbook side (clamped to `1..=MAX_DEPTH`).
    pub fn with_depth(seed: u64, depth: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let instruments = SPECS.iter().map(|s| instrument(s, &mut rng)).collect();
        Generator {
            rng,
            depth: depth.clamp(1, MAX_DEPTH),
            instruments,
            cursor: [0; 8],
            burst: None,
            buf: String::with_capacity(16 * 1024),
        }
    }

    /// Levels per orderbook side.
    #[cfg(test)]
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The subjects messages of `data_type` are published on, in round-robin order.
    #[cfg(test)]
    pub fn subjects(&self, data_type: DataType) -> Vec<String> {
        let t = type_index(data_type);
        markets(data_type)
            .iter()
            .filter_map(|&i| self.instruments.get(i).map(|m| m.subjects[t].clone()))
            .collect()
    }

    /// The next message of `data_type`, stamped with `now_ms` (UTC milliseconds).
    ///
    /// `ts_ms` is `now_ms`, except for the six JetStream types, where it is raised to one past
    /// the previous message of the same stream when needed: the Msg-Id contains it, and the
    /// collector's poll interval guarantees distinct ids in reality.
    pub fn next(&mut self, data_type: DataType, now_ms: i64) -> Message {
        let t = type_index(data_type);
        let list = markets(data_type);
        let i = if data_type == DataType::Liquidation {
            self.liquidation_target()
        } else {
            let c = self.cursor[t];
            self.cursor[t] = (c + 1) % list.len();
            list.get(c).copied().unwrap_or(0)
        };
        self.buf.clear();
        let msg_id = match data_type {
            DataType::Trade => {
                self.trade(i, now_ms);
                None
            }
            DataType::Orderbook => {
                self.orderbook(i, now_ms);
                None
            }
            DataType::FundingRate => Some(self.funding(i, now_ms)),
            DataType::OpenInterest => Some(self.open_interest(i, now_ms)),
            DataType::Liquidation => Some(self.liquidation(i, now_ms)),
            DataType::LsrTopPosition => Some(self.lsr(i, now_ms, true)),
            DataType::LsrAllAccount => Some(self.lsr(i, now_ms, false)),
            DataType::VolatilityIndex => Some(self.vol(i, now_ms)),
        };
        let subject = self
            .instruments
            .get(i)
            .map(|m| m.subjects[t].clone())
            .unwrap_or_default();
        Message {
            data_type,
            subject,
            payload: Bytes::copy_from_slice(self.buf.as_bytes()),
            msg_id,
        }
    }

    /// Picks the instrument of the next liquidation: bursts of 1–6 on one instrument and side.
    fn liquidation_target(&mut self) -> usize {
        match self.burst {
            Some((i, side, left)) if left > 0 => {
                self.burst = Some((i, side, left - 1));
                i
            }
            _ => {
                let pick = self.rng.random_range(0..PERP_MARKETS.len());
                let i = PERP_MARKETS.get(pick).copied().unwrap_or(2);
                let side = self.rng.random_bool(0.5);
                let left = self.rng.random_range(0..6);
                self.burst = Some((i, side, left));
                i
            }
        }
    }

    /// Moves `i`'s mid price one random step, gently pulled back towards its start.
    fn walk(&mut self, i: usize) -> i64 {
        let step = self.rng.random_range(-3i64..=3);
        let Some(m) = self.instruments.get_mut(i) else {
            return 0;
        };
        let pull = (m.base_mid - m.mid) / 2000;
        m.mid = (m.mid + step + pull).max(100);
        m.mid
    }

    /// A random lot count spread over several orders of magnitude.
    fn lots(&mut self, max_pow: u32) -> i64 {
        let p = self.rng.random_range(0..=max_pow);
        self.rng.random_range(1..=10i64.pow(p))
    }

    /// `ts_ms` for a JetStream type: `now_ms`, or one past the stream's previous one.
    fn js_ts(&mut self, i: usize, data_type: DataType, now_ms: i64) -> i64 {
        let t = type_index(data_type);
        let Some(m) = self.instruments.get_mut(i) else {
            return now_ms;
        };
        let ts = now_ms.max(m.last_ts[t] + 1);
        m.last_ts[t] = ts;
        ts
    }

    fn trade(&mut self, i: usize, now_ms: i64) {
        let mid = self.walk(i);
        let buy = self.rng.random_bool(0.5);
        let half = self.rng.random_range(1..=2);
        let slip = self.rng.random_range(0..=2);
        let price = if buy {
            mid + half + slip
        } else {
            mid - half - slip
        };
        let lots = self.lots(4);
        let lag = self.rng.random_range(1..=40);
        let collect_lag = self.rng.random_range(0..=1);
        let Some(m) = self.instruments.get_mut(i) else {
            return;
        };
        m.trade_id += 1;
        let trade_ts = (now_ms - lag).max(m.last_trade_ts);
        m.last_trade_ts = trade_ts;
        let ts = now_ms.max(trade_ts);
        let b = &mut self.buf;
        b.push_str("{\"symbol\":\"");
        b.push_str(m.symbol);
        // Binance's text as in the reference example (`"66990.5"`); OKX's strings as given.
        let point_zero = m.venue.is_binance();
        b.push_str("\",\"price\":\"");
        push_stripped(b, price, m.price_dec, point_zero);
        b.push_str("\",\"quantity\":\"");
        push_stripped(b, lots * m.lot, m.qty_dec, point_zero);
        b.push_str("\",\"side\":\"");
        b.push_str(if buy { "buy" } else { "sell" });
        b.push_str("\",\"trade_id\":\"");
        push_u64(b, m.trade_id);
        push_head(b, "\",\"exchange\":\"", m);
        b.push_str("\",\"data_source\":\"marketprism\",\"normalized_symbol\":\"");
        b.push_str(m.symbol);
        b.push_str("\",\"data_type\":\"trade\",\"ts_ms\":");
        push_i64(b, ts);
        b.push_str(",\"trade_ts_ms\":");
        push_i64(b, trade_ts);
        b.push_str(",\"publisher\":\"unified-collector\",\"collected_ts_ms\":");
        push_i64(b, ts - collect_lag);
        b.push('}');
    }

    fn orderbook(&mut self, i: usize, now_ms: i64) {
        let mid = self.walk(i);
        let spread = self.rng.random_range(1..=3);
        let std_lag = self.rng.random_range(0..3000);
        let update_step = self.rng.random_range(1..=200);
        let Some(m) = self.instruments.get_mut(i) else {
            return;
        };
        m.update_id += update_step;
        let (venue, price_dec, qty_dec, lot) = (m.venue, m.price_dec, m.qty_dec, m.lot);
        let (update_id, symbol, exchange, market) = (m.update_id, m.symbol, m.exchange, m.market);
        let best_bid = mid - (spread + 1) / 2;
        let best_ask = best_bid + spread;
        let b = &mut self.buf;
        b.push_str("{\"exchange\":\"");
        b.push_str(exchange);
        b.push_str("\",\"symbol\":\"");
        b.push_str(symbol);
        b.push_str("\",\"bids\":[");
        let binance = venue.is_binance();
        for (side, start) in [(-1i64, best_bid), (1, best_ask)] {
            if side == 1 {
                b.push_str("],\"asks\":[");
            }
            let mut p = start;
            for level in 0..self.depth {
                if level > 0 {
                    b.push(',');
                    let gap = if self.rng.random_bool(0.7) {
                        1
                    } else {
                        self.rng.random_range(2..=4)
                    };
                    p += side * gap;
                }
                if p <= 0 {
                    // A book deeper than the price itself (tiny prices, huge depth): stop.
                    b.pop();
                    break;
                }
                let pw = self.rng.random_range(0..=4);
                let qty = self.rng.random_range(1..=10i64.pow(pw)) * lot;
                b.push_str("[\"");
                if binance {
                    push_fixed(b, p, price_dec, 8);
                    b.push_str("\",\"");
                    push_fixed(b, qty, qty_dec, 8);
                } else {
                    push_stripped(b, p, price_dec, false);
                    b.push_str("\",\"");
                    push_stripped(b, qty, qty_dec, false);
                }
                b.push_str("\"]");
            }
        }
        b.push_str("],\"last_update_id\":");
        if binance {
            push_u64(b, update_id);
        } else {
            b.push_str("null");
        }
        b.push_str(",\"data_source\":\"marketprism\",\"normalized_symbol\":\"");
        b.push_str(symbol);
        b.push_str("\",\"standardized_at\":\"");
        push_iso_micros(b, now_ms * 1000 - std_lag);
        b.push_str(
            "\",\"standardization_version\":\"2.0\",\"data_type\":\"orderbook\",\"market_type\":\"",
        );
        b.push_str(market);
        b.push_str("\",\"ts_ms\":");
        push_i64(b, now_ms);
        b.push_str(",\"publisher\":\"unified-collector\",\"collected_ts_ms\":");
        push_i64(b, now_ms);
        b.push('}');
    }

    fn funding(&mut self, i: usize, now_ms: i64) -> String {
        let ts = self.js_ts(i, DataType::FundingRate, now_ms);
        let mid = self.walk(i);
        let step = self.rng.random_range(-40i64..=40);
        let index_off = self.rng.random_range(-99_999_999i64..=99_999_999);
        let Some(m) = self.instruments.get_mut(i) else {
            return String::new();
        };
        let binance = m.venue.is_binance();
        // Binance rates are 1e-8 units, OKX 1e-7; both stay within ±0.0004.
        let (unit, bound) = if binance { (1e8, 40_000) } else { (1e7, 4_000) };
        let step = if binance { step * 10 } else { step };
        m.funding = (m.funding + step).clamp(-bound, bound);
        let rate = m.funding as f64 / unit;
        let b = &mut self.buf;
        push_head(b, "{\"exchange\":\"", m);
        b.push_str("\",\"symbol\":\"");
        b.push_str(m.symbol);
        b.push_str("\",\"instrument_id\":\"");
        b.push_str(m.instrument_id);
        b.push_str("\",\"current_funding_rate\":");
        push_py_float(b, rate);
        b.push_str(",\"estimated_funding_rate\":");
        if binance {
            push_py_float(b, rate);
            b.push_str(",\"funding_interval\":\"8h\",\"mark_price\":");
            // Prices in 1e-8 units: mark from the mid, index a little off, premium the gap.
            let mark = mid * 10i64.pow(8 - m.price_dec);
            let index = mark + index_off;
            push_py_float(b, mark as f64 / 1e8);
            b.push_str(",\"index_price\":");
            push_py_float(b, index as f64 / 1e8);
            b.push_str(",\"premium_index\":");
            push_py_float(b, (mark - index) as f64 / 1e8);
        } else {
            b.push_str("null,\"funding_interval\":\"8h\",\"mark_price\":null,\"index_price\":null,\"premium_index\":null");
        }
        b.push_str(",\"data_type\":\"funding_rate\",\"ts_ms\":");
        push_i64(b, ts);
        b.push_str(",\"publisher\":\"unified-collector\",\"collected_ts_ms\":");
        push_i64(b, ts);
        b.push_str(",\"next_funding_ts_ms\":");
        if binance {
            // The Python service's placeholder: the collection time, not Binance's nextFundingTime.
            push_i64(b, ts);
        } else {
            const EIGHT_H: i64 = 8 * 3_600_000;
            push_i64(b, (ts.div_euclid(EIGHT_H) + 1) * EIGHT_H);
        }
        b.push('}');
        msg_id("funding_rate", m, ts)
    }

    fn open_interest(&mut self, i: usize, now_ms: i64) -> String {
        let ts = self.js_ts(i, DataType::OpenInterest, now_ms);
        let mid = self.walk(i);
        let step = self.rng.random_range(-5_000i64..=5_000);
        let Some(m) = self.instruments.get_mut(i) else {
            return String::new();
        };
        m.oi = (m.oi + step).max(1_000);
        let b = &mut self.buf;
        push_head(b, "{\"exchange\":\"", m);
        b.push_str("\",\"symbol\":\"");
        b.push_str(m.symbol);
        b.push_str("\",\"instrument_id\":\"");
        b.push_str(m.instrument_id);
        b.push_str("\",\"open_interest_value\":");
        if m.venue.is_binance() {
            // Coins (1e-3) × price ticks → 10^-(3+price_dec) USD units.
            push_py_float(b, m.oi as f64 / 1e3);
            b.push_str(",\"open_interest_usd\":");
            let usd = i128::from(m.oi) * i128::from(mid);
            push_py_float(b, usd as f64 / 10f64.powi(3 + m.price_dec as i32));
            b.push_str(",\"open_interest_unit\":\"contracts\",\"mark_price\":");
            push_py_float(b, mid as f64 / 10f64.powi(m.price_dec as i32));
        } else {
            // Contracts (1e-2); `open_interest_usd` is OKX's oiCcy, a coin amount.
            push_py_float(b, m.oi as f64 / 1e2);
            b.push_str(",\"open_interest_usd\":");
            let ct_val = if m.is_btc { 1e4 } else { 1e3 };
            push_py_float(b, m.oi as f64 / ct_val);
            b.push_str(",\"open_interest_unit\":\"contracts\",\"mark_price\":null");
        }
        b.push_str(",\"index_price\":null,\"change_24h\":null,\"change_24h_percent\":null,\"data_type\":\"open_interest\",\"ts_ms\":");
        push_i64(b, ts);
        b.push_str(",\"publisher\":\"unified-collector\",\"collected_ts_ms\":");
        push_i64(b, ts);
        b.push('}');
        msg_id("open_interest", m, ts)
    }

    fn liquidation(&mut self, i: usize, now_ms: i64) -> String {
        let ts = self.js_ts(i, DataType::Liquidation, now_ms);
        let mid = self.walk(i);
        let sell = self.burst.map(|(_, s, _)| s).unwrap_or(true);
        let lag = self.rng.random_range(50..=400);
        let bk_off = self.rng.random_range(0..=20);
        let lots = self.lots(3);
        let micros = self.rng.random_range(0..1000);
        let Some(m) = self.instruments.get_mut(i) else {
            return String::new();
        };
        let binance = m.venue.is_binance();
        // Binance: the order's trade time T; OKX: the collector's clock (§2.2). Strictly
        // increasing per instrument so the liquidation id (and Msg-Id) is unique.
        let t = if binance {
            (ts - lag).max(m.last_liq_ts + 1)
        } else {
            ts.max(m.last_liq_ts + 1)
        };
        m.last_liq_ts = t;
        let side = if sell { "sell" } else { "buy" };
        // Longs are liquidated by a sell below the market, shorts by a buy above it.
        let price = if sell { mid - bk_off } else { mid + bk_off };
        let scale = 10f64.powi(m.price_dec as i32);
        let price_f = price as f64 / scale;
        let b = &mut self.buf;
        push_head(b, "{\"exchange\":\"", m);
        b.push_str("\",\"symbol\":\"");
        b.push_str(m.symbol);
        b.push_str("\",\"instrument_id\":\"");
        b.push_str(m.instrument_id);
        let id_start = b.len() + "\",\"liquidation_id\":\"".len();
        b.push_str("\",\"liquidation_id\":\"");
        b.push_str(if binance { "binance_" } else { "okx_" });
        push_i64(b, t);
        b.push('_');
        b.push_str(m.instrument_id);
        b.push('_');
        b.push_str(side);
        let liquidation_id = b.get(id_start..).unwrap_or_default().to_owned();
        b.push_str("\",\"side\":\"");
        b.push_str(side);
        b.push_str("\",\"status\":\"filled\",\"price\":");
        push_py_float(b, price_f);
        // Binance quantity in 1e-3 coins; OKX `sz` in contracts (ctVal 0.01 BTC / 0.1 ETH).
        let (qty, coins) = if binance {
            (lots as f64 / 1e3, lots as f64 / 1e3)
        } else {
            let ct_val = if m.is_btc { 0.01 } else { 0.1 };
            (lots as f64, lots as f64 * ct_val)
        };
        b.push_str(",\"quantity\":");
        push_py_float(b, qty);
        b.push_str(",\"filled_quantity\":");
        push_py_float(b, if binance { qty } else { 0.0 });
        b.push_str(",\"notional_value\":");
        push_py_float(b, (price_f * coins * 100.0).round() / 100.0);
        b.push_str(",\"liquidation_time\":\"");
        push_iso_micros(b, t * 1000 + if binance { 0 } else { micros });
        b.push_str("\",\"data_type\":\"liquidation\",\"aggregation_mode\":\"filtered\"");
        if binance {
            b.push_str(",\"average_price\":\"");
            push_fixed(b, price, m.price_dec, 2);
            b.push_str("\",\"bankruptcy_price\":\"");
            push_fixed(b, price, m.price_dec, 2);
            b.push('"');
        } else {
            b.push_str(",\"bankruptcy_price\":\"");
            push_stripped(b, price, m.price_dec, false);
            b.push('"');
        }
        b.push_str(",\"ts_ms\":");
        push_i64(b, ts);
        b.push_str(",\"publisher\":\"unified-collector\",\"collected_ts_ms\":");
        push_i64(b, ts);
        b.push_str(",\"liquidation_ts_ms\":");
        push_i64(b, t);
        b.push('}');
        let mut id = String::with_capacity(64);
        id.push_str("liquidation:");
        id.push_str(m.raw);
        id.push(':');
        id.push_str(m.symbol);
        id.push(':');
        id.push_str(&liquidation_id);
        id
    }

    fn lsr(&mut self, i: usize, now_ms: i64, top: bool) -> String {
        let data_type = if top {
            DataType::LsrTopPosition
        } else {
            DataType::LsrAllAccount
        };
        let ts = self.js_ts(i, data_type, now_ms);
        let step = self.rng.random_range(-30i64..=30);
        let Some(m) = self.instruments.get_mut(i) else {
            return String::new();
        };
        let binance = m.venue.is_binance();
        let state = if top { &mut m.lsr_top } else { &mut m.lsr_all };
        if binance {
            // Long share in 1e-4, kept within 0.35..0.75.
            *state = (*state + step).clamp(3_500, 7_500);
        } else {
            // Ratio in 1e-2, kept within 0.5..3.0 (so both shares are ≥ 0.25).
            *state = (*state + step / 10).clamp(50, 300);
        }
        let v = *state;
        let b = &mut self.buf;
        push_head(b, "{\"exchange\":\"", m);
        b.push_str("\",\"symbol\":\"");
        b.push_str(m.symbol);
        b.push_str("\",\"instrument_id\":\"");
        b.push_str(m.instrument_id);
        b.push_str("\",\"long_short_ratio\":\"");
        if binance {
            let short = 10_000 - v;
            // ratio = long / short, rounded to 4 decimals as Binance sends it.
            let ratio = (v * 10_000 * 2 + short) / (2 * short);
            push_fixed(b, ratio, 4, 4);
        } else {
            push_stripped(b, v, 2, false);
        }
        // The Python service's bug: top-position LSR says "1h" although 5m data is requested.
        b.push_str(if top {
            "\",\"period\":\"1h\",\"data_source\":\"api\",\"data_type\":\"lsr_top_position\",\"long_position_ratio\":\""
        } else {
            "\",\"period\":\"5m\",\"data_source\":\"api\",\"data_type\":\"lsr_all_account\",\"long_account_ratio\":\""
        });
        let ratio_v = u128::try_from(v).unwrap_or(100);
        if binance {
            push_fixed(b, v, 4, 4);
        } else {
            push_decimal28_ratio(b, ratio_v, 100 + ratio_v);
        }
        b.push_str(if top {
            "\",\"short_position_ratio\":\""
        } else {
            "\",\"short_account_ratio\":\""
        });
        if binance {
            push_fixed(b, 10_000 - v, 4, 4);
        } else {
            push_decimal28_ratio(b, 100, 100 + ratio_v);
        }
        b.push_str("\",\"ts_ms\":");
        push_i64(b, ts);
        b.push_str(",\"publisher\":\"unified-collector\",\"collected_ts_ms\":");
        push_i64(b, ts);
        b.push('}');
        let mut id = msg_id(data_type.as_str(), m, ts);
        id.push_str(if top { ":1h" } else { ":5m" });
        id
    }

    fn vol(&mut self, i: usize, now_ms: i64) -> String {
        let ts = self.js_ts(i, DataType::VolatilityIndex, now_ms);
        let step = self.rng.random_range(-25i64..=25);
        let Some(m) = self.instruments.get_mut(i) else {
            return String::new();
        };
        m.vol = (m.vol + step).clamp(1_500, 15_000);
        let b = &mut self.buf;
        b.push_str("{\"exchange\":\"deribit\",\"symbol\":\"");
        b.push_str(m.symbol);
        b.push_str("\",\"currency\":\"");
        b.push_str(m.symbol);
        b.push_str("\",\"vol_index\":\"");
        push_stripped(b, m.vol, 2, true);
        b.push_str("\",\"volatility_index\":\"");
        push_stripped(b, m.vol, 2, true);
        b.push_str("\",\"market_type\":\"options\",\"data_source\":\"marketprism\",\"data_type\":\"volatility_index\",\"ts_ms\":");
        push_i64(b, ts);
        b.push_str(",\"publisher\":\"unified-collector\",\"collected_ts_ms\":");
        push_i64(b, ts);
        b.push('}');
        msg_id("volatility_index", m, ts)
    }
}

/// Writes `<open><exchange>","market_type":"<market>`; both field orders have the two adjacent.
fn push_head(b: &mut String, open: &str, m: &Instrument) {
    b.push_str(open);
    b.push_str(m.exchange);
    b.push_str("\",\"market_type\":\"");
    b.push_str(m.market);
}

/// `<type>:<raw_exchange>:<symbol>:<ts_ms>` (§1.2).
fn msg_id(data_type: &str, m: &Instrument, ts: i64) -> String {
    let mut id = String::with_capacity(64);
    id.push_str(data_type);
    id.push(':');
    id.push_str(m.raw);
    id.push(':');
    id.push_str(m.symbol);
    id.push(':');
    push_i64(&mut id, ts);
    id
}

fn instrument(s: &Spec, rng: &mut StdRng) -> Instrument {
    let (exchange, market, raw) = match s.venue {
        Venue::BinanceSpot => ("binance", "spot", "binance_spot"),
        Venue::BinancePerp => ("binance", "perpetual", "binance_derivatives"),
        Venue::OkxSpot => ("okx", "spot", "okx_spot"),
        Venue::OkxPerp => ("okx", "perpetual", "okx_derivatives"),
        Venue::Deribit => ("deribit", "options", "deribit_derivatives"),
    };
    // BTC ticks 0.1 around 67000, ETH ticks 0.01 around 3500; venues differ by a small basis.
    let (price_dec, base) = if s.is_btc { (1, 670_000) } else { (2, 350_000) };
    let basis = rng.random_range(-200i64..=200);
    let (qty_dec, lot) = match (s.venue, s.is_btc) {
        (Venue::OkxPerp, _) => (2, 1),
        (_, true) => (8, 1_000),
        (_, false) => (8, 10_000),
    };
    let trade_id = match s.venue {
        Venue::BinanceSpot => rng.random_range(4_000_000_000..5_000_000_000),
        Venue::BinancePerp => rng.random_range(2_000_000_000..3_000_000_000),
        _ => rng.random_range(500_000_000..900_000_000),
    };
    let update_id = match s.venue {
        Venue::BinancePerp => rng.random_range(7_000_000_000_000..8_000_000_000_000),
        _ => rng.random_range(50_000_000_000..60_000_000_000),
    };
    let binance = matches!(s.venue, Venue::BinanceSpot | Venue::BinancePerp);
    let funding = if binance { 10_000 } else { 812 };
    let oi = match (binance, s.is_btc) {
        (true, true) => 81_234_567,
        (true, false) => 2_012_345_678,
        (false, true) => 250_123_456,
        (false, false) => 180_345_678,
    };
    let lsr = if binance { 5_300 } else { 112 };
    let vol = if s.is_btc { 4_873 } else { 6_512 };
    let subjects =
        DataType::ALL.map(|t| format!("{}.{}.{}.{}", t.as_str(), exchange, market, s.symbol));
    Instrument {
        venue: s.venue,
        exchange,
        market,
        raw,
        symbol: s.symbol,
        instrument_id: s.instrument_id,
        is_btc: s.is_btc,
        price_dec,
        base_mid: base + basis,
        mid: base + basis,
        qty_dec,
        lot,
        trade_id,
        update_id,
        last_trade_ts: i64::MIN,
        last_liq_ts: i64::MIN / 2,
        last_ts: [i64::MIN / 2; 8],
        funding,
        oi,
        lsr_top: lsr,
        lsr_all: lsr,
        vol,
        subjects,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde_json::Value;

    use super::*;

    const NOW: i64 = 1_761_040_800_123;

    /// A JSON object with its keys in wire order.
    struct Ordered(Vec<(String, Value)>);

    impl<'de> Deserialize<'de> for Ordered {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Ordered;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                    let mut v = Vec::new();
                    while let Some(kv) = a.next_entry::<String, Value>()? {
                        v.push(kv);
                    }
                    Ok(Ordered(v))
                }
            }
            d.deserialize_map(V)
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum J {
        Str,
        Int,
        Num,
        Null,
        NumOrNull,
        IntOrNull,
        Levels,
    }

    fn type_ok(j: J, v: &Value) -> bool {
        match j {
            J::Str => v.is_string(),
            J::Int => v.is_i64(),
            J::Num => v.is_number(),
            J::Null => v.is_null(),
            J::NumOrNull => v.is_number() || v.is_null(),
            J::IntOrNull => v.is_i64() || v.is_null(),
            J::Levels => v.as_array().is_some_and(|levels| {
                !levels.is_empty()
                    && levels.iter().all(|l| {
                        l.as_array()
                            .is_some_and(|pq| pq.len() == 2 && pq.iter().all(Value::is_string))
                    })
            }),
        }
    }

    /// The Python service's field list (§2.2) for a message, chosen by type and exchange.
    fn shape(data_type: DataType, exchange: &str) -> Vec<(&'static str, J)> {
        use J::*;
        let common_tail = [("ts_ms", Int), ("publisher", Str), ("collected_ts_ms", Int)];
        let mut v: Vec<(&'static str, J)> = match data_type {
            DataType::Orderbook => vec![
                ("exchange", Str),
                ("symbol", Str),
                ("bids", Levels),
                ("asks", Levels),
                ("last_update_id", IntOrNull),
                ("data_source", Str),
                ("normalized_symbol", Str),
                ("standardized_at", Str),
                ("standardization_version", Str),
                ("data_type", Str),
                ("market_type", Str),
            ],
            DataType::Trade => {
                return vec![
                    ("symbol", Str),
                    ("price", Str),
                    ("quantity", Str),
                    ("side", Str),
                    ("trade_id", Str),
                    ("exchange", Str),
                    ("market_type", Str),
                    ("data_source", Str),
                    ("normalized_symbol", Str),
                    ("data_type", Str),
                    ("ts_ms", Int),
                    ("trade_ts_ms", Int),
                    ("publisher", Str),
                    ("collected_ts_ms", Int),
                ];
            }
            DataType::FundingRate => {
                return vec![
                    ("exchange", Str),
                    ("market_type", Str),
                    ("symbol", Str),
                    ("instrument_id", Str),
                    ("current_funding_rate", Num),
                    ("estimated_funding_rate", NumOrNull),
                    ("funding_interval", Str),
                    ("mark_price", NumOrNull),
                    ("index_price", NumOrNull),
                    ("premium_index", NumOrNull),
                    ("data_type", Str),
                    ("ts_ms", Int),
                    ("publisher", Str),
                    ("collected_ts_ms", Int),
                    ("next_funding_ts_ms", Int),
                ];
            }
            DataType::OpenInterest => vec![
                ("exchange", Str),
                ("market_type", Str),
                ("symbol", Str),
                ("instrument_id", Str),
                ("open_interest_value", Num),
                ("open_interest_usd", NumOrNull),
                ("open_interest_unit", Str),
                ("mark_price", NumOrNull),
                ("index_price", NumOrNull),
                ("change_24h", Null),
                ("change_24h_percent", Null),
                ("data_type", Str),
            ],
            DataType::Liquidation => {
                let mut v = vec![
                    ("exchange", Str),
                    ("market_type", Str),
                    ("symbol", Str),
                    ("instrument_id", Str),
                    ("liquidation_id", Str),
                    ("side", Str),
                    ("status", Str),
                    ("price", Num),
                    ("quantity", Num),
                    ("filled_quantity", Num),
                    ("notional_value", Num),
                    ("liquidation_time", Str),
                    ("data_type", Str),
                    ("aggregation_mode", Str),
                ];
                if exchange == "binance" {
                    v.push(("average_price", Str));
                }
                v.push(("bankruptcy_price", Str));
                v.extend(common_tail);
                v.push(("liquidation_ts_ms", Int));
                return v;
            }
            DataType::LsrTopPosition | DataType::LsrAllAccount => {
                let (l, s) = if data_type == DataType::LsrTopPosition {
                    ("long_position_ratio", "short_position_ratio")
                } else {
                    ("long_account_ratio", "short_account_ratio")
                };
                vec![
                    ("exchange", Str),
                    ("market_type", Str),
                    ("symbol", Str),
                    ("instrument_id", Str),
                    ("long_short_ratio", Str),
                    ("period", Str),
                    ("data_source", Str),
                    ("data_type", Str),
                    (l, Str),
                    (s, Str),
                ]
            }
            DataType::VolatilityIndex => vec![
                ("exchange", Str),
                ("symbol", Str),
                ("currency", Str),
                ("vol_index", Str),
                ("volatility_index", Str),
                ("market_type", Str),
                ("data_source", Str),
                ("data_type", Str),
            ],
        };
        v.extend(common_tail);
        v
    }

    fn parse(msg: &Message) -> Ordered {
        serde_json::from_slice(&msg.payload)
            .unwrap_or_else(|e| panic!("{}: {e}: {:?}", msg.subject, msg.payload))
    }

    fn get<'a>(o: &'a Ordered, key: &str) -> &'a Value {
        &o.0.iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no {key}"))
            .1
    }

    fn s<'a>(o: &'a Ordered, key: &str) -> &'a str {
        get(o, key)
            .as_str()
            .unwrap_or_else(|| panic!("{key} not a string"))
    }

    fn all_messages(seed: u64, per_type: usize) -> Vec<Message> {
        let mut g = Generator::with_depth(seed, 20);
        let mut out = Vec::new();
        for k in 0..per_type {
            for t in DataType::ALL {
                out.push(g.next(t, NOW + k as i64 * 7));
            }
        }
        out
    }

    #[test]
    fn every_payload_has_the_collector_field_set_order_and_types() {
        for msg in all_messages(7, 40) {
            let o = parse(&msg);
            let want = shape(msg.data_type, s(&o, "exchange"));
            let keys: Vec<&str> = o.0.iter().map(|(k, _)| k.as_str()).collect();
            let want_keys: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
            assert_eq!(keys, want_keys, "{}", msg.subject);
            for ((k, v), (_, j)) in o.0.iter().zip(&want) {
                assert!(type_ok(*j, v), "{} {k}={v} is not {j:?}", msg.subject);
            }
            assert_eq!(s(&o, "data_type"), msg.data_type.as_str());
            assert_eq!(s(&o, "publisher"), "unified-collector");
        }
    }

    #[test]
    fn fixed_values_follow_the_collector() {
        for msg in all_messages(3, 20) {
            let o = parse(&msg);
            let ex = s(&o, "exchange");
            match msg.data_type {
                DataType::Orderbook => {
                    assert_eq!(s(&o, "standardization_version"), "2.0");
                    assert_eq!(s(&o, "data_source"), "marketprism");
                    assert_eq!(get(&o, "last_update_id").is_null(), ex == "okx");
                    assert!(s(&o, "standardized_at").ends_with("+00:00"));
                }
                DataType::Trade => {
                    assert!(matches!(s(&o, "side"), "buy" | "sell"));
                    let ts = get(&o, "ts_ms").as_i64().unwrap();
                    let tts = get(&o, "trade_ts_ms").as_i64().unwrap();
                    assert!(tts <= ts && ts - tts <= 40, "{ts} {tts}");
                }
                DataType::FundingRate => {
                    assert_eq!(s(&o, "funding_interval"), "8h");
                    let ts = get(&o, "ts_ms").as_i64().unwrap();
                    let next = get(&o, "next_funding_ts_ms").as_i64().unwrap();
                    if ex == "binance" {
                        assert_eq!(next, ts);
                        assert!(get(&o, "mark_price").is_number());
                    } else {
                        assert!(next > ts && next - ts <= 8 * 3_600_000);
                        assert!(get(&o, "mark_price").is_null());
                    }
                }
                DataType::OpenInterest => {
                    assert_eq!(s(&o, "open_interest_unit"), "contracts");
                }
                DataType::Liquidation => {
                    let id = s(&o, "liquidation_id");
                    let want = format!(
                        "{}_{}_{}_{}",
                        ex,
                        get(&o, "liquidation_ts_ms"),
                        s(&o, "instrument_id"),
                        s(&o, "side")
                    );
                    assert_eq!(id, want);
                    assert_eq!(s(&o, "status"), "filled");
                    assert_eq!(s(&o, "aggregation_mode"), "filtered");
                }
                DataType::LsrTopPosition => assert_eq!(s(&o, "period"), "1h"),
                DataType::LsrAllAccount => assert_eq!(s(&o, "period"), "5m"),
                DataType::VolatilityIndex => {
                    assert_eq!(s(&o, "vol_index"), s(&o, "volatility_index"));
                    assert_eq!(s(&o, "currency"), s(&o, "symbol"));
                    assert_eq!(s(&o, "market_type"), "options");
                }
            }
        }
    }

    #[test]
    fn subjects_cover_the_collector_streams() {
        let mut seen: HashMap<DataType, std::collections::BTreeSet<String>> = HashMap::new();
        for msg in all_messages(5, 16) {
            let o = parse(&msg);
            let want = format!(
                "{}.{}.{}.{}",
                msg.data_type,
                s(&o, "exchange"),
                s(&o, "market_type"),
                s(&o, "symbol")
            );
            assert_eq!(msg.subject, want);
            seen.entry(msg.data_type).or_default().insert(msg.subject);
        }
        let g = Generator::new(1);
        for t in DataType::ALL {
            let subjects: std::collections::BTreeSet<String> = g.subjects(t).into_iter().collect();
            assert_eq!(seen[&t], subjects, "{t}");
            let n = match t {
                DataType::Trade | DataType::Orderbook => 8,
                DataType::VolatilityIndex => 2,
                _ => 4,
            };
            assert_eq!(subjects.len(), n, "{t}");
        }
        assert!(seen[&DataType::VolatilityIndex].contains("volatility_index.deribit.options.BTC"));
        assert!(seen[&DataType::FundingRate].contains("funding_rate.okx.perpetual.ETH-USDT"));
        assert!(seen[&DataType::Trade].contains("trade.binance.spot.BTC-USDT"));
    }

    #[test]
    fn msg_ids_match_the_collector() {
        for msg in all_messages(9, 12) {
            let o = parse(&msg);
            let raw = match (s(&o, "exchange"), s(&o, "market_type")) {
                ("binance", "perpetual") => "binance_derivatives",
                ("okx", "perpetual") => "okx_derivatives",
                ("deribit", _) => "deribit_derivatives",
                _ => "",
            };
            let sym = s(&o, "symbol");
            let ts = get(&o, "ts_ms");
            let want = match msg.data_type {
                DataType::Trade | DataType::Orderbook => None,
                DataType::Liquidation => Some(format!(
                    "liquidation:{raw}:{sym}:{}",
                    s(&o, "liquidation_id")
                )),
                DataType::LsrTopPosition | DataType::LsrAllAccount => Some(format!(
                    "{}:{raw}:{sym}:{ts}:{}",
                    msg.data_type,
                    s(&o, "period")
                )),
                t => Some(format!("{t}:{raw}:{sym}:{ts}")),
            };
            assert_eq!(msg.msg_id, want, "{}", msg.subject);
        }
        let mut g = Generator::new(1);
        let m = g.next(DataType::FundingRate, NOW);
        assert_eq!(
            m.msg_id.as_deref(),
            Some("funding_rate:binance_derivatives:BTC-USDT:1761040800123")
        );
    }

    #[test]
    fn jetstream_msg_ids_never_repeat_even_within_one_ms() {
        let mut g = Generator::new(4);
        let mut ids = std::collections::HashSet::new();
        for t in DataType::ALL.into_iter().filter(|t| !t.is_high_frequency()) {
            for _ in 0..500 {
                let m = g.next(t, NOW);
                assert!(ids.insert(m.msg_id.clone().unwrap()), "{:?}", m.msg_id);
            }
        }
    }

    #[test]
    fn trade_ids_are_strictly_sequential_per_market() {
        let mut g = Generator::new(11);
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut last_ts: HashMap<String, i64> = HashMap::new();
        for k in 0..400 {
            let m = g.next(DataType::Trade, NOW + k / 3);
            let o = parse(&m);
            let id: u64 = s(&o, "trade_id").parse().unwrap();
            if let Some(prev) = last.insert(m.subject.clone(), id) {
                assert_eq!(id, prev + 1, "{}", m.subject);
            }
            let tts = get(&o, "trade_ts_ms").as_i64().unwrap();
            if let Some(prev) = last_ts.insert(m.subject.clone(), tts) {
                assert!(tts >= prev);
            }
            let price: f64 = s(&o, "price").parse().unwrap();
            let qty: f64 = s(&o, "quantity").parse().unwrap();
            assert!(price > 1000.0 && qty > 0.0);
        }
        assert_eq!(last.len(), 8);
    }

    #[test]
    fn orderbooks_are_sorted_best_first_and_formatted_per_exchange() {
        let mut g = Generator::new(12);
        assert_eq!(g.depth(), DEFAULT_DEPTH);
        for k in 0..64 {
            let m = g.next(DataType::Orderbook, NOW + k);
            let o = parse(&m);
            let side = |key| -> Vec<(f64, String, String)> {
                get(&o, key)
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| {
                        let p = l[0].as_str().unwrap().to_owned();
                        let q = l[1].as_str().unwrap().to_owned();
                        (p.parse().unwrap(), p, q)
                    })
                    .collect()
            };
            let (bids, asks) = (side("bids"), side("asks"));
            assert_eq!((bids.len(), asks.len()), (100, 100));
            assert!(
                bids.windows(2).all(|w| w[0].0 > w[1].0),
                "bids not descending"
            );
            assert!(
                asks.windows(2).all(|w| w[0].0 < w[1].0),
                "asks not ascending"
            );
            assert!(bids[0].0 < asks[0].0);
            let binance = s(&o, "exchange") == "binance";
            for (_, p, q) in bids.iter().chain(&asks) {
                let frac = |x: &str| x.split_once('.').map_or(0, |(_, f)| f.len());
                if binance {
                    assert_eq!((frac(p), frac(q)), (8, 8), "{p} {q}");
                } else {
                    assert!(!p.ends_with('0') || !p.contains('.'), "{p}");
                    assert!(!q.ends_with('0') || !q.contains('.'), "{q}");
                }
                assert!(q.parse::<f64>().unwrap() > 0.0);
            }
        }
        let mut shallow = Generator::with_depth(1, 5);
        let o = parse(&shallow.next(DataType::Orderbook, NOW));
        assert_eq!(get(&o, "bids").as_array().unwrap().len(), 5);
    }

    #[test]
    fn number_text_matches_the_collector() {
        let mut g = Generator::new(13);
        let mut okx_funding = Vec::new();
        let mut okx_lsr = Vec::new();
        for k in 0..40 {
            let m = g.next(DataType::FundingRate, NOW + k);
            let text = String::from_utf8(m.payload.to_vec()).unwrap();
            if m.subject.contains(".okx.") {
                okx_funding.push(text);
            }
            let m = g.next(DataType::LsrTopPosition, NOW + k);
            if m.subject.contains(".okx.") {
                okx_lsr.push(parse(&m));
            }
        }
        // OKX's small rates serialise in exponent form, like Python's repr.
        assert!(
            okx_funding
                .iter()
                .any(|t| t.contains("\"current_funding_rate\":8.") && t.contains("e-05")),
            "{okx_funding:?}"
        );
        for o in &okx_lsr {
            let (l, sh) = (s(o, "long_position_ratio"), s(o, "short_position_ratio"));
            let ratio: f64 = s(o, "long_short_ratio").parse().unwrap();
            let (lf, sf): (f64, f64) = (l.parse().unwrap(), sh.parse().unwrap());
            assert!((lf + sf - 1.0).abs() < 1e-12);
            assert!((lf / sf - ratio).abs() < 1e-9);
            if l.len() != 30 {
                assert!(l.len() < 30, "{l}");
            }
        }
        let mut g = Generator::new(13);
        let text =
            String::from_utf8(g.next(DataType::VolatilityIndex, NOW).payload.to_vec()).unwrap();
        assert!(
            text.contains("\"vol_index\":\"48.") || text.contains("\"vol_index\":\"4"),
            "{text}"
        );
    }

    #[test]
    fn same_seed_same_bytes() {
        let a = all_messages(42, 10);
        let b = all_messages(42, 10);
        assert_eq!(a, b);
        let c = all_messages(43, 10);
        assert_ne!(a, c);
    }

    #[test]
    fn liquidations_come_in_bursts_on_one_market() {
        let mut g = Generator::new(21);
        let subjects: Vec<String> = (0..200)
            .map(|k| g.next(DataType::Liquidation, NOW + k).subject)
            .collect();
        let repeats = subjects.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(repeats > 50, "{repeats}");
        let distinct: std::collections::BTreeSet<_> = subjects.iter().collect();
        assert_eq!(distinct.len(), 4);
    }
}

#[cfg(test)]
mod throughput {
    use super::*;

    /// Prints one sample per type and per exchange (run with `--ignored --nocapture`).
    #[test]
    #[ignore]
    fn print_samples() {
        let mut g = Generator::with_depth(1, 2);
        for t in DataType::ALL {
            for _ in 0..markets(t).len().min(8) {
                let m = g.next(t, 1_761_040_800_123);
                println!(
                    "{} {:?}\n{}\n",
                    m.subject,
                    m.msg_id,
                    String::from_utf8_lossy(&m.payload)
                );
            }
        }
    }

    /// Generation throughput; meaningful only with `--release`.
    #[test]
    #[ignore]
    fn generation_throughput() {
        for (t, n, depth) in [
            (DataType::Trade, 2_000_000u32, DEFAULT_DEPTH),
            (DataType::Orderbook, 50_000, DEFAULT_DEPTH),
            (DataType::FundingRate, 500_000, DEFAULT_DEPTH),
            (DataType::Liquidation, 500_000, DEFAULT_DEPTH),
        ] {
            let mut g = Generator::with_depth(1, depth);
            let start = std::time::Instant::now();
            let mut bytes = 0usize;
            for k in 0..n {
                bytes += g
                    .next(t, 1_761_040_800_123 + i64::from(k / 1000))
                    .payload
                    .len();
            }
            let el = start.elapsed();
            println!(
                "{t}: {:.3} µs/msg, {:.0} msg/s, {} B/msg avg",
                el.as_secs_f64() * 1e6 / f64::from(n),
                f64::from(n) / el.as_secs_f64(),
                bytes / n as usize
            );
        }
    }
}
