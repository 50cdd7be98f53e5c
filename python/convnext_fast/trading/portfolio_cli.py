"""``convnext-fast backtest --symbols A,B,C``: one model's signals on many symbols, traded on one capital
(:func:`~convnext_fast.trading.portfolio.run_portfolio`), one report with the portfolio's and every
symbol's metrics.

Each symbol's model inputs use its whole stored history (warm-up included); the portfolio trades the bars
every symbol has (the intersection of their bar times), from the checkpoint's out-of-sample test start
unless ``--start`` says otherwise.
"""

from __future__ import annotations

import argparse
import html
from functools import reduce
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import UserError
from .portfolio import run_portfolio


def _symbol_table(result, ppy: float) -> str:
    columns = ("total_return", "sharpe", "max_drawdown", "total_trades", "win_rate", "fees_paid")
    head = "".join(f"<th>{c}</th>" for c in columns)
    rows = []
    for name, m in [("portfolio", result.metrics(ppy)), *result.symbol_metrics(ppy).items()]:
        cells = "".join(
            f"<td>{getattr(m, c):.4g}</td>"
            if isinstance(getattr(m, c), float)
            else f"<td>{getattr(m, c)}</td>"
            for c in columns
        )
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}</tr>")
    return f"<h2>Per symbol</h2><table><tr><th></th>{head}</tr>{''.join(rows)}</table>"


def run_portfolio_cli(args: argparse.Namespace) -> int:
    from ..data.cli import parse_symbols
    from ..data.store import load_candles
    from ..prediction import checkpoint_decisions
    from .backtest import config_from_args
    from .report import periods_per_year_from, write_report
    from .traded_bars import first_traded_bar

    if not args.checkpoint:
        raise UserError("--symbols needs --checkpoint: one model's signals for every symbol")
    if args.sweep:
        raise UserError("--sweep is for one symbol; drop it or --symbols")
    symbols = parse_symbols(args.symbols)
    config = config_from_args(args)
    series, meta = {}, None
    for symbol in symbols:
        candles = load_candles(args.data, symbol, args.interval).validate()
        signals, _, meta, _ = checkpoint_decisions(args.checkpoint, candles, args.threshold, symbol)
        series[symbol] = (candles, signals)
    grid = reduce(np.intersect1d, [c.start_ms for c, _ in series.values()])
    if len(grid) < 2:
        raise UserError(f"{', '.join(symbols)} share fewer than 2 bar times: nothing to trade together")
    rows = {s: np.searchsorted(c.start_ms, grid) for s, (c, _) in series.items()}
    dropped = max(len(c) for c, _ in series.values()) - len(grid)
    first_candles = series[symbols[0]][0][rows[symbols[0]]]
    first = first_traded_bar(args.start, first_candles, meta)
    times = grid[first:]

    def stack(field: str) -> np.ndarray:
        return np.stack([getattr(series[s][0], field)[rows[s]][first:] for s in symbols])

    signal = np.stack([series[s][1][rows[s]][first:] for s in symbols])
    prices = [stack(f) for f in ("open", "high", "low", "close")]
    result = run_portfolio(
        *prices, signal, args.size, config, symbols=symbols, timestamps_ms=times, sizing=args.portfolio_sizing
    )
    ppy = periods_per_year_from(times)
    trades = np.concatenate([result.trades[s] for s in symbols])
    trades = trades[np.argsort(trades["entry_bar"], kind="stable")]
    index = (prices[3] / prices[3][:, :1]).mean(axis=0)  # equal-weight buy & hold of the symbols
    path = write_report(
        SimpleNamespace(equity=result.equity, trades=trades, config=config),
        times,
        index,
        args.out,
        periods_per_year=ppy,
        title=f"convnext_fast portfolio backtest — {', '.join(symbols)} ({args.portfolio_sizing} sizing)",
        trades_chart=False,
        extra_html=_symbol_table(result, ppy),
    )
    names = result.trades[symbols[0]].dtype.names
    lines = ["symbol," + ",".join(names)]
    for s in symbols:
        lines += [f"{s}," + ",".join(map(str, row)) for row in result.trades[s].tolist()]
    (Path(args.out) / "trades.csv").write_text("\n".join(lines) + "\n")
    m = result.metrics(ppy)
    print(
        f"{len(symbols)} symbols x {len(times)} bars ({dropped} bars not shared by every symbol skipped), "
        f"{m.total_trades} trades, total return {m.total_return:.2%}, Sharpe {m.sharpe:.2f}, "
        f"max drawdown {m.max_drawdown:.2%} → {path}"
    )
    print(result.report(ppy))
    return 0
