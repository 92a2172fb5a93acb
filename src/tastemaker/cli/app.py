"""Typer commands: import, evaluate, demo, train, models, serve, recommend."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tastemaker.data.importer import ImportReport
from tastemaker.data.importer import Progress as ProgressCallback
from tastemaker.data.tabular import TimeUnit
from tastemaker.errors import InvalidBatchError, TastemakerError
from tastemaker.store import DEFAULT_URL, Mode

app = typer.Typer(help="tastemaker: a personalization engine.", no_args_is_help=True, add_completion=False)
import_app = typer.Typer(help="Import data into a store.", no_args_is_help=True)
app.add_typer(import_app, name="import")
# Tables are wide: when stdout is not a terminal (CI logs, pipes), don't squeeze them to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 180)
err = Console(stderr=True, soft_wrap=True)  # an error stays one greppable line

DbOption = Annotated[str, typer.Option("--db", help="Store URL: sqlite:///PATH or postgresql://...",
                                       envvar="TASTEMAKER_DB")]  # fmt: skip


class ModeChoice(StrEnum):
    strict = "strict"
    lenient = "lenient"


class TimeUnitChoice(StrEnum):
    s = "s"
    ms = "ms"
    us = "us"
    iso = "iso"


ModeOption = Annotated[
    ModeChoice,
    typer.Option(help="strict: a bad record rejects its batch; lenient: the others are stored and it is reported."),
]


@contextmanager
def _errors() -> Iterator[None]:
    """Library errors become one red line and exit code 1 (2 for bad input batches), never a traceback."""
    try:
        yield
    except InvalidBatchError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None
    except TastemakerError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from None


@contextmanager
def _progress() -> Iterator[ProgressCallback]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done)

        yield update


def _print_import(report: ImportReport) -> None:
    console.print(
        f"items {report.items:,} · users {report.users:,} · events accepted {report.events_accepted:,}, "
        f"duplicate {report.events_duplicate:,}, rejected {report.events_rejected:,}"
    )
    for error in report.errors[:20]:
        err.print(f"  [yellow]{error}[/]")


@import_app.command("movielens")
def import_movielens(
    path: Annotated[Path, typer.Argument(help="A MovieLens folder (ml-latest*, ml-100k or ml-1m layout).")],
    db: DbOption = DEFAULT_URL,
    batch_size: Annotated[int, typer.Option(min=1)] = 5_000,
    mode: ModeOption = ModeChoice.strict,
) -> None:
    """Import a MovieLens folder; running it again changes nothing."""
    from tastemaker.data import import_dataset, read_movielens
    from tastemaker.store import open_store

    with _errors():
        dataset = read_movielens(path)
        with open_store(db) as store, _progress() as progress:
            report = import_dataset(
                store, dataset, batch_size=batch_size, mode=cast(Mode, mode.value), progress=progress
            )
        _print_import(report)


@import_app.command("events")
def import_events(
    path: Annotated[Path, typer.Argument(help="A .csv, .tsv or .parquet file of events.")],
    map_: Annotated[list[str] | None, typer.Option("--map", help="FIELD=COLUMN, e.g. user_id=customer")] = None,
    event_type: Annotated[str | None, typer.Option("--type", help="Event type when the file has none.")] = None,
    time_unit: Annotated[
        TimeUnitChoice, typer.Option(help="Unit of numeric timestamps; iso for text.")
    ] = TimeUnitChoice.s,
    db: DbOption = DEFAULT_URL,
    batch_size: Annotated[int, typer.Option(min=1)] = 5_000,
    mode: ModeOption = ModeChoice.strict,
) -> None:
    """Import events from a table file with a column mapping."""
    from tastemaker.data import import_dataset, read_events_table
    from tastemaker.store import open_store

    with _errors():
        mapping = {}
        for entry in map_ or []:
            field, sep, column = entry.partition("=")
            if not sep:
                raise typer.BadParameter(f"--map {entry!r}: expected FIELD=COLUMN")
            mapping[field.strip()] = column.strip()
        dataset = read_events_table(path, mapping, event_type=event_type, time_unit=cast(TimeUnit, time_unit.value))
        with open_store(db) as store, _progress() as progress:
            report = import_dataset(
                store, dataset, batch_size=batch_size, mode=cast(Mode, mode.value), progress=progress
            )
        _print_import(report)


@app.command()
def evaluate(
    data: Annotated[str, typer.Option(help="movielens:PATH, synthetic[:SEED], or a store URL.")],
    protocol: Annotated[str, typer.Option(help="recommenders, temporal, global-time or leave-last.")] = "recommenders",
    model: Annotated[list[str] | None, typer.Option("--model", help="A model name; repeat for several.")] = None,
    k: Annotated[int, typer.Option(min=1)] = 10,
    seed: int = 42,
    relevance_threshold: Annotated[float | None, typer.Option(help="Test rows rated below are not relevant.")] = None,
    recall_at: Annotated[
        list[int] | None, typer.Option("--recall-at", min=1, help="Also report recall at this depth; repeatable.")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result document here.")] = None,
    dump_dir: Annotated[Path | None, typer.Option(help="Write train/test/recs parquet files here.")] = None,
) -> None:
    """Evaluate models on a dataset under a published protocol; prints a table."""
    from tastemaker.data import load_dataset
    from tastemaker.evaluation import evaluate as run
    from tastemaker.evaluation import result_table

    with _errors(), _progress() as progress:
        result = run(
            load_dataset(data), protocol, model or ["popularity", "implicit-als"], k=k, seed=seed,
            relevance_threshold=relevance_threshold, recall_at=recall_at or (), dump_dir=dump_dir,
            json_path=json_path, progress=progress,
        )  # fmt: skip
    console.print(result_table(result))
    if json_path:
        console.print(f"wrote {json_path}")


@app.command()
def demo(
    db: DbOption = "sqlite:///tastemaker-demo.db",
    users: Annotated[int, typer.Option(min=10, help="Synthetic users.")] = 2_000,
    items: Annotated[int, typer.Option(min=10, help="Synthetic items.")] = 1_500,
    seed: int = 7,
) -> None:
    """Generate a synthetic world, import it (twice: the second run stores nothing), evaluate models."""
    from tastemaker.data import SyntheticConfig
    from tastemaker.demo import run_demo
    from tastemaker.evaluation import result_table

    with _errors():
        console.print(f"[bold]tastemaker demo[/] · store {db}")
        world = SyntheticConfig(n_users=users, n_items=items, seed=seed)
        with _progress() as progress:
            result = run_demo(db, synthetic=world, progress=progress)
        console.print("import:        ", end="")
        _print_import(result.first_import)
        console.print("import again:  ", end="")
        _print_import(result.second_import)
        console.print("rows in store: " + ", ".join(f"{k} {v:,}" for k, v in result.counts.items()))
        console.print(result_table(result.evaluation))


models_app = typer.Typer(help="List, inspect, promote and roll back trained models.", no_args_is_help=True)
app.add_typer(models_app, name="models")
ModelsDirOption = Annotated[Path, typer.Option("--models-dir", help="Where model artifacts and the registry live.",
                                               envvar="TASTEMAKER_MODELS")]  # fmt: skip


@app.command()
def train(
    db: DbOption = DEFAULT_URL,
    models_dir: ModelsDirOption = Path("models"),
    promote: Annotated[bool, typer.Option(help="Serve the new model at once.")] = False,
    now: Annotated[str | None, typer.Option(help="Train as of this instant (ISO 8601); default: the clock.")] = None,
    seed: int = 42,
) -> None:
    """Train the engine (sources + ranker) on the store and write a versioned model artifact."""
    from tastemaker.clock import FixedClock, SystemClock
    from tastemaker.models import train as run
    from tastemaker.store import open_store

    with _errors():
        clock = FixedClock(now) if now else SystemClock()
        with open_store(db, clock=clock) as store:
            artifact = run(store, models_dir, seed=seed, promote=promote)
        manifest = artifact.manifest
        sets = manifest["training_set"]
        console.print(f"[bold]model {artifact.version}[/] written to {artifact.path}"
                      + (" and promoted" if promote else ""))  # fmt: skip
        console.print(f"ranker trained on {sets['train']['queries']:,} users / {sets['train']['rows']:,} candidates; "
                      f"validation nDCG {manifest['offline_metrics']['validation_ndcg']}")  # fmt: skip


@models_app.command("list")
def models_list(models_dir: ModelsDirOption = Path("models")) -> None:
    """Every model artifact, oldest first; the served one is marked."""
    from rich.table import Table

    from tastemaker.models import Registry

    with _errors():
        registry = Registry(models_dir)
        current = registry.current
        table = Table("", "version", "created", "users", "items", "validation nDCG")
        for artifact in registry.versions():
            m = artifact.manifest
            window = m["training_window"]
            ndcg = m["offline_metrics"]["validation_ndcg"]
            shown = "—" if ndcg is None else f"{ndcg:.4f}"
            mark = "*" if artifact.version == current else ""
            users, items = f"{window['users']:,}", f"{window['items']:,}"
            table.add_row(mark, artifact.version, m["created_at"], users, items, shown)
        console.print(table)


@models_app.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="A model version (see `models list`).")],
    models_dir: ModelsDirOption = Path("models"),
) -> None:
    """A model's manifest and its ranker's feature importances."""
    from rich.table import Table

    from tastemaker.models import Registry

    with _errors():
        m = Registry(models_dir).get(version).manifest
        console.print(f"[bold]{m['version']}[/] · created {m['created_at']} · config {m['config_hash']} · "
                      f"schema v{m['schema_version']} · sources {', '.join(m['sources'])}")  # fmt: skip
        console.print(f"training window: {m['training_window']} · training set: {m['training_set']}")
        metrics, members = m["offline_metrics"], m.get("ranker", {}).get("members")
        if members is None:  # written before the ranker was an ensemble: this tastemaker cannot serve it
            console.print(f"format {m.get('format', 1)} artifact (this tastemaker serves format 2): train a new model")
        for i, member in enumerate(members or []):
            if member["base"]:
                base, note = member["base"], " · no tree helped: the base ranking alone" if member["base_only"] else ""
                console.print(f"ranker {i}: trees correct {base}'s ranking · {member['trees']} trees · validation "
                              f"nDCG {member['validation_ndcg']} ({base} alone "
                              f"{member['validation_ndcg_base_alone']}){note}")  # fmt: skip
        if members:
            console.print(f"ranker: the mean of {len(members)} · validation nDCG {metrics['validation_ndcg']} "
                          f"(bases alone {metrics['validation_ndcg_base_alone']})")  # fmt: skip
        descriptions = m["feature_schema"]["descriptions"]
        table = Table("feature", "gain", "share", "meaning")
        total = sum(m["feature_importance"].values()) or 1.0
        for name, gain in m["feature_importance"].items():
            table.add_row(name, f"{gain:,.1f}", f"{gain / total:.1%}", descriptions.get(name, ""))
        console.print(table)


@models_app.command("promote")
def models_promote(
    version: Annotated[str, typer.Argument(help="The model version to serve.")],
    models_dir: ModelsDirOption = Path("models"),
) -> None:
    """Serve VERSION from now on."""
    from tastemaker.models import Registry

    with _errors():
        Registry(models_dir).promote(version)
        console.print(f"serving {version}")


@models_app.command("rollback")
def models_rollback(models_dir: ModelsDirOption = Path("models")) -> None:
    """Serve the model promoted before the current one."""
    from tastemaker.models import Registry

    with _errors():
        artifact = Registry(models_dir).rollback()
        console.print(f"serving {artifact.version}")


@app.command()
def serve(
    db: Annotated[str | None, typer.Option("--db", help="Store URL (default: the config file's, or SQLite).",
                                           envvar="TASTEMAKER_DB")] = None,  # fmt: skip
    models_dir: Annotated[Path | None, typer.Option("--models-dir", envvar="TASTEMAKER_MODELS")] = None,
    host: Annotated[str, typer.Option(help="Listen address; other than 127.0.0.1 needs API keys.")] = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int | None, typer.Option(
        min=1, help="Worker processes (each loads the model; default: the config's workers, else 1).")] = None,
    config: Annotated[Path | None, typer.Option(help="A TOML file with a [server] table.")] = None,
    log_level: str = "info",
) -> None:
    """Serve the HTTP API (keys from TASTEMAKER_API_KEYS as KEY:SCOPE[+SCOPE...], comma-separated)."""
    import os
    import shutil
    import tempfile

    import uvicorn

    from tastemaker.api.app import SETTINGS_ENV, check_bind, create_app, settings_json
    from tastemaker.api.metrics import MULTIPROCESS_ENV
    from tastemaker.serving.settings import ServerSettings

    with _errors():
        settings = ServerSettings.load(config, db=db, models_dir=models_dir, workers=workers)
        check_bind(settings, host)
    workers = settings.workers
    err.print(f"serving {settings.db} · models {settings.models_dir} · http://{host}:{port} · {workers} worker(s)"
              + ("" if settings.api_keys else " · no API keys: every route is open on 127.0.0.1"))  # fmt: skip
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
        return
    os.environ[SETTINGS_ENV] = settings_json(settings)
    # the workers count together in files under one folder: a fresh one per run (stale files would add a
    # previous run's counts), unless the environment names its own
    own = None if MULTIPROCESS_ENV in os.environ else tempfile.mkdtemp(prefix="tastemaker-metrics-")
    if own is not None:
        os.environ[MULTIPROCESS_ENV] = own
    try:
        uvicorn.run("tastemaker.api.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level=log_level)  # fmt: skip
    finally:
        if own is not None:
            os.environ.pop(MULTIPROCESS_ENV, None)
            shutil.rmtree(own, ignore_errors=True)


@app.command()
def recommend(
    user_id: Annotated[str, typer.Argument(help="The user to recommend for.")],
    k: Annotated[int, typer.Option("-k", min=1, max=500, help="List length.")] = 30,
    context: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, e.g. device=mobile (repeatable).")] = None,
    category: str | None = None,
    db: DbOption = DEFAULT_URL,
    models_dir: ModelsDirOption = Path("models"),
    now: Annotated[str | None, typer.Option(help="Recommend as of this instant (ISO 8601).")] = None,
    config: Annotated[Path | None, typer.Option(help="The server's TOML file (its holdout, limits).")] = None,
) -> None:
    """A user's list, computed in-process as the server with the same settings would (not written to the
    exposure log)."""
    from rich.table import Table

    from tastemaker.clock import FixedClock, SystemClock
    from tastemaker.serving import ListRequest, Recommender, ServerSettings
    from tastemaker.serving.service import context_value
    from tastemaker.store import open_store

    with _errors():
        pairs = {}
        for entry in context or []:
            key, sep, value = entry.partition("=")
            if not sep or not key:
                raise typer.BadParameter(f"--context {entry!r}: expected KEY=VALUE")
            pairs[key] = context_value(key, value)
        settings = ServerSettings.load(config, db=db, models_dir=models_dir)
        clock = FixedClock(now) if now else SystemClock()
        with open_store(db, clock=clock) as store:
            served = Recommender.from_settings(store, settings, clock).recommend(
                [ListRequest(user_id, k, category, (), pairs)]
            )[0]
        console.print(f"[bold]{user_id}[/] · variant {served.variant} · model {served.model_version}"
                      + (f" · fallback: {served.fallback}" if served.fallback else ""))  # fmt: skip
        table = Table("#", "item", "score", "source", "propensity", "reason")
        for item in served.items:
            score = "—" if item.score is None else f"{item.score:.4f}"
            table.add_row(str(item.position), item.item_id, score, item.source, f"{item.propensity:.3f}", item.reason)
        console.print(table)

