#!/usr/bin/env bash
# The whole idea of shardkit in about a minute, with no etcd and no database
# server: shardd on its embedded store, four SQLite shard databases, a sample
# service (shardlib/examples/sample_service.rs) that loads users and keeps
# writing, then a fifth shard and a live `shardctl rebalance`, and a proof
# that no acknowledged write was lost or duplicated.
#
#   examples/first-run.sh             # ROWS=20000 RATE=200 by default
#   ROWS=100000 RATE=500 examples/first-run.sh
#   KEEP=1 examples/first-run.sh      # keep the work directory (logs, databases)
#
# Needs a Rust toolchain, and protoc for the build (installed with apt-get
# when missing, as root or through sudo). Everything runs on 127.0.0.1, in a
# temporary directory that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS=${ROWS:-20000}
RATE=${RATE:-200}
KEEP=${KEEP:-}
BIN=${CARGO_TARGET_DIR:-target}/release
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac

if [ -t 1 ]; then BOLD=$'\033[1m' DIM=$'\033[2m' RESET=$'\033[0m'; else BOLD='' DIM='' RESET=''; fi
section() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$RESET"; }
explain() { printf '%s%s%s\n' "$DIM" "$*" "$RESET"; }
run() { printf '%s$ %s%s\n' "$DIM" "$*" "$RESET"; "$@"; }
die() { printf 'first-run: %s\n' "$*" >&2; exit 1; }

