"""Kubernetes labels resolved through the service catalog: which target an alert's namespace,
deployment, statefulset, pod and node labels name, what is refused, and which object labels a
resolved fault keeps. Pure: no cluster, no Temporal."""

from __future__ import annotations

import pytest

from selfheal.core.catalog import (
    SCALE_TO_LABEL,
    ServiceCatalog,
    ServiceSpec,
    TargetSpec,
    is_pod_of,
    resolve_fault,
    resolve_workload,
)
from selfheal.domain import Fault, IntakeError

WEB = TargetSpec(name="shop-web", kind="deployment", namespace="shop", labels={"scale_to": "6"})
WEB_API = TargetSpec(name="shop-web-api", kind="deployment", namespace="shop")
DB = TargetSpec(name="db", kind="statefulset", namespace="data")
LONE = TargetSpec(name="batch-runner", kind="pod", namespace="jobs")
WORKER = TargetSpec(name="worker-1", kind="node")
NO_NAMESPACE = TargetSpec(name="legacy", kind="deployment")


def catalog() -> ServiceCatalog:
    return ServiceCatalog(
        services=[
            ServiceSpec(name="shop", targets=[WEB, WEB_API]),
            ServiceSpec(name="data", targets=[DB, LONE]),
            ServiceSpec(name="nodes", targets=[WORKER]),
            ServiceSpec(name="old", targets=[NO_NAMESPACE]),
            ServiceSpec(name="checkout", targets=[TargetSpec(name="checkout", kind="process")]),
        ]
    )


def resolved(**labels: str) -> tuple[str, str, str]:
    match = resolve_workload(labels, catalog())
    return match.service, match.target, match.label


def refusal(**labels: str) -> str:
    with pytest.raises(IntakeError) as caught:
        resolve_workload(labels, catalog())
    return str(caught.value)


class TestPodNames:
    @pytest.mark.parametrize(
        "pod",
        [
            "shop-web-7d9f8b6c5d-x2x4z",  # <deployment>-<replicaset hash>-<5>
            "shop-web-5c4d-bbbbb",  # a short hash
            "shop-web-2-zzzzz",
        ],
    )
    def test_a_deployments_pods(self, pod: str) -> None:
        assert is_pod_of(pod, WEB)

    @pytest.mark.parametrize(
        "pod",
        [
            "shop-web",  # the deployment's own name
            "shop-web-7d9f8b6c5d",  # a ReplicaSet
            "shop-web-7d9f8b6c5d-x2x4",  # 4 random characters
            "shop-web-7d9f8b6c5d-x2x4a",  # 'a' is never generated
            "shop-web-api-7d9f8b6c5d-x2x4z",  # shop-web-api's pod
            "other-shop-web-7d9f8b6c5d-x2x4z",
            "shop-web-0",  # a StatefulSet's ordinal
        ],
    )
    def test_not_a_deployments_pods(self, pod: str) -> None:
        assert not is_pod_of(pod, WEB)

    def test_a_long_deployments_pods_have_their_base_cut_to_58(self) -> None:
        long = TargetSpec(
            name="a-very-long-deployment-name-for-the-payments-api", kind="deployment"
        )
        # the apiserver cuts "<name>-<hash>-" to 58 characters, then adds 5 random ones
        base = f"{long.name}-7d9f8b6c5d-"[:58]
        assert is_pod_of(base + "x2x4z", long)
        assert not is_pod_of(base + "x2x4", long)
        longer = TargetSpec(name="n" * 60, kind="deployment")
        assert is_pod_of("n" * 58 + "bcdfg", longer)
        assert not is_pod_of("n" * 57 + "-bcdfg", longer)

    def test_a_statefulsets_pods_and_a_pod_target(self) -> None:
        assert is_pod_of("db-0", DB) and is_pod_of("db-12", DB)
        assert not any(is_pod_of(p, DB) for p in ("db", "db-01", "db-x", "db-0-abcde", "dbx-0"))
        assert is_pod_of("batch-runner", LONE) and not is_pod_of("batch-runner-0", LONE)
        assert not is_pod_of("worker-1", WORKER)


