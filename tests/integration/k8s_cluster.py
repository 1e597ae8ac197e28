"""A real Kubernetes control plane for tests: etcd, kube-apiserver and the controller-manager
(deployment, replicaset, statefulset, daemonset, disruption and namespace controllers), started
with the project's own ``.ci/k8s/start-apiserver``. There is no kubelet or scheduler: pods stay
Pending unless the test starts a node agent (``devstack/kube_agent.py``), which binds
and runs them and makes them misbehave on request.

The binaries are built once by ``.ci/k8s.sh``. Without them the tests skip, except in CI
(``CI=true``), where a missing build is a failure: CI must not pass by testing nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

from selfheal.activities.actions.kubernetes import kubernetes_client
from selfheal.core.settings import KubernetesSettings

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(os.environ.get("SELFHEAL_K8S_SCRIPTS", ROOT / ".ci" / "k8s"))
BUILD_DIR = Path(os.environ.get("K8S_TEST_DIR", Path.home() / ".cache" / "k8s-test"))
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager")
APISERVER_PORT = 6443
LIMITED_USER = "limited"


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    """user admin (system:masters)"""
    limited_kubeconfig: Path
    """user ``limited``, bound to no role"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI runs .ci/k8s.sh first)", pytrace=False)
    pytest.skip(reason)


def _port_busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = [b for b in BINARIES if not (BUILD_DIR / "bin" / b).is_file()]
    if not (SCRIPTS / "start-apiserver").is_file():
        _unavailable(f"no Kubernetes test scripts at {SCRIPTS}")
    if missing:
        _unavailable(
            f"Kubernetes test binaries not built ({', '.join(missing)} missing in "
            f"{BUILD_DIR / 'bin'}): run .ci/k8s.sh"
        )
    if _port_busy(APISERVER_PORT):
        pytest.fail(
            f"127.0.0.1:{APISERVER_PORT} is taken: another kube-apiserver is running "
            f"(stop it with {SCRIPTS / 'stop-apiserver'})",
            pytrace=False,
        )
    run_dir = tmp_path_factory.mktemp("k8s") / "run"
    scripts = [str(BUILD_DIR), str(run_dir)]
    started = subprocess.run(
        [SCRIPTS / "start-apiserver", *scripts], capture_output=True, text=True, timeout=120
    )
    try:
        if started.returncode != 0:
            logs = "\n".join(
                f"--- {log.name}\n{log.read_text()[-1500:]}" for log in run_dir.glob("*.log")
            )
            pytest.fail(f"start-apiserver failed: {started.stderr}\n{logs}", pytrace=False)
        kubeconfig = run_dir / "kubeconfig"
        limited = run_dir / "kubeconfig-limited"
        limited.write_text(
            kubeconfig.read_text().replace("token: testtoken", "token: limitedtoken")
        )
        yield Cluster(kubeconfig=kubeconfig, limited_kubeconfig=limited)
    finally:
        subprocess.run([SCRIPTS / "stop-apiserver", *scripts], check=False, timeout=30)


@pytest.fixture(scope="session")
def admin_api(k8s_cluster: Cluster) -> ApiClient:
    """An API client of the control plane's admin (system:masters), built as the worker builds
    its own (``kubernetes_client``)."""
    api = kubernetes_client(KubernetesSettings(kubeconfig=k8s_cluster.kubeconfig))
    assert api is not None
    return api
