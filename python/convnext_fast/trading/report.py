"""A self-contained HTML backtest report: matplotlib charts embedded as base64 PNGs, monthly returns and
the metrics table. Open ``report.html`` anywhere; it references no other file."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

# The object API (Figure, no pyplot) keeps no global state, so reports can be drawn from any thread.
from matplotlib.figure import Figure

from ._checks import TradingInputError, as_float_array, check_same_length
from .backtest import EXIT_REASONS, BacktestResult
from .metrics import compute_metrics, drawdown
from .verdict import SkillCheck, few_trades_warning, market_check

MS_PER_YEAR = 365 * 24 * 3600 * 1000
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def periods_per_year_from(timestamps_ms: np.ndarray) -> float:
    """Bars per year from the median bar spacing (24·365 for hourly bars)."""
    if len(timestamps_ms) < 2:
        raise TradingInputError("timestamps_ms needs at least 2 bars to infer the bar interval")
    return MS_PER_YEAR / float(np.median(np.diff(timestamps_ms)))


def date_axis(ax) -> None:
    """Dates that never overlap at any span: the locator picks the tick spacing from the axis length and
    the concise formatter writes only what changes (year once, then months, days or hours)."""
    locator = AutoDateLocator(minticks=3, maxticks=8)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def equity_figure(dates, equity, close) -> Figure:
    fig = Figure(figsize=(11, 4))
    ax = fig.add_subplot()
    ax.plot(dates, equity, label="strategy", lw=1.0)
    ax.plot(dates, equity[0] * close / close[0], label="buy & hold", lw=1.0, alpha=0.7)
    ax.set_yscale("log")  # decades of growth and ruin stay readable side by side
    ax.set_ylabel("equity (log)")
    ax.set_title("Equity vs buy-and-hold")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    date_axis(ax)
    return fig


def drawdown_figure(dates, equity) -> Figure:
    fig = Figure(figsize=(11, 2.5))
    ax = fig.add_subplot()
    dd = 100 * drawdown(equity)
    ax.fill_between(dates, dd, 0, color="tab:red", alpha=0.4, lw=0)
    ax.set_ylabel("drawdown %")
    ax.set_title("Drawdown")
    ax.grid(alpha=0.3)
    date_axis(ax)
    return fig


def trades_figure(dates, close, trades) -> Figure:
    fig = Figure(figsize=(11, 4))
    ax = fig.add_subplot()
    ax.plot(dates, close, color="0.3", lw=0.8, label="close")
    for side, marker, color, name in (
        (1, "^", "tab:green", "long entry"),
        (-1, "v", "tab:red", "short entry"),
    ):
        entries = trades[trades["side"] == side]
        ax.scatter(
            dates[entries["entry_bar"]], entries["entry_price"], marker=marker, color=color, s=18, label=name
        )
    ax.scatter(
        dates[trades["exit_bar"]], trades["exit_price"], marker="x", color="tab:blue", s=14, label="exit"
    )
    ax.set_title("Trades on price")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    date_axis(ax)
    return fig


def monthly_returns(timestamps_ms: np.ndarray, equity: np.ndarray) -> dict[tuple[int, int], float]:
    """``{(year, month): return}`` from the last equity of each calendar month (UTC) to the next."""
    months = timestamps_ms.astype("datetime64[ms]").astype("datetime64[M]")
    last_of_month = np.flatnonzero(np.r_[months[1:] != months[:-1], True])
    ends = equity[last_of_month]
    starts = np.r_[equity[0], ends[:-1]]
    out = {}
    for idx, ret in zip(last_of_month, ends / starts - 1.0, strict=True):
        month = months[idx].astype(object)
        out[(month.year, month.month)] = float(ret)
    return out


def _monthly_table(monthly: dict[tuple[int, int], float]) -> str:
    rows = ["<tr><th>Year</th>" + "".join(f"<th>{m}</th>" for m in MONTHS) + "</tr>"]
    for year in sorted({y for y, _ in monthly}):
        cells = []
        for month in range(1, 13):
            ret = monthly.get((year, month))
            if ret is None:
                cells.append("<td></td>")
                continue
            alpha = min(abs(ret) / 0.2, 1.0)  # full colour at ±20 %
            rgb = "0,150,0" if ret >= 0 else "200,0,0"
            cells.append(f'<td style="background: rgba({rgb},{alpha:.2f})">{100 * ret:+.1f}%</td>')
        rows.append(f"<tr><th>{year}</th>{''.join(cells)}</tr>")
    return "<table class='monthly'>" + "".join(rows) + "</table>"


# Metrics that are fractions are shown as percentages; ratios and money as plain numbers.
PERCENT_METRICS = frozenset(
    ("total_return", "cagr", "volatility", "downside_deviation", "max_drawdown", "win_rate", "exposure")
)


def format_metric(name: str, value) -> str:
    """How the report writes one metric (percentages for fractions; n/a for NaN)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    value = float(value)
    if np.isnan(value):
        return "n/a"
    if name in PERCENT_METRICS:
        return f"{100 * value:.2f}%"
    if name == "turnover":
        return f"{value:.2f}×"
    return f"{value:,.2f}"


def _metrics_table(metrics: dict) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{format_metric(k, v)}</td></tr>" for k, v in metrics.items()
    )
    return f"<table class='metrics'>{rows}</table>"


