"""Model artifacts (versioned folders with a manifest) and the registry that says which one is served."""

from tastemaker.models.registry import Artifact, Registry, load_engine, save_engine, train

__all__ = ["Artifact", "Registry", "load_engine", "save_engine", "train"]
