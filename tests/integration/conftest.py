"""Fixtures shared by the integration modules. The Kubernetes control plane is one per session
(it binds 127.0.0.1:6443): defined once here, not imported into each module, which would make
pytest start one per module."""

from tests.integration.k8s_cluster import admin_api, k8s_cluster

__all__ = ["admin_api", "k8s_cluster"]
