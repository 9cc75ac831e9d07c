"""AgentOS policy: the decision point for every model call, tool call, memory write and outside action."""
