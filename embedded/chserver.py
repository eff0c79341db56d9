#!/usr/bin/env python3
"""Embedded ClickHouse: a ClickHouse-HTTP-compatible server over chDB.

MarketPrism Storage always speaks the ordinary ClickHouse HTTP protocol (the
official `clickhouse` Rust crate). On machines where no ClickHouse server can be
installed, this process stands in for one: it runs the real ClickHouse engine
in-process through chDB (`chdb-core`) and exposes the subset of the HTTP
interface that clients use (`/ping`, `query=`, SQL bodies, inserts with data
bodies, `decompress=1`/`compress=1` native framing, HTTP content encodings,
settings and query parameters as URL params, ClickHouse-style errors).

Usage:
    python embedded/chserver.py --data-dir DIR --listen HOST:PORT [--log-level info]
        [--user NAME] [--password-file FILE] [--tls-cert PEM --tls-key PEM
        [--tls-client-ca PEM]] [--allow-external]

Once listening it prints exactly one line `ready http://HOST:PORT` (or https://) on stdout.

A ClickHouse configuration file `DIR/clickhouse-config.xml`, when present, is
loaded by the engine (e.g. `<remote_servers>` to define a cluster whose one
shard is this server: `system.clusters`, `Distributed` tables): merged into
DIR/.chserver/config.xml, which also names the users file that limits the
engine's one user (unless --allow-external, when the file is used as it is).

Safe by default (the engine's grants, "The guard" below, docs/security.md): statements that reach
the filesystem, the network or other processes (table functions such as file/url/
remote/executable, non-local engines, INTO OUTFILE, ...) are refused unless
--allow-external; GET requests are readonly; requests from web pages (an Origin header, Sec-Fetch-Site other than
none) are refused; with a password (--password-file or $CHSERVER_PASSWORD) every query
must carry it; --tls-cert/--tls-key serve HTTPS, --tls-client-ca requires client
certificates.

Exit codes: 0 after SIGTERM/SIGINT (clean drain), 2 bad command line,
3 data dir locked by another process, 1 any other start-up failure.

Design notes:
- One chDB session per process, guarded by one lock: chDB runs one statement at
  a time per session. chDB releases the GIL while a statement runs, so other
  threads keep reading request bodies meanwhile.
- Insert bodies are read (and unframed/decoded) into a temp file in
  DIR/insert-bodies *before* the session lock is taken, so a slow client
  holding an open insert body (the crate's Inserter keeps it open until
  `commit()`) does not block everybody else, and memory stays flat for
  bodies of any size.
- Inserts run as `INSERT INTO t (cols) FROM INFILE 'tmp' SETTINGS ... FORMAT X`:
  the engine's real `INSERT ... FORMAT` pipeline, so column DEFAULTs,
  `input_format_*` settings and insert deduplication (token and content hash)
  behave as on a server, and every failure raises. chDB's streaming insert
  (`Session.send_insert`) is NOT used: it silently swallows errors raised
  after parsing (CHECK constraints, too many partitions, materialized views),
  answering success with nothing stored.
"""

from __future__ import annotations

import argparse
import base64
import errno
import fcntl
import hmac
import json
import logging
import os
import re
import select
import signal
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Iterator, Optional
from urllib.parse import parse_qsl, urlsplit

import lz4.block
import lz4.frame
import zstandard
from clickhouse_cityhash.cityhash import CityHash128

LOG = logging.getLogger("chserver")

EXIT_LOCKED = 3
# How long an orphaned holder of the data dir may take to stop before a new server gives up.
ORPHAN_STOP_TIMEOUT = 60.0
SERVER_DISPLAY_NAME = "marketprism-embedded-chdb"
# An optional ClickHouse configuration file in the data dir (see the module doc).
CONFIG_FILE_NAME = "clickhouse-config.xml"
# Insert bodies are written to temp files in DIR/BODY_DIR_NAME, then inserted
# with `INSERT ... FROM INFILE` (see Engine.insert for why not send_insert).
BODY_DIR_NAME = "insert-bodies"
BODY_FILE_BUFFER = 1024 * 1024
READ_PIECE = 4 * 1024 * 1024  # Content-Length bodies are read in pieces this big.
# Same block size as ClickHouse's max_compress_block_size for `compress=1` output.
RESPONSE_BLOCK = 1024 * 1024
KEEP_ALIVE_SECONDS = 10  # ClickHouse's default keep_alive_timeout.
IDLE_POLL_SECONDS = 0.5  # How often idle keep-alive connections look for shutdown.
TLS_HANDSHAKE_SECONDS = 10  # A client that does not finish its TLS handshake in time is dropped.
# The password is read from this environment variable (never from the command line, which
# `ps` shows to every user), or from the file named by --password-file; it is removed from
# the environment at once so that nothing the engine starts inherits it.
PASSWORD_ENV = "CHSERVER_PASSWORD"
# Statements already checked by the Guard, by text (the service repeats its insert heads).
GUARD_CACHE_SIZE = 4096

# URL params that are part of the HTTP interface, not ClickHouse settings.
HTTP_PARAMS = frozenset({
    "query", "database", "default_format", "compress", "decompress",
    "enable_http_compression", "user", "password", "quota_key", "role",
    "buffer_size", "stacktrace",
})
# Session/progress params that clients send and this server deliberately
# ignores: there are no HTTP sessions and no progress headers here.
IGNORED_PARAMS = frozenset({
    "session_id", "session_timeout", "session_check", "query_id",
    "wait_end_of_query", "http_wait_end_of_query", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
    "client_protocol_version", "http_zlib_compression_level",
})

# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

# Transcribed from ClickHouse's src/Server/HTTP/exceptionCodeToHTTPStatus.cpp
# (names resolved to numbers with the engine's own errorCodeToName()).
_STATUS_BY_CODE = {
    194: 401,  # REQUIRED_PASSWORD
    # UNKNOWN_USER, WRONG_PASSWORD, AUTHENTICATION_FAILED, SET_NON_GRANTED_ROLE, ACCESS_DENIED,
    # READONLY
    **{c: 403 for c in (192, 193, 516, 512, 497, 164)},
    # BAD_ARGUMENTS, CANNOT_COMPILE_REGEXP, CANNOT_PARSE_* (6 25 26 38 41 72 441 675 676 27 376),
    # DUPLICATE_COLUMN, ILLEGAL_COLUMN, UNKNOWN_ELEMENT_IN_AST, UNKNOWN_TYPE_OF_AST_NODE,
    # THERE_IS_NO_COLUMN, TOO_DEEP_AST, TOO_BIG_AST, UNEXPECTED_AST_STRUCTURE, SYNTAX_ERROR,
    # INCORRECT_DATA, TYPE_MISMATCH, VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    **{c: 400 for c in (36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376,
                        15, 44, 37, 123, 8, 167, 168, 223, 62, 117, 53, 321)},
    # UNKNOWN_TABLE, _FUNCTION, _IDENTIFIER, _TYPE, _STORAGE, _DATABASE, _SETTING,
    # _DIRECTION_OF_SORTING, _AGGREGATE_FUNCTION, _FORMAT, _DATABASE_ENGINE, _TYPE_OF_QUERY, _ROLE
    **{c: 404 for c in (60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511)},
    229: 413,  # QUERY_IS_TOO_LARGE
    48: 501,  # NOT_IMPLEMENTED
    209: 503, 76: 503, 439: 503,  # SOCKET_TIMEOUT, CANNOT_OPEN_FILE, CANNOT_SCHEDULE_TASK
    381: 411,  # HTTP_LENGTH_REQUIRED
    159: 408,  # TIMEOUT_EXCEEDED
    779: 415,  # UNSUPPORTED_MEDIA_TYPE
}
ABORTED = 236  # used for "engine is shutting down", answered with 503

# A `password=` URL param, masked in the request log.
_PASSWORD_PARAM_RE = re.compile(r"([?&]password=)[^&]*")
_CODE_RE = re.compile(r"Code: (\d+)\. (?:DB::Exception: )?(.*)", re.S)
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)\s*(?:\(version [^)]*\))?\s*$")
_VERSION_TAIL_RE = re.compile(r"\s*\(version [^)]*\)\s*$")


class ClickHouseError(Exception):
    """An error reported to the client the way ClickHouse reports it."""

    def __init__(self, code: int, name: str, message: str):
        super().__init__(message)
        self.code = code
        self.name = name
        self.message = message

    @property
    def http_status(self) -> int:
        if self.code == ABORTED:
            return 503
        return _STATUS_BY_CODE.get(self.code, 500)

    def body(self, version: str) -> bytes:
        return f"Code: {self.code}. DB::Exception: {self.message}. ({self.name}) (version {version})\n".encode()

    @classmethod
    def from_engine(cls, exc: BaseException) -> "ClickHouseError":
        """Parse `Code: N. DB::Exception: msg (NAME)` out of a chDB exception."""
        text = str(exc)
        match = _CODE_RE.search(text)
        if not match:
            return cls(1001, "STD_EXCEPTION", text.strip() or type(exc).__name__)
        code = int(match.group(1))
        rest = match.group(2).strip()
        name = "UNKNOWN_EXCEPTION"
        while True:
            rest = _VERSION_TAIL_RE.sub("", rest)
            name_match = _NAME_RE.search(rest)
            if name_match:
                name = name_match.group(1) if name == "UNKNOWN_EXCEPTION" else name
                rest = rest[: name_match.start()].rstrip()
            rest = rest.rstrip(". ").rstrip()
            # chDB's FROM INFILE wraps the engine's error in a second one with
            # the same code: `Code: N. DB::Exception: Code: N. DB::Exception: ...`.
            inner = _CODE_RE.match(rest)
            if not inner or int(inner.group(1)) != code:
                break
            rest = inner.group(2).strip()
        return cls(code, name, rest)


