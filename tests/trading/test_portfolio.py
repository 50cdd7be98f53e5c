"""The portfolio backtest: one symbol is exactly today's backtest; many share one capital."""

from __future__ import annotations

import numpy as np
import pytest

from convnext_fast.data.candles import InvalidCandlesError
from convnext_fast.data.synthetic import synthetic_candles
from convnext_fast.trading._checks import TradingInputError
from convnext_fast.trading.backtest import BacktestConfig, run_backtest
from convnext_fast.trading.portfolio import run_portfolio


def market(rng, n_sym: int, n: int) -> dict:
    bars = [synthetic_candles(n, seed=int(rng.integers(2**31))) for _ in range(n_sym)]
    prices = {k: np.stack([getattr(b, k) for b in bars]) for k in ("open", "high", "low", "close")}
    return {**prices, "signal": rng.choice([-1, 0, 1], size=(n_sym, n), p=[0.3, 0.4, 0.3]).astype(np.int8)}


def random_config(rng) -> BacktestConfig:
    return BacktestConfig(
        initial_equity=float(rng.uniform(1e3, 1e5)),
        taker_fee_bps=float(rng.uniform(0, 10)),
        maker_fee_bps=float(rng.uniform(0, 5)),
        slippage_bps=float(rng.uniform(0, 5)),
        stop_loss=float(rng.uniform(0.005, 0.03)) if rng.random() < 0.7 else None,
        take_profit=float(rng.uniform(0.005, 0.05)) if rng.random() < 0.7 else None,
        leverage=float(rng.uniform(1, 5)),
        close_on_hold=bool(rng.random() < 0.5),
        maintenance_margin=float(rng.uniform(0.003, 0.05)) if rng.random() < 0.5 else None,
    )


@pytest.mark.parametrize("sizing", ["portfolio", "symbol"])
@pytest.mark.parametrize("repeat", range(2))
def test_one_symbol_portfolio_is_exactly_the_backtest(rng, repeat, sizing):
    n = int(rng.integers(200, 800))
    m = market(rng, 1, n)
    config = random_config(rng)
    size = rng.uniform(0.1, 3.0, n)
    funding = np.where(rng.random(n) < 0.125, rng.normal(0, 3e-4, n), 0.0)
    times = np.arange(n, dtype=np.int64) * 3_600_000
    single = run_backtest(
        m["open"][0], m["high"][0], m["low"][0], m["close"][0], m["signal"][0], size, config,
        funding=funding, timestamps_ms=times,
    )  # fmt: skip
    book = run_portfolio(
        m["open"], m["high"], m["low"], m["close"], m["signal"], size[None], config,
        funding=funding[None], symbols=["BTCUSDT"], timestamps_ms=times, sizing=sizing,
    )  # fmt: skip
    assert len(single.trades) > 3, "a test without trades would prove nothing"
    np.testing.assert_array_equal(book.equity, single.equity)
    np.testing.assert_array_equal(book.position[0], single.position)
    np.testing.assert_array_equal(book.trades["BTCUSDT"], single.trades)
    assert book.metrics() == single.metrics()


def test_symbols_share_one_capital_and_add_up(rng):
    n_sym, n = int(rng.integers(3, 6)), int(rng.integers(300, 600))
    m = market(rng, n_sym, n)
    config = BacktestConfig(initial_equity=10_000.0, taker_fee_bps=5.5, stop_loss=0.02, leverage=float(n_sym))
    size = rng.uniform(0.2, 1.0, n_sym)
    funding = np.where(rng.random((n_sym, n)) < 0.125, rng.normal(0, 3e-4, (n_sym, n)), 0.0)
    names = [f"SYM{i}" for i in range(n_sym)]
    book = run_portfolio(**m, size=size, config=config, funding=funding, symbols=names)

    # The portfolio is the capital plus every symbol's P&L, and each P&L ends as its trades' sum.
    np.testing.assert_allclose(book.equity, config.initial_equity + book.pnl.sum(axis=0), rtol=1e-12)
    for i, name in enumerate(names):
        assert book.pnl[i, -1] == pytest.approx(book.trades[name]["pnl"].sum(), rel=1e-9, abs=1e-6)
        assert book.position[i, -1] == 0.0, "everything is closed at the end"

    # Shared capital: a symbol flat at the previous close enters with size × the portfolio's equity there
    # (not its own slice of it).
    checked = 0
    for i, name in enumerate(names):
        for trade in book.trades[name]:
            t = trade["entry_bar"]
            if t > 0 and book.position[i, t - 1] == 0.0:
                notional = trade["qty"] * trade["entry_price"]
                assert notional == pytest.approx(min(size[i], config.leverage) * book.equity[t - 1], rel=1e-9)
                checked += 1
    assert checked > 10

    # Symbols are stepped in parallel; their order must not matter.
    order = rng.permutation(n_sym)
    shuffled = run_portfolio(
        **{k: v[order] for k, v in m.items()}, size=size[order], config=config, funding=funding[order],
        symbols=[names[i] for i in order],
    )  # fmt: skip
    np.testing.assert_allclose(shuffled.equity, book.equity, rtol=1e-12)
    np.testing.assert_allclose(shuffled.pnl, book.pnl[order], rtol=1e-9, atol=1e-6)
    report = book.report()
    assert report.count("\n") == n_sym + 2 and all(name in report for name in names)
    per_symbol = book.symbol_metrics()
    assert sum(per_symbol[s].total_trades for s in names) == book.metrics().total_trades


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda m: m.update(signal=m["signal"][:, :-1]), TradingInputError, "signal must have shape"),
        # Bars go through the one OHLCV validator, whose error is the candle error.
        (
            lambda m: m["high"].__setitem__((1, 5), -1.0),
            InvalidCandlesError,
            "S1: non-positive high at index 5",
        ),
        (lambda m: m.update(close=m["close"][0]), TradingInputError, "prices must be"),
        (lambda m: m["signal"].__setitem__((0, 3), 2), TradingInputError, "S0: signal must contain only"),
    ],
)
def test_bad_inputs_name_the_symbol(rng, change, error, match):
    m = market(rng, 2, 50)
    m = {k: v.copy() for k, v in m.items()}
    change(m)
    with pytest.raises(error, match=match):
        run_portfolio(**m)


