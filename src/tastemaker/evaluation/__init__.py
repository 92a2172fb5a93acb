"""Offline evaluation on published protocols."""

from tastemaker.evaluation.harness import evaluate, score_lists
from tastemaker.evaluation.models import MODELS, make_model
from tastemaker.evaluation.report import result_table

__all__ = ["MODELS", "evaluate", "make_model", "result_table", "score_lists"]
