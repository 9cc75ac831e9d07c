# Type information for rfc3986-validator (the package ships none): the one function AgentOS uses.
import re

def validate_rfc3986(url: str, rule: str = "URI") -> re.Match[str] | None: ...
