"""Layer 1: candidate sources behind one interface (``CandidateSource``)."""

from tastemaker.candidates.base import CandidateSource, pad_results
from tastemaker.candidates.implicit_als import ImplicitALS
from tastemaker.candidates.popular import Popularity
from tastemaker.candidates.random_ import RandomSource

__all__ = ["CandidateSource", "ImplicitALS", "Popularity", "RandomSource", "pad_results"]