def _verdict_section(skill: SkillCheck | None, no_skill: str, market, threshold, source, checkpoint) -> str:
    """Where the signals came from and how they compare with the naive alternatives on the same bars."""
    rows = []
    if checkpoint:
        rows.append(("signals from", html.escape(str(checkpoint)), ""))
    if threshold is not None:
        rows.append(("threshold τ", f"{threshold:g}", html.escape(source or "")))
    if skill is not None:
        what = "accuracy" if skill.task == "classification" else "direction hit rate"
        rows.append(
            (
                f"model {what} (n={skill.n})",
                f"{skill.accuracy:.1%}",
                f"{skill.baseline_name} {skill.baseline_accuracy:.1%}",
            )
        )
        if skill.log_loss is not None and skill.baseline_log_loss is not None:
            rows.append(
                ("model log loss", f"{skill.log_loss:.4f}", f"class prior {skill.baseline_log_loss:.4f}")
            )
    elif no_skill:
        rows.append(("model vs baselines", "n/a", html.escape(no_skill)))
    rows.append(("strategy return", f"{market.total_return:+.2%}", f"buy-and-hold {market.hold_return:+.2%}"))
    rows.append(("strategy Sharpe", f"{market.sharpe:.2f}", f"buy-and-hold {market.hold_sharpe:.2f}"))
    table = "".join(f"<tr><th>{a}</th><td>{b}</td><td>{c}</td></tr>" for a, b, c in rows)
    warning = few_trades_warning(market.n_trades)
    note = f"<p class='warning'><b>Warning:</b> {html.escape(warning)}</p>" if warning else ""
    return f"<h2>Verdict</h2><table class='verdict'><tr><th></th><th>this run</th><th>baseline (same bars)</th></tr>{table}</table>{note}"


TRADE_COLUMNS = (
    "entry_bar", "exit_bar", "entry_time", "exit_time", "side", "qty", "entry_price", "exit_price", "fees",
    "funding", "pnl", "return", "bars_held", "reason",
)  # fmt: skip


def _iso_or_blank(ms: int) -> str:
    return "" if ms < 0 else f"{np.datetime64(int(ms), 'ms').astype(str).replace('T', ' ')}"


def write_trades_csv(trades: np.ndarray, path) -> Path:
    """One row per trade: bars, UTC times, side (long/short), quantity, prices, fees, funding, pnl, return,
    bars held and exit reason, in the backtest's full float precision."""
    lines = [",".join(TRADE_COLUMNS)]
    for t in trades:
        lines.append(
            ",".join(
                (
                    str(int(t["entry_bar"])), str(int(t["exit_bar"])), _iso_or_blank(t["entry_time_ms"]),
                    _iso_or_blank(t["exit_time_ms"]), "long" if t["side"] > 0 else "short", repr(float(t["qty"])),
                    repr(float(t["entry_price"])), repr(float(t["exit_price"])), repr(float(t["fees"])),
                    repr(float(t["funding"])), repr(float(t["pnl"])), repr(float(t["return"])),
                    str(int(t["bars_held"])), EXIT_REASONS[int(t["exit_reason"])],
                )
            )
        )  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _exit_counts(trades: np.ndarray) -> str:
    counts = np.bincount(trades["exit_reason"].astype(np.int64), minlength=len(EXIT_REASONS))
    return ", ".join(f"{EXIT_REASONS[code]} {counts[code]}" for code in sorted(EXIT_REASONS))


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}
.warning{background:#fff3cd;border:1px solid #e0b000;padding:6px 10px}"""


def write_report(
    result: BacktestResult,
    timestamps_ms,
    close,
    out_dir,
    *,
    periods_per_year: float | None = None,
    title: str = "convnext_fast backtest",
    trades_chart: bool = True,
    extra_html: str = "",
    checkpoint: str | None = None,
    threshold: float | None = None,
    threshold_source: str = "",
    skill: SkillCheck | None = None,
    no_skill: str = "",
) -> Path:
    """Write ``out_dir/report.html`` (and ``metrics.json`` beside it); returns the HTML path.

    ``close`` is the buy-and-hold reference (for a portfolio: an equal-weight index, with ``trades_chart``
    off since its trades are on many prices); ``extra_html`` is appended (e.g. per-symbol tables).
    ``checkpoint`` (where the signals came from), ``threshold`` and its source, and ``skill`` (model vs
    naive baselines; ``no_skill`` says why there is none) head the report's verdict, beside buy-and-hold."""
    times = np.asarray(timestamps_ms, dtype=np.int64)
    prices = as_float_array("close", close)
    check_same_length(equity=result.equity, timestamps_ms=times, close=prices)
    if (np.diff(times) <= 0).any():
        raise TradingInputError("timestamps_ms must be strictly increasing")
    ppy = periods_per_year or periods_per_year_from(times)
    metrics_obj = compute_metrics(result.equity, result.trades, ppy)
    metrics = metrics_obj.to_dict()
    dates = times.astype("datetime64[ms]")
    config = html.escape(json.dumps(result.config.to_dict()))
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{dates[0]} → {dates[-1]} UTC, {len(times)} bars, {ppy:.0f} bars/year. Config: <code>{config}</code></p>",
        _verdict_section(
            skill, no_skill, market_check(metrics_obj, prices, ppy), threshold, threshold_source, checkpoint
        ),
        f"<img alt='equity' src='data:image/png;base64,{_png(equity_figure(dates, result.equity, prices))}'>",
        f"<img alt='drawdown' src='data:image/png;base64,{_png(drawdown_figure(dates, result.equity))}'>",
        f"<img alt='trades' src='data:image/png;base64,{_png(trades_figure(dates, prices, result.trades))}'>"
        if trades_chart
        else "",
        "<h2>Monthly returns</h2>",
        _monthly_table(monthly_returns(times, result.equity)),
        "<h2>Metrics</h2>",
        _metrics_table(metrics),
        f"<p>Exits: {_exit_counts(result.trades)}</p>",
        extra_html,
    ]
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
    page += f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    finite = {k: (v if np.isfinite(v) else None) for k, v in metrics.items()}  # strict JSON has no NaN/Inf
    (out / "metrics.json").write_text(json.dumps(finite, indent=2))
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
