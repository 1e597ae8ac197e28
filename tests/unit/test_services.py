"""The service catalog: loader errors that say where, and faults resolved through the catalog."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from selfheal.core.catalog import ServiceCatalog, load_services, resolve_fault, scoped_fingerprint
from selfheal.domain import ConfigError, Fault, IntakeError
from selfheal.domain.fault import fingerprint_of

REPO = Path(__file__).resolve().parents[2]

VALID = """\
correlation_window_s: 120
services:
  - name: db
    targets:
      - name: db-primary
        kind: postgres
  - name: checkout
    depends_on: [db]
    targets:
      - name: checkout-web
        kind: deployment
        namespace: shop
        health_url: http://checkout.shop/healthz
        base_url: http://checkout.shop
      - name: checkout-cache
        kind: redis
    default_target: checkout-cache
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_services(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:"), message
    return message.removeprefix(f"{path}:")


class TestLoad:
    def test_loads_a_valid_file(self, tmp_path: Path) -> None:
        catalog = load_services(write(tmp_path, VALID))
        assert catalog.correlation_window_s == 120
        assert [s.name for s in catalog.services] == ["db", "checkout"]
        assert catalog.dependencies("checkout") == ["db"]

    def test_the_committed_catalog_loads(self) -> None:
        catalog = load_services(REPO / "runbooks" / "services.yaml")
        assert catalog.get("checkout") is not None

    def test_model_errors_name_line_service_and_field(self, tmp_path: Path) -> None:
        message = load_error(
            tmp_path,
            """\
            services:
              - name: db
                targets:
                  - name: db-primary
                    kind: postgress
            """,
        )
        assert message.startswith("5: services[0] (db): targets.0.kind: "), message
        assert "'postgres'" in message

    def test_unknown_fields_are_refused_with_their_line(self, tmp_path: Path) -> None:
        message = load_error(
            tmp_path,
            """\
            services:
              - name: db
                budget_per_hour: 3
                cooldown: 60
            """,
        )
        assert message.startswith("4: services[0] (db): cooldown: "), message
        assert "not permitted" in message

    def test_unknown_dependency(self, tmp_path: Path) -> None:
        message = load_error(
            tmp_path,
            """\
            services:
              - name: db
              - name: checkout
                depends_on:
                  - db
                  - dbx
            """,
        )
        assert message == (
            "6: services[1] (checkout): depends_on.1: unknown service 'dbx' (known: db, checkout)"
        )

    def test_dependency_cycle_is_named(self, tmp_path: Path) -> None:
        message = load_error(
            tmp_path,
            """\
            services:
              - name: a
                depends_on: [b]
              - name: b
                depends_on: [c]
              - name: c
                depends_on: [a]
            """,
        )
        assert message == "3: services[0] (a): depends_on: dependency cycle: a -> b -> c -> a"

    def test_a_service_depending_on_itself_is_a_cycle(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, "services:\n  - name: a\n    depends_on: [a]\n")
        assert message == "3: services[0] (a): depends_on: dependency cycle: a -> a"

    def test_duplicate_service(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, "services:\n  - name: a\n  - name: a\n")
        assert message == "3: services[1] (a): name: service 'a' is declared twice"

    def test_default_target_must_be_a_target(self, tmp_path: Path) -> None:
        message = load_error(
            tmp_path,
            """\
            services:
              - name: a
                targets: [{name: web, kind: http}]
                default_target: api
            """,
        )
        assert message == (
            "4: services[0] (a): default_target: 'api' is not a target of 'a' (targets: web)"
        )

    def test_service_names_must_be_plain(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, "services:\n  - name: \"a' OR 'x\"\n")
        assert message.startswith("2: services[0] (a' OR 'x): name: expected 1-63 letters"), message

    def test_duplicate_keys_are_refused(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, "services:\n  - name: a\n    name: b\n")
        assert message == "3: not valid YAML: key 'name' appears twice"

    def test_invalid_yaml_names_the_line(self, tmp_path: Path) -> None:
        message = load_error(tmp_path, "services:\n  - name: [a\n")
        assert re.match(r"^\d+: not valid YAML: ", message), message

    def test_a_missing_file_is_a_config_error(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="cannot read the service catalog"):
            load_services(tmp_path / "nope.yaml")


def catalog() -> ServiceCatalog:
    return ServiceCatalog.model_validate(
        {
            "services": [
                {"name": "db", "targets": [{"name": "db-primary", "kind": "postgres"}]},
                {
                    "name": "checkout",
                    "depends_on": ["db"],
                    "targets": [
                        {
                            "name": "checkout-web",
                            "kind": "deployment",
                            "namespace": "shop",
                            "health_url": "http://checkout.shop/healthz",
                            "base_url": "http://checkout.shop",
                        },
                        {"name": "checkout-cache", "kind": "redis"},
                    ],
                    "default_target": "checkout-web",
                },
                {"name": "lonely"},
            ]
        }
    )


def fault(**fields: object) -> Fault:
    return Fault.model_validate({"service": "checkout", "type": "errors_high"} | fields)


class TestResolve:
    def test_no_target_takes_the_default_and_its_urls(self) -> None:
        resolved = resolve_fault(fault(), catalog())
        assert resolved.target == "checkout-web"
        assert resolved.health_url == "http://checkout.shop/healthz"
        assert resolved.labels == {"base_url": "http://checkout.shop", "namespace": "shop"}

    def test_outside_labels_and_urls_never_steer_an_action(self) -> None:
        resolved = resolve_fault(
            fault(
                target="checkout-web",
                health_url="http://evil.example/healthz",
                labels={"base_url": "http://evil.example", "namespace": "kube-system", "k": "v"},
            ),
            catalog(),
        )
        assert resolved.health_url == "http://checkout.shop/healthz"
        assert resolved.labels == {
            "base_url": "http://checkout.shop",
            "namespace": "shop",
            "k": "v",
        }

    def test_catalog_labels_are_dropped_when_the_target_declares_none(self) -> None:
        resolved = resolve_fault(
            fault(
                target="checkout-cache",
                health_url="http://evil.example/healthz",
                labels={"base_url": "http://evil.example", "namespace": "x"},
            ),
            catalog(),
        )
        assert resolved.health_url is None
        assert resolved.labels == {}

    def test_unknown_service_is_refused(self) -> None:
        with pytest.raises(IntakeError) as caught:
            resolve_fault(fault(service="payments"), catalog())
        assert str(caught.value) == "unknown service 'payments' (known: checkout, db, lonely)"

    def test_target_outside_the_allowlist_is_refused(self) -> None:
        with pytest.raises(IntakeError) as caught:
            resolve_fault(fault(target="db-primary"), catalog())
        assert str(caught.value) == (
            "target 'db-primary' is not a target of service 'checkout' "
            "(allowed: checkout-web, checkout-cache)"
        )

    def test_a_service_without_targets_is_refused(self) -> None:
        with pytest.raises(IntakeError, match="'lonely' declares no target"):
            resolve_fault(fault(service="lonely"), catalog())

    def test_derived_fingerprint_is_derived_from_the_resolved_target(self) -> None:
        resolved = resolve_fault(fault(), catalog())
        assert resolved.fingerprint == fingerprint_of("checkout", "errors_high", "checkout-web")
        named = resolve_fault(fault(target="checkout-web"), catalog())
        assert named.workflow_id == resolved.workflow_id

    def test_upstream_fingerprint_is_kept_and_scoped_to_the_target(self) -> None:
        web = resolve_fault(fault(fingerprint="a1b2c3d4e5f60718"), catalog())
        cache = resolve_fault(
            fault(fingerprint="a1b2c3d4e5f60718", target="checkout-cache"), catalog()
        )
        assert web.fingerprint == "a1b2c3d4e5f60718-checkout-web"
        assert cache.fingerprint == "a1b2c3d4e5f60718-checkout-cache"

    def test_resolving_twice_changes_nothing(self) -> None:
        for original in (fault(), fault(fingerprint="a1b2c3d4e5f60718", target="checkout-cache")):
            once = resolve_fault(original, catalog())
            assert resolve_fault(once, catalog()) == once

    def test_scoped_fingerprints_stay_valid_and_distinct(self) -> None:
        targets = ("web/1", "web/2", "x" * 41)
        odd = [scoped_fingerprint("f" * 128, t) for t in targets]
        assert len(set(odd)) == 3
        for value, target in zip(odd, targets, strict=True):
            assert Fault(service="s", type="t", fingerprint=value).fingerprint == value
            assert scoped_fingerprint(value, target) == value