def syntax_error(message: str) -> ClickHouseError:
    return ClickHouseError(62, "SYNTAX_ERROR", message)


# ---------------------------------------------------------------------------
# SQL scanning: just enough lexing to split an INSERT head from its data, find
# the FORMAT clause, and reject multi-statements. Everything else is chDB's job.
# ---------------------------------------------------------------------------

_TOKEN_RE = re.compile(
    rb"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|\#[ !][^\n]*|/\*.*?\*/)
  | (?P<str>'(?:[^'\\]|\\.|'')*')
  | (?P<qid>"(?:[^"\\]|\\.|"")*"|`(?:[^`\\]|\\.|``)*`)
  | (?P<heredoc>\$(?P<tag>[A-Za-z0-9_]*)\$.*?\$(?P=tag)\$)
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<num>[0-9][0-9A-Za-z_.]*)
  | (?P<punct>.)
    """,
    re.S | re.X,
)
_OPEN, _CLOSE = b"([{", b")]}"


@dataclass
class Token:
    kind: str  # "word", "qid", "str", "num", "punct", ...
    text: bytes
    start: int
    end: int
    depth: int

    def is_word(self, upper: bytes) -> bool:
        return self.kind == "word" and self.text.upper() == upper


def _tokens(sql: bytes) -> Iterator[Token]:
    """Significant tokens (no whitespace/comments) with their bracket depth."""
    depth = 0
    for m in _TOKEN_RE.finditer(sql):
        kind = m.lastgroup if m.lastgroup != "tag" else "heredoc"
        if kind in ("ws", "comment"):
            continue
        text = m.group()
        if kind == "punct" and text in (b"(", b"[", b"{"):
            yield Token(kind, text, m.start(), m.end(), depth)
            depth += 1
            continue
        if kind == "punct" and text in (b")", b"]", b"}"):
            depth = max(0, depth - 1)
        yield Token(kind, text, m.start(), m.end(), depth)


def _ident(tok: Token) -> str:
    """The name a word or quoted identifier stands for."""
    if tok.kind == "qid":
        return tok.text[1:-1].decode("utf-8", "replace")
    return tok.text.decode("utf-8", "replace")


@dataclass
class Statement:
    """What the server needs to know about one SQL statement."""

    kind: str  # "insert_data" (INSERT with FORMAT/VALUES), "set", "use" or "query"
    sql: bytes  # for insert_data: the statement head, before FORMAT/VALUES
    insert_format: str = ""
    data_offset: int = 0  # where inline insert data starts in the scanned text
    has_settings_clause: bool = False
    settings_offset: int = -1  # insert_data: where the head's own SETTINGS keyword starts
    own_setting_names: set = field(default_factory=set)  # names in that SETTINGS clause
    output_format: str = ""  # FORMAT clause of a non-insert statement
    set_names: list = field(default_factory=list)


_SETTING_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A database name taken from `?database=`: it is never put into SQL unless it matches.
_DATABASE_NAME_RE = _SETTING_NAME_RE


def _data_start(sql: bytes, pos: int) -> int:
    """ClickHouse's rule: data starts after the first newline, else after spaces."""
    while pos < len(sql) and sql[pos] in b" \t\f":
        pos += 1
    if sql.startswith(b"\r\n", pos):
        return pos + 2
    if sql.startswith(b"\n", pos):
        return pos + 1
    return pos


def scan_statement(sql: bytes) -> Statement:
    """Classify one statement; raise SYNTAX_ERROR on multi-statements."""
    toks = _tokens(sql)
    first = next(toks, None)
    if first is None:
        raise ClickHouseError(62, "SYNTAX_ERROR", "Empty query")
    lead = first.text.upper() if first.kind == "word" else b""
    stmt = Statement(kind={b"SET": "set", b"USE": "use"}.get(lead, "query"), sql=sql)
    prev: Optional[Token] = first
    seen_semicolon: Optional[Token] = None
    format_candidate: Optional[Token] = None
    for tok in toks:
        if seen_semicolon is not None:
            raise syntax_error(
                f"Syntax error (Multi-statements are not allowed): failed at position "
                f"{seen_semicolon.start + 1} (end of query): "
                f"{sql[seen_semicolon.start:seen_semicolon.start + 40].decode('utf-8', 'replace')}"
            )
        top = tok.depth == 0
        if top and tok.text == b";":
            seen_semicolon = tok
            continue
        if lead in (b"INSERT", b"INSERT_SELECT") and top and tok.kind == "word" and tok.is_word(b"INFILE") \
                and prev is not None and prev.is_word(b"FROM"):
            raise ClickHouseError(78, "UNKNOWN_TYPE_OF_QUERY", "Query has infile and was send directly to server")
        if lead == b"INSERT" and top and tok.kind == "word":
            word = tok.text.upper()
            if word == b"SETTINGS":
                stmt.has_settings_clause = True
                stmt.settings_offset = tok.start
            elif word == b"INFILE" and prev is not None and prev.is_word(b"FROM") and lead != b"INSERT_SELECT":
                # A client-side feature; a server refuses it (and this one uses
                # FROM INFILE itself for the request body).
                raise ClickHouseError(78, "UNKNOWN_TYPE_OF_QUERY",
                                      "Query has infile and was send directly to server")
            elif word == b"VALUES":
                return _insert(stmt, sql[: tok.start], "Values", tok.end)
            elif word == b"FORMAT":
                name = next(toks, None)
                if name is None or name.kind not in ("word", "qid"):
                    raise syntax_error("Expected format name after FORMAT")
                return _insert(stmt, sql[: tok.start], _ident(name), _data_start(sql, name.end))
            elif word in (b"SELECT", b"WITH") and prev is not None and not prev.is_word(b"FORMAT"):
                lead = b"INSERT_SELECT"  # executed like any other query from here on
        if stmt.kind == "set" and top and tok.text == b"=" and prev is not None:
            if prev.kind in ("word", "qid"):
                name = _ident(prev)
                if not _SETTING_NAME_RE.match(name):
                    raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{name[:100]}'")
                if name.lower() == "readonly":
                    raise ClickHouseError(36, "BAD_ARGUMENTS",
                                          "SET readonly is not accepted by the embedded ClickHouse (its one "
                                          "session is shared and readonly cannot be reset): pass readonly as "
                                          "a URL parameter or in a SETTINGS clause")
                stmt.set_names.append(name)
        if lead == b"INSERT" and stmt.has_settings_clause and top and tok.text == b"=" and prev is not None:
            if prev.kind in ("word", "qid"):
                stmt.own_setting_names.add(_ident(prev))
        if top and prev is not None and prev.is_word(b"FORMAT") and tok.kind in ("word", "qid"):
            format_candidate = tok
        elif format_candidate is not None and prev is format_candidate and not tok.is_word(b"SETTINGS"):
            format_candidate = None  # `FORMAT x` followed by more than SETTINGS: not a clause
        prev = tok
    if format_candidate is not None:
        stmt.output_format = _ident(format_candidate)
    return stmt


def _insert(stmt: Statement, head: bytes, fmt: str, data_offset: int) -> Statement:
    stmt.kind = "insert_data"
    stmt.sql = head.rstrip()
    stmt.insert_format = fmt
    stmt.data_offset = data_offset
    return stmt


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def settings_clause(settings: dict) -> str:
    return ", ".join(f"{k} = {quote_literal(v)}" for k, v in settings.items())


# ---------------------------------------------------------------------------
# Request body decoding: chunked transfer, HTTP content encodings, and
# ClickHouse native compressed blocks (decompress=1).
# ---------------------------------------------------------------------------

class _MultiFrameDecoder:
    """Decodes concatenated frames/members of one streaming codec.

    zlib, zstandard and lz4.frame decompressors each stop at the end of one
    frame and leave the rest in `unused_data`; clients (clickhouse-connect
    among them) send one frame per HTTP chunk, so every frame must be decoded.
    """

    def __init__(self, factory: Callable[[], object], name: str):
        self._factory = factory
        self._name = name
        self._dec = factory()
        self._pending = False  # True while inside an unfinished frame

    def feed(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._dec.decompress(data))
            self._pending = not self._dec.eof
            data = self._dec.unused_data if self._dec.eof else b""
            if self._dec.eof:
                self._dec = self._factory()
        return b"".join(out)

    def finish(self) -> None:
        if self._pending:
            raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Truncated {self._name} request body")


def _zstd_factory():
    return zstandard.ZstdDecompressor().decompressobj()


_CONTENT_DECODERS = {
    "gzip": lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS),
    "x-gzip": lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS),
    "deflate": lambda: zlib.decompressobj(wbits=zlib.MAX_WBITS),
    "zstd": _zstd_factory,
    "lz4": lz4.frame.LZ4FrameDecompressor,
}
try:  # brotli is optional: accepted only if the module happens to be installed.
    import brotli  # type: ignore

    class _BrotliAdapter:
        def __init__(self):
            self._d = brotli.Decompressor()
            self.unused_data = b""

        def decompress(self, data):
            return self._d.process(data)

        @property
        def eof(self):
            return self._d.is_finished()

    _CONTENT_DECODERS["br"] = _BrotliAdapter
