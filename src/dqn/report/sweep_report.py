"""A sweep's report, read from its runs in MLflow: the rows, the verdict, the files, the parent's summary.

Answers first: one line per swept key (its main effect, tested within the other keys' combinations,
`dqn.report.design`), the interaction and hovering, then whether one config is best. Ranks the sweep's
groups by the IQM of their seeds' scores (the fresh final evaluation of each run's delivered weights), tests
the best against the rest (`dqn.report.statistics`), writes report.csv, report.md, report.html, the grid's
heatmap and sensitivity curves, curves.png and finals.png, and logs them to the sweep's parent run. In an Optuna
search (`dqn.search`), the runs of pruned trials are listed with their last evaluation, not counted
as seeds: they stopped early, and their score would not be a score of the config.
"""

from __future__ import annotations

import base64
import html
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Run, RunTag

from dqn import tables
from dqn.report.design import Analysis, analyse, fmt_p, heatmap_grid, sensitivity
from dqn.report.figures import grid_heatmap, sensitivity_curves, sweep_curves, sweep_finals
from dqn.report.statistics import (
    ALPHA,
    COLUMNS,
    FINAL_SCORE,
    LAST_SCORE,
    MIN_SEEDS_FOR_CI,
    GroupStats,
    SeedRun,
    Verdict,
    iqm_curves,
    stats_by_group,
    verdict,
)
from dqn.sweep_protocol import SUPERSEDED

DECIMALS = {"hover_rate": 2, "stall_rate": 2, "median_steps_to_200": 0, "median_seconds_to_200": 0}
LEGEND = (
    f"Per group, over the seeds with a score: the IQM (mean of the middle half) with a 95% stratified-bootstrap "
    f"CI over seeds from {MIN_SEEDS_FOR_CI} seeds on (with fewer the CI would be just the seeds' min to max, so "
    f"`seeds` lists their scores instead); mean and sample std. seeds_solved: seeds scoring 200 or more; "
    "hover_rate: share of seeds whose scoring evaluation was mostly cut by the time limit; stall_rate: share of "
    "seeds that never took off (no evaluation during training reached a return of 0); n_reached_200: seeds "
    "with an evaluation >= 200 during training (from then on keep_best delivered weights that had scored >= 200), "
    "and the median env steps and training seconds (evaluation excluded) to it over those seeds."
)


DESIGN_FIGURES = ("heatmap.png", "sensitivity.png")
PRUNED = "PRUNED"  # the status the report gives a job of a pruned search trial
LEFT_OUT_SUPERSEDED = "superseded by the rerun of their interrupted search trial"
LEFT_OUT_REPEAT = "an earlier run of a (group, seed) that a later finished run scores"


class ReportError(Exception):
    """A sweep that cannot be reported; the message is the one line the user sees."""


@dataclass(frozen=True)
class PrunedRun:
    """A job of a pruned search trial: where it stopped and its last greedy evaluation there."""

    name: str
    group: str
    trial: str
    seed: int | None
    step: int | None
    last_eval: float | None


@dataclass(frozen=True)
class Report:
    """What `write_report` made: the rows best first, the verdict, the jobs left out, the files written."""

    sweep_id: str
    parent_run_id: str
    rows: list[GroupStats]
    verdict: Verdict
    skipped: dict[str, int]  # status -> how many of the sweep's jobs did not finish
    files: list[Path]
    finished: int = 0  # the sweep's FINISHED jobs, with a score or not
    score: str = ""  # which metric scored the seeds
    pruned: tuple[PrunedRun, ...] = ()  # jobs of pruned search trials, not counted as seeds
    analysis: Analysis = Analysis(None, note="not analysed")
    left_out: tuple[tuple[str, int], ...] = ()  # (why, how many) runs were left out: one score per (group, seed)


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


def sweep_jobs(client: MlflowClient, parent: Run) -> list[Run]:
    """Every job run of the sweep (or search, or race) of `parent`, oldest first."""
    sweep_id = parent.data.tags["sweep_id"]
    where = f"tags.sweep_id = '{sweep_id}' and tags.`dqn.role` = 'job'"
    return search_all(client, parent.info.experiment_id, where, ["attributes.start_time ASC"])


