"""A synthetic world with planted structure: users with hidden tastes over categories consume items.

It needs nothing downloaded, so the demo and most tests run on it. Each user has a Dirichlet taste over
categories and an activity level; each item a category (sometimes two), a quality that drives global
popularity, a provider, a length and a creation time (some arrive during the window). In each session a
user picks items by taste and quality (a share of picks ignores taste); each pick is a ``view`` that may
become a ``click``, a ``complete``, a ``rating`` (1-5, higher for matching tastes) and a ``like``.
Everything is drawn from one seeded generator: the same config gives the same dataset.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import Field

from tastemaker.clock import US_PER_SECOND, to_us
from tastemaker.config import ConfigModel
from tastemaker.data.dataset import Dataset

__all__ = ["CATEGORY_NAMES", "SyntheticConfig", "generate"]

CATEGORY_NAMES = (
    "Action", "Comedy", "Drama", "Documentary", "Sci-Fi", "Horror", "Romance", "Animation", "Thriller",
    "Jazz", "Rock", "Classical", "Cooking", "Travel", "Science", "History", "Sports", "Fantasy", "Crime",
    "Music", "Nature", "Tech", "Kids", "Mystery",
)  # fmt: skip
_WORDS = (
    "night", "river", "signal", "garden", "engine", "echo", "harbor", "summit", "orbit", "lantern",
    "mirror", "meadow", "circuit", "ember", "atlas", "canyon", "violet", "compass", "harvest", "tide",
)  # fmt: skip
DAY_US = 86_400 * US_PER_SECOND


class SyntheticConfig(ConfigModel):
    n_users: int = Field(2_000, ge=1)
    n_items: int = Field(1_500, ge=2)
    n_categories: int = Field(12, ge=2, le=len(CATEGORY_NAMES))
    n_providers: int = Field(60, ge=1)
    days: int = Field(56, ge=1)
    start: str = "2026-01-05T00:00:00+00:00"
    sessions_per_user: float = Field(6.0, gt=0)
    picks_per_session: float = Field(4.0, ge=1)
    taste_concentration: float = Field(0.25, gt=0)
    exploration: float = Field(0.1, ge=0, le=1)
    new_item_share: float = Field(0.2, ge=0, le=1)
    seed: int = 7


def generate(config: SyntheticConfig | None = None) -> Dataset:
    """Generate a dataset (items, users, events) from ``config``."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng(cfg.seed)
    start, end = to_us(cfg.start), to_us(cfg.start) + cfg.days * DAY_US
    items = _items(cfg, rng, start)
    users, tastes = _users(cfg, rng, start)
    events = _events(cfg, rng, items, users, tastes, start, end)
    return Dataset(name=f"synthetic:seed={cfg.seed}", events=events, items=items, users=users)


def _items(cfg: SyntheticConfig, rng: np.random.Generator, start: int) -> pd.DataFrame:
    n, c = cfg.n_items, cfg.n_categories
    primary = rng.choice(c, size=n, p=rng.dirichlet(np.full(c, 4.0)))
    second = rng.integers(0, c, size=n)
    second = np.where((rng.random(n) < 0.3) & (second != primary), second, -1)
    is_new = rng.random(n) < cfg.new_item_share
    created = np.where(
        is_new,
        start + (rng.random(n) * cfg.days * DAY_US),
        start - (30 + rng.random(n) * 700) * DAY_US,
    ).astype(np.int64)
    provider_p = 1.0 / np.arange(1, cfg.n_providers + 1) ** 1.1
    provider = rng.choice(cfg.n_providers, size=n, p=provider_p / provider_p.sum())
    length = np.round(rng.lognormal(np.log(30), 0.6, size=n)).astype(int) + 1
    words = rng.choice(len(_WORDS), size=(n, 3))
    names = [CATEGORY_NAMES[i] for i in range(c)]
    return pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n)],
        "title": [f"{_WORDS[w[0]].title()} {_WORDS[w[1]].title()} {i}" for i, w in enumerate(words)],
        "text": [f"{names[p]} {_WORDS[w[1]]} {_WORDS[w[2]]}" for p, w in zip(primary, words, strict=True)],
        "categories": [[names[p]] + ([names[s]] if s >= 0 else []) for p, s in zip(primary, second, strict=True)],
        "provider": [f"p{p}" for p in provider],
        "created_at_us": created,
        "available": True,
        "attributes": [{"length_min": int(m), "quality": round(float(q), 4)}
                       for m, q in zip(length, rng.lognormal(0.0, 1.0, size=n), strict=True)],
    })  # fmt: skip


def _users(cfg: SyntheticConfig, rng: np.random.Generator, start: int) -> tuple[pd.DataFrame, np.ndarray]:
    n, c = cfg.n_users, cfg.n_categories
    tastes = rng.dirichlet(np.full(c, cfg.taste_concentration), size=n)
    joined_late = rng.random(n) < 0.2
    signup = np.where(
        joined_late, start + rng.random(n) * cfg.days * DAY_US * 0.8, start - rng.random(n) * 365 * DAY_US
    ).astype(np.int64)
    top = np.argsort(-tastes, axis=1)[:, :2]
    onboarded = rng.random(n) < 0.4
    attrs = [
        {"mobile_share": round(float(m), 3),
         **({"preferred_categories": [CATEGORY_NAMES[t] for t in row]} if on else {})}
        for m, row, on in zip(rng.beta(2, 2, size=n), top, onboarded, strict=True)
    ]  # fmt: skip
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(n)], "created_at_us": signup, "attributes": attrs})
    return users, tastes


