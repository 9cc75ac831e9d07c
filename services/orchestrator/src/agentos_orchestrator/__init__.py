"""AgentOS orchestrator: goals to plans to tasks, tracked to completion."""