class TestResolveWorkload:
    def test_each_label_form(self) -> None:
        assert resolved(namespace="shop", deployment="shop-web") == (
            "shop",
            "shop-web",
            "deployment",
        )
        assert resolved(namespace="shop", pod="shop-web-api-7d9f8b6c5d-x2x4z") == (
            "shop",
            "shop-web-api",
            "pod",
        )
        assert resolved(namespace="data", statefulset="db") == ("data", "db", "statefulset")
        assert resolved(namespace="data", pod="db-2") == ("data", "db", "pod")
        assert resolved(namespace="jobs", pod="batch-runner") == ("data", "batch-runner", "pod")
        assert resolved(node="worker-1") == ("nodes", "worker-1", "node")

    def test_a_deployment_label_outranks_the_exporters_pod(self) -> None:
        """kube-state-metrics' scrape labels put its own pod on a deployment's alert."""
        labels = {
            "namespace": "shop",
            "deployment": "shop-web",
            "pod": "kube-state-metrics-6d8c9f7b5-abcde",
            "container": "kube-state-metrics",
        }
        assert resolved(**labels) == ("shop", "shop-web", "deployment")
        # and a deployment the catalog does not know is not saved by a pod that it does
        labels |= {"deployment": "stranger", "pod": "shop-web-7d9f8b6c5d-x2x4z"}
        assert "deployment 'stranger' in namespace 'shop'" in refusal(**labels)

    def test_a_node_alert_with_the_exporters_pod_names_the_node(self) -> None:
        labels = {"node": "worker-1", "namespace": "monitoring", "pod": "ksm-6d8c9f7b5-abcde"}
        assert resolved(**labels) == ("nodes", "worker-1", "node")

    def test_workloads_are_matched_in_their_declared_namespace_only(self) -> None:
        message = refusal(namespace="default", deployment="shop-web")
        assert message == (
            "no target of the service catalog matches deployment 'shop-web' in namespace "
            "'default': a deployment or statefulset target in its declared namespace, a pod of "
            "one, or a node target"
        )
        assert "(no namespace label)" in refusal(pod="shop-web-7d9f8b6c5d-x2x4z")
        # a target without a namespace is never matched by an alert
        assert "deployment 'legacy'" in refusal(namespace="default", deployment="legacy")

    def test_the_kind_must_agree(self) -> None:
        assert "statefulset 'shop-web'" in refusal(namespace="shop", statefulset="shop-web")
        assert "node 'shop-web'" in refusal(node="shop-web")

    def test_an_alert_naming_no_object_is_refused(self) -> None:
        assert refusal(namespace="shop", container="web") == (
            "the alert names no Kubernetes object (labels deployment, statefulset, pod, node)"
        )

    def test_labels_naming_two_targets_are_refused(self) -> None:
        message = refusal(namespace="shop", pod="shop-web-7d9f8b6c5d-x2x4z", node="worker-1")
        assert message == (
            "pod 'shop-web-7d9f8b6c5d-x2x4z' in namespace 'shop' or node 'worker-1' matches "
            "several targets of the service catalog (shop/shop-web, nodes/worker-1): a service "
            "label chooses"
        )

    def test_within_a_service(self) -> None:
        labels = {"namespace": "shop", "pod": "shop-web-7d9f8b6c5d-x2x4z", "node": "worker-1"}
        match = resolve_workload(labels, catalog(), within="shop")
        assert (match.service, match.target) == ("shop", "shop-web")
        with pytest.raises(IntakeError, match="no target of service 'data' matches"):
            resolve_workload(labels, catalog(), within="data")

    def test_long_values_are_clipped_in_the_reason(self) -> None:
        message = refusal(namespace="shop", deployment="x" * 500)
        assert len(message) < 300 and "…" in message


def fault(target: str, **labels: str) -> Fault:
    service = next(s.name for s in catalog().services if s.target(target) is not None)
    return Fault(service=service, type="KubePodCrashLooping", target=target, labels=labels)


class TestResolvedLabels:
    def test_a_pod_of_the_workload_is_kept_with_its_container(self) -> None:
        pod = "shop-web-7d9f8b6c5d-x2x4z"
        kept = resolve_fault(fault("shop-web", pod=pod, container="web", node="n1"), catalog())
        assert kept.labels == {"namespace": "shop", "pod": pod, "container": "web", "scale_to": "6"}

    def test_another_pod_and_any_node_are_dropped(self) -> None:
        foreign = fault("shop-web", pod="ksm-6d8c9f7b5-abcde", container="ksm", node="n1", k="v")
        assert resolve_fault(foreign, catalog()).labels == {
            "namespace": "shop",
            "k": "v",
            "scale_to": "6",
        }

    def test_a_node_target_has_its_own_name_as_node(self) -> None:
        node = fault("worker-1", node="worker-9", pod="ksm-6d8c9f7b5-abcde", container="ksm")
        assert resolve_fault(node, catalog()).labels == {"node": "worker-1"}
        assert resolve_fault(fault("worker-1"), catalog()).labels == {"node": "worker-1"}

    def test_scale_to_comes_from_the_catalog_only(self) -> None:
        assert SCALE_TO_LABEL == "scale_to"
        asked = resolve_fault(fault("shop-web-api", scale_to="500"), catalog())
        assert "scale_to" not in asked.labels
        assert resolve_fault(fault("shop-web", scale_to="500"), catalog()).labels["scale_to"] == "6"

    def test_other_kinds_keep_their_labels(self) -> None:
        process = resolve_fault(fault("checkout", pod="api-1", node="n1"), catalog())
        assert process.labels == {"pod": "api-1", "node": "n1"}

    def test_resolving_twice_changes_nothing(self) -> None:
        for original in (
            fault("shop-web", pod="shop-web-7d9f8b6c5d-x2x4z", container="web"),
            fault("shop-web", pod="ksm-6d8c9f7b5-abcde", container="ksm"),
            fault("worker-1", node="worker-9"),
            fault("db", pod="db-0"),
        ):
            once = resolve_fault(original, catalog())
            assert resolve_fault(once, catalog()) == once
