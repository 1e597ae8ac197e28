#!/usr/bin/env bash
# Builds the real kube-apiserver + kube-controller-manager that the Kubernetes action tests run
# against (tests/integration/k8s_cluster.py), with the project's own copy of the build scripts
# (.ci/k8s/, see its README). About 6 minutes on 2 cores the first time; a no-op once the
# binaries are cached (~/.cache/k8s-test, or $K8S_TEST_DIR).
set -euo pipefail
exec "$(dirname "$0")/k8s/build-apiserver"
