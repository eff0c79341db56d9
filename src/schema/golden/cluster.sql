CREATE DATABASE IF NOT EXISTS `marketprism_hot` ON CLUSTER `mp`;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`trades_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/trades_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, trade_id)
TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`trades` ON CLUSTER `mp` AS `marketprism_hot`.`trades_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `trades_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`orderbooks_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/orderbooks_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, last_update_id)
TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`orderbooks` ON CLUSTER `mp` AS `marketprism_hot`.`orderbooks_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `orderbooks_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`funding_rates_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/funding_rates_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`funding_rates` ON CLUSTER `mp` AS `marketprism_hot`.`funding_rates_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `funding_rates_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`open_interests_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/open_interests_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`open_interests` ON CLUSTER `mp` AS `marketprism_hot`.`open_interests_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `open_interests_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`liquidations_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/liquidations_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`liquidations` ON CLUSTER `mp` AS `marketprism_hot`.`liquidations_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `liquidations_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`lsr_top_positions_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/lsr_top_positions_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, period)
TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`lsr_top_positions` ON CLUSTER `mp` AS `marketprism_hot`.`lsr_top_positions_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `lsr_top_positions_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`lsr_all_accounts_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/lsr_all_accounts_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, period)
TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`lsr_all_accounts` ON CLUSTER `mp` AS `marketprism_hot`.`lsr_all_accounts_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `lsr_all_accounts_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`volatility_indices_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/volatility_indices_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`volatility_indices` ON CLUSTER `mp` AS `marketprism_hot`.`volatility_indices_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `volatility_indices_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`data_quality_events_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/data_quality_events_local', '{replica}')
PARTITION BY toYYYYMM(event_time)
ORDER BY (event_time, data_type, exchange, symbol, kind)
TTL toDateTime(event_time) + INTERVAL 3 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`data_quality_events` ON CLUSTER `mp` AS `marketprism_hot`.`data_quality_events_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `data_quality_events_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`dead_letters_local` ON CLUSTER `mp`
(
    `received_at` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `subject` String CODEC(ZSTD),
    `stream_seq` UInt64 CODEC(Delta, ZSTD),
    `data_type` LowCardinality(String) CODEC(ZSTD),
    `reason` String CODEC(ZSTD),
    `payload` String CODEC(ZSTD)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_hot/dead_letters_local', '{replica}')
PARTITION BY toYYYYMM(received_at)
ORDER BY (received_at, data_type)
TTL toDateTime(received_at) + INTERVAL 30 DAY DELETE
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_hot`.`dead_letters` ON CLUSTER `mp` AS `marketprism_hot`.`dead_letters_local`
ENGINE = Distributed(`mp`, `marketprism_hot`, `dead_letters_local`, cityHash64(subject));