# shardd links etcd-client (for its etcd store), whose build needs protoc
# and protobuf's well-known types: install them when missing, as
# scripts/test.sh does.
missing=()
if [ -z "${PROTOC:-}" ]; then
  command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
  [ -e /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
fi
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    die "the build needs protoc: please install these Debian packages first: ${missing[*]}"
  fi
  section "Installing ${missing[*]} (the build needs protoc)"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

section "Building shardd, shardctl and the sample service (release; the first build takes a few minutes)"
cargo build --release -p shardd -p shardctl -p shardlib --bins --example sample_service \
  --features shardlib/sql,shardlib/shardd-source
STARTED=$SECONDS
export PATH="$BIN:$BIN/examples:$PATH"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/shardkit-first-run.XXXXXX")
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  # Kept when asked for, and after a failure (not after Ctrl-C).
  if [ -n "$KEEP" ] || { [ "$status" -ne 0 ] && [ "$status" -ne 130 ] && [ "$status" -ne 143 ]; }; then
    printf '\nwork directory kept: %s (shardd.log, service.log, db/)\n' "$WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$WORK/db"

# Waits up to $1 seconds for the command in the other arguments to succeed.
wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

section "Starting shardd with its embedded store (a local file: no etcd)"
shardd --store local --local-path "$WORK/shardd/topology.json" --listen 127.0.0.1:0 \
  --log-format json 2>"$WORK/shardd.log" &
SHARDD_PID=$!
PIDS+=("$SHARDD_PID")
listening() {
  kill -0 "$SHARDD_PID" 2>/dev/null || { cat "$WORK/shardd.log" >&2; die "shardd exited"; }
  ADDR=$(sed -n '/"shardd listening"/s/.*"addr":"\([^"]*\)".*/\1/p' "$WORK/shardd.log" | head -n1)
  [ -n "$ADDR" ]
}
wait_for 30 listening || die "shardd did not start listening within 30 s (log: $WORK/shardd.log)"
export SHARDCTL_ENDPOINT="http://$ADDR"
wait_for 30 shardctl status >/dev/null 2>&1 || die "shardd has no leader after 30 s"
explain "shardctl talks to it through SHARDCTL_ENDPOINT=$SHARDCTL_ENDPOINT"
run shardctl status

section "Creating keyspace users: four SQLite shard databases, each owning a quarter of the keyspace-id space"
dsn() { printf 'sqlite://%s/db/%s.db?mode=rwc' "$WORK" "$1"; }
cat >"$WORK/users.toml" <<TOML
key_type = "u64"
tables = [{ name = "users", key_columns = ["id"] }]
shards = [
  { id = "s1", primary = "$(dsn s1)" },
  { id = "s2", primary = "$(dsn s2)" },
  { id = "s3", primary = "$(dsn s3)" },
  { id = "s4", primary = "$(dsn s4)" },
]
[partitioning]
algorithm = "hash_range"
ranges = [
  { range = "-40", shard = "s1" },
  { range = "40-80", shard = "s2" },
  { range = "80-c0", shard = "s3" },
  { range = "c0-", shard = "s4" },
]
TOML
run shardctl keyspace create users --file "$WORK/users.toml"
explain "The sample service creates the users table (with its keyspace_id column and index) in every shard:"
run sample_service init --shardd "$SHARDCTL_ENDPOINT" --keyspace users

section "Starting the sample service: it follows shardd's topology, loads $ROWS users, then keeps writing ~$RATE ops/s"
explain "Every write goes through ShardedPool::execute_for_key, to the shard that owns the key at that moment;"
explain "the service remembers every write that was acknowledged."
sample_service run --shardd "$SHARDCTL_ENDPOINT" --keyspace users --rows "$ROWS" --rate "$RATE" \
  --state "$WORK/state.json" --progress "$WORK/progress" --stop-file "$WORK/stop" >"$WORK/service.log" 2>&1 &
SERVICE_PID=$!
PIDS+=("$SERVICE_PID")
progress() { sed -n "s/^$1=//p" "$WORK/progress" 2>/dev/null || true; }
writing() {
  kill -0 "$SERVICE_PID" 2>/dev/null || { cat "$WORK/service.log" >&2; die "the sample service exited"; }
  [ -t 1 ] && printf '\r  loaded %s of %s users' "$(progress loaded)" "$ROWS"
  [ "$(progress phase)" = writing ]
}
wait_for 300 writing || die "the sample service did not load $ROWS users within 300 s (log: $WORK/service.log)"
[ -t 1 ] && printf '\r\033[K'
sed 's/^/  /' "$WORK/service.log"
LOADED_LINES=$(wc -l <"$WORK/service.log")
sleep 2

section "Adding an empty fifth shard, s5"
run shardctl shard add s5 -k users --primary "$(dsn s5)"
sample_service init --shardd "$SHARDCTL_ENDPOINT" --keyspace users | grep ' s5:' || true
run shardctl shard list -k users

section "Before: rows and checksums per shard (the service is still writing)"
sample_service verify --shardd "$SHARDCTL_ENDPOINT" --keyspace users --save "$WORK/before.json"

section "The rebalance plan (dry run: shardd measures every range and plans; nothing moves)"
run shardctl rebalance -k users --dry-run

section "Rebalancing live, while the service writes"
explain "Each job copies its range to the new owner, replays the changes made meanwhile, verifies,"
explain "freezes the range for a moment, hands it over in a new topology epoch, and deletes the old copy."
explain "Copying is throttled to 1,000 rows/s per job so that you can watch (without, it takes well under a second)."
cp "$WORK/progress" "$WORK/rebalance-start"
run shardctl rebalance -k users --rows-per-second 1000
cp "$WORK/progress" "$WORK/rebalance-end"
sleep 1

section "Stopping the service; it saves every acknowledged write"
touch "$WORK/stop"
stopped() { ! kill -0 "$SERVICE_PID" 2>/dev/null; }
wait_for 90 stopped || die "the sample service did not stop within 90 s"
wait "$SERVICE_PID" || die "the sample service failed (log: $WORK/service.log)"
explain "What the service saw while it wrote (its log):"
tail -n "+$((LOADED_LINES + 1))" "$WORK/service.log" | sed 's/^/  /'

section "After: every row exactly once, on its owner, with its last acknowledged value"
sample_service verify --shardd "$SHARDCTL_ENDPOINT" --keyspace users --state "$WORK/state.json" --save "$WORK/after.json"

section "Summary"
sample_service summary --before "$WORK/before.json" --after "$WORK/after.json" --state "$WORK/state.json" \
  --rebalance-start "$WORK/rebalance-start" --rebalance-end "$WORK/rebalance-end"
printf '\nDone in %ss (after the build). Next: README.md "Running shardd", docs/OPERATIONS.md.\n' \
  "$((SECONDS - STARTED))"
