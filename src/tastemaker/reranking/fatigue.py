"""Impression fatigue: items shown to the user ``min_impressions`` times or more without an engagement in
the last ``window_days`` (read from the exposure log) are demoted or filtered."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from tastemaker.config import ConfigModel
from tastemaker.reranking.base import DAY_US, Catalog, Feedback, Phase, Request, Reranker, Slate

__all__ = ["Fatigue", "FatigueConfig"]


class FatigueConfig(ConfigModel):
    stage: Literal["fatigue"] = "fatigue"
    min_impressions: int = Field(default=3, ge=1)
    window_days: float = Field(default=7.0, gt=0)
    #: ``demote`` multiplies the utility by ``factor``; ``filter`` drops the item
    action: Literal["demote", "filter"] = "demote"
    factor: float = Field(default=0.5, gt=0, lt=1)


class Fatigue(Reranker):
    phase: ClassVar[Phase] = "score"
    config_type = FatigueConfig
    config: FatigueConfig

    def tired(self, slate: Slate, request: Request, feedback: Feedback) -> np.ndarray:
        since = request.now_us - int(self.config.window_days * DAY_US)
        ignored = feedback.user_ignored(request.user, slate.items, request.now_us, since)
        return np.asarray(ignored) >= self.config.min_impressions

    def apply(self, slate: Slate, request: Request, catalog: Catalog, feedback: Feedback, seed: int) -> Slate:
        tired = self.tired(slate, request, feedback)
        if not tired.any():
            return slate
        if self.config.action == "filter":
            return slate.take(~tired)
        return slate.with_utility(np.where(tired, slate.utility * self.config.factor, slate.utility))
