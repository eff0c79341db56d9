#!/usr/bin/env python3
"""Insert benchmark for chserver.py: 100k-row trades batches, Native vs RowBinary.

Starts its own server (port 0, temp data dir), builds the request bodies once
with chDB itself (so Python does no per-row work), then times N inserts per
format over one keep-alive connection and prints ms/request and rows/s.

    .venv/bin/python embedded/bench_chserver.py [--rows 100000] [--repeat 5] [--lz4] [--blackhole]
"""

import argparse
import http.client
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

import lz4.block
from clickhouse_cityhash.cityhash import CityHash128

HERE = os.path.dirname(os.path.abspath(__file__))
COLUMNS = "timestamp, exchange, market_type, symbol, trade_id, price, quantity, side, is_maker, trade_time"
TRADES_DDL = """CREATE TABLE bench.trades (timestamp DateTime64(3,'UTC') CODEC(Delta, ZSTD),
 exchange LowCardinality(String) CODEC(ZSTD), market_type LowCardinality(String) CODEC(ZSTD),
 symbol LowCardinality(String) CODEC(ZSTD), trade_id String CODEC(ZSTD), price Decimal64(8) CODEC(ZSTD),
 quantity Decimal64(8) CODEC(ZSTD), side LowCardinality(String) CODEC(ZSTD), is_maker Bool DEFAULT false CODEC(ZSTD),
 trade_time DateTime64(3,'UTC') CODEC(Delta, ZSTD), data_source LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
 created_at DateTime64(3,'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)) ENGINE = MergeTree
 PARTITION BY (toYYYYMM(timestamp), exchange) ORDER BY (timestamp, exchange, symbol, trade_id)
 TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE SETTINGS non_replicated_deduplication_window = 1000"""
# Rows shaped like real trades: two exchanges, a handful of symbols, recent timestamps.
ROWS_SQL = """SELECT now64(3) - toIntervalMillisecond(number * 7) AS timestamp,
 ['binance','okx'][number % 2 + 1] AS exchange, 'spot' AS market_type,
 ['BTC-USDT','ETH-USDT','SOL-USDT','XRP-USDT'][number % 4 + 1] AS symbol,
 toString({salt:UInt64} * 10000000 + number) AS trade_id,
 toDecimal64(60000 + (number % 1000) / 10, 8) AS price, toDecimal64((number % 97) / 1000, 8) AS quantity,
 if(number % 3 = 0, 'buy', 'sell') AS side, number % 5 = 0 AS is_maker,
 now64(3) - toIntervalMillisecond(number * 7 + 3) AS trade_time
 FROM numbers({rows:UInt64})"""


def lz4_blocks(data: bytes, block: int = 1 << 20) -> bytes:
    out = []
    for i in range(0, len(data), block):
        piece = data[i:i + block]
        payload = lz4.block.compress(piece, store_size=False)
        header = struct.pack("<BII", 0x82, 9 + len(payload), len(piece))
        h = CityHash128(header + payload)
        out.append(struct.pack("<QQ", h >> 64, h & (2**64 - 1)) + header + payload)
    return b"".join(out)


def post(conn, path: str, body: bytes, headers=None) -> bytes:
    conn.request("POST", path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{resp.status}: {data[:300]!r}")
    return data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--lz4", action="store_true", help="send decompress=1 LZ4 blocks")
    ap.add_argument("--blackhole", action="store_true")
    args = ap.parse_args()

    import chdb  # only to build the bodies

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(HERE, "chserver.py"), "--data-dir", tmp, "--listen", "127.0.0.1:0"]
        if args.blackhole:
            cmd.append("--blackhole")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            host, port = proc.stdout.readline().split("//")[1].strip().rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port))
            if not args.blackhole:
                post(conn, "/", b"CREATE DATABASE bench")
                post(conn, "/", TRADES_DDL.encode())
            for fmt in ("Native", "RowBinary"):
                timings = []
                for i in range(args.repeat):
                    sql = ROWS_SQL.replace("{salt:UInt64}", str(i + 1)).replace("{rows:UInt64}", str(args.rows))
                    body = bytes(chdb.query(sql, fmt).bytes())
                    raw_len = len(body)
                    query = f"INSERT INTO bench.trades ({COLUMNS}) FORMAT {fmt}"
                    params = {"query": query}
                    if args.lz4:
                        body = lz4_blocks(body)
                        params["decompress"] = "1"
                    path = "/?" + urllib.parse.urlencode(params)
                    t0 = time.perf_counter()
                    post(conn, path, body)
                    timings.append(time.perf_counter() - t0)
                med = statistics.median(timings)
                print(f"{fmt:10s} {args.rows} rows, body {raw_len / 1e6:.1f} MB raw / {len(body) / 1e6:.1f} MB sent: "
                      f"median {med * 1000:.0f} ms, best {min(timings) * 1000:.0f} ms, "
                      f"{args.rows / med / 1000:.0f}k rows/s median, {args.rows / min(timings) / 1000:.0f}k best")
            if not args.blackhole:
                conn.request("POST", "/", body=b"SELECT count() FROM bench.trades")
                print("count:", conn.getresponse().read().decode().strip())
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
