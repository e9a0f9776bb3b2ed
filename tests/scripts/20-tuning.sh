#!/usr/bin/env bash
# tuning/xblade-tune.sh: apply changes a veth's GRO and channels inside a
# private namespace, records them, and undo restores every value.
set -euo pipefail
ROOT=${XBLADE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
NS=xtun-t
STATE_DIR=$(mktemp -d)
cleanup() { ip netns del "$NS" 2>/dev/null || true; rm -rf "$STATE_DIR"; }
trap cleanup EXIT
ip netns add "$NS"
ip -n "$NS" link add xtun0 type veth peer name xtun1
ip netns exec "$NS" ethtool -K xtun0 gro on
tune() { ip netns exec "$NS" env XBLADE_TUNE_STATE_DIR="$STATE_DIR" bash "$ROOT/tuning/xblade-tune.sh" "$@"; }
gro() { ip netns exec "$NS" ethtool -k xtun0 | awk '$1 == "generic-receive-offload:" {print $2}'; }
out=$(tune apply xtun0 --queues 1)
echo "$out"
grep -q "generic-receive-offload: on -> off" <<<"$out"
[[ $(gro) == off ]]
[[ -f $STATE_DIR/tune-xtun0.state ]]
if tune apply xtun0 2>/dev/null; then echo "second apply should refuse" >&2; exit 1; fi
tune undo xtun0
[[ $(gro) == on ]]
[[ ! -f $STATE_DIR/tune-xtun0.state ]]
if tune apply nosuchif 2>/dev/null; then echo "unknown interface accepted" >&2; exit 1; fi
# --help is an answer, not an error; a bad command is one.
bash "$ROOT/tuning/xblade-tune.sh" --help | grep -q 'xblade-tune.sh apply IFACE'
if bash "$ROOT/tuning/xblade-tune.sh" frob xtun0 2>/dev/null; then echo "unknown command accepted" >&2; exit 1; fi
echo "tuning: apply/undo ok, --help exits 0"
