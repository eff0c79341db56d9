//! Per-type publish rates ([`Mix`]) and the pure pacer that turns elapsed time into message counts.
//!
//! Consumes rates and time deltas; emits how many messages of each type are due. No clock, no IO.

use std::fmt;

use crate::model::DataType;

/// Messages per second for each data type.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// Indexed like [`DataType::ALL`].
    rates: [f64; 8],
}

/// Why a mix string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MixError {
    /// The string is empty.
    #[error(
        "empty mix: expected a preset (realistic, trades_only, orderbooks_only) or type=rate pairs"
    )]
    Empty,
    /// A pair is not `type=rate`.
    #[error("invalid mix entry {0:?}: expected type=rate, e.g. trade=5000")]
    Syntax(String),
    /// The type name is not one of the eight data types.
    #[error("unknown data type {0:?} in mix")]
    UnknownType(String),
    /// The rate is not a finite, non-negative number.
    #[error(
        "invalid rate {rate:?} for {data_type}: expected a non-negative number of messages per second"
    )]
    Rate {
        /// The data type.
        data_type: DataType,
        /// The offending text.
        rate: String,
    },
    /// The same type appears twice.
    #[error("data type {0} appears twice in mix")]
    Duplicate(DataType),
    /// Every rate is zero.
    #[error("mix has no positive rate")]
    NoPositiveRate,
}

fn idx(data_type: DataType) -> usize {
    DataType::ALL
        .iter()
        .position(|t| *t == data_type)
        .unwrap_or(0)
}

impl Mix {
    /// All rates zero; set them with [`Mix::with`].
    pub fn empty() -> Self {
        Mix { rates: [0.0; 8] }
    }

    /// The MarketPrism collector's real mix at its real size (about 48.9 msg/s): orderbooks 8/s
    /// (4 markets × 2 symbols × 1 Hz), trades 40/s, funding and open interest 8/min each,
    /// LSR 12/min per type (24/min together), volatility index 2/min, liquidations 6/min
    /// (published in bursts).
    pub fn realistic() -> Self {
        Mix::empty()
            .with(DataType::Orderbook, 8.0)
            .with(DataType::Trade, 40.0)
            .with(DataType::FundingRate, 8.0 / 60.0)
            .with(DataType::OpenInterest, 8.0 / 60.0)
            .with(DataType::Liquidation, 6.0 / 60.0)
            .with(DataType::LsrTopPosition, 12.0 / 60.0)
            .with(DataType::LsrAllAccount, 12.0 / 60.0)
            .with(DataType::VolatilityIndex, 2.0 / 60.0)
    }

    /// Trades only, 1000 msg/s.
    pub fn trades_only() -> Self {
        Mix::empty().with(DataType::Trade, 1000.0)
    }

    /// Orderbooks only, 100 msg/s.
    pub fn orderbooks_only() -> Self {
        Mix::empty().with(DataType::Orderbook, 100.0)
    }