CREATE DATABASE IF NOT EXISTS `marketprism_cold` ON CLUSTER `mp`;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`trades_local` ON CLUSTER `mp`
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
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/trades_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, trade_id)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`trades` ON CLUSTER `mp` AS `marketprism_cold`.`trades_local`
ENGINE = Distributed(`mp`, `marketprism_cold`, `trades_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`orderbooks_local` ON CLUSTER `mp`
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
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/orderbooks_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, last_update_id)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`orderbooks` ON CLUSTER `mp` AS `marketprism_cold`.`orderbooks_local`
ENGINE = Distributed(`mp`, `marketprism_cold`, `orderbooks_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`funding_rates_local` ON CLUSTER `mp`
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
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/funding_rates_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`funding_rates` ON CLUSTER `mp` AS `marketprism_cold`.`funding_rates_local`
ENGINE = Distributed(`mp`, `marketprism_cold`, `funding_rates_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`open_interests_local` ON CLUSTER `mp`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `open_interest` Decimal128(8) CODEC(ZSTD),
    `open_interest_value` Decimal128(8) CODEC(ZSTD),
    `count` UInt64 CODEC(Delta, ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/open_interests_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`open_interests` ON CLUSTER `mp` AS `marketprism_cold`.`open_interests_local`
ENGINE = Distributed(`mp`, `marketprism_cold`, `open_interests_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`liquidations_local` ON CLUSTER `mp`
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
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/liquidations_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`liquidations` ON CLUSTER `mp` AS `marketprism_cold`.`liquidations_local`
ENGINE = Distributed(`mp`, `marketprism_cold`, `liquidations_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`lsr_top_positions_local` ON CLUSTER `mp`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `long_position_ratio` Decimal64(8) CODEC(ZSTD),
    `short_position_ratio` Decimal64(8) CODEC(ZSTD),
    `period` LowCardinality(String) DEFAULT '5m' CODEC(ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/lsr_top_positions_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, period)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`lsr_top_positions` ON CLUSTER `mp` AS `marketprism_cold`.`lsr_top_positions_local`
ENGINE = Distributed(`mp`, `marketprism_cold`, `lsr_top_positions_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`lsr_all_accounts_local` ON CLUSTER `mp`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `long_account_ratio` Decimal64(8) CODEC(ZSTD),
    `short_account_ratio` Decimal64(8) CODEC(ZSTD),
    `period` LowCardinality(String) DEFAULT '5m' CODEC(ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/lsr_all_accounts_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol, period)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`lsr_all_accounts` ON CLUSTER `mp` AS `marketprism_cold`.`lsr_all_accounts_local`
ENGINE = Distributed(`mp`, `marketprism_cold`, `lsr_all_accounts_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`volatility_indices_local` ON CLUSTER `mp`
(
    `timestamp` DateTime64(3, 'UTC') CODEC(Delta, ZSTD),
    `exchange` LowCardinality(String) CODEC(ZSTD),
    `market_type` LowCardinality(String) CODEC(ZSTD),
    `symbol` LowCardinality(String) CODEC(ZSTD),
    `index_value` Decimal64(8) CODEC(ZSTD),
    `underlying_asset` LowCardinality(String) CODEC(ZSTD),
    `maturity_date` Date CODEC(ZSTD),
    `data_source` LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
    `created_at` DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/volatility_indices_local', '{replica}')
PARTITION BY (toYYYYMM(timestamp), exchange)
ORDER BY (timestamp, exchange, symbol)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`volatility_indices` ON CLUSTER `mp` AS `marketprism_cold`.`volatility_indices_local`
ENGINE = Distributed(`mp`, `marketprism_cold`, `volatility_indices_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`data_quality_events_local` ON CLUSTER `mp`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/data_quality_events_local', '{replica}')
PARTITION BY toYYYYMM(event_time)
ORDER BY (event_time, data_type, exchange, symbol, kind)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 160000, replicated_deduplication_window_seconds = 604800;

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`data_quality_events` ON CLUSTER `mp` AS `marketprism_cold`.`data_quality_events_local`
ENGINE = Distributed(`mp`, `marketprism_cold`, `data_quality_events_local`, cityHash64(exchange, market_type, symbol));

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`migration_state` ON CLUSTER `mp`
(
    `table` LowCardinality(String),
    `filters` String,
    `watermark` DateTime64(3, 'UTC'),
    `verified_until` DateTime64(3, 'UTC'),
    `updated_at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/marketprism_cold/migration_state', '{replica}', updated_at)
ORDER BY (`table`, `filters`);

CREATE TABLE IF NOT EXISTS `marketprism_cold`.`migration_chunks` ON CLUSTER `mp`
(
    `table` LowCardinality(String),
    `chunk_start` DateTime64(3, 'UTC'),
    `chunk_end` DateTime64(3, 'UTC'),
    `filters` String,
    `rows_hot` UInt64,
    `rows_cold` UInt64,
    `fingerprint_hot` UInt64,
    `fingerprint_cold` UInt64,
    `rows_copied` UInt64,
    `status` LowCardinality(String),
    `at` DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/marketprism_cold/migration_chunks', '{replica}')
PARTITION BY toYYYYMM(chunk_start)
ORDER BY (`table`, `chunk_start`, `at`);

