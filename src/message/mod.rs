//! Wire shapes of the eight message types and their mapping to validated rows.
//!
//! One file per data type holds the borrowed serde struct for the JSON the Python service's collector
//! publishes and its `into_row`: validation and normalization into the typed row of
//! `crate::model`. Shared helpers: [`common`] (the fields every type carries, typed access to
//! JSON values), [`decimal`] (the one exact decimal parser) and [`timestamp`] (the one timestamp
//! parser). Nothing here does IO or reads the clock; `docs/data-model.md` lists every rule.

use serde::Deserialize;

use crate::decode::Rejection;
use crate::model::{Common, DataType, Record};

/// Declares a borrowed wire struct: the shared fields plus the type's own.
///
/// Every field is optional (absent and `null` are both `None`) and borrowed from the payload;
/// unknown keys are ignored. Validation happens in `into_row`, so a bad value is a rejection
/// that names its field rather than a generic JSON error.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident<'a> {
            $( $(#[$fmeta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        pub struct $name<'a> {
            /// `data_type`: must agree with the subject when present.
            #[serde(borrow, default)]
            pub data_type: Option<&'a serde_json::value::RawValue>,
            /// `exchange`.
            #[serde(borrow, default)]
            pub exchange: Option<&'a serde_json::value::RawValue>,
            /// `market_type`.
            #[serde(borrow, default)]
            pub market_type: Option<&'a serde_json::value::RawValue>,
            /// `symbol`.
            #[serde(borrow, default)]
            pub symbol: Option<&'a serde_json::value::RawValue>,
            /// `data_source`.
            #[serde(borrow, default)]
            pub data_source: Option<&'a serde_json::value::RawValue>,
            /// `ts_ms`: the preferred timestamp.
            #[serde(borrow, default)]
            pub ts_ms: Option<&'a serde_json::value::RawValue>,
            /// `timestamp`: used when `ts_ms` is absent.
            #[serde(borrow, default)]
            pub timestamp: Option<&'a serde_json::value::RawValue>,
            $(
                $(#[$fmeta])*
                #[serde(borrow, default)]
                pub $field: $ty,
            )*
        }

        impl<'a> $crate::message::common::HasCommon<'a> for $name<'a> {
            fn common_wire(&self) -> $crate::message::common::CommonWire<'a> {
                $crate::message::common::CommonWire {
                    data_type: self.data_type,
                    exchange: self.exchange,
                    market_type: self.market_type,
                    symbol: self.symbol,
                    data_source: self.data_source,
                    ts_ms: self.ts_ms,
                    timestamp: self.timestamp,
                }
            }
        }
    };
}

pub mod common;
pub mod decimal;
pub mod funding_rate;
pub mod liquidation;
pub mod lsr_all_account;
pub mod lsr_top_position;
pub mod open_interest;
pub mod orderbook;
pub mod timestamp;
pub mod trade;
pub mod volatility_index;

/// A message type: its wire struct, its data type and its mapping to a row.
pub trait Message<'a>: Deserialize<'a> + common::HasCommon<'a> {
    /// The data type (subject prefix) this wire struct belongs to.
    const DATA_TYPE: DataType;

    /// Validates the type's own fields and builds the row (the shared columns are resolved).
    fn into_record(self, common: Common, now_ms: i64) -> Result<Record, Rejection>;
}
