"""The typed event catalogue, one module per domain."""

# The domain modules not imported below for their names, imported for the facts they register
# (audit, connectors, erasure, ingress, governance); the redundant aliases mark them as the package's submodules.
from agentos_schemas.events import audit as audit
from agentos_schemas.events import connectors as connectors
from agentos_schemas.events import erasure as erasure
from agentos_schemas.events import ingress as ingress
from agentos_schemas.events import policy as policy
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
