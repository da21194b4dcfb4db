"""Hardware backends behind one interface, chosen at one point (:func:`detect_backends`)."""

from __future__ import annotations

from .base import Backend, HostContext, detect_backends

__all__ = ["Backend", "HostContext", "detect_backends"]