def write_report(client: MlflowClient, parent_run_id: str, out_dir: Path) -> Report:
    """Report the sweep of parent run `parent_run_id` into `out_dir` and log the four files to that run.

    The sweep calls this when its jobs are done. Raises ReportError when the sweep has no finished job.
    """
    parent = client.get_run(parent_run_id)
    sweep_id = parent.data.tags.get("sweep_id")
    if sweep_id is None:
        raise ReportError(f"run {parent_run_id} is not a sweep: it has no sweep_id tag")
    jobs, left_out = one_per_seed(sweep_jobs(client, parent))
    seeds = [seed_run(client, job) for job in jobs]
    pruned = tuple(pruned_run(client, job) for job in jobs if is_pruned(job))
    skipped = dict(Counter(seed.status for seed in seeds if seed.status != "FINISHED"))
    if len(seeds) == sum(skipped.values()):
        raise ReportError(f"sweep {sweep_id!r} has no finished runs{_skipped_text(skipped, ' (', ')')}")

    rows = stats_by_group(seeds)
    finished = sum(seed.status == "FINISHED" for seed in seeds)
    analysis = analyse(seeds)
    report = Report(
        sweep_id,
        parent_run_id,
        rows,
        verdict(rows),
        skipped,
        [],
        finished,
        score_text(seeds),
        pruned,
        analysis=analysis,
        left_out=left_out,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = iqm_curves(seeds)
    scored = [row for row in rows if row.seeds]
    files = [
        *design_figures(analysis, out_dir, sweep_id),
        write_csv(rows, out_dir / "report.csv"),
        write_markdown(report, out_dir / "report.md"),
        sweep_curves(
            {row.group: curves[row.group] for row in rows if row.group in curves},
            out_dir / "curves.png",
            title=f"Sweep {sweep_id}: greedy evaluation return during training",
        ),
        sweep_finals(
            {row.group: row.seeds for row in scored},
            {row.group: row.iqm for row in scored},
            {row.group: (row.ci_low, row.ci_high) for row in scored if row.ci_low is not None},
            out_dir / "finals.png",
            title=f"Sweep {sweep_id}: score of every seed",
            xlabel=score_label(seeds),
        ),
    ]
    files.append(write_html(report, files, out_dir / "report.html"))
    for path in files:
        client.log_artifact(parent_run_id, str(path))
    summarise_on_parent(client, report)
    return replace(report, files=files)


def design_figures(analysis: Analysis, out_dir: Path, sweep_id: str) -> list[Path]:
    """The figures a user looks at first: the 2-key grid's heatmap and each key's sensitivity curve."""
    if analysis.design is None:
        return []
    files = []
    if len(analysis.design.varied()) == 2:
        rows, columns, iqms, solved = heatmap_grid(analysis.design)
        title = f"Sweep {sweep_id}\nIQM of the seeds' scores per config, and seeds solved"
        files.append(grid_heatmap(iqms, solved, rows, columns, out_dir / "heatmap.png", title))
    title = f"Sweep {sweep_id}: sensitivity of the score to each key"
    files.append(sensitivity_curves(sensitivity(analysis.design), out_dir / "sensitivity.png", title))
    return files


def answer(report: Report) -> list[str]:
    """The lines that answer the sweep's question, before any detail: per key, then the best config (and,
    where no config could be shown best at this design, whether the main effects could)."""
    floor = report.verdict.floor
    also = ""
    if floor is not None and floor >= ALPHA:
        floors = [e for e in report.analysis.effects if e.floor is not None]
        if any(e.floor < ALPHA for e in floors):
            reach = ", ".join(f"{e.key} {fmt_p(e.floor)}" for e in floors)
            also = f" The main effects can (smallest p, unadjusted: {reach})."
    return [*report.analysis.lines(), f"Verdict: {report.verdict.headline}{also}"]


def one_per_seed(jobs: list[Run]) -> tuple[list[Run], tuple[tuple[str, int], ...]]:
    """The jobs that count, in order, and (why, how many) of the others: one run per (group, seed).

    Left out: the runs of an interrupted search trial (tagged superseded; their params ran again as a new
    trial), and, of a (group, seed) that several runs hold (a job retried as a new run, a search that asked
    the same params twice), all but its last FINISHED run. Pruned runs stay: the report lists them apart.
    """
    superseded = [job for job in jobs if job.data.tags.get(SUPERSEDED) == "true"]
    kept = [job for job in jobs if job.data.tags.get(SUPERSEDED) != "true"]
    last_finished: dict[tuple[str, int], str] = {}
    for job in kept:
        key = (job.data.tags.get("group", ""), seed_of(job))
        if key[1] is not None and job.info.status == "FINISHED" and not is_pruned(job):
            last_finished[key] = job.info.run_id  # start_time order: the last one wins
    counted = [
        job
        for job in kept
        if is_pruned(job)
        or last_finished.get((job.data.tags.get("group", ""), seed_of(job)), job.info.run_id) == job.info.run_id
    ]
    why = ((LEFT_OUT_SUPERSEDED, len(superseded)), (LEFT_OUT_REPEAT, len(kept) - len(counted)))
    return counted, tuple((reason, n) for reason, n in why if n)


def left_out_text(left_out: tuple[tuple[str, int], ...]) -> str:
    """`; left out 2 runs (2 superseded by ...)`: what the report did not count, and why."""
    if not left_out:
        return ""
    reasons = ", ".join(f"{n} {why}" for why, n in left_out)
    return f"; left out {sum(n for _, n in left_out)} runs ({reasons})"


def summarise_on_parent(client: MlflowClient, report: Report) -> None:
    """The parent run's description (what the UI shows on its page) and summary metrics: the answer at a glance."""
    best = report.verdict.best
    note = [f"- {line}" for line in answer(report)]
    note += [f"**{headline(report)}**", report.score, "Details of the verdict:"]
    note += [f"- {line}" for line in report.verdict.details]
    note.append("Full report: the `report.html` artifact.")
    client.set_tag(report.parent_run_id, "mlflow.note.content", "\n\n".join(part for part in note if part))
    metrics = design_metrics(report)
    if best is not None and best.iqm is not None:
        metrics |= {"best_group_iqm": best.iqm, "best_group_mean": best.mean, "best_group_n_seeds": best.n_seeds}
        solved, n = (int(part) for part in best.seeds_solved.split("/")) if best.seeds_solved else (0, 0)
        if n:
            metrics["best_group_solved_fraction"] = solved / n
    if not metrics:
        return
    timestamp = int(time.time() * 1000)
    client.log_batch(
        report.parent_run_id,
        metrics=[Metric(key, float(value), timestamp, 0) for key, value in metrics.items() if value is not None],
        tags=[RunTag("best_group", best.group)] if best is not None else [],
    )


def design_metrics(report: Report) -> dict[str, float]:
    """Per key: effect_p (Holm-adjusted), effect_size (best level's mean minus the worst's) and its CI; the
    interaction's p; hover_p per key; verdict_floor, the smallest p the verdict could reach."""
    metrics = {}
    for effect in report.analysis.effects:
        if effect.p_adjusted is not None:
            metrics[f"effect_p.{effect.key}"] = effect.p_adjusted
        if effect.difference is not None:
            metrics[f"effect_size.{effect.key}"] = effect.difference
        if effect.ci is not None:
            metrics[f"effect_ci_low.{effect.key}"], metrics[f"effect_ci_high.{effect.key}"] = effect.ci
        if effect.detectable is not None:
            metrics[f"effect_detectable.{effect.key}"] = effect.detectable
    if report.analysis.interaction is not None and report.analysis.interaction.p is not None:
        metrics["interaction_p"] = report.analysis.interaction.p
    for test in report.analysis.hover:
        if test.p is not None:
            metrics[f"hover_p.{test.key}"] = test.p
    if report.verdict.floor is not None:
        metrics["verdict_floor"] = report.verdict.floor
    return metrics


def write_html(report: Report, files: list[Path], path: Path) -> Path:
    """The report as one self-contained page (figures inlined), which MLflow's artifact viewer renders."""

    def image(figure: Path) -> str:
        data = base64.b64encode(figure.read_bytes()).decode()
        return (
            f'<figure><img style="max-width:100%" src="data:image/png;base64,{data}">'
            f"<figcaption>{figure.name}</figcaption></figure>"
        )

    first = "".join(image(figure) for figure in files if figure.name in DESIGN_FIGURES)
    images = "".join(image(figure) for figure in files if figure.suffix == ".png" and figure.name not in DESIGN_FIGURES)
    answers = "".join(f"<li>{html.escape(line)}</li>" for line in answer(report))
    header = "".join(f"<th>{html.escape(key)}</th>" for key in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(key, getattr(row, key), row))}</td>" for key in COLUMNS) + "</tr>"
        for row in report.rows
    )
    details = "".join(f"<li>{html.escape(line)}</li>" for line in report.verdict.details)
    path.write_text(
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Sweep {html.escape(report.sweep_id)}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>"
        f"<h1>Sweep {html.escape(report.sweep_id)}</h1><ul>{answers}</ul>{first}<p>{html.escape(headline(report))}</p>"
        f"<p>{html.escape(report.score)}</p><p>{html.escape(LEGEND)}</p>"
        f"<table><tr>{header}</tr>{body}</table>"
        f"<p><b>Details of the verdict:</b></p><ul>{details}</ul>{images}</body></html>"
    )
    return path


