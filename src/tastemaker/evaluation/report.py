"""The evaluation result as a rich table."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["result_table"]


def result_table(result: dict[str, Any]) -> Table:
    k = result["k"]
    columns = [f"ndcg@{k}", "map", f"precision@{k}", f"recall@{k}", f"hit_rate@{k}", "mrr", "coverage",
               "category_coverage", "novelty", "diversity", "gini", "fit_seconds", "recommend_seconds"]  # fmt: skip
    deep = [f"recall@{cut}" for cut in result.get("recall_at", []) if cut != k]
    columns[4:4] = deep
    table = Table(
        title=f"{result['dataset']} · {result['protocol']} · k={k} · {result['n_users_evaluated']} users evaluated",
        title_justify="left",
    )
    table.add_column("model", style="bold")
    headers = {"category_coverage": "cat. cov."}
    for col in columns:
        table.add_column(headers.get(col, col.replace("_seconds", " s")), justify="right")
    best = {c: max(r[c] for r in result["models"].values()) for c in columns[: 6 + len(deep)]}
    for name, row in result["models"].items():
        cells = []
        for col in columns:
            exact = col in best or col in ("coverage", "category_coverage", "diversity", "gini")
            text = f"{row[col]:.4f}" if exact else f"{row[col]:.2f}"
            cells.append(f"[green]{text}[/]" if col in best and row[col] == best[col] and len(result["models"]) > 1
                         else text)  # fmt: skip
        table.add_row(name, *cells)
    return table
