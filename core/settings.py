"""The one place that reads the environment: ``SELFHEAL_*``, nested groups with ``__``.

Example: ``SELFHEAL_DATABASE__URL=postgresql+psycopg://...``, ``SELFHEAL_TEMPORAL__ADDRESS=...``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

import selfheal
from selfheal.domain import HealingPolicy, RiskLevel
from selfheal.workflows.contract import TASK_QUEUE


class TemporalSettings(BaseModel):
    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = TASK_QUEUE
    tls: bool = False
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    tls_ca_path: Path | None = None
    api_key: str | None = Field(default=None, repr=False)


class DatabaseSettings(BaseModel):
    url: str | None = Field(
        default=None, description="SQLAlchemy URL; unset means an embedded Postgres under data_dir"
    )
    pool_size: int = 5


class WorkerSettings(BaseModel):
    metrics_port: int = Field(default=9464, description="0 disables the SDK metrics endpoint")
    kb_metrics_port: int = Field(
        default=9465,
        ge=0,
        le=65535,
        description="the knowledge base's figures (success rates, hit rates) for Prometheus; "
        "0 disables the endpoint",
    )
    max_concurrent_activities: int = 100
    max_concurrent_workflow_tasks: int = 100
    graceful_shutdown_s: float = 30.0


class HealingSettings(BaseModel):
    approval_min_confidence: float = 0.7
    approval_min_risk: RiskLevel = RiskLevel.HIGH
    approval_margin: float = Field(
        default=0.1, ge=0, le=1, description="top two hypotheses closer than this: ask a human"
    )
    approval_timeout_s: float = 1800.0
    max_candidates: int = 3
    stabilization_window_s: float = 30.0
    validation_grace_s: float = Field(
        default=10.0, ge=0, description="the target has this long to recover after the steps"
    )
    probe_interval_s: float = 5.0
    step_heartbeat_timeout_s: float = 15.0
    dry_run: bool = False
    approvers: list[str] = Field(
        default_factory=list,
        description="who may approve any healing (JSON list); a service's 'approval.approvers' "
        "narrows it; empty: anyone who may send the update",
    )
    approval_reminder_s: float = Field(
        default=900.0, ge=0, description="notify again while an approval waited this long; 0: off"
    )
    read_retry_max_s: float = Field(
        default=600.0, gt=0, description="reads (Postgres, evidence) outlast outages this long"
    )
    guard_interval_s: float = Field(default=5.0, gt=0, description="side-effect guards, polled")
    breaker_open_s: float = Field(default=30.0, gt=0, description="a breaker's first open period")
    breaker_backoff: float = Field(default=2.0, ge=1, description="open period multiplier")
    breaker_max_open_s: float = Field(default=600.0, gt=0)
    breaker_max_cycles: int = Field(
        default=5, ge=1, description="half-open probes before escalating with the breaker open"
    )
    predicted_approval: bool = Field(
        default=True, description="a predicted fault (forecast) asks a human before acting"
    )
    predicted_approval_timeout_s: float = Field(
        default=43_200.0, gt=0, description="a predicted fault's approval waits this long"
    )
    suppression_s: float | None = Field(
        default=None,
        ge=0,
        description="after its outcome a healing answers for its fingerprint this long "
        "(repeats counted, nothing started); unset: the service's cooldown, at least 300 s; "
        "0: off",
    )

    def policy(self, *, notify: bool) -> HealingPolicy:
        return HealingPolicy(
            approval_min_confidence=self.approval_min_confidence,
            approval_min_risk=self.approval_min_risk,
            approval_margin=self.approval_margin,
            approval_timeout_s=self.approval_timeout_s,
            max_candidates=self.max_candidates,
            stabilization_window_s=self.stabilization_window_s,
            validation_grace_s=self.validation_grace_s,
            probe_interval_s=self.probe_interval_s,
            step_heartbeat_timeout_s=self.step_heartbeat_timeout_s,
            dry_run=self.dry_run,
            notify=notify,
            approval_reminder_s=self.approval_reminder_s,
            read_retry_max_s=self.read_retry_max_s,
            guard_interval_s=self.guard_interval_s,
            breaker_open_s=self.breaker_open_s,
            breaker_backoff=self.breaker_backoff,
            breaker_max_open_s=self.breaker_max_open_s,
            breaker_max_cycles=self.breaker_max_cycles,
            predicted_approval=self.predicted_approval,
            predicted_approval_timeout_s=self.predicted_approval_timeout_s,
        )


class NotifySettings(BaseModel):
    webhook_url: str | None = Field(
        default=None, description="Slack-compatible incoming webhook", repr=False
    )
    timeout_s: float = 5.0
    pagerduty_routing_key: str | None = Field(
        default=None, description="PagerDuty Events API v2 integration key", repr=False
    )
    pagerduty_url: str = Field(
        default="https://events.pagerduty.com/v2/enqueue",
        description="Events API v2 endpoint (a local receiver in tests)",
    )
    temporal_ui_url: str | None = Field(
        default=None,
        description="base URL of the Temporal UI for links in notifications, e.g. "
        "http://127.0.0.1:8233; unset: no link",
    )


class LearningSettings(BaseModel):
    """How the knowledge base ranks candidate solutions (Thompson sampling)."""

    half_life_s: float = Field(
        default=30 * 86400.0, gt=0, description="an outcome counts half after this long"
    )
    min_service_attempts: float = Field(
        default=5.0,
        ge=0,
        description="below this many (decayed) attempts on a service, a solution is ranked by "
        "its global counts",
    )


class ProbeSettings(BaseModel):
    timeout_s: float = 3.0


class SupervisorSettings(BaseModel):
    url: str = Field(
        default="http://127.0.0.1:8781", description="control API of selfheal's process supervisor"
    )


class TelemetrySettings(BaseModel):
    otlp_endpoint: str | None = Field(
        default=None, description="OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces"
    )
    service_name: str = "selfheal"


class IntakeSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8700
    # token -> scopes ("ingest", "approve"); JSON in SELFHEAL_INTAKE__TOKENS. Never logged.
    tokens: dict[str, list[str]] = Field(default_factory=dict, repr=False)
    max_body_bytes: int = 1_048_576
    error_traces_max: int = 1000
    flush_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="at most one Temporal call per fingerprint per interval; repeats fold into it",
    )


class KubernetesSettings(BaseModel):
    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False
    wait_timeout_s: float = 120.0


class RedisSettings(BaseModel):
    url: str = "redis://127.0.0.1:6379/0"


class PostgresTargetSettings(BaseModel):
    # Named DSNs a plan's postgres.* steps may use: a plan names one, so no password ever
    # lands in a workflow history. JSON in SELFHEAL_POSTGRES_TARGETS__DSNS.
    dsns: dict[str, str] = Field(default_factory=dict, repr=False)


class GuardrailSettings(BaseModel):
    paused_behavior: Literal["wait", "escalate"] = "wait"
    pause_wait_max_s: float = 3600.0
    recheck_fault: bool = Field(
        default=True, description="re-probe the fault before each mutating step"
    )
    recheck_fresh_s: float = Field(
        default=10.0,
        ge=0,
        description="a target the watcher saw time out less than this ago is not re-probed "
        "(the probe would only wait out its timeout again)",
    )


class EvidenceSettings(BaseModel):
    """Where diagnosis looks, and how far. Each provider is bounded and fails soft."""

    prometheus_url: str | None = Field(
        default=None,
        description="Prometheus HTTP API (or Thanos, Mimir, VictoriaMetrics); unset: the recent "
        "OTLP series the intake keeps in Postgres",
    )
    alertmanager_url: str | None = Field(default=None, description="Alertmanager API v2 base URL")
    window_before_s: float = Field(default=900.0, gt=0, description="looked at before the fault")
    window_after_s: float = Field(default=120.0, ge=0, description="looked at after the fault")
    step_s: float = Field(default=15.0, gt=0, description="query_range resolution")
    metrics_lead_s: float = Field(
        default=60.0,
        gt=0,
        description="a change began this long before its detection: the metrics' 'after' "
        "window starts there (at most half of the history there is)",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="per provider")
    max_series: int = Field(default=50, ge=1, description="per query")
    max_points: int = Field(default=1000, ge=1, description="per series")
    max_bytes: int = Field(default=4_000_000, ge=1024, description="per HTTP response")
    rollout_window_s: float = Field(
        default=1800.0, ge=0, description="a rollout this recent before the fault is suspect"
    )
    traces_window_s: float = Field(
        default=300.0,
        gt=0,
        description="error traces this recent before the fault are its evidence (older ones "
        "belong to other incidents)",
    )
    traces_max: int = Field(default=2000, ge=1, description="error traces kept in Postgres")
    traces_max_age_s: float = Field(default=86400.0, gt=0)
    series_max_points: int = Field(
        default=720, ge=1, description="points kept per OTLP series in Postgres"
    )
    series_max_age_s: float = Field(default=3600.0, gt=0)
    history_max: int = Field(default=200, ge=1, description="past healings looked at")
    history_max_age_s: float = Field(default=30 * 86400.0, gt=0)


class DevSettings(BaseModel):
    data_dir: Path = Path(".selfheal")
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    target_port: int = 8780
    supervisor_port: int = 8781


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SELFHEAL_", env_nested_delimiter="__", extra="ignore"
    )

    temporal: TemporalSettings = TemporalSettings()
    database: DatabaseSettings = DatabaseSettings()
    worker: WorkerSettings = WorkerSettings()
    healing: HealingSettings = HealingSettings()
    notify: NotifySettings = NotifySettings()
    probe: ProbeSettings = ProbeSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    intake: IntakeSettings = IntakeSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    redis: RedisSettings = RedisSettings()
    postgres_targets: PostgresTargetSettings = PostgresTargetSettings()
    guardrails: GuardrailSettings = GuardrailSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    learning: LearningSettings = LearningSettings()
    dev: DevSettings = DevSettings()
    runbooks_dir: Path = Field(
        default=Path(selfheal.__file__).parent / "runbooks",
        description="rules.yaml, solutions/, services.yaml, detectors.yaml; default: the demo's, "
        "shipped with the package",
    )
    log_level: str = "INFO"
    log_format: Literal["json", "console"] | None = Field(
        default=None,
        description="unset: JSON lines, except console rendering under `selfheal dev`",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
