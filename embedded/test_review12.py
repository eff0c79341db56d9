"""Regression tests for the security review of issue 12 (notes: docs/security.md, "Embedded engine").

One test per finding, named after the hole. Each one runs the exploit against a real default
server (external access refused) and asserts both that it fails AND that nothing leaked: the
secret file's content is neither returned nor stored, no HTTP request reached the listener,
no file or table was created. The engine is the real one (chDB); nothing is mocked.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import tempfile
import threading
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import test_chserver as tc  # noqa: E402 - imported as a module: its test classes must not run twice

SERVER = tc.SERVER
open_class_server, start_server, stop_server = tc.open_class_server, tc.start_server, tc.stop_server

SECRET = "s3cr3t-review12-content"


class _Hits(http.server.BaseHTTPRequestHandler):
    """A local HTTP listener that counts every request it gets."""

    hits = 0

    def do_GET(self):  # noqa: N802 - http.server's naming
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_HEAD = do_POST = do_GET

    def log_message(self, *args):
        pass


class Review12Tests(unittest.TestCase):
    request = classmethod(tc.ServerTests.request.__func__)
    sql = classmethod(tc.ServerTests.sql.__func__)
    tearDownClass_server = classmethod(tc.ServerTests.tearDownClass.__func__)

    @classmethod
    def setUpClass(cls):
        open_class_server(cls)
        cls.secret = os.path.join(cls.tmp.name, "secret.txt")
        with open(cls.secret, "w") as f:
            f.write(SECRET + "\n")
        cls.listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hits)
        cls.web = f"http://127.0.0.1:{cls.listener.server_address[1]}/"
        threading.Thread(target=cls.listener.serve_forever, daemon=True).start()
        cls.sql("CREATE DATABASE mp")
        cls.sql("CREATE TABLE mp.s (x String) ENGINE = MergeTree ORDER BY x")

    @classmethod
    def tearDownClass(cls):
        cls.listener.shutdown()
        cls.listener.server_close()
        cls.tearDownClass_server()

    def setUp(self):
        _Hits.hits = 0

    def refused(self, status, body, code=b"497"):
        self.assertNotEqual(status, 200, body)
        self.assertIn(b"Code: " + code, body)
        self.assertNotIn(SECRET.encode(), body)

    def assert_nothing_leaked(self):
        """No row holds the secret, no table other than mp.s exists, the listener saw nothing."""
        self.assertEqual(self.sql("SELECT count() FROM mp.s WHERE x LIKE '%s3cr3t%'"), "0\n")
        self.assertEqual(self.sql(
            "SELECT count() FROM system.tables WHERE database NOT IN ('system', 'INFORMATION_SCHEMA', "
            "'information_schema') AND name NOT IN ('s', 't$x$', 'select')"), "0\n")
        self.assertEqual(_Hits.hits, 0)

    def q(self, sql):
        return self.request(body=sql.encode())

    # 1
    def test_hole01_database_param_cannot_inject_a_statement(self):
        self.sql("CREATE DATABASE IF NOT EXISTS `a```")
        evil = (f"a\\` ; CREATE TABLE default.leak ENGINE=Memory AS SELECT * FROM "
                f"file('{self.secret}', LineAsString) -- ")
        status, _, body = self.request(params={"database": evil}, body=b"SELECT 1")
        self.refused(status, body, code=b"81")
        self.sql("DROP DATABASE `a```")
        self.assert_nothing_leaked()

    # 2
    def test_hole02_set_name_cannot_inject_a_statement(self):
        evil = (f"SET `max_threads = 1; CREATE TABLE mp.leak2 ENGINE=Memory AS SELECT * FROM "
                f"file('{self.secret}', LineAsString) --` = 1")
        status, _, body = self.q(evil)
        self.refused(status, body, code=b"115")
        self.assert_nothing_leaked()

    # 3
    def test_hole03_values_expressions_cannot_read_files(self):
        status, _, body = self.q(f"INSERT INTO mp.s VALUES (file('{self.secret}'))")
        self.refused(status, body)
        # The same data as a body after `query=INSERT ... VALUES`.
        status, _, body = self.request(params={"query": "INSERT INTO mp.s VALUES"},
                                       body=f"('a'), (file('{self.secret}'))".encode())
        self.refused(status, body)
        # Values data over the checked size is inserted with expressions off: file() is no
        # literal, so the insert fails, also when the statement asks for expressions itself.
        big = ",".join(["('pad')"] * 150_000) + f",(file('{self.secret}'))"
        for head in ("INSERT INTO mp.s VALUES",
                     "INSERT INTO mp.s SETTINGS input_format_values_interpret_expressions = 1 VALUES"):
            with self.subTest(head=head):
                status, _, body = self.request(params={"query": head}, body=big.encode())
                self.assertNotEqual(status, 200, body[:300])
                self.assertNotIn(SECRET.encode(), body)
        self.assertEqual(self.sql("SELECT count() FROM mp.s"), "0\n")
        self.assert_nothing_leaked()
        # Values with harmless expressions still work, as the service's tools send them.
        self.sql("INSERT INTO mp.s VALUES (concat('ok', toString(1 + 1)))")
        self.assertEqual(self.sql("SELECT count() FROM mp.s WHERE x = 'ok2'"), "1\n")
        self.sql("TRUNCATE TABLE mp.s")

    # 4
    def test_hole04_from_infile_cannot_be_smuggled_past_the_lexer(self):
        self.sql("CREATE TABLE mp.`t$x$` (x String) ENGINE = MergeTree ORDER BY x")
        self.sql("CREATE TABLE mp.`select` (x String) ENGINE = MergeTree ORDER BY x")
        for sql in (f"INSERT INTO t$x$ FROM INFILE '{self.secret}' FORMAT LineAsString -- $x$",
                    f"INSERT INTO select FROM INFILE '{self.secret}' FORMAT LineAsString",
                    f"INSERT INTO mp.s FROM INFILE '{self.secret}' FORMAT LineAsString"):
            with self.subTest(sql=sql):
                status, _, body = self.request(params={"database": "mp"}, body=sql.encode())
                self.assertNotEqual(status, 200, body)
                self.assertNotIn(SECRET.encode(), body)
        self.assertEqual(self.sql("SELECT count() FROM mp.`t$x$`"), "0\n")
        self.assertEqual(self.sql("SELECT count() FROM mp.`select`"), "0\n")
        self.assert_nothing_leaked()
        self.sql("DROP TABLE mp.`t$x$`")
        self.sql("DROP TABLE mp.`select`")

    # 5
    def test_hole05_table_function_nested_in_loop_is_refused(self):
        for sql in (f"SELECT * FROM loop(url('{self.web}', RawBLOB)) LIMIT 1",
                    f"SELECT * FROM loop(file('{self.secret}', RawBLOB)) LIMIT 1",
                    f"INSERT INTO mp.s SELECT * FROM loop(url('{self.web}', RawBLOB)) LIMIT 1"):
            with self.subTest(sql=sql):
                self.refused(*self.q(sql)[::2])
        self.assert_nothing_leaked()

    # 6
    def test_hole06_settings_holding_sql_are_refused(self):
        self.sql("INSERT INTO mp.s VALUES ('row')")
        flt = f"length(file('{self.secret}')) = {len(SECRET) + 1}"
        quoted = flt.replace("'", "''")
        for sql in (f"SELECT * FROM mp.s SETTINGS additional_result_filter = '{quoted}'",
                    f"SELECT * FROM mp.s SETTINGS additional_table_filters = {{'mp.s': '{quoted}'}}",
                    f"SET additional_result_filter = '{quoted}'"):
            with self.subTest(sql=sql):
                self.refused(*self.q(sql)[::2])
        for name, value in (("additional_result_filter", flt),
                            ("additional_table_filters", "{'mp.s': '" + quoted + "'}")):
            with self.subTest(url_setting=name):
                status, _, body = self.request(params={name: value}, body=b"SELECT * FROM mp.s")
                self.refused(status, body)
        self.sql("TRUNCATE TABLE mp.s")
        self.assert_nothing_leaked()

    # 7
    def test_hole07_inline_web_disk_makes_no_request(self):
        status, _, body = self.q(
            "CREATE TABLE mp.w (x String) ENGINE = MergeTree ORDER BY x "
            f"SETTINGS disk = disk(type = web, endpoint = '{self.web}')")
        self.refused(status, body)
        self.assert_nothing_leaked()

    # 8
    def test_hole08_embedded_rocksdb_cannot_write_outside_the_data_dir(self):
        victim = tempfile.mkdtemp()
        target = os.path.join(victim, "rocks")
        status, _, body = self.q(
            f"CREATE TABLE mp.r (k UInt64, v String) ENGINE = EmbeddedRocksDB(0, '{target}') PRIMARY KEY k")
        self.refused(status, body)
        self.assertFalse(os.path.exists(target))
        os.rmdir(victim)
        self.assert_nothing_leaked()

    # 9
    def test_hole09_get_requests_are_readonly(self):
        for sql in ("DROP TABLE mp.s", "INSERT INTO mp.s VALUES ('get')", "TRUNCATE TABLE mp.s",
                    "CREATE TABLE mp.g (x String) ENGINE = Memory",
                    "EXPLAIN ANALYZE INSERT INTO mp.s SELECT 'get'"):
            with self.subTest(sql=sql):
                status, _, body = self.request("GET", params={"query": sql})
                self.assertEqual(status, 403, body)
                self.assertIn(b"Code: 164", body)
        # `readonly=1` as a URL parameter makes a POST readonly too, for that request only.
        status, _, body = self.request(params={"readonly": "1"}, body=b"DROP TABLE mp.s")
        self.assertEqual(status, 403, body)
        self.assertEqual(self.sql("EXISTS TABLE mp.s"), "1\n")
        self.assertEqual(self.sql("SELECT count() FROM mp.s WHERE x = 'get'"), "0\n")
        status, _, body = self.request("GET", params={"query": "SELECT 40 + 2"})
        self.assertEqual((status, body), (200, b"42\n"))
        status, _, body = self.request("GET", params={"query": "EXPLAIN SELECT 1"})
        self.assertEqual(status, 200, body)
        self.assert_nothing_leaked()

    # 10
    def test_hole10_url_settings_are_in_force_while_checking(self):
        """URL settings are SET while the guard parses (not only after it): a setting that
        changes parsing cannot make the executed statement differ from the checked one;
        `implicit_select` (a bare expression as a statement) is refused outright."""
        status, _, body = self.request(params={"implicit_select": "1"},
                                       body=f"file('{self.secret}')".encode())
        self.refused(status, body)
        self.assert_nothing_leaked()

    # Second review: what got past the fixed guard.
    def test_r2_hole01_into_outfile_behind_an_alias_named_insert_writes_no_file(self):
        out = os.path.join(self.tmp.name, "r2-out.sh")
        for method, sql in (
                ("POST", f"SELECT 'echo pwned' AS insert INTO OUTFILE '{out}' APPEND FORMAT TSVRaw"),
                ("POST", f"SELECT 1 INSERT INTO OUTFILE '{out}'"),
                ("POST", f"SELECT 1 AS insert INTO OUTFILE '{out}' COMPRESSION 'gzip'"),
                ("GET", f"SELECT 'via GET' AS insert INTO OUTFILE '{out}' FORMAT TSVRaw")):
            with self.subTest(method=method, sql=sql):
                if method == "GET":
                    status, _, body = self.request("GET", params={"query": sql})
                else:
                    status, _, body = self.q(sql)
                self.refused(status, body)
        self.assertFalse(os.path.exists(out))
        self.assert_nothing_leaked()

    def test_r2_hole02_a_format_override_cannot_turn_tsv_data_into_values_expressions(self):
        self.sql("CREATE TABLE mp.v (x String) ENGINE = MergeTree ORDER BY x")
        try:
            for name in ("input_format", "format"):
                with self.subTest(setting=name):
                    status, _, body = self.request(
                        params={"query": "INSERT INTO mp.v FORMAT TSV", name: "Values"},
                        body=f"(file('{self.secret}'))".encode())
                    self.refused(status, body)
            status, _, body = self.q(
                f"INSERT INTO mp.v SETTINGS input_format='Values' FORMAT TSV\n(file('{self.secret}'))")
            self.assertNotEqual(status, 200, body)
            self.assertNotIn(SECRET.encode(), body)
            self.assertEqual(self.sql("SELECT count() FROM mp.v WHERE x LIKE '%s3cr3t%'"), "0\n")
        finally:
            self.sql("DROP TABLE mp.v")
        self.assert_nothing_leaked()

    def test_r2_hole03_query_rewriting_settings_cannot_blind_the_guard(self):
        out = os.path.join(self.tmp.name, "r2-o8.txt")
        for name in ("select", "filter", "order", "sort"):
            with self.subTest(setting=name):
                status, _, body = self.request(params={name: "1"},
                                               body=f"SELECT 1 INTO OUTFILE '{out}'".encode())
                self.refused(status, body)
        status, _, body = self.request(
            params={"select": "'SELECT 1'"},
            body=(b"CREATE TABLE mp.w2 (x String) ENGINE=MergeTree ORDER BY x SETTINGS disk = "
                  b"disk(type=web, endpoint='" + self.web.encode() + b"w2/')"))
        self.refused(status, body)
        status, _, body = self.q("SELECT 1 SETTINGS select = 'SELECT 2'")
        self.refused(status, body)
        self.assertFalse(os.path.exists(out))
        self.assert_nothing_leaked()

    def test_r2_hole04_attach_without_a_definition_is_refused(self):
        status, _, body = self.q("ATTACH TABLE mp.rocks")
        self.refused(status, body)
        self.assert_nothing_leaked()

    def test_r2_hole05_another_dialect_cannot_wedge_the_engine(self):
        for sql in ("SET dialect = 'prql'", "SET dialect = 'kusto'", "SET max_query_size = 10",
                    "SELECT 1 SETTINGS max_parser_depth = 1"):
            with self.subTest(sql=sql):
                status, _, body = self.q(sql)
                self.refused(status, body)
        status, _, body = self.request("GET", params={"query": "SET max_threads = 1"})
        self.assertEqual(status, 403, body)
        # The engine still answers ClickHouse SQL.
        self.assertEqual(self.sql("SELECT 40 + 2"), "42\n")

    def test_r2_settings_naming_files_hosts_or_disks_are_refused_as_a_class(self):
        for name in ("input_format_record_errors_file_path", "schema_inference_use_cache_for_file",
                     "storage_file_read_method", "remote_filesystem_read_method", "s3_max_connections",
                     "enable_url_encoding", "format_schema_source"):
            with self.subTest(setting=name):
                status, _, body = self.request(params={name: "1"}, body=b"SELECT 1")
                self.refused(status, body)
        # What the service sends still works.
        status, _, body = self.request(params={"insert_deduplicate": "1", "async_insert": "0",
                                               "max_threads": "2"}, body=b"SELECT 1")
        self.assertEqual((status, body), (200, b"1\n"))

    # Layer 1: the engine's own grants (no FILE/URL/REMOTE): what the guard never looked at.
    def test_engine_grants_refuse_the_filesystem_database(self):
        status, _, body = self.q(f"SELECT * FROM `{self.secret}`")
        self.assertEqual(status, 403, body)
        self.assertIn(b"Not enough privileges", body)
        self.assertIn(b"use a database of your own", body)
        self.assertNotIn(SECRET.encode(), body)
        status, _, body = self.q("CREATE TABLE default.t (x String) ENGINE = MergeTree ORDER BY x")
        self.assertEqual(status, 403, body)
        self.assertIn(b"embedded.allow_external: true", body)


ENGINE_ALONE = r"""
import json, os, sys
sys.path.insert(0, sys.argv[1])
import chserver
from chdb import session
data_dir, secret, web = sys.argv[2:5]
cfg = chserver.write_engine_config(data_dir)
s = session.Session(os.path.join(data_dir, "chdb") + "?config-file=" + cfg)
s.query("CREATE DATABASE mp")
s.query("CREATE TABLE mp.s (x String) ENGINE = MergeTree ORDER BY x")
out = {}
for sql in [
    f"SELECT * FROM file('{secret}', RawBLOB)",
    f"SELECT * FROM url('{web}', RawBLOB)",
    f"SELECT * FROM loop(url('{web}', RawBLOB)) LIMIT 1",
    f"INSERT INTO mp.s SELECT * FROM file('{secret}', LineAsString)",
    f"SELECT * FROM mp.s WHERE x IN (SELECT * FROM file('{secret}', LineAsString))",
    "SELECT * FROM remote('127.0.0.1:1', system.one)",
    "SELECT * FROM executable('id', TSV, 'x String')",
    f"CREATE TABLE mp.f (x String) ENGINE = File(LineAsString, '{secret}')",
    f"CREATE DICTIONARY mp.d (k UInt64) PRIMARY KEY k SOURCE(HTTP(url '{web}' format TSV)) LAYOUT(FLAT()) LIFETIME(0)",
    f"SELECT * FROM `{secret}`",
    "BACKUP TABLE mp.s TO File('/tmp/chserver-review12-backup')",
]:
    try:
        out[sql] = "OK " + str(s.query(sql, "TSV"))
    except Exception as exc:
        out[sql] = "ERR " + str(exc)