    /// Parses a preset name (`realistic`, `trades_only`, `orderbooks_only`) or a list of
    /// `type=rate` pairs such as `trade=5000,orderbook=500,funding_rate=1`.
    pub fn parse(text: &str) -> Result<Mix, MixError> {
        let text = text.trim();
        match text {
            "" => return Err(MixError::Empty),
            "realistic" => return Ok(Mix::realistic()),
            "trades_only" => return Ok(Mix::trades_only()),
            "orderbooks_only" => return Ok(Mix::orderbooks_only()),
            _ => {}
        }
        let mut mix = Mix::empty();
        let mut seen = [false; 8];
        for entry in text.split(',').map(str::trim) {
            let (name, rate) = entry
                .split_once('=')
                .ok_or_else(|| MixError::Syntax(entry.to_owned()))?;
            let (name, rate) = (name.trim(), rate.trim());
            if name.is_empty() {
                return Err(MixError::Syntax(entry.to_owned()));
            }
            let data_type =
                DataType::parse(name).ok_or_else(|| MixError::UnknownType(name.to_owned()))?;
            let value = rate
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| MixError::Rate {
                    data_type,
                    rate: rate.to_owned(),
                })?;
            let i = idx(data_type);
            if seen[i] {
                return Err(MixError::Duplicate(data_type));
            }
            seen[i] = true;
            mix.rates[i] = value;
        }
        if mix.total() <= 0.0 {
            return Err(MixError::NoPositiveRate);
        }
        Ok(mix)
    }

    /// This mix with `data_type` at `rate` msg/s (negative or non-finite rates become 0).
    pub fn with(mut self, data_type: DataType, rate: f64) -> Self {
        self.rates[idx(data_type)] = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
        self
    }

    /// The rate of one type, msg/s.
    pub fn rate(&self, data_type: DataType) -> f64 {
        self.rates[idx(data_type)]
    }

    /// The sum of all rates, msg/s.
    pub fn total(&self) -> f64 {
        self.rates.iter().sum()
    }

    /// The types with a positive rate, in [`DataType::ALL`] order.
    pub fn types(&self) -> Vec<DataType> {
        DataType::ALL
            .into_iter()
            .filter(|t| self.rate(*t) > 0.0)
            .collect()
    }

    /// Keeps only the listed types (the others get rate 0).
    pub fn only(mut self, types: &[DataType]) -> Self {
        for (i, t) in DataType::ALL.iter().enumerate() {
            if !types.contains(t) {
                self.rates[i] = 0.0;
            }
        }
        self
    }

    /// The same proportions, rescaled so the rates add up to `total` msg/s.
    pub fn scaled_to(mut self, total: f64) -> Self {
        let sum = self.total();
        if sum > 0.0 && total.is_finite() && total >= 0.0 {
            for r in &mut self.rates {
                *r *= total / sum;
            }
        }
        self
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for t in self.types() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}={}", t, self.rate(t))?;
        }
        Ok(())
    }
}

/// Turns elapsed time into per-type message counts (a token bucket per type).
///
/// Every type with a positive rate starts with one token, so even a short run publishes each
/// type once. Buckets hold at most one second of tokens (at least 8), so a stalled publisher
/// does not catch up with an unbounded burst. Liquidations are released in groups (up to 4, as
/// the rate allows), so they arrive in bursts like real liquidation cascades.
#[derive(Debug, Clone)]
pub struct Pacer {
    rates: [f64; 8],
    tokens: [f64; 8],
}

/// The most liquidations released together.
const LIQUIDATION_BURST: f64 = 4.0;

impl Pacer {
    /// A pacer for `mix`.
    pub fn new(mix: &Mix) -> Self {
        let tokens = mix.rates.map(|r| if r > 0.0 { 1.0 } else { 0.0 });
        Pacer {
            rates: mix.rates,
            tokens,
        }
    }

