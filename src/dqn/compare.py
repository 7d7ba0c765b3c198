"""`python -m dqn.compare`: the report of a sweep, read from its runs in MLflow.

Ranks the sweep's groups by the IQM of their seeds' final returns (`dqn.summary`), writes report.csv,
report.md, curves.png and finals.png, and logs the four to the sweep's parent run.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from dqn import tracking
from dqn.plots import sweep_curves, sweep_finals
from dqn.summary import COLUMNS, GroupStats, SeedRun, iqm_curves, summarize, verdict

DECIMALS = {"success_rate": 2, "hover_rate": 2, "median_steps_to_200": 0, "median_seconds_to_200": 0}
LEGEND = (
    "Over each seed's final greedy evaluation return: IQM (mean of the middle half) with a 95% bootstrap CI "
    "over seeds, mean and population std. success_rate: share of seeds ending at 200 or more; hover_rate: share "
    "whose final evaluation was mostly cut by the time limit; steps and seconds to 200: median over the "
    "n_reached_200 seeds that reached 200 at some evaluation (seconds of training, evaluation excluded)."
)


class ReportError(Exception):
    """A sweep that cannot be reported; the message is the one line the user sees."""


@dataclass(frozen=True)
class Report:
    """What `write_report` made: the rows best first, the verdict line, the jobs left out, the files written."""

    sweep_id: str
    parent_run_id: str
    rows: list[GroupStats]
    verdict: str
    skipped: dict[str, int]  # status -> how many of the sweep's jobs did not finish
    files: list[Path]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client = open_store(args.tracking_uri or tracking.tracking_uri(None, Path.cwd()))
        parent = find_sweep(client, args.experiment or tracking.experiment_name(None), args.sweep_id)
        report = write_report(client, parent.info.run_id, args.out or sweep_dir(parent))
    except (ReportError, MlflowException, OSError) as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    print(render(report))
    return 0


def one_line(error: Exception) -> str:
    """MLflow's messages can span lines (SQL, hints); the user gets the first."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dqn.compare", description="Report a sweep from its runs in MLflow."
    )
    parser.add_argument("--sweep-id", help="the sweep to report (default: the most recent sweep in the experiment)")
    parser.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db)")
    parser.add_argument(
        "--experiment", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else dqn-lunar-lander)"
    )
    parser.add_argument("--out", type=Path, help="folder for the report files (default: the sweep's own folder)")
    return parser.parse_args(argv)


def open_store(uri: str) -> MlflowClient:
    """A client on an existing store: a missing SQLite file is a wrong folder, not a store to create."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise ReportError(f"no MLflow store at {uri} (run from the project folder or pass --tracking-uri)")
    return MlflowClient(uri)


def find_sweep(client: MlflowClient, experiment: str, sweep_id: str | None) -> Run:
    """The parent run of sweep `sweep_id`, or of the most recently started sweep when it is None."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ReportError(f"no experiment {experiment!r} in the store (pass --experiment)")
    parents = search_all(client, found.experiment_id, "tags.`dqn.role` = 'sweep'", ["attributes.start_time DESC"])
    if not parents:
        raise ReportError(f"experiment {experiment!r} has no sweeps (runs tagged dqn.role=sweep)")
    if sweep_id is None:
        return parents[0]
    for parent in parents:
        if parent.data.tags.get("sweep_id") == sweep_id:
            return parent
    known = ", ".join(parent.data.tags.get("sweep_id", "?") for parent in parents[:5])
    raise ReportError(f"no sweep {sweep_id!r} in experiment {experiment!r}; most recent: {known}")


def sweep_dir(parent: Run) -> Path:
    if "sweep_dir" not in parent.data.tags:
        raise ReportError(f"sweep run {parent.info.run_id} has no sweep_dir tag; pass --out")
    return Path(parent.data.tags["sweep_dir"])