except ImportError:  # pragma: no cover - depends on the environment
    pass


def content_decoder(encoding: str) -> Optional[_MultiFrameDecoder]:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity", "none"):
        return None
    factory = _CONTENT_DECODERS.get(encoding)
    if factory is None:
        raise ClickHouseError(36, "BAD_ARGUMENTS", f"Unknown HTTP compression method: {encoding}")
    return _MultiFrameDecoder(factory, encoding)


NATIVE_CHECKSUM = 16
NATIVE_HEADER = 9
METHOD_NONE, METHOD_LZ4, METHOD_ZSTD = 0x02, 0x82, 0x90
_U64 = (1 << 64) - 1
_zstd_plain = zstandard.ZstdDecompressor()


def native_checksum(header_and_payload) -> bytes:
    """CityHash128 v1.0.2 as ClickHouse writes it: high 64 bits first, each LE.

    Verified against the `it_compresses` vector in clickhouse-rs 0.15.3.
    """
    h = CityHash128(header_and_payload)
    return struct.pack("<QQ", h >> 64, h & _U64)


class NativeUnframer:
    """Turns a stream of ClickHouse compressed blocks back into plain bytes.

    Blocks are cut straight out of the incoming pieces (memoryview, no copy);
    only a block that straddles two pieces is re-assembled.
    """

    def __init__(self, verify: bool = True):
        self._tail = b""
        self._verify = verify

    def feed(self, data: bytes) -> list:
        if self._tail:
            data = self._tail + data
        view = memoryview(data)
        out = []
        pos = 0
        while len(view) - pos >= NATIVE_CHECKSUM + NATIVE_HEADER:
            method, csize, usize = struct.unpack_from("<BII", view, pos + NATIVE_CHECKSUM)
            if csize < NATIVE_HEADER or csize > 1 << 30:
                raise ClickHouseError(39, "TOO_LARGE_SIZE_COMPRESSED",
                                      f"Too large size_compressed: {csize}. Most likely corrupted data")
            end = pos + NATIVE_CHECKSUM + csize
            if end > len(view):
                break
            block = view[pos + NATIVE_CHECKSUM:end]
            if self._verify:
                self._check(view[pos:pos + NATIVE_CHECKSUM], block, csize)
            out.append(self._decompress(method, block[NATIVE_HEADER:], usize))
            pos = end
        self._tail = bytes(view[pos:])
        return out

    @staticmethod
    def _check(expected, block, csize: int) -> None:
        actual = native_checksum(block)
        if actual != bytes(expected):
            raise ClickHouseError(
                40, "CHECKSUM_DOESNT_MATCH",
                f"Checksum doesn't match: corrupted data. Reference: {bytes(expected).hex()}. "
                f"Actual: {actual.hex()}. Size of compressed block: {csize}",
            )

    @staticmethod
    def _decompress(method: int, payload, usize: int) -> bytes:
        try:
            if method == METHOD_LZ4:
                return lz4.block.decompress(payload, uncompressed_size=usize)
            if method == METHOD_ZSTD:
                return _zstd_plain.decompress(payload, max_output_size=usize)
            if method == METHOD_NONE:
                return bytes(payload)
        except (lz4.block.LZ4BlockError, zstandard.ZstdError) as exc:
            raise ClickHouseError(271, "CANNOT_DECOMPRESS", f"Cannot decompress block: {exc}") from exc
        raise ClickHouseError(89, "UNKNOWN_COMPRESSION_METHOD", f"Unknown compression method: 0x{method:02x}")

    def finish(self) -> None:
        if self._tail:
            raise ClickHouseError(271, "CANNOT_DECOMPRESS",
                                  f"Truncated compressed block at end of body ({len(self._tail)} bytes left)")


def native_frame(data, method: int = METHOD_LZ4) -> Iterator[bytes]:
    """Yields `data` as ClickHouse compressed blocks (for `compress=1`)."""
    view = memoryview(data)
    for start in range(0, len(view), RESPONSE_BLOCK):
        piece = view[start:start + RESPONSE_BLOCK]
        payload = lz4.block.compress(piece, store_size=False) if method == METHOD_LZ4 else bytes(piece)
        header = struct.pack("<BII", method, NATIVE_HEADER + len(payload), len(piece))
        yield native_checksum(header + payload) + header + payload


def decode_body(raw: Iterable[bytes], encoding: str, native: bool, verify: bool) -> Iterator[bytes]:
    """Raw body pieces → plain data pieces (HTTP decoding first, then native blocks)."""
    http_dec = content_decoder(encoding)
    unframer = NativeUnframer(verify) if native else None
    for piece in raw:
        if http_dec is not None:
            piece = http_dec.feed(piece)
        if unframer is None:
            if piece:
                yield piece
        else:
            yield from unframer.feed(piece)
    if http_dec is not None:
        http_dec.finish()
    if unframer is not None:
        unframer.finish()


# ---------------------------------------------------------------------------
# Response encoding (Accept-Encoding), as a 25.10+ server does by default.
# ---------------------------------------------------------------------------

_RESPONSE_ENCODERS = {
    "lz4": lambda b: lz4.frame.compress(b),
    "zstd": lambda b: zstandard.ZstdCompressor(level=1).compress(b),
    "gzip": lambda b: _zlib_compress(b, 16 + zlib.MAX_WBITS),
    "deflate": lambda b: _zlib_compress(b, zlib.MAX_WBITS),
}


def _zlib_compress(data, wbits: int) -> bytes:
    c = zlib.compressobj(level=3, wbits=wbits)
    return c.compress(data) + c.flush()


def pick_response_encoding(accept: str) -> str:
    """First encoding the client lists (q > 0) that this server can produce."""
    for item in accept.split(","):
        name, _, params = item.strip().partition(";")
        name = name.strip().lower()
        if re.search(r"q\s*=\s*0(\.0*)?\s*$", params):
            continue
        if name in _RESPONSE_ENCODERS:
            return name
    return ""


_CONTENT_TYPES = {
    "tabseparated": "text/tab-separated-values; charset=UTF-8",
    "tsv": "text/tab-separated-values; charset=UTF-8",
    "tabseparatedwithnames": "text/tab-separated-values; charset=UTF-8",
    "tabseparatedwithnamesandtypes": "text/tab-separated-values; charset=UTF-8",
    "csv": "text/csv; charset=UTF-8; header=absent",
    "csvwithnames": "text/csv; charset=UTF-8; header=present",
    "json": "application/json; charset=UTF-8",
    "jsoncompact": "application/json; charset=UTF-8",
    "jsoneachrow": "application/x-ndjson; charset=UTF-8",
    "pretty": "text/plain; charset=UTF-8",
}


