"""Layer 1: candidate sources behind one interface (``CandidateSource``)."""

from tastemaker.candidates.als import ALS, ALSConfig, ImplicitALS
from tastemaker.candidates.ann import AnnConfig, VectorIndex
from tastemaker.candidates.base import CandidateSource, History, pad_results, top_n
from tastemaker.candidates.popular import Popularity
from tastemaker.candidates.random_ import RandomSource

__all__ = [
    "ALS",
    "ALSConfig",
    "AnnConfig",
    "CandidateSource",
    "History",
    "ImplicitALS",
    "Popularity",
    "RandomSource",
    "VectorIndex",
    "pad_results",
    "top_n",
]
