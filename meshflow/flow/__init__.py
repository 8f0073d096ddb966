"""Flows: graphs of Executors behind one gateway, and their local processes."""

from meshflow.flow.flow import Flow

__all__ = ["Flow"]