def seed_run(client: MlflowClient, run: Run) -> SeedRun:
    """A job's group, seed, score and evaluations; histories are read only for FINISHED jobs, the only ones
    that count. The score is the run's final_eval_return_mean; a run from before that evaluation existed
    falls back to its last eval_return_mean (and eval_truncated_fraction)."""
    group, seed = run.data.tags.get("group", "(no group tag)"), seed_of(run)
    if is_pruned(run):
        return SeedRun(group, seed, None, status=PRUNED)
    if run.info.status != "FINISHED":
        return SeedRun(group, seed, None, status=run.info.status)
    returns = history(client, run.info.run_id, "eval_return_mean")
    seconds = dict(history(client, run.info.run_id, "train_seconds"))
    evals = [(step, value, seconds.get(step)) for step, value in returns]
    metrics = run.data.metrics  # the latest value of each: the final evaluation is logged once
    if FINAL_SCORE in metrics:
        return SeedRun(group, seed, metrics[FINAL_SCORE], metrics.get("final_eval_truncated_fraction"), evals)
    truncated = history(client, run.info.run_id, "eval_truncated_fraction")
    return SeedRun(
        group=group,
        seed=seed,
        score=returns[-1][1] if returns else None,
        truncated=truncated[-1][1] if truncated else None,
        evals=evals,
        scored_by=LAST_SCORE,
    )


