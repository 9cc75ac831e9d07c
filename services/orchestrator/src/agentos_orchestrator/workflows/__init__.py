"""Declared workflows shipped with the orchestrator (one YAML file each)."""
