"""The terminal adapter: one-shot generation and a chat where each line is a turn."""

from bots.shell.terminal import TerminalAdapter, run_chat

__all__ = ["TerminalAdapter", "run_chat"]
