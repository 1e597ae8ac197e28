"""``selfheal dev --kubeconfig PATH --demo k8s-bad-rollout --auto-approve`` as a user runs it
against the local test control plane (.ci/k8s/start-apiserver): the whole dev stack starts, the
demo rolls out a crash-looping template on its simulated node, posts KubePodCrashLooping to the
intake, and the healing rolls the Deployment back on the real API server. Without a cluster, the
k8s demos are refused in one line."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_dev_demo import REPO, SELFHEAL, dev_env, leftover_processes
from tests.integration.k8s_cluster import Cluster
from tests.support import short_tmp_dir


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with short_tmp_dir("shk8s-") as path:
        yield path


def run_dev(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SELFHEAL), "dev", *args],
        cwd=REPO,
        env=dev_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_a_bad_rollout_demo_is_rolled_back(k8s_cluster: Cluster, data_dir: Path) -> None:
    result = run_dev(
        "--data-dir",
        str(data_dir),
        "--kubeconfig",
        str(k8s_cluster.kubeconfig),
        "--demo",
        "k8s-bad-rollout",
        "--auto-approve",
        "--timeout",
        "150",
    )
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, report
    assert "posted KubePodCrashLooping" in result.stdout, report
    assert "root cause: bad_rollout (as expected)" in result.stdout, report
    assert "kubernetes.rollback" in result.stdout, report
    assert "Deployment selfheal-demo/web: 2/2 ready, none restarting" in result.stdout, report
    assert "outcome: healed" in result.stdout, report
    assert "Traceback" not in result.stdout + result.stderr, report
    assert leftover_processes(data_dir) == []


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--demo", "k8s-oom"], "--demo k8s-oom needs a cluster: give --kubeconfig PATH"),
        (["--kubeconfig", "/nonexistent/kubeconfig", "--demo", "k8s-oom"], "--kubeconfig: "),
        (["--demo", "k8s-nope"], "--demo: unknown demo scenario 'k8s-nope'"),
    ],
)
def test_k8s_demos_without_a_cluster_are_refused_in_one_line(
    args: list[str], expected: str, data_dir: Path
) -> None:
    result = run_dev("--data-dir", str(data_dir), *args, timeout_s=60)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_kubeconfig_that_does_not_load_is_refused_before_anything_starts(
    tmp_path: Path, data_dir: Path
) -> None:
    broken = tmp_path / "kubeconfig"
    broken.write_text("clusters: [\n")
    result = run_dev("--data-dir", str(data_dir / "dev"), "--kubeconfig", str(broken),
                     "--demo", "k8s-oom", timeout_s=60)  # fmt: skip
    assert result.returncode == 2, result
    [line] = result.stderr.strip().splitlines()
    assert "is not a kubeconfig the Kubernetes client can load" in line and str(broken) in line
    assert not (data_dir / "dev").exists()  # nothing started, nothing written
