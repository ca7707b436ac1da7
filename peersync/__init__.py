"""peersync: keeps the memory of several AI-agent workspaces identical over SSH."""

__version__ = "0.1.0"
