"""Clients of a Flow's gateway."""

from meshflow.client.client import AsyncClient, Client
from meshflow.client.messages import Response

__all__ = ["AsyncClient", "Client", "Response"]
