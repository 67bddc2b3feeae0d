#!/usr/bin/env bash
# A stand-in deploy for the demo: records a version under $DEPLOY_DIR and prints it as
# JSON. `--revert VERSION` undoes it. Idempotent: the same AGENTSAGA_IDEMPOTENCY_KEY
# deploys once, and reverting a version that is gone succeeds.
set -euo pipefail
dir="${DEPLOY_DIR:?set DEPLOY_DIR}"
mkdir -p "$dir"
if [ "${1:-}" = "--revert" ]; then
  version="${2:-}"
  if [ -z "$version" ]; then echo "nothing to revert: the deploy never finished"; exit 0; fi
  rm -f "$dir/v$version"
  echo "reverted v$version"
  exit 0
fi
key="${AGENTSAGA_IDEMPOTENCY_KEY:-manual}"
existing=$(grep -l -- "key=$key\$" "$dir"/v* 2>/dev/null | head -n 1 || true)
if [ -n "$existing" ]; then
  printf '{"version": %d, "repeat": true}\n' "${existing##*/v}"
  exit 0
fi
version=$(( $(find "$dir" -name 'v*' | wc -l) + 1 ))
echo "deployed $(date -u +%Y-%m-%dT%H:%M:%SZ) key=$key" > "$dir/v$version"
printf '{"version": %d}\n' "$version"
