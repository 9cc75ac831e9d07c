"""The connector ring: MCP servers (and the built-in tools) as governed tools of the specialist.

``spec`` reads ``connectors/*.yaml``; ``server`` holds one MCP server's connection (the official
SDK's client); ``pins`` pins tool definitions; ``ring`` resolves a charter's tools to the
:class:`~agentos_specialist.tools.Tool` objects of the one tool path.
"""
