//! Integration tests against real nats-server and the embedded ClickHouse.
