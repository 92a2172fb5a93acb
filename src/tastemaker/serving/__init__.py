"""Serving, in-process: the request path behind the HTTP API and the CLI's ``recommend``."""

from tastemaker.serving.holdout import CONTROL, PERSONALIZED, assign
from tastemaker.serving.service import ListItem, ListRequest, Recommender, ServedList
from tastemaker.serving.settings import ApiKey, HoldoutConfig, LimitsConfig, ServerSettings, parse_api_keys

__all__ = [
    "CONTROL", "PERSONALIZED", "ApiKey", "HoldoutConfig", "LimitsConfig", "ListItem", "ListRequest", "Recommender",
    "ServedList", "ServerSettings", "assign", "parse_api_keys",
]  # fmt: skip
