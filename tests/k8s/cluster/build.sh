#!/usr/bin/env bash
# Builds the Kubernetes test control plane's binaries (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok) from the Go module proxy into an ignored
# folder, once per machine: a stamp names the inputs (this script, the two go.mod/go.sum
# pairs), and a folder whose stamp matches is reused as it is.  GOCACHE is Go's own, so a
# rebuild after a version change recompiles only what changed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
if [ -n "${MLFORM_K8S_BIN:-}" ]; then
    # binaries built already (by this script, elsewhere): used as they are, never built
    exit 0
fi
OUT=$ROOT/.tools/k8s
KUBE_VERSION=v1.36.3
KWOK_VERSION=v0.8.0

inputs=$(cat "$0" "$HERE"/kube/go.mod "$HERE"/kube/go.sum "$HERE"/etcd/go.mod "$HERE"/etcd/go.sum \
         | sha256sum | cut -d' ' -f1)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$inputs" ]; then
    exit 0
fi
if ! command -v go >/dev/null; then
    echo "error: Go 1.26 is needed to build the Kubernetes test control plane" >&2
    exit 1
fi
mkdir -p "$OUT"
rm -f "$OUT/.stamp"
echo "building the Kubernetes test control plane into $OUT (a cold build takes a while)" >&2
(cd "$HERE/etcd" && go build -trimpath -ldflags "-s -w" -o "$OUT/etcd" go.etcd.io/etcd/server/v3)
(cd "$HERE/kube" && go build -trimpath -ldflags "-s -w \
    -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36" \
    -o "$OUT/" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler)
GOBIN="$OUT" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
# kwok has no default stages: keep the ones its module ships (node and pod lifecycles).
rm -rf "$OUT/stages"
cp -r "$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage" "$OUT/stages"
chmod -R u+w "$OUT/stages"
echo "$inputs" > "$OUT/.stamp"
