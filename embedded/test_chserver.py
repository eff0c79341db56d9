"""Black-box tests for chserver.py: a real server process on port 0 in a temp dir.

Run: .venv/bin/python -m unittest discover -s embedded -p 'test_*.py' -v
"""

import datetime as dt
import gzip
import http.client
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

import lz4.block
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chserver.py")
sys.path.insert(0, os.path.dirname(SERVER))
import chserver  # noqa: E402 - for the pure helpers only; the engine is never opened here

TRADES_DDL = """CREATE TABLE mp.trades (timestamp DateTime64(3,'UTC') CODEC(Delta, ZSTD),
 exchange LowCardinality(String) CODEC(ZSTD), market_type LowCardinality(String) CODEC(ZSTD),
 symbol LowCardinality(String) CODEC(ZSTD), trade_id String CODEC(ZSTD), price Decimal64(8) CODEC(ZSTD),
 quantity Decimal64(8) CODEC(ZSTD), side LowCardinality(String) CODEC(ZSTD), is_maker Bool DEFAULT false CODEC(ZSTD),
 trade_time DateTime64(3,'UTC') CODEC(Delta, ZSTD), data_source LowCardinality(String) DEFAULT 'marketprism' CODEC(ZSTD),
 created_at DateTime64(3,'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD)) ENGINE = MergeTree
 PARTITION BY (toYYYYMM(timestamp), exchange) ORDER BY (timestamp, exchange, symbol, trade_id)
 TTL toDateTime(timestamp) + INTERVAL 3 DAY DELETE SETTINGS non_replicated_deduplication_window = 1000"""
COLUMNS = "timestamp, exchange, market_type, symbol, trade_id, price, quantity, side, is_maker, trade_time"


def start_server(data_dir, *extra):
    """Starts chserver and returns (process, "host:port") once it printed its ready line."""
    # stderr goes to a file: an unread pipe could fill up and stall the server.
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(
        [sys.executable, SERVER, "--data-dir", data_dir, "--listen", "127.0.0.1:0", *extra],
        stdout=subprocess.PIPE, stderr=log, text=True)
    proc.log = log
    line = proc.stdout.readline()
    if not line.startswith("ready http://"):
        proc.kill()
        proc.wait()
        log.seek(0)
        raise RuntimeError(f"server did not start: {line!r} {log.read()}")
    return proc, line.strip()[len("ready http://"):]


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.log.close()


def recent(minutes_ago=0.0):
    """A DateTime64(3) text value inside the table's 3-day TTL."""
    t = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=minutes_ago)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def native_blocks(data, block_size, corrupt=False):
    """ClickHouse compressed LZ4 blocks, checksum written high half first."""
    out = []
    for i in range(0, len(data), block_size):
        piece = data[i:i + block_size]
        payload = lz4.block.compress(piece, store_size=False)
        header = struct.pack("<BII", 0x82, 9 + len(payload), len(piece))
        h = CityHash128(header + payload)
        checksum = struct.pack("<QQ", h >> 64, h & (2**64 - 1))
        if corrupt:
            checksum = bytes([checksum[0] ^ 0xFF]) + checksum[1:]
        out.append(checksum + header + payload)
    return b"".join(out)


def decode_native_blocks(data):
    out, pos = [], 0
    while pos < len(data):
        method, csize, usize = struct.unpack_from("<BII", data, pos + 16)
        block = data[pos + 16:pos + 16 + csize]
        h = CityHash128(block)
        assert data[pos:pos + 16] == struct.pack("<QQ", h >> 64, h & (2**64 - 1))
        assert method == 0x82
        out.append(lz4.block.decompress(block[9:], uncompressed_size=usize))
        pos += 16 + csize
    return b"".join(out)


def open_class_server(cls):
    """Starts the class's server in a temp dir and opens its keep-alive connection."""
    cls.tmp = tempfile.TemporaryDirectory()
    cls.proc, cls.addr = start_server(cls.tmp.name)
    host, port = cls.addr.rsplit(":", 1)
    cls.conn = http.client.HTTPConnection(host, int(port), timeout=60)


