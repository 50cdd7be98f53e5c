"""A self-contained HTML backtest report: matplotlib charts embedded as base64 PNGs, monthly returns and
the metrics table. Open ``report.html`` anywhere; it references no other file."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

# The object API (Figure, no pyplot) keeps no global state, so reports can be drawn from any thread.
from matplotlib.figure import Figure

from ._checks import TradingInputError, as_float_array, check_same_length
from .backtest import EXIT_REASONS, BacktestResult
from .metrics import compute_metrics, drawdown

MS_PER_YEAR = 365 * 24 * 3600 * 1000
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def periods_per_year_from(timestamps_ms: np.ndarray) -> float:
    """Bars per year from the median bar spacing (24·365 for hourly bars)."""
    if len(timestamps_ms) < 2:
        raise TradingInputError("timestamps_ms needs at least 2 bars to infer the bar interval")
    return MS_PER_YEAR / float(np.median(np.diff(timestamps_ms)))


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _equity_chart(dates, equity, close) -> str:
    fig = Figure(figsize=(11, 4))
    ax = fig.add_subplot()
    ax.plot(dates, equity, label="strategy", lw=1.0)
    ax.plot(dates, equity[0] * close / close[0], label="buy & hold", lw=1.0, alpha=0.7)
    ax.set_yscale("log")  # decades of growth and ruin stay readable side by side
    ax.set_ylabel("equity (log)")
    ax.set_title("Equity vs buy-and-hold")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return _png(fig)


def _drawdown_chart(dates, equity) -> str:
    fig = Figure(figsize=(11, 2.5))
    ax = fig.add_subplot()
    dd = 100 * drawdown(equity)
    ax.fill_between(dates, dd, 0, color="tab:red", alpha=0.4, lw=0)
    ax.set_ylabel("drawdown %")
    ax.set_title("Drawdown")
    ax.grid(alpha=0.3)
    return _png(fig)


def _trades_chart(dates, close, trades) -> str:
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
    return _png(fig)


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


def _metrics_table(metrics: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.6g}</td></tr>" for k, v in metrics.items())
    return f"<table class='metrics'>{rows}</table>"


def _exit_counts(trades: np.ndarray) -> str:
    counts = np.bincount(trades["exit_reason"].astype(np.int64), minlength=len(EXIT_REASONS))
    return ", ".join(f"{EXIT_REASONS[code]} {counts[code]}" for code in sorted(EXIT_REASONS))


STYLE = """body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"""


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
) -> Path:
    """Write ``out_dir/report.html`` (and ``metrics.json`` beside it); returns the HTML path.

    ``close`` is the buy-and-hold reference (for a portfolio: an equal-weight index, with ``trades_chart``
    off since its trades are on many prices); ``extra_html`` is appended (e.g. per-symbol tables)."""
    times = np.asarray(timestamps_ms, dtype=np.int64)
    prices = as_float_array("close", close)
    check_same_length(equity=result.equity, timestamps_ms=times, close=prices)
    if (np.diff(times) <= 0).any():
        raise TradingInputError("timestamps_ms must be strictly increasing")
    ppy = periods_per_year or periods_per_year_from(times)
    metrics = compute_metrics(result.equity, result.trades, ppy).to_dict()
    dates = times.astype("datetime64[ms]")
    config = html.escape(json.dumps(result.config.to_dict()))
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{dates[0]} → {dates[-1]} UTC, {len(times)} bars, {ppy:.0f} bars/year. Config: <code>{config}</code></p>",
        f"<img alt='equity' src='data:image/png;base64,{_equity_chart(dates, result.equity, prices)}'>",
        f"<img alt='drawdown' src='data:image/png;base64,{_drawdown_chart(dates, result.equity)}'>",
        f"<img alt='trades' src='data:image/png;base64,{_trades_chart(dates, prices, result.trades)}'>"
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
