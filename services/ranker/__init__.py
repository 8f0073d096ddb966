"""Ranker: fuses the matches of several modalities (image, text) into one ranking."""

from services.ranker.executor import Ranker, RankParams

__all__ = ["RankParams", "Ranker"]