out["count"] = str(s.query("SELECT count() FROM mp.s", "TSV")).strip()
s.close()
print(json.dumps(out))
"""


class EngineLayerTests(unittest.TestCase):
    def test_engine_grants_alone_refuse_external_access(self):
        """Layer 1 without the guard: the engine opened with write_engine_config's files
        refuses every table function, engine and source that reaches outside by itself."""
        import json
        listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hits)
        threading.Thread(target=listener.serve_forever, daemon=True).start()
        _Hits.hits = 0
        try:
            with tempfile.TemporaryDirectory() as tmp:
                secret = os.path.join(tmp, "secret.txt")
                with open(secret, "w") as f:
                    f.write(SECRET + "\n")
                out = subprocess.run(
                    [sys.executable, "-c", ENGINE_ALONE, os.path.dirname(os.path.abspath(__file__)),
                     os.path.join(tmp, "d"), secret, f"http://127.0.0.1:{listener.server_address[1]}/"],
                    capture_output=True, text=True, timeout=120)
                self.assertEqual(out.returncode, 0, out.stderr[-2000:])
                results = json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            listener.shutdown()
            listener.server_close()
        self.assertEqual(results.pop("count"), "0")
        for sql, result in results.items():
            with self.subTest(sql=sql):
                self.assertTrue(result.startswith("ERR"), result)
                if "executable(" in sql:
                    # Not a grant: the engine runs only scripts of DIR/chdb/user_scripts/, where
                    # no client can write (the guard refuses executable() besides).
                    self.assertIn("does not exist inside user scripts folder", result)
                    continue
                self.assertIn("Not enough privileges", result)
                self.assertNotIn(SECRET, result)
        self.assertEqual(_Hits.hits, 0)
        self.assertFalse(os.path.exists("/tmp/chserver-review12-backup"))


class StartupTests(unittest.TestCase):
    # 17
    def test_hole17_a_password_of_only_newlines_fails_the_start(self):
        with tempfile.TemporaryDirectory() as tmp:
            pw = os.path.join(tmp, "pw")
            with open(pw, "w") as f:
                f.write("\n\n \n")
            out = subprocess.run([sys.executable, SERVER, "--data-dir", os.path.join(tmp, "d"),
                                  "--listen", "127.0.0.1:0", "--password-file", pw],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(out.returncode, 1, out.stderr)
            self.assertNotIn("ready", out.stdout)
            self.assertIn("empty", out.stderr)

    def test_user_config_is_merged_and_cannot_lift_the_grants(self):
        """DIR/clickhouse-config.xml still defines clusters; its access control is ignored."""
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "clickhouse-config.xml"), "w") as f:
                f.write("<clickhouse><remote_servers><solo><shard><replica><host>127.0.0.1</host>"
                        "<port>9000</port></replica></shard></solo></remote_servers>"
                        "<user_directories><users_xml><path>/nonexistent/users.xml</path></users_xml>"
                        "</user_directories></clickhouse>")
            secret = os.path.join(tmp, "secret.txt")
            with open(secret, "w") as f:
                f.write(SECRET)
            proc, addr = start_server(tmp)
            try:
                import http.client
                host, port = addr.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                body = urllib.parse.quote("SELECT count() FROM system.clusters WHERE cluster = 'solo'")
                conn.request("GET", "/?query=" + body)
                self.assertEqual(conn.getresponse().read(), b"1\n")
                conn.request("POST", "/", body=f"SELECT * FROM `{secret}`".encode())
                resp = conn.getresponse()
                text = resp.read()
                self.assertEqual(resp.status, 403, text)
                self.assertNotIn(SECRET.encode(), text)
                conn.close()
            finally:
                self.assertEqual(stop_server(proc), 0)


if __name__ == "__main__":
    unittest.main()