def is_pruned(run: Run) -> bool:
    """A job a pruner stopped (dqn.search.trial), or a seed of a trial that was pruned while it ran to the end."""
    return run.data.tags.get("pruned") == "true" or run.data.tags.get("trial_state") == PRUNED


def seed_of(run: Run) -> int | None:
    seed = run.data.params.get("seed")
    return int(seed) if seed is not None and seed.lstrip("-").isdigit() else None


def pruned_run(client: MlflowClient, run: Run) -> PrunedRun:
    evals = history(client, run.info.run_id, LAST_SCORE)
    return PrunedRun(
        name=run.info.run_name or run.info.run_id,
        group=run.data.tags.get("group", "(no group tag)"),
        trial=run.data.tags.get("trial_number", "-"),
        seed=seed_of(run),
        step=evals[-1][0] if evals else None,
        last_eval=evals[-1][1] if evals else None,
    )


def pruned_table(pruned: tuple[PrunedRun, ...]) -> str:
    """The pruned jobs, by trial, as a markdown table (empty when there are none)."""
    if not pruned:
        return ""
    lines = [
        [str(run.trial), run.group, "-" if run.seed is None else str(run.seed), str(run.step or "-"),
         "-" if run.last_eval is None else f"{run.last_eval:.1f}"]
        for run in sorted(pruned, key=lambda r: (r.trial, r.seed if r.seed is not None else -1))
    ]  # fmt: skip
    header = ["trial", "group", "seed", "stopped at step", f"last {LAST_SCORE}"]
    title = f"Pruned runs ({len(pruned)}, not counted as seeds): where each stopped and its last {LAST_SCORE}."
    return f"{title}\n\n{tables.markdown_table(header, lines)}"


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) in step order: the last is the final evaluation."""
    metrics = sorted(client.get_metric_history(run_id, key), key=lambda metric: (metric.step, metric.timestamp))
    return [(metric.step, metric.value) for metric in metrics]


def score_text(seeds: list[SeedRun]) -> str:
    """The line that says which metric scored the seeds."""
    scored = [seed for seed in seeds if seed.status == "FINISHED" and seed.score is not None]
    fallback = sum(seed.scored_by != FINAL_SCORE for seed in scored)
    text = (
        f"Score of a seed: {FINAL_SCORE}, the mean return of the greedy episodes that the weights its run "
        "delivered played after training, on start seeds no evaluation during training used."
    )
    if fallback:
        text += (
            f" {fallback} of {len(scored)} seeds come from runs without it and are scored by their last "
            f"{LAST_SCORE} instead (an evaluation during training, of the last weights)."
        )
    return text


def score_label(seeds: list[SeedRun]) -> str:
    fallback = any(seed.scored_by != FINAL_SCORE for seed in seeds if seed.score is not None)
    also = f", else the last {LAST_SCORE}" if fallback else ""
    return f"score per seed: {FINAL_SCORE} (fresh episodes of the delivered weights){also}"


def write_csv(rows: list[GroupStats], path: Path) -> Path:
    """Full precision, empty cells where a statistic has no value; `seeds` holds every score, space-separated."""
    lines = [asdict(row) | {"seeds": " ".join(repr(score) for score in row.seeds)} for row in rows]
    return tables.write_csv(lines, path, COLUMNS)


def write_markdown(report: Report, path: Path) -> Path:
    figures = [f"![{name}]({name})" for name in DESIGN_FIGURES if (path.parent / name).exists()]
    parts = [
        f"# Sweep {report.sweep_id}",
        "\n".join(f"- {line}" for line in answer(report)),
        *figures,
        headline(report),
        report.score,
        LEGEND,
        markdown_table(report.rows),
        "**Details of the verdict:**",
        "\n".join(f"- {line}" for line in report.verdict.details),
        pruned_table(report.pruned),
        "![IQM of greedy evaluation returns against env steps](curves.png)",
        "![Score of every seed](finals.png)",
    ]
    path.write_text("\n\n".join(part for part in parts if part) + "\n")
    return path


def headline(report: Report) -> str:
    scored = sum(row.n_seeds for row in report.rows)
    without = f" ({report.finished - scored} without a score)" if scored < report.finished else ""
    skipped = report.skipped
    unfinished = f"; skipped {sum(skipped.values())} that did not finish" if skipped else ""
    return (
        f"{counted(report.finished, 'finished run')}{without} in {counted(len(report.rows), 'group')}{unfinished}"
        f"{_skipped_text(skipped, ' (', ')')}"
        f"{left_out_text(report.left_out)}."
    )


def counted(n: int, noun: str) -> str:
    """`1 group`, `2 groups`: a count that reads."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _skipped_text(skipped: dict[str, int], before: str, after: str) -> str:
    if not skipped:
        return ""
    counts = ", ".join(f"{count} {status}" for status, count in sorted(skipped.items()))
    return f"{before}{counts}{after}"


def markdown_table(rows: list[GroupStats]) -> str:
    return tables.markdown_table(COLUMNS, [[_cell(key, getattr(row, key), row) for key in COLUMNS] for row in rows])


def _cell(key: str, value: object, row: GroupStats) -> str:
    if key == "seeds":  # listed where no CI stands for them; report.csv has them all
        small = 0 < row.n_seeds < MIN_SEEDS_FOR_CI
        return ", ".join(f"{score:.1f}" for score in row.seeds) if small else "-"
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{DECIMALS.get(key, 1)}f}"
    return str(value)


def render(report: Report) -> str:
    """What the command prints: the table, the verdict and where the files went."""
    folder = report.files[0].parent
    return "\n".join(
        [
            f"Sweep {report.sweep_id}: {headline(report)}",
            *answer(report),
            report.score,
            markdown_table(report.rows),
            "Details of the verdict:",
            *(f"  - {line}" for line in report.verdict.details),
            *([pruned_table(report.pruned)] if report.pruned else []),
            f"Wrote {', '.join(path.name for path in report.files)} to {folder}, logged to run {report.parent_run_id}.",
        ]
    )