def _events(
    cfg: SyntheticConfig,
    rng: np.random.Generator,
    items: pd.DataFrame,
    users: pd.DataFrame,
    tastes: np.ndarray,
    start: int,
    end: int,
) -> pd.DataFrame:
    names = {name: i for i, name in enumerate(CATEGORY_NAMES)}
    primary = np.array([names[cats[0]] for cats in items["categories"]])
    quality = np.array([a["quality"] for a in items["attributes"]])
    created = items["created_at_us"].to_numpy()
    length_us = np.array([a["length_min"] for a in items["attributes"]]) * 60 * US_PER_SECOND
    by_cat = [np.flatnonzero(primary == k) for k in range(cfg.n_categories)]
    cum_by_cat = [np.cumsum(quality[ix]) for ix in by_cat]
    cum_all = np.cumsum(quality)
    signup = users["created_at_us"].to_numpy()
    mobile = np.array([a["mobile_share"] for a in users["attributes"]])
    activity = rng.lognormal(0.0, 0.6, size=cfg.n_users)

    parts = []
    for u in range(cfg.n_users):
        first = max(int(signup[u]), start)
        n_sessions = 1 + rng.poisson(cfg.sessions_per_user * activity[u])
        session_at = np.sort(first + (rng.random(n_sessions) * (end - first)).astype(np.int64))
        picks = 1 + rng.poisson(cfg.picks_per_session - 1, size=n_sessions)
        at = np.repeat(session_at, picks) + np.concatenate([np.arange(p) for p in picks]) * 600 * US_PER_SECOND
        cats = rng.choice(cfg.n_categories, size=at.size, p=tastes[u])
        chosen = np.empty(at.size, dtype=np.int64)
        for k in np.unique(cats):
            sel = cats == k
            if by_cat[k].size == 0:
                chosen[sel] = np.searchsorted(cum_all, rng.random(sel.sum()) * cum_all[-1])
                continue
            draws = rng.random(sel.sum()) * cum_by_cat[k][-1]
            chosen[sel] = by_cat[k][np.searchsorted(cum_by_cat[k], draws)]
        explore = rng.random(at.size) < cfg.exploration
        chosen[explore] = np.searchsorted(cum_all, rng.random(explore.sum()) * cum_all[-1])
        keep = created[chosen] <= at  # an item cannot be picked before it exists
        parts.append((u, at[keep], chosen[keep]))

    user_ix = np.concatenate([np.full(p[1].size, p[0]) for p in parts])
    at = np.concatenate([p[1] for p in parts])
    item_ix = np.concatenate([p[2] for p in parts])
    affinity = np.log(cfg.n_categories * tastes[user_ix, primary[item_ix]] + 0.05)
    n = at.size
    clicked = rng.random(n) < _sigmoid(-0.3 + 1.0 * affinity)
    completed = clicked & (rng.random(n) < _sigmoid(0.2 + 0.8 * affinity))
    rated = completed & (rng.random(n) < 0.4)
    stars = np.clip(np.round(3.2 + 0.7 * affinity + rng.normal(0, 0.8, n)), 1, 5)
    liked = rated & (stars >= 4) & (rng.random(n) < 0.5)
    device = np.where(rng.random(n) < mobile[user_ix], "mobile", "desktop")

    done_at = at + length_us[item_ix]
    blocks = [
        ("view", np.ones(n, bool), at, np.nan),
        ("click", clicked, at + 5 * US_PER_SECOND, np.nan),
        ("complete", completed, done_at, np.nan),
        ("rating", rated, done_at + 30 * US_PER_SECOND, stars),
        ("like", liked, done_at + 40 * US_PER_SECOND, np.nan),
    ]
    frames = []
    for kind, mask, when, value in blocks:
        value_arr = np.broadcast_to(value, (n,))
        frames.append(pd.DataFrame({
            "user_ix": user_ix[mask], "item_ix": item_ix[mask], "type": kind,
            "value": value_arr[mask], "timestamp_us": when[mask], "device": device[mask],
        }))  # fmt: skip
    ev = pd.concat(frames, ignore_index=True)
    ev = ev[ev["timestamp_us"] < end]
    # One rating per user and item: a second rating of the same item would overwrite the first anyway.
    ev = ev[~((ev["type"] == "rating") & ev.duplicated(["user_ix", "item_ix", "type"]))]
    ev = ev.sort_values(["timestamp_us", "user_ix", "item_ix", "type"], kind="stable", ignore_index=True)
    return pd.DataFrame({
        "event_id": [f"syn{cfg.seed}-{i}" for i in range(len(ev))],
        "user_id": users["user_id"].to_numpy()[ev["user_ix"].to_numpy()],
        "item_id": items["item_id"].to_numpy()[ev["item_ix"].to_numpy()],
        "type": ev["type"].to_numpy(),
        "value": ev["value"].to_numpy(dtype=float),
        "timestamp_us": ev["timestamp_us"].to_numpy(dtype=np.int64),
        "context": [{"device": d} for d in ev["device"]],
    })  # fmt: skip


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