def search_all(client: MlflowClient, experiment_id: str, filter_string: str, order_by: list[str]) -> list[Run]:
    """Every matching run, page after page."""
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def write_report(client: MlflowClient, parent_run_id: str, out_dir: Path) -> Report:
    """Report the sweep of parent run `parent_run_id` into `out_dir` and log the four files to that run.

    The sweep calls this when its jobs are done. Raises ReportError when the sweep has no finished job.
    """
    parent = client.get_run(parent_run_id)
    sweep_id = parent.data.tags.get("sweep_id")
    if sweep_id is None:
        raise ReportError(f"run {parent_run_id} is not a sweep: it has no sweep_id tag")
    jobs = search_all(
        client,
        parent.info.experiment_id,
        f"tags.sweep_id = '{sweep_id}' and tags.`dqn.role` = 'job'",
        ["attributes.start_time ASC"],
    )
    seeds = [seed_run(client, job) for job in jobs]
    skipped = dict(Counter(seed.status for seed in seeds if seed.status != "FINISHED"))
    if len(seeds) == sum(skipped.values()):
        raise ReportError(f"sweep {sweep_id!r} has no finished runs{_skipped_text(skipped, ' (', ')')}")

    rows = summarize(seeds)
    line = verdict(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = iqm_curves(seeds)
    finals = {row.group: [s.final_return for s in seeds if _counts(s) and s.group == row.group] for row in rows}
    files = [
        write_csv(rows, out_dir / "report.csv"),
        write_markdown(sweep_id, rows, line, skipped, out_dir / "report.md"),
        sweep_curves({row.group: curves[row.group] for row in rows if row.group in curves}, out_dir / "curves.png"),
        sweep_finals(
            {group: values for group, values in finals.items() if values},
            {row.group: row.iqm for row in rows if row.iqm is not None},
            out_dir / "finals.png",
        ),
    ]
    for path in files:
        client.log_artifact(parent_run_id, str(path))
    return Report(sweep_id, parent_run_id, rows, line, skipped, files)


def seed_run(client: MlflowClient, run: Run) -> SeedRun:
    """A job's group, seed and evaluations; histories are read only for FINISHED jobs, the only ones that count."""
    group = run.data.tags.get("group", "(no group tag)")
    seed = run.data.params.get("seed")
    seed = int(seed) if seed is not None and seed.lstrip("-").isdigit() else None
    if run.info.status != "FINISHED":
        return SeedRun(group, seed, None, status=run.info.status)
    returns = history(client, run.info.run_id, "eval_return_mean")
    truncated = history(client, run.info.run_id, "eval_truncated_fraction")
    seconds = dict(history(client, run.info.run_id, "train_seconds"))
    return SeedRun(
        group=group,
        seed=seed,
        final_return=returns[-1][1] if returns else None,
        final_truncated=truncated[-1][1] if truncated else None,
        evals=[(step, value, seconds.get(step)) for step, value in returns],
    )


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) in step order: the last is the final evaluation."""
    metrics = sorted(client.get_metric_history(run_id, key), key=lambda metric: (metric.step, metric.timestamp))
    return [(metric.step, metric.value) for metric in metrics]


def _counts(seed: SeedRun) -> bool:
    return seed.status == "FINISHED" and seed.final_return is not None


def write_csv(rows: list[GroupStats], path: Path) -> Path:
    """Full precision, empty cells where a statistic has no value."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in asdict(row).items()})
    return path


def write_markdown(sweep_id: str, rows: list[GroupStats], line: str, skipped: dict[str, int], path: Path) -> Path:
    parts = [
        f"# Sweep {sweep_id}",
        headline(rows, skipped),
        LEGEND,
        markdown_table(rows),
        f"**Verdict:** {line}",
        "![IQM of greedy evaluation returns against env steps](curves.png)",
        "![Final return of every seed](finals.png)",
    ]
    path.write_text("\n\n".join(parts) + "\n")
    return path


def headline(rows: list[GroupStats], skipped: dict[str, int]) -> str:
    finished = sum(row.n_seeds for row in rows)
    unfinished = f"; skipped {sum(skipped.values())} that did not finish" if skipped else ""
    return f"{finished} finished runs in {len(rows)} groups{unfinished}{_skipped_text(skipped, ' (', ')')}."


def _skipped_text(skipped: dict[str, int], before: str, after: str) -> str:
    if not skipped:
        return ""
    counts = ", ".join(f"{count} {status}" for status, count in sorted(skipped.items()))
    return f"{before}{counts}{after}"


def markdown_table(rows: list[GroupStats]) -> str:
    """A markdown table padded to aligned columns, so the same text reads well in a terminal."""
    cells = [list(COLUMNS)] + [[_cell(key, getattr(row, key)) for key in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) + " |" for line in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(lines)


def _cell(key: str, value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{DECIMALS.get(key, 1)}f}"
    return str(value).replace("|", "\\|")


def render(report: Report) -> str:
    """What the command prints: the table, the verdict and where the files went."""
    folder = report.files[0].parent
    return "\n".join(
        [
            f"Sweep {report.sweep_id}: {headline(report.rows, report.skipped)}",
            markdown_table(report.rows),
            f"Verdict: {report.verdict}",
            f"Wrote {', '.join(path.name for path in report.files)} to {folder}, logged to run {report.parent_run_id}.",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
