"""A local HubSpot for tests and demos, faithful to HubSpot's public API."""

from .emulator import HubSpotEmulator

__all__ = ["HubSpotEmulator"]
