"""Command runners: where an engine's scheduler commands run (locally, or over SSH)."""

from offload.transport.base import CommandResult, CommandRunner
from offload.transport.local import LocalRunner

__all__ = ["CommandResult", "CommandRunner", "LocalRunner"]
