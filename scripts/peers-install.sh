#!/bin/sh
# Installs the real third-party peers of `npm run test:peers` into .peers/ (a throw-away place,
# never the daemon's dependencies). Idempotent: does nothing when the pinned versions are there.
#   PEERS_QWEN_VERSION=<v>    override the pin of @qwen-code/qwen-code (agent `qwen --acp` + `qwen serve`)
#   PEERS_CLAUDE_VERSION=<v>  override the pin of @agentclientprotocol/claude-agent-acp (second agent)
#   PEERS_SECOND_AGENT=0      do not install the second agent (~400 MB)
# Both declare engines node >= 22; both install (with a warning) and run on Node 20.
set -eu
cd "$(dirname "$0")/.."

QWEN="@qwen-code/qwen-code@${PEERS_QWEN_VERSION:-0.24.4}"
CLAUDE="@agentclientprotocol/claude-agent-acp@${PEERS_CLAUDE_VERSION:-0.101.0}"
PINS="$QWEN"
[ "${PEERS_SECOND_AGENT:-1}" = "0" ] || PINS="$PINS $CLAUDE"
PREFIX=.peers

installed() { # <name@version>
  node -e '
    const spec = process.argv[1], at = spec.lastIndexOf("@");
    const [name, want] = [spec.slice(0, at), spec.slice(at + 1)];
    try { process.exit(require(require("path").resolve(process.argv[2], "node_modules", name, "package.json")).version === want ? 0 : 1); }
    catch { process.exit(1); }
  ' "$1" "$PREFIX"
}

missing=""
for p in $PINS; do installed "$p" || missing="$missing $p"; done
if [ -z "$missing" ]; then
  echo "peers: $PINS already in $PREFIX/"
  exit 0
fi

mkdir -p "$PREFIX"
# A manifest of its own, so that npm treats .peers/ as a separate project: it never touches the
# repository's node_modules, and a later install does not prune what an earlier one added.
deps=""
for p in $PINS; do
  name=${p%@*}
  deps="$deps${deps:+,
}    \"$name\": \"${p##*@}\""
done
cat > "$PREFIX/package.json" <<JSON
{
  "name": "acpd-peers",
  "private": true,
  "description": "throw-away installs for npm run test:peers (written by scripts/peers-install.sh)",
  "dependencies": {
$deps
  }
}
JSON
echo "peers: installing$missing into $PREFIX/"
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error --engine-strict=false
for p in $PINS; do installed "$p"; done
