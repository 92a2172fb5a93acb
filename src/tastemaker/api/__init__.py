"""The HTTP API (FastAPI)."""

from tastemaker.api.app import check_bind, create_app

__all__ = ["check_bind", "create_app"]
