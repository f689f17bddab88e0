"""Shared networks and the training engine (see the models issue)."""
