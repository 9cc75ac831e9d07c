"""AgentOS audit: tamper-evident projection of the event log, analyst queries, causal traces, replay, export."""

from agentos_audit.service import DURABLE, FILTERS, NAME, main, setup

__all__ = ["DURABLE", "FILTERS", "NAME", "main", "setup"]