def content_type_for(fmt: str) -> str:
    lower = fmt.lower()
    if lower in _CONTENT_TYPES:
        return _CONTENT_TYPES[lower]
    if lower.startswith(("pretty", "vertical", "markdown")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"  # Native, RowBinary*, Parquet, Arrow, ...


# ---------------------------------------------------------------------------
# The engine: one chDB session, one statement at a time.
# ---------------------------------------------------------------------------


# ---------------------------------------------------------------------------
# The guard: what a client may not make the engine do. chDB is clickhouse-local
# in a library: its table functions, engines, dictionary sources and
# INTO OUTFILE reach the filesystem, the network and other processes with the
# rights of this process. Layer 1 is the engine's own access control (see
# write_engine_config: a user without SOURCES grants). This guard is layer 2, for
# what grants do not see (the scalar file(), disk(), INTO OUTFILE/FROM INFILE,
# EmbeddedRocksDB paths, settings holding SQL, Values data) and a second line for
# the rest: every client statement is parsed by the engine itself
# (`formatQuerySingleLine` for the canonical text, `EXPLAIN AST` for the tree) and
# refused when it names any of them, unless --allow-external.
# ---------------------------------------------------------------------------

# Table functions that only read tables of this engine or generate data. Every
# other one (file, url, s3, remote, executable, mysql, python, ... and whatever
# a later engine adds) is refused: an allow list, so new ones are refused too.
SAFE_TABLE_FUNCTIONS = frozenset(name.lower() for name in (
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generateRandom", "generateSeries",
    "generate_series", "values", "SQLStandardValues", "null", "view", "viewIfPermitted",
    "viewExplain", "merge", "input", "format", "primes", "loop", "dictionary",
    "mergeTreeIndex", "mergeTreeProjection", "mergeTreeTextIndex", "mergeTreeAnalyzeIndexes",
    "mergeTreeAnalyzeIndexesUUID", "mergeTreeCodecBlockCounts",
    # Clusters named in the server's own configuration (remote_servers), not by the client.
    "cluster", "clusterAllReplicas",
))
# Scalar functions that read files (`file(path)` returns a file's content).
# `disk(type=web, endpoint=...)` declares an inline disk (in a table's SETTINGS): a disk
# reaches any path or host. The engine's grants see neither.
EXTERNAL_SCALAR_FUNCTIONS = frozenset({"file", "disk"})
# Table and database engines that keep their data in this engine (or in the
# server-configured cluster). Every other engine the engine knows is refused.
SAFE_ENGINES = frozenset(name.lower() for name in (
    "MergeTree", "ReplacingMergeTree", "SummingMergeTree", "AggregatingMergeTree",
    "CollapsingMergeTree", "VersionedCollapsingMergeTree", "GraphiteMergeTree",
    "CoalescingMergeTree", "ReplicatedMergeTree", "ReplicatedReplacingMergeTree",
    "ReplicatedSummingMergeTree", "ReplicatedAggregatingMergeTree",
    "ReplicatedCollapsingMergeTree", "ReplicatedVersionedCollapsingMergeTree",
    "ReplicatedGraphiteMergeTree", "ReplicatedCoalescingMergeTree",
    "Memory", "Log", "TinyLog", "StripeLog", "Null", "Set", "Join", "Buffer", "Distributed",
    "Merge", "Dictionary", "View", "MaterializedView", "KeeperMap",
    "GenerateRandom", "Alias", "Loop", "TimeSeries",
    # database engines
    "Atomic", "Ordinary", "Lazy", "Replicated",
))
# Dictionary sources that stay inside the engine.
SAFE_DICTIONARY_SOURCES = frozenset({"null"})
# Settings that name files to read or write, or a host to fetch from.
EXTERNAL_SETTINGS = frozenset({
    "format_schema", "format_schema_source", "format_template_resultset", "format_template_row",
    "output_format_schema", "input_format_record_errors_file_path",
    "format_avro_schema_registry_url",
    # Settings holding SQL that the engine evaluates out of the guard's sight.
    "additional_result_filter", "additional_table_filters", "parallel_replicas_custom_key",
    # Makes a bare expression a statement: the guard checks statements (URL settings are
    # in force while it parses, and another `dialect` is refused by Engine.query).
    "implicit_select",
    # Rewrite every query (the guard's own too) as `SELECT <x> FROM (<query>)` & co: with
    # them the guard would check its wrapper, not the client's statement.
    "select", "filter", "order", "sort",
    # Override the statement's FORMAT: the guard decides from the FORMAT it reads (Values
    # data is checked as expressions) and must see the one that runs.
    "format", "input_format", "output_format",
    # Change how statements parse, the guard's reset of a SET among them.
    "dialect", "max_query_size", "max_parser_depth", "max_parser_backtracks",
    "max_ast_elements", "max_ast_depth",
})
# Words in a setting's name that say it points at files, hosts or other systems: refused
# as a class, so a setting a later engine adds for them is refused too.
EXTERNAL_SETTING_WORDS = ("file", "path", "url", "host", "disk", "schema", "s3", "azure",
                          "hdfs", "remote", "proxy", "endpoint", "directory", "dir")
# SYSTEM commands that stop the engine or reload objects from external sources.
REFUSED_SYSTEM = frozenset({"SHUTDOWN", "KILL", "RELOAD"})
ENABLE_HINT = ("start the embedded server with external access allowed "
               "(embedded.allow_external: true; chserver.py --allow-external)")


def refused_unchecked(what: str, why: str) -> ClickHouseError:
    return ClickHouseError(497, "ACCESS_DENIED",
                           f"The embedded ClickHouse cannot check {what} ({why[:300]}); "
                           f"to run it, {ENABLE_HINT}")


def refused(what: str) -> ClickHouseError:
    return ClickHouseError(
        497, "ACCESS_DENIED",
        f"{what} is refused by the embedded ClickHouse: it reaches the filesystem, the network "
        f"or other processes; to allow it, {ENABLE_HINT}")


def _ast_nodes(dump: str) -> Iterator[tuple]:
    """(node label, parent label) for every line of an `EXPLAIN AST` dump."""
    stack: list = []  # (indent, label)
    for line in dump.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        label = line.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        yield label, (stack[-1][1] if stack else "")
        stack.append((indent, label))


def _node_name(label: str) -> str:
    parts = label.split()
    return parts[1] if len(parts) > 1 else ""


# Statement kinds (root of `EXPLAIN AST`) a GET request may run: a real server makes GET
# requests readonly (readonly=2: settings may change, nothing else).
READONLY_ROOTS = ("SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "Show",
                  "Describe", "Exists", "Explain", "CheckQuery")


def check_readonly(dump: str) -> None:
    """Raises READONLY unless the tree's root is a statement that only reads."""
    nodes = _ast_nodes(dump)
    root = next((label for label, _ in nodes), "")
    if root.startswith("Explain"):
        # EXPLAIN ANALYZE runs its statement: only an EXPLAIN of a SELECT reads.
        explained = next((label for label, _ in nodes), "")
        root = explained if explained.startswith(READONLY_ROOTS[:3]) else ""
    if not root.startswith(READONLY_ROOTS):
        raise ClickHouseError(164, "READONLY", "Cannot execute query in readonly mode: "
                              "a GET request only reads (send other statements with POST)")


def check_ast(dump: str, known_engines: frozenset, table_functions: frozenset = frozenset()) -> None:
    """Raises `refused(...)` when the tree names an external table function (anywhere,
    also as the argument of another one such as loop()), an engine, a dictionary source,
    a scalar function of EXTERNAL_SCALAR_FUNCTIONS, or is a BACKUP/RESTORE."""
    for label, parent in _ast_nodes(dump):
        kind = label.split(" ", 1)[0]
        if kind == "BackupQuery":
            raise refused("BACKUP/RESTORE")
        if kind == "Function":
            name = _node_name(label)
            lower = name.lower()
            if parent.startswith(("TableExpression", "InsertQuery", "CreateQuery")):
                if lower not in SAFE_TABLE_FUNCTIONS:
                    raise refused(f"table function {name}()")
            elif parent.startswith("Storage definition"):
                if lower in known_engines and lower not in SAFE_ENGINES:
                    raise refused(f"engine {name}")
            if lower in EXTERNAL_SCALAR_FUNCTIONS:
                raise refused(f"function {name}()")
            if lower in table_functions and lower not in SAFE_TABLE_FUNCTIONS:
                # Not a scalar function: only a table function by that name can run.
                raise refused(f"table function {name}()")
        elif kind == "FunctionWithKeyValueArguments" and parent.startswith("Dictionary definition"):
            name = _node_name(label)
            if name.lower() not in SAFE_DICTIONARY_SOURCES:
                raise refused(f"dictionary source {name.upper()}")


def check_canonical(text: str) -> None:
    """Clauses the tree does not name: INTO OUTFILE, ATTACH ... FROM 'path', SYSTEM SHUTDOWN."""
    toks = list(_tokens(text.encode()))
    words = [t.text.upper() if t.kind == "word" else b"" for t in toks]
    for i, word in enumerate(words):
        # Anywhere, whatever comes before: the word before INTO may be an alias (`AS
        # insert`). A table named `outfile` must be backquoted, which makes it no word.
        if word == b"INTO" and i + 1 < len(words) and words[i + 1] == b"OUTFILE":
            raise refused("INTO OUTFILE")
        if word == b"FROM" and words[0] == b"ATTACH" and i + 1 < len(toks) and toks[i + 1].kind == "str":
            raise refused("ATTACH ... FROM a path")
        if word == b"FROM" and i + 1 < len(words) and words[i + 1] == b"INFILE":
            raise refused("FROM INFILE")
    # ATTACH without a definition loads a metadata file from the data directory that no
    # check has seen (one a client might have written there); the service never attaches.
    if words[:1] == [b"ATTACH"] and b"(" not in {t.text for t in toks} and b"AS" not in words:
        raise refused("ATTACH without a definition")
    if words[:1] == [b"SYSTEM"] and len(words) > 1 and words[1].decode() in REFUSED_SYSTEM:
        raise refused(f"SYSTEM {words[1].decode()}")
    # A setting assigned anywhere (SET, a SETTINGS clause, also inside a subquery).
    every = list(_tokens(text.encode()))
    for tok, nxt in zip(every, every[1:]):
        if tok.kind in ("word", "qid") and nxt.text == b"=":
            check_settings([_ident(tok)])
        # A function call the tree may not show (a table's SETTINGS disk = disk(...)).
        if tok.kind in ("word", "qid") and nxt.text == b"(" and _ident(tok).lower() == "disk":
            raise refused("function disk()")


def check_settings(names) -> None:
    """Refuses settings that point the engine at files or hosts, hold SQL, rewrite or
    re-parse statements (EXTERNAL_SETTINGS), and any whose name says it names a file, path,
    host or disk (EXTERNAL_SETTING_WORDS)."""
    values = names if isinstance(names, dict) else {}
    for name in names:
        lower = name.lower()
        if lower == "dialect" and str(values.get(name, "")).lower() == "clickhouse":
            continue  # a URL setting naming the one dialect the guard parses
        words = set(re.split(r"[_]+", lower))
        if lower in EXTERNAL_SETTINGS or words.intersection(EXTERNAL_SETTING_WORDS):
            raise refused(f"the setting {name}")


@dataclass
class Outcome:
    """Result of one statement: body bytes plus what X-ClickHouse-Summary reports."""

    body: object = b""  # bytes or memoryview
    keepalive: object = None  # keeps chDB's result buffer alive while `body` is a view of it
    summary: dict = field(default_factory=dict)


class Engine:
    """Owns the chDB session. Every method takes the session lock."""

    def __init__(self, path: str, allow_external: bool = False):
        from chdb import session as chdb_session  # imported late: it is slow and big

        self._session = chdb_session.Session(path)
        self._lock = threading.Lock()
        self._current_db: Optional[str] = None  # what the session's USE points at
        self.version = self._scalar("SELECT version()")
        self.timezone = self._scalar("SELECT timezone()")
        self.allow_external = allow_external
        self._known_engines = frozenset(self._scalar(
            "SELECT arrayStringConcat(groupArray(lower(name)), ' ') FROM (SELECT name FROM "
            "system.table_engines UNION ALL SELECT name FROM system.database_engines)").split())
        # Table functions that are no scalar function too (`file` and `format` are both).
        self._table_functions = frozenset(self._scalar(
            "SELECT arrayStringConcat(groupArray(lower(name)), ' ') FROM system.table_functions "
            "WHERE lower(name) NOT IN (SELECT lower(name) FROM system.functions)").split())
        self._checked: dict = {}  # statement text -> None, the guard's cache (bounded)

    def _scalar(self, sql: str) -> str:
        return bytes(self._session.query(sql, "TabSeparated").bytes()).decode().strip()

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None

    def check(self, sql: str, params: Optional[dict] = None, settings: Optional[dict] = None,
              readonly: bool = False, cache: bool = True) -> None:
        """Refuses a client statement that reaches outside the engine (see the guard above).

        The engine parses it twice, under the session lock but without running it:
        `formatQuerySingleLine` (a syntax error is the client's, reported as the engine
        words it) and `EXPLAIN AST` (with the query parameters, which are substituted
        before the tree is built). Anything that cannot be checked is refused.
        """
        if self.allow_external and not readonly:
            return
        key = (sql, tuple(sorted((settings or {}).items())), readonly) if cache and not params else None
        if key is not None and key in self._checked:
            return
        with self._lock:
            session = self._require_open()
            self._check_locked(session, sql, params, settings or {}, readonly)
        if key is not None:
            if len(self._checked) >= GUARD_CACHE_SIZE:
                self._checked.clear()
            self._checked[key] = None

    def _check_locked(self, session, sql: str, params: Optional[dict], settings: dict,
                      readonly: bool) -> None:
        """The check itself, under the session lock, with the URL settings in force (they
        can change how the statement parses), which are reset before returning."""
        applied = []
        try:
            for name, value in settings.items():
                _run(lambda: session.query(f"SET `{name}` = {quote_literal(value)}"))
                applied.append(name)
            self._parse_and_check(session, sql, params, readonly)
        finally:
            for name in applied:
                try:
                    session.query(f"SET `{name}` = DEFAULT")
                except Exception:  # noqa: BLE001 - an unknown name already failed above
                    pass

    def _parse_and_check(self, session, sql: str, params: Optional[dict], readonly: bool) -> None:
        if not readonly or not self.allow_external:
            canonical = bytes(_run(lambda: session.query(
                f"SELECT formatQuerySingleLine({quote_literal(sql)})",
                "TabSeparatedRaw")).bytes()).decode("utf-8", "replace")
            try:
                dump = bytes(session.query("EXPLAIN AST " + sql, "TabSeparatedRaw",
                                           params=params or None).bytes()).decode("utf-8", "replace")
            except Exception as exc:  # noqa: BLE001 - fail closed
                err = ClickHouseError.from_engine(exc)
                if err.code == 456:  # UNKNOWN_QUERY_PARAMETER: the client's own mistake
                    raise err from exc
                raise ClickHouseError(497, "ACCESS_DENIED",
                                      f"The embedded ClickHouse cannot check this statement "
                                      f"({err.message}); to run it, {ENABLE_HINT}") from exc
            check_canonical(canonical)
            check_ast(dump, self._known_engines, self._table_functions)
        else:
            dump = bytes(_run(lambda: session.query("EXPLAIN AST " + sql, "TabSeparatedRaw",
                                                    params=params or None)).bytes()).decode("utf-8", "replace")
        if readonly:
            check_readonly(dump)

    def check_values(self, data: bytes) -> None:
        """Refuses Values insert data whose expressions reach outside the engine.

        The rows `(a, b), (c, d)` are, as text, a SELECT list: the engine parses them as one
        and the tree is checked like any statement's. Data that does not parse so is refused.
        """
        text = data.decode("utf-8", "replace").strip().rstrip(";").strip()
        if not text:
            return
        try:
            self.check("SELECT " + text, cache=False)  # data, not a repeated statement
        except ClickHouseError as err:
            if err.code == 497:
                raise
            raise refused_unchecked("these Values rows", err.message) from err

    def _require_open(self):
        if self._session is None:
            raise ClickHouseError(ABORTED, "ABORTED", "Server is shutting down")
        return self._session

    def _use(self, session, database: str) -> None:
        # Without HTTP sessions every request starts in its own default database;
        # the chDB session is shared, so switch only when it differs.
        if not _DATABASE_NAME_RE.match(database):  # parse_params refuses these already
            raise ClickHouseError(81, "UNKNOWN_DATABASE", f"Database {database[:100]!r} does not exist")
        if database != self._current_db:
            self._current_db = None
            _run(lambda: session.query(f"USE `{database.replace('`', '``')}`"))
            self._current_db = database

    def query(self, stmt: Statement, fmt: str, database: str, settings: dict, params: dict,
              readonly: bool = False) -> Outcome:
        if not self.allow_external and settings.get("dialect", "clickhouse").lower() != "clickhouse":
            # URL settings are SET before the statement runs, so another dialect would parse
            # it differently from the guard, which parses it as ClickHouse SQL.
            raise refused(f"the {settings['dialect']!r} dialect")
        if not self.allow_external:
            check_settings(settings)
        self.check(stmt.sql.decode("utf-8", "replace"), params, settings, readonly)
        with self._lock:
            session = self._require_open()
            self._use(session, database)
            applied = []
            try:
                for name, value in settings.items():
                    _run(lambda: session.query(f"SET `{name}` = {quote_literal(value)}"))
                    applied.append(name)
                sql = stmt.sql.decode("utf-8", "replace")
                try:
                    res = _run(lambda: session.query(sql, fmt, params=params or None))
                except ClickHouseError as err:
                    raise _explain_grant(err) from err
            finally:
                # URL settings and SET statements last one request, as on a server
                # without session_id; the chDB session itself is long-lived.
                for name in applied + stmt.set_names:
                    try:
                        session.query(f"SET `{name}` = DEFAULT")  # names match _SETTING_NAME_RE
                    except Exception:  # noqa: BLE001 - an unknown name already failed above
                        pass
                if stmt.kind == "use":
                    self._current_db = None
        # A zero-copy view of chDB's result buffer; `keepalive` holds the owner.
        body = res.get_memview().view() if res is not None else b""
        summary = _summary(res.rows_read(), res.bytes_read(), res.rows_written(),
                           res.bytes_written(), res.elapsed()) if res is not None else _summary()
        if res is not None:
            summary["result_bytes"] = str(len(body))
        return Outcome(body=body, keepalive=res, summary=summary)

    def insert(self, sql: str, database: str, body_path: str) -> Outcome:
        """Runs `INSERT ... FROM INFILE body_path ... FORMAT X` (see `insert_sql`).

        Not `Session.send_insert`: chDB's streaming insert swallows every error
        raised after parsing (CHECK constraints, too many partitions, a failing
        materialized view, ...): `finish()` reports success with the full
        `rows_written` while nothing was stored. `FROM INFILE` runs the same
        `INSERT ... FORMAT` pipeline (DEFAULTs, input_format_* settings,
        token and content-hash dedup) and raises like any other query.
        """
        with self._lock:
            session = self._require_open()
            self._use(session, database)
            try:
                res = _run(lambda: session.query(sql, "TabSeparated"))
            except ClickHouseError as err:
                err.message = _strip_infile_noise(err.message, body_path)
                raise
        return Outcome(summary=_summary(0, 0, res.rows_written(), res.bytes_written(), res.elapsed()))


def _explain_grant(err: ClickHouseError) -> ClickHouseError:
    """An engine refusal of layer 1 (its grants), with what it means here and how to lift it."""
    if err.code == 497 and "Not enough privileges" in err.message:
        hint = (" (the embedded ClickHouse's user has no grants that reach the filesystem, the "
                "network or other processes")
        if "ON FILE" in err.message:
            hint += ("; clickhouse-local's `default` database overlays the filesystem, so creating "
                     "a table there needs one too: use a database of your own")
        err.message += f"{hint}; to allow it, {ENABLE_HINT})"
    return err


def _strip_infile_noise(message: str, body_path: str) -> str:
    """Error text as a server would word it: no temp-file path, no FROM INFILE frames."""
    for noise in (f": (in file/uri {body_path})", f" (in file/uri {body_path})",
                  ": While executing File: data for INSERT was parsed from file",
                  "While executing File: data for INSERT was parsed from file"):
        message = message.replace(noise, "")
    return message.replace(body_path, "<request body>").rstrip(": ").rstrip()


_FORMAT_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# Values data up to this size is checked by the guard (parsed as a SELECT list by the engine);
# larger Values data is inserted with expressions switched off.
VALUES_CHECK_LIMIT = 1024 * 1024
VALUES_NO_EXPRESSIONS = {"input_format_values_interpret_expressions": "0",
                         "input_format_values_deduce_templates_of_expressions": "0"}


def insert_sql(stmt: Statement, settings: dict, body_path: str) -> str:
    """`INSERT INTO t (cols) FROM INFILE 'path' [SETTINGS ...] FORMAT X`.

    The statement's own SETTINGS clause has to move behind FROM INFILE; URL
    settings join it, so insert_deduplication_token and input_format_* apply
    to exactly this insert and nothing leaks into the session. As on a server,
    the statement's own clause wins over a URL setting of the same name.
    """
    settings = {k: v for k, v in settings.items() if k not in stmt.own_setting_names}
    head = stmt.sql
    own = ""
    if stmt.settings_offset >= 0:
        own = head[stmt.settings_offset + len(b"SETTINGS"):].decode("utf-8", "replace").strip()
        head = head[:stmt.settings_offset].rstrip()
    clauses = [c for c in (own, settings_clause(settings)) if c]
    fmt = stmt.insert_format
    if not _FORMAT_NAME_RE.match(fmt):
        fmt = "`" + fmt.replace("`", "``") + "`"
    return (f"{head.decode('utf-8', 'replace')} FROM INFILE {quote_literal(body_path)}"
            + (f" SETTINGS {', '.join(clauses)}" if clauses else "") + f" FORMAT {fmt}")


def _run(fn):
    """Calls into chDB and turns its exceptions into ClickHouseError."""
    try:
        return fn()
    except ClickHouseError:
        raise
    except Exception as exc:  # chDB raises RuntimeError/ChdbError with the server text
        raise ClickHouseError.from_engine(exc) from exc


def _summary(read_rows=0, read_bytes=0, written_rows=0, written_bytes=0, elapsed=0.0) -> dict:
    # ClickHouse sends every number as a JSON string; the Rust crate parses strings.
    return {
        "read_rows": str(read_rows), "read_bytes": str(read_bytes),
        "written_rows": str(written_rows), "written_bytes": str(written_bytes),
        "total_rows_to_read": "0", "elapsed_ns": str(int(elapsed * 1e9)),
    }


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

@dataclass
class Auth:
    """The one user this server knows, and its password."""

    user: str
    password: str

    def check(self, headers, params: dict) -> None:
        """Raises AUTHENTICATION_FAILED unless the request carries this user's password.

        Accepted as a server accepts them: `X-ClickHouse-User`/`X-ClickHouse-Key`, HTTP basic
        auth, or `user`/`password` URL params (the service itself only sends the headers).
        """
        user, password = headers.get("X-ClickHouse-User"), headers.get("X-ClickHouse-Key")
        basic = headers.get("Authorization", "")
        if user is None and password is None and basic[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(basic[6:].strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", None
        if user is None and password is None:
            user, password = params.get("user"), params.get("password")
        user = user or "default"
        ok_user = hmac.compare_digest(user.encode(), self.user.encode())
        ok_password = hmac.compare_digest((password or "").encode(), self.password.encode())
        if not (ok_user and ok_password):
            raise ClickHouseError(516, "AUTHENTICATION_FAILED",
                                  f"{user}: Authentication failed: password is incorrect, "
                                  f"or there is no user with such name")


def tls_context(cert: str, key: str, client_ca: Optional[str]) -> ssl.SSLContext:
    """HTTPS with `cert`/`key`; with `client_ca`, every client must show a certificate it signed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=client_ca)
    return ctx


def cross_origin(headers) -> Optional[str]:
    """Why a request comes from a web page (and is refused), or None.

    A browser adds `Origin` to every cross-origin request and to every POST, and
    `Sec-Fetch-Site` to every request; a page on any site could otherwise POST SQL to a
    server on localhost (a "simple" text/plain POST needs no CORS preflight), also through
    DNS rebinding, where the page's origin *is* this server's name. No client of this
    server sends either header, so any Origin and any Sec-Fetch-Site other than `none` (an
    address typed by the user) are refused.
    """
    origin = headers.get("Origin")
    if origin is not None:
        return f"Origin: {origin[:100]}"
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() != "none":
        return f"Sec-Fetch-Site: {site[:40]}"
    return None


class Server(ThreadingHTTPServer):
    """Threaded server whose shutdown waits for in-flight requests."""

    daemon_threads = False  # server_close() joins handler threads: drain, not abort
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address, engine: Optional[Engine], version: str, timezone: str,
                 body_dir: str, auth: Optional["Auth"] = None,
                 ssl_context: Optional[ssl.SSLContext] = None):
        """`engine` None means --blackhole: inserts are read and dropped. `auth` None: no
        password is checked. `ssl_context`: HTTPS (the handshake runs in the handler thread)."""
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, Handler)
        self.engine = engine
        self.auth = auth
        self.ssl_context = ssl_context
        self.body_dir = body_dir
        self.version = version
        self.timezone = timezone
        self.stopping = threading.Event()

    def handle_error(self, request, client_address):
        """A client that vanishes mid-request (a killed service) is routine, not a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, TimeoutError)):
            LOG.debug("client %s went away: %s", client_address, exc)
            return
        super().handle_error(request, client_address)


@dataclass
class Request:
    """A parsed request: URL params split by role."""

    query: str
    database: str
    default_format: str
    settings: dict
    params: dict
    query_id: str
    compress: bool
    decompress: bool
    http_compression: bool
    readonly: bool = False


def parse_params(qs: str) -> Request:
    query, database, default_format = "", "default", ""
    settings, params = {}, {}
    compress = decompress = False
    http_compression = True  # enable_http_compression defaults to 1 since 25.10
    query_id = ""
    for key, value in parse_qsl(qs, keep_blank_values=True):
        if key == "query":
            query = value
        elif key == "database":
            database = value or "default"
            if not _DATABASE_NAME_RE.match(database):
                raise ClickHouseError(81, "UNKNOWN_DATABASE",
                                      f"Database {database[:100]!r} does not exist (the embedded "
                                      f"ClickHouse accepts names of letters, digits and _ only)")
        elif key == "default_format":
            default_format = value
        elif key == "compress":
            compress = value not in ("", "0")
        elif key == "decompress":
            decompress = value not in ("", "0")
        elif key == "enable_http_compression":
            http_compression = value not in ("", "0", "false")
        elif key == "query_id":
            query_id = value
        elif key.startswith("param_"):
            params[key[len("param_"):]] = value
        elif key in HTTP_PARAMS or key in IGNORED_PARAMS:
            continue
        elif not _SETTING_NAME_RE.match(key):
            raise ClickHouseError(115, "UNKNOWN_SETTING", f"Unknown setting '{key}'")
        else:
            settings[key] = value
    # `readonly` is never SET on the shared session (readonly cannot be reset once set):
    # the server enforces it per request instead (see check_readonly).
    readonly = settings.pop("readonly", "0") not in ("0", "", "false")
    return Request(query, database, default_format, settings, params,
                   query_id or str(uuid.uuid4()), compress, decompress, http_compression, readonly)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-chDB"
    sys_version = ""

    # --- connection lifecycle -------------------------------------------------

    def setup(self) -> None:
        """Over HTTPS, the TLS handshake runs here, in the connection's own thread, so a slow
        or failing client never holds up `accept`."""
        self._tls_failed = False
        ctx = self.server.ssl_context
        if ctx is not None:
            raw = self.request
            raw.settimeout(TLS_HANDSHAKE_SECONDS)
            try:
                self.request = ctx.wrap_socket(raw, server_side=True)
                self.request.settimeout(None)
            except (ssl.SSLError, OSError) as exc:
                # A client without the required certificate, plain HTTP on the TLS port, ...
                LOG.info("TLS handshake with %s failed: %s", self.client_address[0], exc)
                self._tls_failed = True
        super().setup()

    def handle(self) -> None:
        """Keep-alive loop that notices shutdown while a connection is idle."""
        self.close_connection = True
        if self._tls_failed:
            return
        self.handle_one_request()
        while not self.close_connection and self._wait_for_next_request():
            self.handle_one_request()

    def _wait_for_next_request(self) -> bool:
        if self._has_buffered_input():
            return True
        if isinstance(self.connection, ssl.SSLSocket) and self.connection.pending():
            return True  # decrypted bytes waiting in the TLS layer, invisible to select()
        deadline = time.monotonic() + KEEP_ALIVE_SECONDS
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.connection], [], [], IDLE_POLL_SECONDS)
            if ready:
                return True
            if self.server.stopping.is_set():
                return False
        return False

    def _has_buffered_input(self) -> bool:
        # A pipelined request may already sit in rfile's buffer, where select()
        # cannot see it; a non-blocking peek reveals it without blocking.
        self.connection.setblocking(False)
        try:
            return bool(self.rfile.peek(1))
        except (BlockingIOError, OSError):
            return False
        finally:
            self.connection.setblocking(True)

    def log_message(self, fmt, *args) -> None:  # route http.server's own logs
        LOG.debug("%s " + fmt, self.address_string(), *args)

    def log_request(self, code="-", size="-") -> None:
        pass  # one line per request is written by _log_done instead

    # --- request dispatch -----------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(has_body=False)

    def do_HEAD(self) -> None:
        self._dispatch(has_body=False)

    def do_POST(self) -> None:
        self._dispatch(has_body=True)

    def _dispatch(self, has_body: bool) -> None:
        started = time.monotonic()
        self._body_iter: Optional[Iterator[bytes]] = None
        self._response_started = False
        self._body_done = not self._has_request_body()
        url = urlsplit(self.path)
        status, note = 200, ""
        try:
            browser = cross_origin(self.headers)
            if browser is not None:
                raise ClickHouseError(
                    497, "ACCESS_DENIED",
                    f"Requests from web pages are refused by the embedded ClickHouse ({browser}): "
                    f"it has no browser interface, and a page on any site could otherwise send it SQL")
            if url.path in ("/ping", "/") and not url.query and not (has_body and self._has_request_body()):
                self._send(200, b"Ok.\n", {"Content-Type": "text/html; charset=UTF-8"})
                return
            if url.path not in ("/", "/query"):
                raise ClickHouseError(
                    36, "BAD_ARGUMENTS", f"There is no handle {url.path}. Use / or /ping")
            if self.server.auth is not None:
                self.server.auth.check(self.headers, dict(parse_qsl(url.query, keep_blank_values=True)))
            req = parse_params(url.query)
            note = self._execute(req)
        except ClickHouseError as err:
            status, note = err.http_status, f"{err.code} {err.name}"
            self._send_error(err)
        except (ConnectionError, socket.timeout) as exc:
            self.close_connection = True
            status, note = 499, f"client gone: {exc}"
        except Exception as exc:  # noqa: BLE001 - a server must answer, not die
            LOG.exception("unexpected error")
            status, note = 500, repr(exc)
            self._send_error(ClickHouseError(1001, "STD_EXCEPTION", repr(exc)))
        finally:
            self._log_done(status, started, note)

    def _log_done(self, status: int, started: float, note: str) -> None:
        level = logging.DEBUG if status == 200 else logging.INFO
        if LOG.isEnabledFor(level):
            LOG.log(level, "%s %s %d %.1fms %s", self.command,
                    _PASSWORD_PARAM_RE.sub(r"\1****", self.path)[:200], status,
                    (time.monotonic() - started) * 1000, note)

    def _execute(self, req: Request) -> str:
        engine = self.server.engine
        head = req.query.encode() + b"\n" if req.query else b""
        stmt = scan_statement(head) if head else None
        if stmt is not None and stmt.kind == "insert_data":
            return self._insert(req, stmt, head[stmt.data_offset:])
        # Anything else: the (small) body is the query, or continues it.
        text = head + b"".join(self._decoded_body(req)) if self._has_request_body() else head
        stmt = scan_statement(text)
        if stmt.kind == "insert_data":
            return self._insert(req, stmt, memoryview(text)[stmt.data_offset:], body_read=True)
        fmt = stmt.output_format or req.default_format or "TabSeparated"
        if engine is None:
            raise ClickHouseError(48, "NOT_IMPLEMENTED", "Only inserts are accepted in --blackhole mode")
        # A GET request is readonly, as on a server.
        readonly = req.readonly or self.command in ("GET", "HEAD")
        out = engine.query(stmt, fmt, req.database, req.settings, req.params, readonly)
        self._send_result(req, out, fmt)
        return f"{out.summary.get('read_rows')} rows read"

    def _insert(self, req: Request, stmt: Statement, inline, body_read: bool = False) -> str:
        pieces: Iterator[bytes] = iter(())
        if not body_read and self._has_request_body():
            pieces = self._decoded_body(req)
        if req.readonly or self.command in ("GET", "HEAD"):
            raise ClickHouseError(164, "READONLY", "Cannot execute query in readonly mode: "
                                  "a GET request only reads (send inserts with POST)")
        if self.server.engine is not None:
            if not self.server.engine.allow_external:
                check_settings(req.settings)
            fmt = stmt.insert_format if _FORMAT_NAME_RE.match(stmt.insert_format) else "Values"
            self.server.engine.check(f"{stmt.sql.decode('utf-8', 'replace')} FORMAT {fmt}")
        if self.server.engine is None:  # --blackhole: read and unframe, do not execute
            total = len(inline) + sum(len(piece) for piece in pieces)
            self._send_result(req, Outcome(summary=_summary()), "")
            return f"blackhole {total} bytes"
        # The whole decoded body goes to a temp file *before* the session lock
        # is taken (constant memory, slow uploads block nobody); the engine
        # then inserts it with FROM INFILE, which reports every failure.
        fd, path = tempfile.mkstemp(suffix=".body", dir=self.server.body_dir)
        try:
            total = 0
            with open(fd, "wb", buffering=BODY_FILE_BUFFER) as f:
                for piece in _chain([inline] if len(inline) else [], pieces):
                    f.write(piece)
                    total += len(piece)
            settings = req.settings
            engine = self.server.engine
            if stmt.insert_format.lower() == "values" and not engine.allow_external:
                # The engine evaluates expressions in Values data (`(file('/etc/passwd'))`):
                # small data is checked like a statement, larger data gets no expressions.
                if total <= VALUES_CHECK_LIMIT:
                    with open(path, "rb") as f:
                        engine.check_values(f.read())
                else:
                    if {n.lower() for n in stmt.own_setting_names} & set(VALUES_NO_EXPRESSIONS):
                        raise refused_unchecked(
                            "Values data over 1 MiB that sets input_format_values_* itself",
                            "such data is inserted with expressions switched off")
                    settings = {**settings, **VALUES_NO_EXPRESSIONS}
            sql = insert_sql(stmt, settings, path)
            out = self.server.engine.insert(sql, req.database, path)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._send_result(req, out, "")
        return f"{out.summary['written_rows']} rows written, {total} bytes"

    # --- body reading ---------------------------------------------------------

    def _has_request_body(self) -> bool:
        te = self.headers.get("Transfer-Encoding", "").lower()
        return "chunked" in te or int(self.headers.get("Content-Length") or 0) > 0

    def _body_pieces(self) -> Iterator[bytes]:
        """The raw request body in large pieces; the same iterator on every call."""
        if self._body_iter is None:
            self._body_iter = self._read_body()
        return self._body_iter

    def _read_body(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._chunked_pieces()
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                piece = self.rfile.read(min(remaining, READ_PIECE))
                if not piece:
                    raise ConnectionError("client closed the connection mid-body")
                remaining -= len(piece)
                yield piece
        self._body_done = True

    def _decoded_body(self, req: "Request") -> Iterator[bytes]:
        """Body with Content-Encoding and (if decompress=1) native framing removed."""
        verify = req.settings.get("http_native_compression_disable_checksumming_on_decompress",
                                  "0") in ("0", "false")
        return decode_body(self._body_pieces(), self.headers.get("Content-Encoding", ""),
                           req.decompress, verify)

    def _chunked_pieces(self) -> Iterator[bytes]:
        rfile = self.rfile
        while True:
            line = rfile.readline(1024)
            if not line:
                raise ConnectionError("client closed the connection mid-body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise ClickHouseError(36, "BAD_ARGUMENTS", f"Bad chunk size line {line[:40]!r}") from None
            if size == 0:
                while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are ignored
                return
            piece = rfile.read(size)
            if len(piece) != size:
                raise ConnectionError("client closed the connection mid-chunk")
            rfile.readline(1024)  # CRLF after the chunk
            yield piece

    def _drain_body(self) -> None:
        """Consume an unread body so the connection can stay alive.

        Clients such as hyper report a broken pipe rather than the error response
        if the server stops reading mid-body, so the rest is read and dropped.
        """
        if self._body_done:
            return
        try:
            for _ in self._body_pieces():
                pass
        except Exception:  # noqa: BLE001 - a broken body: the connection closes instead
            self.close_connection = True

    # --- responses --------------------------------------------------------------

    def _common_headers(self, req: Optional[Request]) -> dict:
        headers = {
            "X-ClickHouse-Server-Display-Name": SERVER_DISPLAY_NAME,
            "X-ClickHouse-Timezone": self.server.timezone,
            "Keep-Alive": f"timeout={KEEP_ALIVE_SECONDS}",
        }
        if req is not None:
            headers["X-ClickHouse-Query-Id"] = req.query_id
        return headers

    def _send_result(self, req: Request, out: Outcome, fmt: str) -> None:
        self._drain_body()
        headers = self._common_headers(req)
        headers["X-ClickHouse-Summary"] = json.dumps(out.summary, separators=(",", ":"))
        body = out.body
        if fmt:
            headers["X-ClickHouse-Format"] = fmt
            headers["Content-Type"] = content_type_for(fmt)
        else:
            headers["Content-Type"] = "text/plain; charset=UTF-8"
        if req.compress and len(body):
            body = b"".join(native_frame(body))
            headers["Content-Type"] = "application/octet-stream"
        encoding = pick_response_encoding(self.headers.get("Accept-Encoding", "")) if req.http_compression else ""
        if encoding and len(body):
            body = _RESPONSE_ENCODERS[encoding](body)
            headers["Content-Encoding"] = encoding
        self._send(200, body, headers)

    def _send_error(self, err: ClickHouseError) -> None:
        self._drain_body()
        headers = self._common_headers(None)
        headers["X-ClickHouse-Exception-Code"] = str(err.code)
        headers["Content-Type"] = "text/plain; charset=UTF-8"
        self._send(err.http_status, err.body(self.server.version), headers)

    def _send(self, status: int, body, headers: dict) -> None:
        if self._response_started:
            # Failing after the status line went out: a second response would
            # corrupt the stream, so the only honest signal left is closing.
            self.close_connection = True
            return
        self._response_started = True
        if self.server.stopping.is_set():
            self.close_connection = True
        if not self._body_done:
            self.close_connection = True  # unread body bytes would poison keep-alive
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD" and len(body):
            self.wfile.write(body)
        self.wfile.flush()


def _chain(first: list, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest


# ---------------------------------------------------------------------------
# Process: data-dir lock, signals, ready line.
# ---------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True


def _read_holder(fd: int) -> tuple:
    """(pid, parent pid) written by the lock's holder; 0 where unknown."""
    words = os.pread(fd, 64, 0).decode(errors="replace").split()
    nums = [int(w) for w in words[:2] if w.isdigit()]
    return (nums + [0, 0])[0], (nums + [0, 0])[1]


def lock_data_dir(data_dir: str) -> int:
    """Takes DIR/.chserver.lock or exits with EXIT_LOCKED naming the holder.

    The lock is an flock, so a holder that died left nothing behind. A holder whose parent
    died is an orphan (its owner was SIGKILLed, or exited at a second Ctrl-C before stopping
    it): nobody will ever stop it, so it is asked to stop (SIGTERM: in-flight requests finish,
    the engine closes cleanly) and the lock is taken once it is gone. A holder whose parent
    is alive is somebody's server: refused, as before.
    """
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, ".chserver.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
        holder, holder_parent = _read_holder(fd)
        orphan = holder > 0 and holder_parent > 1 and not _alive(holder_parent)
        if not orphan and deadline is None:
            print(f"chserver: data dir {os.path.abspath(data_dir)} is locked by another "
                  f"chserver (pid {holder or 'unknown'}); refusing to share it", file=sys.stderr, flush=True)
            sys.exit(EXIT_LOCKED)
        if deadline is None:
            LOG.warning("data dir %s is held by an orphaned chserver (pid %s), whose parent %s is gone: "
                        "asking it to stop and taking the data dir over", os.path.abspath(data_dir),
                        holder, holder_parent)
            try:
                os.kill(holder, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + ORPHAN_STOP_TIMEOUT
        elif time.monotonic() > deadline:
            print(f"chserver: the orphaned chserver (pid {holder}) holding {os.path.abspath(data_dir)} "
                  f"did not stop within {ORPHAN_STOP_TIMEOUT:.0f} s; refusing to share it",
                  file=sys.stderr, flush=True)
            sys.exit(EXIT_LOCKED)
        time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {os.getppid()}\n".encode(), 0)
    return fd


def prepare_body_dir(data_dir: str) -> str:
    """DIR/insert-bodies, emptied of bodies left behind by a killed process."""
    path = os.path.join(os.path.abspath(data_dir), BODY_DIR_NAME)
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".body"):
            try:
                os.unlink(os.path.join(path, name))
            except OSError:
                pass
    return path


# The engine's own access control (layer 1 of "safe by default", see docs/security.md).
ENGINE_CONFIG_DIR = ".chserver"
# What the one engine user may do: everything the service and its tools send (DDL and
# DML on tables of this engine, OPTIMIZE, SYSTEM FLUSH/SYNC REPLICA, ON CLUSTER, dictGet),
# and nothing of the SOURCES group (FILE, URL, REMOTE, MYSQL, S3, ...): the engine itself
# then refuses file()/url()/remote()/... table functions (also nested), ENGINE=File/URL/...,
# the Filesystem part of the `default` database, dictionaries (CREATE DICTIONARY is not
# granted) and BACKUP/RESTORE.
ENGINE_GRANTS = (
    "GRANT SELECT, INSERT, ALTER, CREATE DATABASE, CREATE TABLE, CREATE VIEW, "
    "CREATE TEMPORARY TABLE, DROP, TRUNCATE, OPTIMIZE, SHOW, SYSTEM FLUSH, SYSTEM SYNC REPLICA, "
    "SYSTEM MERGES, KILL QUERY, CLUSTER, dictGet ON *.*",
    # Engines tied to a source (Distributed: REMOTE) need their own grant. A Distributed
    # table reaches only the clusters of the server's own <remote_servers>, never a host
    # the client names (remote() is refused: REMOTE is not granted).
    "GRANT TABLE ENGINE ON Distributed",
)
# Elements of a user-provided clickhouse-config.xml that would replace the access control.
_ACCESS_ELEMENTS = ("user_directories", "users", "users_config", "access_control_improvements",
                    "access_control_path")


def write_engine_config(data_dir: str) -> str:
    """DIR/.chserver/config.xml (+ users.xml): the engine's configuration, returned as a path.

    A user-provided DIR/clickhouse-config.xml is merged in (its `<remote_servers>` and
    everything else), except the elements that would replace this access control.
    """
    import xml.etree.ElementTree as ET

    out_dir = os.path.join(os.path.abspath(data_dir), ENGINE_CONFIG_DIR)
    os.makedirs(out_dir, exist_ok=True)
    users_path = os.path.join(out_dir, "users.xml")
    root = ET.Element("clickhouse")
    user_file = os.path.join(data_dir, CONFIG_FILE_NAME)
    if os.path.exists(user_file):
        for child in ET.parse(user_file).getroot():
            if child.tag in _ACCESS_ELEMENTS:
                LOG.warning("%s: <%s> ignored: the embedded engine's access control is its own "
                            "(run with --allow-external to use this file as it is)", user_file, child.tag)
                continue
            root.append(child)
    dirs = ET.SubElement(ET.SubElement(root, "user_directories"), "users_xml")
    ET.SubElement(dirs, "path").text = users_path
    users = ET.Element("clickhouse")
    user = ET.SubElement(ET.SubElement(users, "users"), "default")
    ET.SubElement(user, "password").text = ""
    ET.SubElement(ET.SubElement(user, "networks"), "ip").text = "::/0"
    ET.SubElement(user, "profile").text = "default"
    ET.SubElement(user, "quota").text = "default"
    grants = ET.SubElement(user, "grants")
    for grant in ENGINE_GRANTS:
        ET.SubElement(grants, "query").text = grant
    ET.SubElement(ET.SubElement(users, "profiles"), "default")
    ET.SubElement(ET.SubElement(users, "quotas"), "default")
    for tree, path in ((users, users_path), (root, os.path.join(out_dir, "config.xml"))):
        tmp = path + ".tmp"
        ET.ElementTree(tree).write(tmp, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, path)
    return os.path.join(out_dir, "config.xml")


def parse_listen(value: str) -> tuple:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen wants HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="ClickHouse-HTTP-compatible server over chDB")
    p.add_argument("--data-dir", required=True, help="directory owned exclusively by this server")
    p.add_argument("--listen", required=True, type=parse_listen, help="HOST:PORT (port 0 = any free port)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--blackhole", action="store_true",
                   help="benchmark mode: read and unframe insert bodies, answer 200, execute nothing")
    p.add_argument("--user", default="default", help="the one user name accepted when a password is set")
    p.add_argument("--password-file", help=f"file holding the password (else ${PASSWORD_ENV}; "
                   "without either, no password is checked)")
    p.add_argument("--tls-cert", help="PEM certificate chain: serve HTTPS")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", help="PEM CA bundle: require client certificates it signed")
    p.add_argument("--allow-external", action="store_true",
                   help="allow table functions, engines and clauses that reach the filesystem, "
                        "the network or other processes (refused by default)")
    # Obsolete (insert bodies now always go to a temp file); accepted and ignored.
    p.add_argument("--spill-bytes", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        p.error("--tls-client-ca needs --tls-cert and --tls-key")
    return args


def read_password(args) -> Optional[str]:
    """The password from --password-file or the environment (removed from it), or None."""
    password = os.environ.pop(PASSWORD_ENV, None)
    source = f"${PASSWORD_ENV}"
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            password = f.read().rstrip("\r\n")
        source = args.password_file
    if password is not None and not password.strip():
        # A password file that holds only blank lines is a mistake, never "no password".
        raise ValueError(f"the password in {source} is empty (only blanks or newlines); "
                         f"give a real password, or none at all")
    return password


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s chserver: %(message)s")
    try:
        password = read_password(args)
        ssl_context = tls_context(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    except (OSError, ssl.SSLError, ValueError) as exc:
        print(f"chserver: cannot set up authentication or TLS: {exc}", file=sys.stderr, flush=True)
        return 1
    auth = Auth(args.user, password) if password is not None else None
    lock_fd = lock_data_dir(args.data_dir)
    body_dir = prepare_body_dir(args.data_dir)
    engine_path = os.path.join(args.data_dir, "chdb")
    config_file = os.path.join(args.data_dir, CONFIG_FILE_NAME)
    if not args.allow_external and not args.blackhole:
        try:
            config_file = write_engine_config(args.data_dir)
        except (OSError, SyntaxError) as exc:  # ET.ParseError is a SyntaxError
            print(f"chserver: cannot write the engine configuration: {exc}", file=sys.stderr, flush=True)
            return 1
    if os.path.exists(config_file):
        # chDB passes connection-string parameters to the engine as start-up arguments.
        engine_path += "?config-file=" + config_file
    engine = None if args.blackhole else Engine(engine_path, allow_external=args.allow_external)
    version = engine.version if engine else "26.9.0.0"
    server = Server(args.listen, engine, version, engine.timezone if engine else "UTC", body_dir,
                    auth=auth, ssl_context=ssl_context)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="accept")
    serving.start()

    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if ssl_context is not None else "http"
    print(f"ready {scheme}://{shown}:{port}", flush=True)
    LOG.info("listening on %s://%s:%s, data dir %s, engine %s%s%s%s", scheme, host, port, args.data_dir,
             version, " (blackhole)" if args.blackhole else "",
             f", password required for user {args.user}" if auth else ", no password",
             ", external access allowed" if args.allow_external else "")

    while not stop.wait(1.0):
        pass
    LOG.info("shutting down: draining in-flight requests")
    server.stopping.set()
    server.shutdown()  # stop accepting
    server.server_close()  # joins handler threads: in-flight requests finish
    serving.join()
    if engine is not None:
        engine.close()
    os.close(lock_fd)
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
