"""The relay node: listeners, connections, rooms' Trio side, and its backplane seam."""

from .node import RelayServer

__all__ = ["RelayServer"]
