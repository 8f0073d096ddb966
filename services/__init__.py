"""Reusable Executors and the example apps built from meshflow's public API."""
