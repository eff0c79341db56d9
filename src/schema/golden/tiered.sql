CREATE DATABASE IF NOT EXISTS `marketprism`;

CREATE TABLE IF NOT EXISTS `marketprism`.`trades`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `trade_id` String CODEC(ZSTD),
    `price` Decimal64(8) CODEC(ZSTD),
    `quantity` Decimal64(8) CODEC(ZSTD),
    `side` LowCardinality(String) CODEC(ZSTD),
    `is_maker` Bool DEFAULT false CODEC(ZSTD),
    `trade_time` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD),
    INDEX idx_price_quantity (price, quantity) TYPE minmax GRANULARITY 4,
    INDEX idx_trade_time (trade_time) TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, trade_id)
TTL toDateTime(timestamp) + INTERVAL 3 DAY TO VOLUME 'cold'
SETTINGS index_granularity = 8192, storage_policy = 'hot_cold', non_replicated_deduplication_window = 160000;

CREATE TABLE IF NOT EXISTS `marketprism`.`orderbooks`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `last_update_id` UInt64 CODEC(Delta, ZSTD),
    `bids_count` UInt32 CODEC(Delta, ZSTD),
    `asks_count` UInt32 CODEC(Delta, ZSTD),
    `best_bid_price` Decimal64(8) CODEC(ZSTD),
    `best_ask_price` Decimal64(8) CODEC(ZSTD),
    `best_bid_quantity` Decimal64(8) CODEC(ZSTD),
    `best_ask_quantity` Decimal64(8) CODEC(ZSTD),
    `bids` String CODEC(ZSTD),
    `asks` String CODEC(ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD),
    INDEX idx_price_range (best_bid_price, best_ask_price) TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, last_update_id)
TTL toDateTime(timestamp) + INTERVAL 3 DAY TO VOLUME 'cold'
SETTINGS index_granularity = 8192, storage_policy = 'hot_cold', non_replicated_deduplication_window = 160000;

CREATE TABLE IF NOT EXISTS `marketprism`.`funding_rates`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `funding_rate` Decimal64(8) CODEC(ZSTD),
    `funding_time` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `next_funding_time` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `mark_price` Decimal64(8) CODEC(ZSTD),
    `index_price` Decimal64(8) CODEC(ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD),
    INDEX idx_funding_rate (funding_rate) TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
TTL toDateTime(timestamp) + INTERVAL 3 DAY TO VOLUME 'cold'
SETTINGS index_granularity = 8192, storage_policy = 'hot_cold', non_replicated_deduplication_window = 160000;

CREATE TABLE IF NOT EXISTS `marketprism`.`open_interests`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `open_interest` Decimal128(8) CODEC(ZSTD),
    `open_interest_value` Decimal128(8) CODEC(ZSTD),
    `count` UInt64 CODEC(Delta, ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD),
    INDEX idx_open_interest (open_interest) TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
TTL toDateTime(timestamp) + INTERVAL 3 DAY TO VOLUME 'cold'
SETTINGS index_granularity = 8192, storage_policy = 'hot_cold', non_replicated_deduplication_window = 160000;

CREATE TABLE IF NOT EXISTS `marketprism`.`liquidations`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `side` LowCardinality(String) CODEC(ZSTD),
    `price` Decimal64(8) CODEC(ZSTD),
    `quantity` Decimal64(8) CODEC(ZSTD),
    `liquidation_time` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD),
    INDEX idx_liquidation_price (price) TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
TTL toDateTime(timestamp) + INTERVAL 3 DAY TO VOLUME 'cold'
SETTINGS index_granularity = 8192, storage_policy = 'hot_cold', non_replicated_deduplication_window = 160000;

CREATE TABLE IF NOT EXISTS `marketprism`.`lsr_top_positions`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `long_position_ratio` Decimal64(8) CODEC(ZSTD),
    `short_position_ratio` Decimal64(8) CODEC(ZSTD),
    `period` LowCardinality(String) DEFAULT '5m' CODEC(ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD),
    INDEX idx_lsr_top_ratio (long_position_ratio, short_position_ratio) TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, period)
TTL toDateTime(timestamp) + INTERVAL 3 DAY TO VOLUME 'cold'
SETTINGS index_granularity = 8192, storage_policy = 'hot_cold', non_replicated_deduplication_window = 160000;

CREATE TABLE IF NOT EXISTS `marketprism`.`lsr_all_accounts`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `long_account_ratio` Decimal64(8) CODEC(ZSTD),
    `short_account_ratio` Decimal64(8) CODEC(ZSTD),
    `period` LowCardinality(String) DEFAULT '5m' CODEC(ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD),
    INDEX idx_lsr_account_ratio (long_account_ratio, short_account_ratio) TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, period)
TTL toDateTime(timestamp) + INTERVAL 3 DAY TO VOLUME 'cold'
SETTINGS index_granularity = 8192, storage_policy = 'hot_cold', non_replicated_deduplication_window = 160000;

CREATE TABLE IF NOT EXISTS `marketprism`.`volatility_indices`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `index_value` Decimal64(8) CODEC(ZSTD),
    `underlying_asset` LowCardinality(String) CODEC(ZSTD),
    `maturity_date` Date CODEC(ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD),
    INDEX idx_volatility_value (index_value) TYPE minmax GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
TTL toDateTime(timestamp) + INTERVAL 3 DAY TO VOLUME 'cold'
SETTINGS index_granularity = 8192, storage_policy = 'hot_cold', non_replicated_deduplication_window = 160000;

CREATE TABLE IF NOT EXISTS `marketprism`.`data_quality_events`
(
    `detected_at` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `event_time` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `data_type` LowCardinality(String) CODEC(ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `kind` LowCardinality(String) CODEC(ZSTD),
    `first_missing` UInt64 CODEC(ZSTD),
    `last_missing` UInt64 CODEC(ZSTD),
    `missing` UInt64 CODEC(ZSTD),
    `span_ms` UInt64 CODEC(ZSTD),
    `value` Decimal64(8) CODEC(ZSTD),
    `detail` String CODEC(ZSTD)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (event_time, data_type, exchange, symbol, kind)
TTL toDateTime(event_time) + INTERVAL 3 DAY TO VOLUME 'cold'
SETTINGS index_granularity = 8192, storage_policy = 'hot_cold', non_replicated_deduplication_window = 160000;

