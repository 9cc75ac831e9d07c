"""The typed event catalogue, one module per domain."""

from agentos_schemas.events import (
    erasure,  # noqa: F401  (registers the erasure fact)
    ingress,  # noqa: F401  (registers the ingress facts)
    policy,  # noqa: F401  (registers the governance facts)
)
from agentos_schemas.events._base import CATALOGUE, EventData
from agentos_schemas.events.control import (
    AgentAnnounced,
    AgentRetired,
    HaltRequested,
    ResumeRequested,
    WorkflowDeclared,
)
from agentos_schemas.events.goals import (
    GoalCompleted,
    GoalEscalated,
    GoalFailed,
    GoalHeld,
    GoalPlanned,
    GoalSubmitted,
    Limits,
    PlanStep,
)
from agentos_schemas.events.memory import MemoryCommitted, MemoryProposed, MemoryReviewed
from agentos_schemas.events.tasks import (
    ContextManifest,
    ContextReady,
    Effect,
    ModelCall,
    Settlement,
    TaskAssigned,
    TaskCompleted,
    TaskFailed,
    TaskReviewed,
    TaskStarted,
    Usage,
)

__all__ = [
    "CATALOGUE",
    "AgentAnnounced",
    "AgentRetired",
    "ContextManifest",
    "ContextReady",
    "Effect",
    "EventData",
    "GoalCompleted",
    "GoalEscalated",
    "GoalFailed",
    "GoalHeld",
    "GoalPlanned",
    "GoalSubmitted",
    "HaltRequested",
    "Limits",
    "MemoryCommitted",
    "MemoryProposed",
    "MemoryReviewed",
    "ModelCall",
    "PlanStep",
    "ResumeRequested",
    "Settlement",
    "TaskAssigned",
    "TaskCompleted",
    "TaskFailed",
    "TaskReviewed",
    "TaskStarted",
    "Usage",
    "WorkflowDeclared",
]