class ServerTests(unittest.TestCase):
    """One server for the whole class; each test uses its own table or rows."""

    @classmethod
    def setUpClass(cls):
        open_class_server(cls)
        cls.sql("CREATE DATABASE mp")
        cls.sql(TRADES_DDL)
        # The trades schema plus a CHECK constraint: a failure raised after parsing.
        cls.sql(TRADES_DDL.replace("mp.trades", "mp.checked").replace(
            ") ENGINE = MergeTree", ", CONSTRAINT positive_price CHECK price > 0) ENGINE = MergeTree"))

    @classmethod
    def tearDownClass(cls):
        cls.conn.close()
        code = stop_server(cls.proc)
        cls.tmp.cleanup()
        assert code == 0, f"server exit code {code}"

    @classmethod
    def request(cls, method="POST", params=None, body=None, headers=None, path="/"):
        """One request over the shared keep-alive connection: (status, headers, body)."""
        url = path + ("?" + urllib.parse.urlencode(params) if params else "")
        cls.conn.request(method, url, body=body, headers=headers or {},
                         encode_chunked=headers is not None and "Transfer-Encoding" in headers)
        resp = cls.conn.getresponse()
        return resp.status, resp.headers, resp.read()

    @classmethod
    def sql(cls, text, **params):
        status, _, body = cls.request(params=params or None, body=text.encode())
        if status != 200:
            raise AssertionError(f"{status}: {body.decode(errors='replace')}")
        return body.decode()

    def count(self, where="1"):
        return int(self.sql(f"SELECT count() FROM mp.trades WHERE {where}"))

    def trade_json(self, trade_id, exchange="binance", minutes_ago=5.0):
        return json.dumps({
            "timestamp": recent(minutes_ago), "exchange": exchange, "market_type": "spot",
            "symbol": "BTC-USDT", "trade_id": trade_id, "price": "66990.5", "quantity": "0.01",
            "side": "buy", "trade_time": recent(minutes_ago),
        })

    # --- basics -----------------------------------------------------------------

    def test_ping(self):
        self.assertEqual(self.request("GET", path="/ping")[::2], (200, b"Ok.\n"))
        self.assertEqual(self.request("GET")[::2], (200, b"Ok.\n"))

    def test_get_version(self):
        status, headers, body = self.request("GET", {"query": "SELECT version()"})
        self.assertEqual(status, 200)
        self.assertTrue(body.startswith(b"26."), body)
        self.assertEqual(headers["X-ClickHouse-Format"], "TabSeparated")
        self.assertIn("read_rows", json.loads(headers["X-ClickHouse-Summary"]))
        self.assertTrue(headers["X-ClickHouse-Query-Id"])

    def test_post_sql_and_expect_continue(self):
        status, _, body = self.request(body=b"SELECT 1 + 1", headers={"Expect": "100-continue"})
        self.assertEqual((status, body), (200, b"2\n"))

    def test_query_param_and_body_are_joined(self):
        status, _, body = self.request(params={"query": "SELECT"}, body=b"40 + 2")
        self.assertEqual((status, body), (200, b"42\n"))

    def test_default_format_and_format_clause(self):
        status, headers, body = self.request(
            params={"default_format": "JSONEachRow"}, body=b"SELECT 7 AS x")
        self.assertEqual((status, body), (200, b'{"x":7}\n'))
        self.assertEqual(headers["X-ClickHouse-Format"], "JSONEachRow")
        status, headers, body = self.request(body=b"SELECT 8 AS y FORMAT JSONEachRow")
        self.assertEqual((body, headers["X-ClickHouse-Format"]), (b'{"y":8}\n', "JSONEachRow"))

    def test_query_parameters(self):
        out = self.sql("SELECT {a:UInt32} + 1, {s:String}", param_a="41", param_s="it's")
        self.assertEqual(out, "42\tit\\'s\n")

    def test_database_param(self):
        self.assertEqual(self.sql("SELECT currentDatabase()", database="mp"), "mp\n")
        self.assertEqual(self.sql("SELECT currentDatabase()"), "default\n")
        self.assertEqual(self.sql("EXISTS TABLE trades", database="mp"), "1\n")

    def test_settings_do_not_leak(self):
        self.assertEqual(self.sql("SELECT getSetting('max_block_size')", max_block_size="123"), "123\n")
        default = self.sql("SELECT getSetting('max_block_size')")
        self.assertNotEqual(default, "123\n")
        self.sql("SET max_block_size = 77")
        self.assertEqual(self.sql("SELECT getSetting('max_block_size')"), default)

    def test_compress_response(self):
        status, _, body = self.request(params={"compress": "1"},
                                       body=b"SELECT number FROM numbers(100000) FORMAT RowBinary")
        self.assertEqual(status, 200)
        self.assertEqual(decode_native_blocks(body), b"".join(struct.pack("<Q", i) for i in range(100000)))

    def test_http_response_compression(self):
        status, headers, body = self.request(body=b"SELECT 'zz'", headers={"Accept-Encoding": "gzip"})
        self.assertEqual(headers["Content-Encoding"], "gzip")
        self.assertEqual(gzip.decompress(body), b"zz\n")

    # --- errors -------------------------------------------------------------------

    def test_unknown_table_is_404(self):
        status, headers, body = self.request(body=b"SELECT * FROM mp.no_such_table")
        self.assertEqual(status, 404)
        self.assertEqual(headers["X-ClickHouse-Exception-Code"], "60")
        self.assertTrue(body.startswith(b"Code: 60. DB::Exception: "), body)
        self.assertIn(b"(UNKNOWN_TABLE) (version 26.9", body)

    def test_syntax_error_is_400(self):
        status, headers, body = self.request(body=b"SELEC 1")
        self.assertEqual((status, headers["X-ClickHouse-Exception-Code"]), (400, "62"))
        self.assertIn(b"Code: 62.", body)

    def test_multi_statements_rejected(self):
        status, _, body = self.request(body=b"SELECT 1; SELECT 2")
        self.assertEqual(status, 400)
        self.assertIn(b"Multi-statements are not allowed", body)
        self.assertEqual(self.sql("SELECT ';' ; "), ";\n")  # one trailing ';' is fine

    # --- inserts --------------------------------------------------------------------

    def test_json_each_row_insert_applies_defaults(self):
        rows = "\n".join(self.trade_json(f"json-{i}") for i in range(3)).encode()
        status, headers, _ = self.request(params={"query": f"INSERT INTO mp.trades ({COLUMNS}) FORMAT JSONEachRow"},
                                          body=rows)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(headers["X-ClickHouse-Summary"])["written_rows"], "3")
        out = self.sql("SELECT data_source, is_maker, created_at > now64(3) - INTERVAL 1 MINUTE "
                       "FROM mp.trades WHERE trade_id LIKE 'json-%'")
        self.assertEqual(out, "marketprism\tfalse\t1\n" * 3)

    def test_inline_values_in_body(self):
        ts = recent(3)
        self.sql(f"INSERT INTO mp.trades ({COLUMNS}) VALUES ('{ts}', 'okx', 'spot', 'ETH-USDT', 'values-1', "
                 f"3000.25, 1.5, 'sell', true, '{ts}')")
        self.assertEqual(self.sql("SELECT price, is_maker FROM mp.trades WHERE trade_id = 'values-1'"),
                         "3000.25\ttrue\n")

    def test_insert_format_with_inline_data_and_gzip(self):
        body = f"INSERT INTO mp.trades ({COLUMNS}) FORMAT JSONEachRow\n".encode() + self.trade_json("gz-1").encode()
        # Two gzip members: a decoder that stops after the first would lose the data.
        packed = gzip.compress(body[:40]) + gzip.compress(body[40:])
        status, _, resp = self.request(body=packed, headers={"Content-Encoding": "gzip"})
        self.assertEqual(status, 200, resp)
        self.assertEqual(self.count("trade_id = 'gz-1'"), 1)

    def test_zstd_multi_frame_body(self):
        rows = (self.trade_json("zs-1") + "\n" + self.trade_json("zs-2")).encode()
        cctx = zstandard.ZstdCompressor()
        packed = cctx.compress(rows[:50]) + cctx.compress(rows[50:])
        status, _, resp = self.request(params={"query": f"INSERT INTO mp.trades ({COLUMNS}) FORMAT JSONEachRow"},
                                       body=packed, headers={"Content-Encoding": "zstd"})
        self.assertEqual(status, 200, resp)
        self.assertEqual(self.count("trade_id LIKE 'zs-%'"), 2)

    def rowbinary_rows(self, n, prefix):
        """RowBinary for n trades rows, produced by the server itself."""
        return self.request(body=(
            f"SELECT now64(3) - toIntervalMillisecond(number) AS timestamp, "
            f"['binance','okx'][number % 2 + 1], 'spot', 'BTC-USDT', concat('{prefix}', toString(number)), "
            f"toDecimal64(60000.5, 8), toDecimal64(0.01, 8), 'buy', number % 2 = 0, "
            f"now64(3) - toIntervalMillisecond(number) FROM numbers({n}) FORMAT RowBinary").encode())[2]

    def test_rowbinary_lz4_multi_block_chunked(self):
        data = self.rowbinary_rows(5000, "rb-")
        body = native_blocks(data, block_size=16 * 1024)  # ~22 blocks
        # Odd-sized HTTP chunks so that blocks straddle chunk boundaries.
        chunks = [body[i:i + 7001] for i in range(0, len(body), 7001)]
        status, headers, resp = self.request(
            params={"query": f"INSERT INTO `mp`.`trades`(`{COLUMNS.replace(', ', '`,`')}`) FORMAT RowBinary",
                    "decompress": "1"},
            body=iter(chunks), headers={"Transfer-Encoding": "chunked"})
        self.assertEqual(status, 200, resp)
        self.assertEqual(json.loads(headers["X-ClickHouse-Summary"])["written_rows"], "5000")
        self.assertEqual(self.count("trade_id LIKE 'rb-%'"), 5000)

    def test_corrupted_checksum_rejected(self):
        body = native_blocks(self.rowbinary_rows(10, "bad-"), block_size=1 << 20, corrupt=True)
        status, headers, resp = self.request(
            params={"query": f"INSERT INTO mp.trades ({COLUMNS}) FORMAT RowBinary", "decompress": "1"}, body=body)
        self.assertEqual(status, 500)
        self.assertEqual(headers["X-ClickHouse-Exception-Code"], "40")
        self.assertIn(b"(CHECKSUM_DOESNT_MATCH)", resp)
        self.assertEqual(self.count("trade_id LIKE 'bad-%'"), 0)

    def test_native_insert(self):
        data = self.request(body=(
            f"SELECT now64(3) AS timestamp, 'okx' AS exchange, 'spot' AS market_type, 'SOL-USDT' AS symbol, "
            f"concat('nat-', toString(number)) AS trade_id, toDecimal64(150, 8) AS price, "
            f"toDecimal64(2, 8) AS quantity, 'sell' AS side, false AS is_maker, now64(3) AS trade_time "
            f"FROM numbers(1000) FORMAT Native").encode())[2]
        status, _, resp = self.request(params={"query": "INSERT INTO mp.trades FORMAT Native"}, body=data)
        self.assertEqual(status, 200, resp)
        self.assertEqual(self.count("trade_id LIKE 'nat-%' AND data_source = 'marketprism'"), 1000)

    def test_dedup_token(self):
        rows = "\n".join(self.trade_json(f"tok-{i}", exchange="binance") for i in range(4)).encode()
        params = {"query": f"INSERT INTO mp.trades ({COLUMNS}) FORMAT JSONEachRow",
                  "insert_deduplication_token": "batch-42"}
        for _ in range(2):
            self.assertEqual(self.request(params=params, body=rows)[0], 200)
        self.assertEqual(self.count("trade_id LIKE 'tok-%'"), 4)
        other = "\n".join(self.trade_json(f"tok2-{i}") for i in range(2)).encode()
        self.assertEqual(self.request(params={**params, "insert_deduplication_token": "batch-43"},
                                      body=other)[0], 200)
        self.assertEqual(self.count("trade_id LIKE 'tok%'"), 6)

    def test_formats_round_trip(self):
        """RowBinaryWithNamesAndTypes, TabSeparated, CSV and Values: server output back in."""
        for fmt in ("RowBinaryWithNamesAndTypes", "TabSeparated", "CSV", "Values"):
            data = self.request(body=(
                # Exact column types: RowBinaryWithNamesAndTypes checks its header.
                f"SELECT now64(3, 'UTC') AS timestamp, toLowCardinality('okx') AS exchange, "
                f"toLowCardinality('spot') AS market_type, toLowCardinality('XRP-USDT') AS symbol, "
                f"concat('{fmt}-', toString(number)) AS trade_id, toDecimal64(0.5, 8) AS price, "
                f"toDecimal64(10, 8) AS quantity, toLowCardinality('buy') AS side, "
                f"true AS is_maker, now64(3, 'UTC') AS trade_time FROM numbers(50) FORMAT {fmt}").encode())[2]
            status, _, resp = self.request(
                params={"query": f"INSERT INTO mp.trades ({COLUMNS}) FORMAT {fmt}"}, body=data)
            self.assertEqual(status, 200, (fmt, resp))
            self.assertEqual(self.count(f"trade_id LIKE '{fmt}-%' AND is_maker"), 50, fmt)

    def test_insert_error_keeps_connection_usable(self):
        status, headers, body = self.request(
            params={"query": "INSERT INTO mp.trades (trade_id, price) FORMAT JSONEachRow"},
            body=b'{"trade_id":"x","price":"not a number"}\n')
        self.assertEqual(status, 400, body)
        self.assertEqual(self.sql("SELECT 5"), "5\n")

    # --- every insert failure is an error; a 200 means the rows are stored ----------
    # chDB's streaming insert (Session.send_insert) answered these with success and
    # stored nothing (or, for a failing materialized view, part of the data).

    def insert(self, fmt, body, table="mp.trades", columns=COLUMNS, **params):
        return self.request(params={"query": f"INSERT INTO {table} ({columns}) FORMAT {fmt}", **params},
                            body=body)

    def assertInsertError(self, response, code, status=500):
        got_status, headers, body = response
        self.assertEqual(got_status, status, body)
        self.assertEqual(headers["X-ClickHouse-Exception-Code"], str(code), body)
        self.assertTrue(body.startswith(f"Code: {code}. DB::Exception: ".encode()), body)
        self.assertNotIn(b"insert-bodies", body)  # the temp file is an implementation detail

    def rows_as(self, fmt, n, prefix, price="60000.5"):
        """n trades rows in `fmt`, produced by the server (exact column types)."""
        return self.request(body=(
            f"SELECT now64(3, 'UTC') AS timestamp, toLowCardinality('okx') AS exchange, "
            f"toLowCardinality('spot') AS market_type, toLowCardinality('BTC-USDT') AS symbol, "
            f"concat('{prefix}', toString(number)) AS trade_id, toDecimal64({price}, 8) AS price, "
            f"toDecimal64(0.01, 8) AS quantity, toLowCardinality('buy') AS side, "
            f"number % 2 = 0 AS is_maker, now64(3, 'UTC') AS trade_time "
            f"FROM numbers({n}) FORMAT {fmt}").encode())[2]

    def test_check_constraint_violation_is_error(self):
        good = "\n".join(self.trade_json(f"chk-{i}") for i in range(3))
        bad = json.loads(self.trade_json("chk-bad"))
        bad["price"] = "-1"
        body = (good + "\n" + json.dumps(bad)).encode()
        response = self.insert("JSONEachRow", body, table="mp.checked")
        self.assertInsertError(response, 469)
        self.assertIn(b"(VIOLATED_CONSTRAINT)", response[2])
        self.assertEqual(int(self.sql("SELECT count() FROM mp.checked")), 0)
        # Binary formats too, and with a dedup token (as the Rust service sends).
        for fmt in ("Native", "RowBinary"):
            response = self.insert(fmt, self.rows_as(fmt, 1000, f"chk-{fmt}-", price="-0.5"),
                                   table="mp.checked", insert_deduplication_token=f"chk-{fmt}")
            self.assertInsertError(response, 469)
        self.assertEqual(int(self.sql("SELECT count() FROM mp.checked")), 0)
        # A good batch into the same table: 200 and all rows present.
        status, headers, resp = self.insert("Native", self.rows_as("Native", 1000, "chk-ok-"), table="mp.checked")
        self.assertEqual(status, 200, resp)
        self.assertEqual(json.loads(headers["X-ClickHouse-Summary"])["written_rows"], "1000")
        self.assertEqual(int(self.sql("SELECT count() FROM mp.checked WHERE trade_id LIKE 'chk-ok-%'")), 1000)

    def test_truncated_native_body_is_error(self):
        data = self.rows_as("Native", 1000, "trn-")
        for cut in (3, len(data) // 2):
            self.assertInsertError(self.insert("Native", data[:-cut]), 33)
        self.assertEqual(self.count("trade_id LIKE 'trn-%'"), 0)

    def test_truncated_rowbinary_body_is_error(self):
        data = self.rows_as("RowBinary", 1000, "trr-")
        self.assertInsertError(self.insert("RowBinary", data[:-3]), 33)
        self.assertInsertError(self.insert("RowBinary", data[:len(data) // 2 + 1]), 33)
        # Framing intact (decompress=1, valid checksums) but the data inside truncated.
        self.assertInsertError(self.insert("RowBinary", native_blocks(data[:-1], 4096), decompress="1"), 33)
        self.assertEqual(self.count("trade_id LIKE 'trr-%'"), 0)

    def test_unparsable_json_value_is_error(self):
        good = self.trade_json("bad-json-1")
        bad = json.loads(self.trade_json("bad-json-2"))
        bad["quantity"] = "lots"
        response = self.insert("JSONEachRow", f"{good}\n{json.dumps(bad)}\n".encode())
        self.assertInsertError(response, 27, status=400)
        self.assertEqual(self.count("trade_id LIKE 'bad-json-%'"), 0)

    def test_too_many_partitions_is_error(self):
        # PARTITION BY (month, exchange): 101 exchanges exceed max_partitions_per_insert_block.
        body = "\n".join(self.trade_json(f"parts-{i}", exchange=f"ex{i}") for i in range(101)).encode()
        self.assertInsertError(self.insert("JSONEachRow", body), 252)
        self.assertEqual(self.count("trade_id LIKE 'parts-%'"), 0)

    def test_failing_materialized_view_is_error(self):
        self.sql("CREATE TABLE mp.mv_src (a UInt64) ENGINE = MergeTree ORDER BY a")
        self.sql("CREATE TABLE mp.mv_dst (a UInt64) ENGINE = MergeTree ORDER BY a")
        self.sql("CREATE MATERIALIZED VIEW mp.mv TO mp.mv_dst AS "
                 "SELECT a + throwIf(a = 5, 'five is not allowed') AS a FROM mp.mv_src")
        self.assertInsertError(self.insert("CSV", b"1\n5\n", table="mp.mv_src", columns="a"), 395)

    def test_settings_clause_in_head_and_url_settings(self):
        """The head's own SETTINGS clause and URL settings both apply (FROM INFILE moves them)."""
        body = b'{"timestamp":"%s","exchange":"okx","trade_id":"set-1","extra":1}\n' % recent(2).encode()
        status, _, resp = self.request(
            params={"query": "INSERT INTO mp.trades (timestamp, exchange, trade_id) "
                             "SETTINGS input_format_skip_unknown_fields = 0 FORMAT JSONEachRow"}, body=body)
        self.assertEqual(status, 400, resp)
        self.assertIn(b"Unknown field", resp)
        query = ("INSERT INTO mp.trades (timestamp, exchange, trade_id) "
                 "SETTINGS input_format_skip_unknown_fields = 1 FORMAT JSONEachRow")
        for _ in range(2):
            status, _, resp = self.request(params={"query": query, "insert_deduplication_token": "set-tok"},
                                           body=body)
            self.assertEqual(status, 200, resp)
        self.assertEqual(self.count("trade_id = 'set-1'"), 1)  # token applied: second one dropped
        # As on a server, the statement's own SETTINGS clause wins over a URL setting.
        status, _, resp = self.request(params={"query": query, "input_format_skip_unknown_fields": "0"},
                                       body=body.replace(b"set-1", b"set-2"))
        self.assertEqual(status, 200, resp)
        self.assertEqual(self.count("trade_id = 'set-2'"), 1)

    def test_insert_sql(self):
        stmt = chserver.scan_statement(
            b"INSERT INTO `mp`.`t` (`a`, b) SETTINGS max_insert_block_size = 10, async_insert=1 FORMAT Native\n")
        self.assertEqual(
            chserver.insert_sql(stmt, {"async_insert": "0", "insert_deduplication_token": "t'1"}, "/d/x.body"),
            "INSERT INTO `mp`.`t` (`a`, b) FROM INFILE '/d/x.body' SETTINGS max_insert_block_size = 10, "
            "async_insert=1, insert_deduplication_token = 't\\'1' FORMAT Native")
        stmt = chserver.scan_statement(b"INSERT INTO t VALUES (1, 'x')")
        self.assertEqual(chserver.insert_sql(stmt, {}, "/d/y.body"), "INSERT INTO t FROM INFILE '/d/y.body' FORMAT Values")

    def test_nested_engine_error_is_unwrapped(self):
        err = chserver.ClickHouseError.from_engine(RuntimeError(
            "Code: 33. DB::Exception: Code: 33. DB::Exception: Cannot read all data. Bytes read: 0. "
            "Bytes expected: 3: While executing Native. (CANNOT_READ_ALL_DATA) (version 26.9.2.1). "
            "(CANNOT_READ_ALL_DATA)"))
        self.assertEqual((err.code, err.name, err.message), (
            33, "CANNOT_READ_ALL_DATA",
            "Cannot read all data. Bytes read: 0. Bytes expected: 3: While executing Native"))

    def test_defaults_with_binary_column_subset(self):
        """Native and RowBinary naming a column subset: DEFAULTs fill the rest."""
        subset = COLUMNS.replace(", is_maker", "")
        for fmt in ("Native", "RowBinary"):
            data = self.request(body=(
                f"SELECT now64(3, 'UTC') AS timestamp, toLowCardinality('okx') AS exchange, "
                f"toLowCardinality('spot') AS market_type, toLowCardinality('BTC-USDT') AS symbol, "
                f"concat('dflt-{fmt}-', toString(number)) AS trade_id, toDecimal64(1, 8) AS price, "
                f"toDecimal64(2, 8) AS quantity, toLowCardinality('buy') AS side, "
                f"now64(3, 'UTC') AS trade_time FROM numbers(10) FORMAT {fmt}").encode())[2]
            status, _, resp = self.insert(fmt, data, columns=subset)
            self.assertEqual(status, 200, (fmt, resp))
            out = self.sql("SELECT count(), countIf(data_source = 'marketprism'), countIf(NOT is_maker), "
                           "countIf(created_at > now64(3) - INTERVAL 1 MINUTE) "
                           f"FROM mp.trades WHERE trade_id LIKE 'dflt-{fmt}-%'")
            self.assertEqual(out, "10\t10\t10\t10\n", fmt)

    def test_content_hash_dedup_without_token(self):
        """A byte-identical re-insert without a token is dropped, as on a server."""
        data = self.rows_as("RowBinary", 100, "hash-")
        for _ in range(2):
            status, _, resp = self.insert("RowBinary", data)
            self.assertEqual(status, 200, resp)
        self.assertEqual(self.count("trade_id LIKE 'hash-%'"), 100)

    def test_client_infile_rejected(self):
        status, headers, body = self.request(body=b"INSERT INTO mp.trades FROM INFILE '/etc/hostname' FORMAT CSV")
        self.assertEqual((status, headers["X-ClickHouse-Exception-Code"]), (404, "78"), body)

    def test_no_body_files_left(self):
        self.insert("JSONEachRow", self.trade_json("files-1").encode())
        self.insert("JSONEachRow", b"{not json")
        self.assertEqual(os.listdir(os.path.join(self.tmp.name, chserver.BODY_DIR_NAME)), [])


class ProcessTests(unittest.TestCase):
    """Data-dir locking, signal handling, large-body streaming."""

    def test_sigterm_finishes_in_flight_request(self):
        with tempfile.TemporaryDirectory() as tmp:
            proc, addr = start_server(tmp)
            try:
                host, port = addr.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("POST", "/", body=b"SELECT sleep(1.5), 'done'")
                time.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
                resp = conn.getresponse()
                self.assertEqual((resp.status, resp.read()), (200, b"0\tdone\n"))
                conn.close()
            finally:
                self.assertEqual(stop_server(proc), 0)

    def test_large_chunked_insert_via_body_file(self):
        """A chunked body is written to DIR/insert-bodies while read, inserted, then removed."""
        with tempfile.TemporaryDirectory() as tmp:
            # --spill-bytes is obsolete but still accepted (older callers pass it).
            proc, addr = start_server(tmp, "--spill-bytes", "4096")
            try:
                host, port = addr.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                # Not in `default`: clickhouse-local's `default` overlays the filesystem, and
                # the engine's access control refuses to create tables there.
                conn.request("POST", "/", body=b"CREATE DATABASE mp")
                self.assertEqual(conn.getresponse().read(), b"")
                conn.request("POST", "/?database=mp", body=b"CREATE TABLE t (a UInt64) ENGINE = MergeTree ORDER BY a")
                self.assertEqual(conn.getresponse().read(), b"")
                data = b"".join(struct.pack("<Q", i) for i in range(200_000))
                chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
                conn.request("POST", "/?database=mp&query=INSERT%20INTO%20t%20FORMAT%20RowBinary", body=iter(chunks),
                             encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
                resp = conn.getresponse()
                self.assertEqual((resp.status, resp.read()), (200, b""))
                conn.request("POST", "/", body=b"SELECT count(), sum(a) FROM mp.t")
                self.assertEqual(conn.getresponse().read(), f"200000\t{sum(range(200_000))}\n".encode())
                self.assertEqual(os.listdir(os.path.join(tmp, chserver.BODY_DIR_NAME)), [])
                conn.close()
            finally:
                self.assertEqual(stop_server(proc), 0)

    def test_stale_body_files_removed_at_start(self):
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, chserver.BODY_DIR_NAME))
            stale = os.path.join(tmp, chserver.BODY_DIR_NAME, "left-by-a-killed-server.body")
            open(stale, "wb").close()
            proc, _ = start_server(tmp)
            try:
                self.assertFalse(os.path.exists(stale))
            finally:
                self.assertEqual(stop_server(proc), 0)

    def test_lock_then_sigterm(self):
        with tempfile.TemporaryDirectory() as tmp:
            proc, _ = start_server(tmp)
            try:
                t0 = time.monotonic()
                second = subprocess.run([sys.executable, SERVER, "--data-dir", tmp, "--listen", "127.0.0.1:0"],
                                        capture_output=True, text=True, timeout=30)
                self.assertEqual(second.returncode, 3)
                self.assertLess(time.monotonic() - t0, 10)
                self.assertIn(os.path.abspath(tmp), second.stderr)
                self.assertIn(f"pid {proc.pid}", second.stderr)
                self.assertEqual(second.stdout, "")
            finally:
                self.assertEqual(stop_server(proc), 0)

    def test_orphaned_holder_is_stopped_and_its_lock_taken_over(self):
        """A chserver whose parent died (SIGKILL, a second Ctrl-C) must not block the next start."""
        with tempfile.TemporaryDirectory() as tmp:
            # A parent that starts a server and dies without stopping it: the server is orphaned.
            parent = subprocess.run([sys.executable, "-c", (
                "import subprocess, sys, os\n"
                f"p = subprocess.Popen([sys.executable, {SERVER!r}, '--data-dir', {tmp!r}, '--listen', '127.0.0.1:0'],"
                " stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)\n"
                "line = p.stdout.readline()\n"
                "print(p.pid, line.strip(), flush=True)\n"
                "os._exit(0)\n")], capture_output=True, text=True, timeout=60)
            orphan_pid = int(parent.stdout.split()[0])
            self.assertIn("ready http://", parent.stdout)
            self.assertTrue(os.path.exists(f"/proc/{orphan_pid}"))
            proc, _ = start_server(tmp)
            try:
                deadline = time.monotonic() + 30
                while os.path.exists(f"/proc/{orphan_pid}") and time.monotonic() < deadline:
                    time.sleep(0.1)
                self.assertFalse(os.path.exists(f"/proc/{orphan_pid}"), "the orphan still runs")
                proc.log.seek(0)
                self.assertIn(f"orphaned chserver (pid {orphan_pid})", proc.log.read())
            finally:
                self.assertEqual(stop_server(proc), 0)


if __name__ == "__main__":
    unittest.main()


# --- the guard, web pages, passwords, HTTPS ------------------------------------------------

# Each refused statement, with the words the error names. Case, comments, quoting and nesting
# (subquery, JOIN, CTE, IN, INSERT SELECT, view, CREATE AS) must not get past the engine's parse.
REFUSED = [
    ("SELECT * FROM file('/etc/hostname', 'LineAsString')", "table function file()"),
    ("SELECT * FROM FiLe('/etc/hostname', 'LineAsString')", "table function FiLe()"),
    ("SELECT * FROM /**/`file`('/etc/hostname', 'LineAsString')", "table function file()"),
    ("SELECT * FROM -- c\n file('/etc/hostname', 'LineAsString')", "table function file()"),
    ("SELECT file('/etc/hostname')", "function file()"),
    ("SELECT * FROM (SELECT * FROM url('http://127.0.0.1:9/', 'CSV', 'x String'))", "table function url()"),
    ("SELECT * FROM numbers(1) AS a JOIN s3('http://127.0.0.1:9/x', 'CSV', 'x String') AS b ON 1", "table function s3()"),
    ("WITH t AS (SELECT * FROM remote('127.0.0.1:9', system.one)) SELECT * FROM t", "table function remote()"),
    ("SELECT 1 WHERE 1 IN (SELECT * FROM executable('x.sh', 'TSV', 'x UInt8'))", "table function executable()"),
    ("SELECT * FROM mysql('127.0.0.1:9', 'd', 't', 'u', 'p')", "table function mysql()"),
    ("SELECT * FROM postgresql('127.0.0.1:9', 'd', 't', 'u', 'p')", "table function postgresql()"),
    ("SELECT * FROM hdfs('hdfs://127.0.0.1:9/x', 'CSV', 'x String')", "table function hdfs()"),
    ("SELECT * FROM remoteSecure('127.0.0.1:9', system.one)", "table function remoteSecure()"),
    ("SELECT * FROM sqlite('/tmp/x.db', 't')", "table function sqlite()"),
    ("SELECT * FROM python('x')", "table function python()"),
    ("INSERT INTO FUNCTION file('/tmp/mp-guard.tsv', 'TSV', 'x UInt8') VALUES (1)", "table function file()"),
    ("INSERT INTO mp.guard SELECT * FROM file('/etc/hostname', 'LineAsString')", "table function file()"),
    ("CREATE VIEW mp.v AS SELECT * FROM file('/etc/hostname', 'LineAsString')", "table function file()"),
    ("CREATE TABLE mp.f AS file('/etc/hostname', 'LineAsString')", "table function file()"),
    ("CREATE TABLE mp.f (x String) ENGINE = File(TSV, '/tmp/mp-guard.tsv')", "engine File"),
    ("CREATE TABLE mp.f (x String) ENGINE = URL('http://127.0.0.1:9/', CSV)", "engine URL"),
    ("CREATE TABLE mp.f (x String) ENGINE = S3('http://127.0.0.1:9/x', CSV)", "engine S3"),
    ("CREATE TABLE mp.f (x String) ENGINE = MySQL('127.0.0.1:9', 'd', 't', 'u', 'p')", "engine MySQL"),
    ("CREATE DATABASE fsdb ENGINE = Filesystem('/etc')", "engine Filesystem"),
    ("CREATE DICTIONARY mp.d (k UInt64, v String) PRIMARY KEY k "
     "SOURCE(FILE(path '/etc/passwd' format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)", "dictionary source FILE"),
    ("BACKUP TABLE mp.guard TO File('/tmp/mp-guard-backup')", "BACKUP/RESTORE"),
    ("SELECT 1 INTO OUTFILE '/tmp/mp-guard-out.txt'", "INTO OUTFILE"),
    ("select 1 /* x */ into\n outfile '/tmp/mp-guard-out.txt' format CSV", "INTO OUTFILE"),
    ("SYSTEM SHUTDOWN", "SYSTEM SHUTDOWN"),
    ("SELECT 1 FORMAT Template SETTINGS format_template_resultset = '/etc/hostname'",
     "the setting format_template_resultset"),
    ("SET output_format_schema = '/tmp/mp-guard-schema'", "the setting output_format_schema"),
    ("SELECT * FROM (SELECT 1 SETTINGS input_format_record_errors_file_path = '/tmp/x')",
     "the setting input_format_record_errors_file_path"),
]
# What the service and its tests send must keep working.
ALLOWED = [
    "SELECT count() FROM numbers(10)",
    "SELECT count() FROM system.tables",
    "SELECT * FROM generateRandom('x UInt8') LIMIT 1",
    "SELECT name FROM system.settings WHERE name = 'deduplicate_insert'",
    "CREATE TABLE IF NOT EXISTS mp.guard2 (x String, d Date) ENGINE = MergeTree PARTITION BY toYYYYMM(d) ORDER BY x",
    "INSERT INTO mp.guard SELECT toString(number) FROM numbers(3)",
    "SELECT 'file(1)', `file` FROM (SELECT 1 AS `file`)",
    "SYSTEM FLUSH LOGS",
    "OPTIMIZE TABLE mp.guard FINAL",
    "SELECT {p:String}",
]


class GuardTests(unittest.TestCase):
    """A default server: external access refused, web pages refused."""

    request = classmethod(ServerTests.request.__func__)
    sql = classmethod(ServerTests.sql.__func__)

    @classmethod
    def setUpClass(cls):
        open_class_server(cls)
        cls.sql("CREATE DATABASE mp")
        cls.sql("CREATE TABLE mp.guard (x String) ENGINE = MergeTree ORDER BY x")

    tearDownClass = classmethod(ServerTests.tearDownClass.__func__)

    def test_external_access_is_refused(self):
        for sql, what in REFUSED:
            with self.subTest(sql=sql):
                status, headers, body = self.request(body=sql.encode())
                text = body.decode()
                self.assertEqual(status, 403, text)
                self.assertEqual(headers["X-ClickHouse-Exception-Code"], "497")
                self.assertIn(f"{what} is refused by the embedded ClickHouse", text)
                self.assertIn("embedded.allow_external: true", text)
                self.assertIn("(ACCESS_DENIED)", text)
        self.assertFalse(os.path.exists("/tmp/mp-guard-out.txt"))
        self.assertFalse(os.path.exists("/tmp/mp-guard.tsv"))
        self.assertEqual(self.sql("SELECT count() FROM system.tables WHERE database = 'mp' AND name IN ('v', 'f', 'd')"), "0\n")

    def test_refused_in_the_query_param_and_in_an_insert_head(self):
        status, _, body = self.request(params={"query": "SELECT * FROM file('/etc/hostname', 'LineAsString')"},
                                       method="GET")
        self.assertEqual(status, 403, body)
        status, _, body = self.request(
            params={"query": "INSERT INTO FUNCTION file('/tmp/mp-guard.tsv', 'TSV', 'x String') FORMAT TSV"},
            body=b"a\n")
        self.assertEqual(status, 403, body)
        self.assertFalse(os.path.exists("/tmp/mp-guard.tsv"))

    def test_file_settings_in_the_url_are_refused(self):
        status, _, body = self.request(params={"format_schema": "/etc/passwd:x"}, body=b"SELECT 1")
        self.assertEqual(status, 403, body)
        self.assertIn(b"the setting format_schema is refused", body)
        status, _, body = self.request(
            params={"query": "INSERT INTO mp.guard FORMAT TSV",
                    "input_format_record_errors_file_path": "/tmp/mp-guard-errors"}, body=b"a\n")
        self.assertEqual(status, 403, body)
        self.assertFalse(os.path.exists("/tmp/mp-guard-errors"))

    def test_another_dialect_in_a_url_setting_is_refused(self):
        status, _, body = self.request(params={"dialect": "kusto"}, body=b"print 1")
        self.assertEqual(status, 403, body)
        self.assertIn(b"the 'kusto' dialect is refused by the embedded ClickHouse", body)
        status, _, body = self.request(params={"dialect": "clickhouse"}, body=b"SELECT 1")
        self.assertEqual((status, body), (200, b"1\n"))

    def test_what_the_service_sends_still_works(self):
        for sql in ALLOWED:
            with self.subTest(sql=sql):
                params = {"param_p": "x"} if "{p:" in sql else None
                status, _, body = self.request(params=params, body=sql.encode())
                self.assertEqual(status, 200, body)
        status, _, body = self.request(params={"query": "INSERT INTO mp.guard FORMAT TSV"}, body=b"a\nb\n")
        self.assertEqual(status, 200, body)

    def test_a_syntax_error_stays_the_clients(self):
        status, headers, body = self.request(body=b"SELEC 1")
        self.assertEqual(status, 400, body)
        self.assertEqual(headers["X-ClickHouse-Exception-Code"], "62")

    def test_cross_origin_post_is_refused(self):
        before = self.sql("SELECT count() FROM mp.guard")
        for headers in ({"Origin": "https://evil.example", "Content-Type": "text/plain"},
                        {"Origin": "null", "Content-Type": "application/x-www-form-urlencoded"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-origin"}):
            with self.subTest(headers=headers):
                status, _, body = self.request(body=b"INSERT INTO mp.guard VALUES ('evil')", headers=headers)
                self.assertEqual(status, 403, body)
                self.assertIn(b"Requests from web pages are refused by the embedded ClickHouse", body)
        self.assertEqual(self.sql("SELECT count() FROM mp.guard"), before)
        status, _, _ = self.request(method="GET", path="/ping", headers={"Sec-Fetch-Site": "none"})
        self.assertEqual(status, 200)


class AllowExternalTests(unittest.TestCase):
    def test_allow_external_lets_file_through(self):
        with tempfile.TemporaryDirectory() as tmp:
            proc, addr = start_server(tmp, "--allow-external")
            try:
                host, port = addr.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                conn.request("POST", "/", body=b"SELECT count() > 0 FROM file('/etc/hostname', 'LineAsString')")
                resp = conn.getresponse()
                self.assertEqual((resp.status, resp.read()), (200, b"1\n"))
                conn.close()
            finally:
                self.assertEqual(stop_server(proc), 0)


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """A private CA, a server certificate for 127.0.0.1 and a client certificate, in `d`."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA", cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


class AuthTlsTests(unittest.TestCase):
    """One server with a password, HTTPS and required client certificates."""

    PASSWORD = "s3cret-pw"

    @classmethod
    def setUpClass(cls):
        import ssl
        cls.tmp = tempfile.TemporaryDirectory()
        cls.pki = os.path.join(cls.tmp.name, "pki")
        os.makedirs(cls.pki)
        make_pki(cls.pki)
        p = lambda n: os.path.join(cls.pki, n)  # noqa: E731
        log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, CHSERVER_PASSWORD=cls.PASSWORD)
        cls.proc = subprocess.Popen(
            [sys.executable, SERVER, "--data-dir", os.path.join(cls.tmp.name, "data"),
             "--listen", "127.0.0.1:0", "--user", "writer", "--tls-cert", p("server.pem"),
             "--tls-key", p("server.key"), "--tls-client-ca", p("ca.pem")],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        cls.proc.log = log
        line = cls.proc.stdout.readline()
        assert line.startswith("ready https://127.0.0.1:"), line
        cls.port = int(line.strip().rsplit(":", 1)[1])
        cls.ctx = ssl.create_default_context(cafile=p("ca.pem"))
        cls.ctx.load_cert_chain(p("client.pem"), p("client.key"))

    @classmethod
    def tearDownClass(cls):
        code = stop_server(cls.proc)
        cls.tmp.cleanup()
        assert code == 0, f"server exit code {code}"

    def call(self, body=b"SELECT 1", headers=None, path="/", ctx=None):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=ctx or self.ctx)
        try:
            conn.request("POST", path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    def test_every_way_of_sending_the_password(self):
        import base64
        basic = base64.b64encode(f"writer:{self.PASSWORD}".encode()).decode()
        for headers, path in (({"X-ClickHouse-User": "writer", "X-ClickHouse-Key": self.PASSWORD}, "/"),
                              ({"Authorization": f"Basic {basic}"}, "/"),
                              ({}, "/?" + urllib.parse.urlencode({"user": "writer", "password": self.PASSWORD}))):
            with self.subTest(headers=headers, path=path):
                self.assertEqual(self.call(headers=headers, path=path), (200, "1\n"))

    def test_wrong_or_missing_password_is_refused(self):
        for headers in ({"X-ClickHouse-User": "writer", "X-ClickHouse-Key": "wrong"},
                        {"X-ClickHouse-Key": self.PASSWORD}, {}):
            with self.subTest(headers=headers):
                status, body = self.call(headers=headers)
                self.assertEqual(status, 403, body)
                self.assertIn("Authentication failed: password is incorrect, or there is no user with such name", body)
                self.assertIn("(AUTHENTICATION_FAILED)", body)
                self.assertNotIn(self.PASSWORD, body)

    def test_a_password_url_param_is_masked_in_the_log(self):
        query = urllib.parse.urlencode({"user": "writer", "password": self.PASSWORD, "query": "SELECT 1"})
        self.assertEqual(self.call(body=None, path="/?" + query), (200, "1\n"))
        self.call(body=None, path="/?" + query.replace(self.PASSWORD, "not-it"))
        self.proc.log.seek(0)
        log = self.proc.log.read()
        self.assertNotIn(self.PASSWORD, log)
        self.assertNotIn("not-it", log)

    def test_ping_needs_no_password(self):
        self.assertEqual(self.call(body=None, path="/ping"), (200, "Ok.\n"))

    def test_a_client_without_a_certificate_is_refused(self):
        import ssl
        bare = ssl.create_default_context(cafile=os.path.join(self.pki, "ca.pem"))
        with self.assertRaises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            self.call(ctx=bare)
        # The server keeps serving others.
        self.assertEqual(self.call(headers={"X-ClickHouse-User": "writer", "X-ClickHouse-Key": self.PASSWORD}),
                         (200, "1\n"))

    def test_plain_http_is_dropped_and_the_server_keeps_serving(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        with self.assertRaises((ConnectionError, http.client.HTTPException, OSError)):
            conn.request("POST", "/", body=b"SELECT 1")
            conn.getresponse().read()
        conn.close()
        self.assertEqual(self.call(headers={"X-ClickHouse-User": "writer", "X-ClickHouse-Key": self.PASSWORD}),
                         (200, "1\n"))

    def test_the_password_is_not_on_the_command_line(self):
        # `ps` shows every process's command line to every user; /proc/PID/environ only to
        # the same user (and root).
        with open(f"/proc/{self.proc.pid}/cmdline", "rb") as f:
            self.assertNotIn(self.PASSWORD.encode(), f.read())


class AuthStartupTests(unittest.TestCase):
    def test_password_file_and_bad_tls_flags(self):
        with tempfile.TemporaryDirectory() as tmp:
            pw = os.path.join(tmp, "pw")
            with open(pw, "w") as f:
                f.write("file-pw\n")
            proc, addr = start_server(os.path.join(tmp, "d1"), "--password-file", pw)
            try:
                host, port = addr.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("POST", "/", body=b"SELECT 1", headers={"X-ClickHouse-Key": "file-pw"})
                resp = conn.getresponse()
                self.assertEqual((resp.status, resp.read()), (200, b"1\n"))
                conn.request("POST", "/", body=b"SELECT 1", headers={"X-ClickHouse-Key": "file-pw-"})
                resp = conn.getresponse()
                self.assertEqual(resp.status, 403, resp.read())
                resp.read()
                conn.close()
            finally:
                self.assertEqual(stop_server(proc), 0)
            base = [sys.executable, SERVER, "--data-dir", os.path.join(tmp, "d2"), "--listen", "127.0.0.1:0"]
            out = subprocess.run(base + ["--tls-cert", pw], capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 2, out.stderr)
            self.assertIn("--tls-cert and --tls-key go together", out.stderr)
            out = subprocess.run(base + ["--tls-cert", pw, "--tls-key", pw], capture_output=True, text=True,
                                 timeout=60)
            self.assertEqual(out.returncode, 1, out.stderr)
            self.assertIn("chserver: cannot set up authentication or TLS", out.stderr)
            self.assertNotIn("file-pw", out.stderr)

