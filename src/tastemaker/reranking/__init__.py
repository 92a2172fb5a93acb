"""Layer 3: re-ranking — a configured chain of filters, business rules, diversity, freshness, fairness,
fatigue and exploration stages over one request's ranked candidates (see :mod:`.base` for the contract)."""

from tastemaker.reranking.base import Catalog, Feedback, NoFeedback, Request, Reranker, Seen, Slate
from tastemaker.reranking.chain import Chain, RerankConfig, default_stages
from tastemaker.reranking.feedback import FeedbackLog

__all__ = [
    "Catalog",
    "Chain",
    "Feedback",
    "FeedbackLog",
    "NoFeedback",
    "Request",
    "RerankConfig",
    "Reranker",
    "Seen",
    "Slate",
    "default_stages",
]
