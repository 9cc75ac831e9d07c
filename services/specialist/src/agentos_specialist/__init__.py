"""AgentOS specialist runtime: agents defined by charters, model calls through litellm."""
