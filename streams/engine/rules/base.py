"""What a rule is: the interface each rule module implements.

A rule decides, for one trigger event and the state at the trigger's time, whether
it fires and on which evidence. The engine knows no rule by name: it loops over the
registry (`streams.engine.rules.REGISTRY`), asking each rule which triggers it judges,
in which stage, and which late events can change a decision it took.

Stages: a rule about the past (`STAGE_PAST`) is decided once the watermark passes
the trigger's time; a notice rule (`STAGE_NOTICE`) once it passes that time plus
`notice_grace`. A notice rule must be monotone (more events can only stop it
firing), so the engine settles it early when it does not fire at the past's decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from mypy_extensions import mypyc_attr

from streams.engine.params import EngineParams
from streams.engine.state import STAGE_NOTICE, STAGE_PAST, AccountState, SubjectState
from streams.model.events import EnrichmentRequested, Event, ProfileViewed

__all__ = ["STAGES", "FindingAlert", "Rule", "Verdict"]

STAGES = (STAGE_PAST, STAGE_NOTICE)

# None: the rule does not fire. Else the evidence event ids (in the rule's order) and
# the context its catalogue explanation is formatted with (non-personal fields only).
Verdict = tuple[tuple[str, ...], dict[str, Any]] | None

T = TypeVar("T", EnrichmentRequested, ProfileViewed)


@dataclass(frozen=True, slots=True)
class FindingAlert:
    """How Prometheus alerts on a rule's findings. The findings group of
    deploy/prometheus/alerts.yml is generated from these (`python -m streams.cli.docs_cmd`);
    the runbook is docs/runbooks/<the alert's name in kebab case>.md."""

    name: str  # e.g. ConsentwatchPseudonymDeanonymized
    why: str  # the reasoning behind the threshold, written above the alert
    summary: str
    description: str  # may use {{ $value }} and, when by_provider, {{ $labels.provider }}
    threshold: int = 0  # fires on more than this many new findings in `window`
    window: str = "10m"
    by_provider: bool = True  # one alert per provider, or one for all together
    severity: str = "critical"  # critical pages, warning opens a ticket


# A rule may be written outside the compiled package (a plug-in, a test's toy rule).
@mypyc_attr(allow_interpreted_subclasses=True)
class Rule(Generic[T]):
    """One rule of the catalogue; subclasses override `decide` and `affected_by`, and
    `applies` when the rule judges only some triggers of its type."""

    def __init__(self, rule_id: str, stage: int, trigger: type[T], *,
                 reads_account: bool = False, alert: FindingAlert | None = None) -> None:
        self.id = rule_id  # its catalogue id (streams/catalogue/rules.toml)
        self.stage = stage
        self.trigger: type[T] = trigger  # the event type it judges
        # Decides from the account's state (feature toggles): the engine then looks the
        # account up, and routes late account events to the subjects it decided for.
        self.reads_account = reads_account
        self.alert = alert

    def applies(self, trigger: T) -> bool:
        """Whether the rule judges this trigger at all (no outcome is recorded if not)."""
        return True

    def decide(self, trigger: T, state: SubjectState, account: AccountState | None,
               params: EngineParams) -> Verdict:
        """Whether the rule fires for `trigger`, from the state at the trigger's time."""
        raise NotImplementedError

    def affected_by(self, trigger: T, late: Event) -> bool:
        """Whether a late `late` event could change the decision taken for `trigger`."""
        raise NotImplementedError
