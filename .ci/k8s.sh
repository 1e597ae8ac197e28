#!/usr/bin/env bash
# Builds the real kube-apiserver + kube-controller-manager that the Kubernetes action tests run
# against (tests/integration/k8s_cluster.py). About 6 minutes the first time; a no-op once the
# binaries are cached (~/.cache/k8s-test, or $K8S_TEST_DIR).
set -euo pipefail
exec "$(dirname "$0")/../../shared/k8s/build-apiserver"