    /// Adds `dt_secs` worth of tokens and takes the whole ones: the messages due now, indexed
    /// like [`DataType::ALL`].
    pub fn advance(&mut self, dt_secs: f64) -> [u64; 8] {
        let mut due = [0u64; 8];
        let dt = if dt_secs.is_finite() {
            dt_secs.max(0.0)
        } else {
            0.0
        };
        for (i, t) in DataType::ALL.iter().enumerate() {
            let rate = self.rates[i];
            if rate <= 0.0 {
                continue;
            }
            let cap = rate.max(8.0);
            self.tokens[i] = (self.tokens[i] + rate * dt).min(cap);
            let threshold = if *t == DataType::Liquidation {
                (rate * 2.0).clamp(1.0, LIQUIDATION_BURST).floor()
            } else {
                1.0
            };
            if self.tokens[i] >= threshold {
                let whole = self.tokens[i].floor();
                self.tokens[i] -= whole;
                // `whole` is a non-negative integral value bounded by `cap`.
                due[i] = whole as u64;
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_presets_and_pairs() {
        assert_eq!(Mix::parse("realistic"), Ok(Mix::realistic()));
        assert_eq!(Mix::parse(" trades_only "), Ok(Mix::trades_only()));
        assert_eq!(Mix::parse("orderbooks_only"), Ok(Mix::orderbooks_only()));
        let m = Mix::parse("trade=5000, orderbook=500,funding_rate=1").unwrap();
        assert_eq!(m.rate(DataType::Trade), 5000.0);
        assert_eq!(m.rate(DataType::Orderbook), 500.0);
        assert_eq!(m.rate(DataType::FundingRate), 1.0);
        assert_eq!(m.rate(DataType::Liquidation), 0.0);
        assert_eq!(m.total(), 5501.0);
        assert_eq!(m.to_string(), "trade=5000,orderbook=500,funding_rate=1");
        assert_eq!(Mix::parse(&m.to_string()), Ok(m));
        assert_eq!(Mix::parse("volatility_index=0.5").unwrap().total(), 0.5);
    }

    #[test]
    fn rejects_bad_mixes_with_clear_text() {
        let cases = [
            (
                "",
                "empty mix: expected a preset (realistic, trades_only, orderbooks_only) or type=rate pairs",
            ),
            (
                "trade",
                "invalid mix entry \"trade\": expected type=rate, e.g. trade=5000",
            ),
            (
                "=5",
                "invalid mix entry \"=5\": expected type=rate, e.g. trade=5000",
            ),
            ("trades=5", "unknown data type \"trades\" in mix"),
            (
                "trade=-1",
                "invalid rate \"-1\" for trade: expected a non-negative number of messages per second",
            ),
            (
                "trade=fast",
                "invalid rate \"fast\" for trade: expected a non-negative number of messages per second",
            ),
            (
                "trade=inf",
                "invalid rate \"inf\" for trade: expected a non-negative number of messages per second",
            ),
            ("trade=1,trade=2", "data type trade appears twice in mix"),
            ("trade=0,orderbook=0", "mix has no positive rate"),
            (
                "trade=1,",
                "invalid mix entry \"\": expected type=rate, e.g. trade=5000",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Mix::parse(text).unwrap_err().to_string(), want, "{text:?}");
        }
    }

    #[test]
    fn scale_and_filter_keep_proportions() {
        let m = Mix::realistic().scaled_to(489.0);
        assert!((m.total() - 489.0).abs() < 1e-9);
        assert!((m.rate(DataType::Trade) / m.rate(DataType::Orderbook) - 5.0).abs() < 1e-9);
        let only = Mix::realistic().only(&[DataType::Trade, DataType::VolatilityIndex]);
        assert_eq!(
            only.types(),
            vec![DataType::Trade, DataType::VolatilityIndex]
        );
    }

    #[test]
    fn pacer_delivers_the_rate_over_time() {
        let mut p = Pacer::new(&Mix::parse("trade=1000,funding_rate=0.5,liquidation=10").unwrap());
        let mut sums = [0u64; 8];
        for _ in 0..1000 {
            let due = p.advance(0.01);
            for (s, d) in sums.iter_mut().zip(due) {
                *s += d;
            }
        }
        // 10 s: 1 initial token + rate × 10 (minus the fraction still in the bucket).
        assert!(
            (10_000..=10_001).contains(&sums[idx(DataType::Trade)]),
            "{sums:?}"
        );
        assert_eq!(sums[idx(DataType::FundingRate)], 6);
        assert!(
            (97..=101).contains(&sums[idx(DataType::Liquidation)]),
            "{sums:?}"
        );
        assert_eq!(sums[idx(DataType::Orderbook)], 0);
    }

    #[test]
    fn pacer_caps_catch_up_after_a_stall() {
        let mut p = Pacer::new(&Mix::trades_only());
        let due = p.advance(60.0);
        assert_eq!(due[idx(DataType::Trade)], 1000);
    }
}