def test_symbol_sizing_runs_each_symbol_as_its_own_backtest_in_parallel(rng):
    n_sym, n = int(rng.integers(2, 5)), int(rng.integers(300, 700))
    m = market(rng, n_sym, n)
    m["signal"][0] = np.where(
        np.arange(n) % 2 == 0, 1, -1
    )  # a flip every bar: more trades than the first cap
    config = random_config(rng)
    size = rng.uniform(0.1, 1.0, n_sym)
    book = run_portfolio(**m, size=size, config=config, sizing="symbol")
    assert len(book.trades["S0"]) > n // 2
    for i in range(n_sym):
        alone = run_backtest(
            m["open"][i], m["high"][i], m["low"][i], m["close"][i], m["signal"][i], size[i], config
        )
        np.testing.assert_array_equal(book.pnl[i], alone.equity - config.initial_equity)
        np.testing.assert_array_equal(book.position[i], alone.position)
        np.testing.assert_array_equal(book.trades[f"S{i}"], alone.trades)
    np.testing.assert_allclose(book.equity, config.initial_equity + book.pnl.sum(axis=0), rtol=1e-12)
    with pytest.raises(TradingInputError, match="sizing must be one of"):
        run_portfolio(**m, sizing="equal")


# ---- backtest --symbols (the CLI) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def universe_run(tmp_path_factory):
    """A tiny model trained on a 3-symbol SYNTHETIC universe, and the universe in a candle store."""
    from convnext_fast.data.store import CandleStore
    from convnext_fast.data.synthetic import synthetic_universe
    from convnext_fast.train import TrainConfig, train

    root = tmp_path_factory.mktemp("uni")
    seed = int(np.random.default_rng().integers(2**31))
    universe = synthetic_universe(3, 1500, seed=seed)
    store = CandleStore(root / "store")
    for symbol, candles in universe.items():
        store.write(candles, symbol, "60")
    config = TrainConfig(
        out=str(root / "run"), dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), window=64, stride=2, batch_size=32,
        epochs=1, warmup_epochs=0, folds=2, fused=False, device="cpu", norm_bars=96, symbol_embedding=True,
        label={"horizon": 4, "threshold": 0.004}, max_windows=1500, seed=seed % 100,
    )  # fmt: skip
    result = train(config, candles=universe)
    return root, list(universe), result.folds[-1]["checkpoint"]


@pytest.mark.slow
def test_backtest_symbols_cli_reports_portfolio_and_symbols(universe_run, tmp_path, capsys):
    import json

    from convnext_fast.cli import main

    root, symbols, checkpoint = universe_run
    common = ["backtest", "--data", str(root / "store"), "--checkpoint", checkpoint, "--threshold", "0.34"]
    out = tmp_path / "p"
    assert (
        main([*common, "--symbols", ",".join(symbols), "--portfolio-sizing", "symbol", "--out", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert all(f"| {s} |" in printed for s in symbols) and "| portfolio |" in printed
    page = (out / "report.html").read_text()
    assert "Per symbol" in page and all(s in page for s in symbols)
    csv = (out / "trades.csv").read_text().splitlines()
    assert csv[0].startswith("symbol,") and {line.split(",")[0] for line in csv[1:]} <= set(symbols)
    # With per-symbol sizing each symbol's book is that symbol's own backtest: compare with backtest --symbol.
    portfolio = {line.split("|")[1].strip(): line for line in printed.splitlines() if line.startswith("| ")}
    for symbol in np.random.default_rng().choice(symbols, size=1):
        single = tmp_path / symbol
        assert main([*common, "--symbol", symbol, "--out", str(single)]) == 0
        metrics = json.loads((single / "metrics.json").read_text())
        row = portfolio[symbol].split("|")[2:-1]
        assert float(row[0]) == pytest.approx(metrics["total_return"], rel=1e-3, abs=1e-6)
        assert int(row[3]) == metrics["total_trades"]
    capsys.readouterr()
    assert main([*common, "--symbols", "SYNTHETIC00,NOPE", "--out", str(tmp_path / "x")]) == 2
    assert (
        main([*common, "--symbols", ",".join(symbols), "--sweep", "0.4,0.5", "--out", str(tmp_path / "y")])
        == 2
    )
    assert main([*common, "--symbol", "OTHER", "--out", str(tmp_path / "w")]) == 2
