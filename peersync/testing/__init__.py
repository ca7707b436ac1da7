"""Test support shipped with peersync: a loopback sshd, wired workspace pairs, in-process pairs, tree oracles, a workspace generator."""

from importlib import import_module

# Imported on first use, so that scripts needing only the generator run without peersync's dependencies.
_EXPORTS = {
    "LoopbackSSHD": "sshd", "SSHDError": "sshd",
    "WorkspacePair": "pair", "default_remote_command": "pair", "wire_pair": "pair",
    "is_selected": "trees", "selection_files": "trees", "tree_digest": "trees",
    "generate": "workspace_gen", "mutate": "workspace_gen", "session_log": "workspace_gen",
    "AgentWire": "wire",
    "sync_local": "inprocess", "S3Server": "s3", "CountingProxy": "s3",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'peersync.testing' has no attribute {name!r}")
    return getattr(import_module(f"peersync.testing.{_EXPORTS[name]}"), name)
