"""The live source's command line: market prefixes, ``top:N``, URL flags, the API key.

Parsing is checked through the daemon's own parser (``build_parser``) and
``binance.cli.plan``, which the daemon runs before anything starts; the universe picked
by ``top:N`` from answers as Binance gives them (and as it must not).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys

import pytest

from pairs_monitor.ingest.binance import cli, ws
from pairs_monitor.ingest.binance.feed import FeedError
from pairs_monitor.ingest.daemon import build_parser
from tests.helpers.binance_server import BinanceServer
from tests.helpers.daemon import ROOT


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def plans(*argv: str) -> dict[str, cli.MarketPlan]:
    return {p.market: p for p in cli.plan(parse(*argv))}


@pytest.mark.parametrize(
    ("word", "canonical"),
    [
        ("btcusdt", "BTCUSDT"),
        ("USDM:btcusdt", "usdm:BTCUSDT"),
        ("spot:EthUsdt", "spot:ETHUSDT"),
        ("top:20", "top:20"),
        ("Spot:Top:5", "spot:top:5"),
        ("usdm:top:1", "usdm:top:1"),
        (f"usdm:top:{cli.MAX_TOP}", f"usdm:top:{cli.MAX_TOP}"),
        ("top", "TOP"),  # a symbol named TOP, not the universe
    ],
)
def test_symbol_words_are_read_with_their_market_and_case(word, canonical):
    assert parse("--symbols", word).symbols == [canonical]


@pytest.mark.parametrize(
    ("word", "said"),
    [
        ("foo:btcusdt", "a symbol word is SYMBOL, spot:SYMBOL, usdm:SYMBOL, top:N"),
        ("usdm:", "no symbol after usdm:"),
        (":btcusdt", "a symbol word is"),
        ("top:0", f"top:N takes a whole number N from 1 to {cli.MAX_TOP}"),
        ("top:-3", "top:N takes a whole number N from 1 to"),
        ("usdm:top:abc", "top:N takes a whole number"),
        ("spot:top:1e3", "top:N takes a whole number"),
        (f"top:{cli.MAX_TOP + 1}", "top:N takes a whole number"),
        ("top:20:x", "a symbol word is"),
        ("usdm:spot:btcusdt", "a symbol word is"),
        ("btc usdt", "no symbol"),
    ],
)
def test_nonsense_symbol_words_are_usage_errors(capsys, word, said):
    with pytest.raises(SystemExit) as exit_info:
        parse("--symbols", word)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --symbols" in err
    assert said in err


def test_prefixed_and_bare_symbols_split_into_markets_in_order():
    got = plans("--symbols", "btcusdt", "ethusdt", "usdm:btcusdt", "usdm:ethusdt", "btcusdt")
    assert list(got) == ["spot", "usdm"]
    assert got["spot"].symbols == ["BTCUSDT", "ETHUSDT"]  # once each
    assert got["usdm"].symbols == ["BTCUSDT", "ETHUSDT"]
    assert (got["spot"].ws_url, got["spot"].rest_url) == (
        "wss://stream.binance.com:9443",
        "https://api.binance.com",
    )
    assert (got["usdm"].ws_url, got["usdm"].rest_url) == (
        "wss://fstream.binance.com",
        "https://fapi.binance.com",
    )
    # each market its own budget, at its own default
    assert (got["spot"].rest_weight_per_min, got["usdm"].rest_weight_per_min) == (2400, 1000)


def test_bare_symbols_and_top_n_belong_to_market():
    got = plans("--market", "usdm", "--symbols", "btcusdt", "top:5", "spot:top:3")
    assert got["usdm"].symbols == ["BTCUSDT"] and got["usdm"].top == 5
    assert got["spot"].symbols == [] and got["spot"].top == 3


def test_rest_weight_applies_to_each_market_budget():
    got = plans("--symbols", "btcusdt", "usdm:btcusdt", "--rest-weight-per-min", "600")
    assert [p.rest_weight_per_min for p in got.values()] == [600, 600]


def test_market_host_flags_and_single_market_flags():
    got = plans(
        "--symbols", "btcusdt", "usdm:btcusdt",
        "--spot-ws-url", "ws://127.0.0.1:1", "--spot-rest-url", "http://127.0.0.1:1/",
        "--usdm-ws-url", "ws://127.0.0.1:2", "--usdm-rest-url", "http://127.0.0.1:2",
    )  # fmt: skip
    assert (got["spot"].ws_url, got["spot"].rest_url) == ("ws://127.0.0.1:1", "http://127.0.0.1:1")
    assert (got["usdm"].ws_url, got["usdm"].rest_url) == ("ws://127.0.0.1:2", "http://127.0.0.1:2")
    one = plans("--symbols", "usdm:btcusdt", "--ws-url", "ws://h:3", "--rest-url", "http://h:3")
    assert (one["usdm"].ws_url, one["usdm"].rest_url) == ("ws://h:3", "http://h:3")
    # a path before the route is a proxy's prefix, kept (the benchmark uses one)
    assert plans("--symbols", "x", "--ws-url", "ws://h:4/bare")["spot"].ws_url == "ws://h:4/bare"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (
            ["--symbols", "btcusdt", "usdm:btcusdt", "--ws-url", "ws://h:1"],
            "--ws-url name one market's host, but --symbols has symbols of spot and usdm",
        ),
        (
            ["--symbols", "btcusdt", "usdm:btcusdt", "--rest-url", "http://h:1"],
            "use --spot-ws-url, --spot-rest-url, --usdm-ws-url and --usdm-rest-url instead",
        ),
        (
            ["--symbols", "usdm:btcusdt", "--ws-url", "ws://h:1", "--usdm-ws-url", "ws://h:2"],
            "--ws-url and --usdm-ws-url both given for usdm: give one",
        ),
        (["--symbols", "top:5", "spot:top:6"], "top:N given twice for spot"),
    ],
)
def test_ambiguous_command_lines_are_refused(argv, said):
    with pytest.raises(cli.UsageError) as refused:
        cli.plan(parse(*argv))
    assert said in str(refused.value)


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--ws-url", "http://127.0.0.1:1", "is not a ws:// or wss:// URL"),
        ("--usdm-ws-url", "fstream.binance.com", "is not a ws:// or wss:// URL"),
        ("--rest-url", "ws://127.0.0.1:1", "is not a http:// or https:// URL"),
        ("--usdm-ws-url", "wss://fstream.binance.com/market/stream", "give the host base"),
        ("--spot-ws-url", "wss://stream.binance.com:9443/stream?streams=x", "give the host base"),
        ("--usdm-rest-url", "https://fapi.binance.com/fapi/v1", "give the host base"),
        ("--spot-rest-url", "https://api.binance.com/api/v3/", "give the host base"),
    ],
)
def test_url_flags_take_host_bases_only(capsys, flag, value, said):
    with pytest.raises(SystemExit) as exit_info:
        parse("--symbols", "btcusdt", flag, value)
    assert exit_info.value.code == 2
    assert said in capsys.readouterr().err


def test_plain_symbols_only_for_sim_and_replay():
    assert cli.plain_symbols(["BTCUSDT", "ETHUSDT"]) == ["BTCUSDT", "ETHUSDT"]
    assert cli.plain_symbols(["BTCUSDT", "usdm:ETHUSDT"]) is None
    assert cli.plain_symbols(["top:3"]) is None


@pytest.mark.daemon
def test_the_daemon_refuses_what_plan_refuses_with_exit_2():
    for argv, said in [
        (
            ["--source", "live", "--symbols", "btcusdt", "usdm:btcusdt", "--ws-url", "ws://h:1"],
            "--ws-url name one market's host",
        ),
        (
            ["--source", "sim", "--symbols", "btcusdt", "usdm:ethusdt"],
            "--source sim takes plain symbols",
        ),
        (["--source", "live", "--symbols", "usdm:top:0"], "top:N takes a whole number"),
    ]:
        done = subprocess.run(
            [sys.executable, "ingest.py", *argv, "--db", "/nonexistent/never.db"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert said in done.stderr


# -- top:N -----------------------------------------------------------------------------


def test_top_n_ranks_trading_symbols_by_quote_volume(caplog):
    info = {
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING"},
            {"symbol": "ETHUSDT", "status": "TRADING"},
            {"symbol": "SOLUSDT", "status": "TRADING"},
            {"symbol": "XRPUSDT", "status": "TRADING"},
            {"symbol": "LUNAUSDT", "status": "BREAK"},  # not trading: never picked
            "not a symbol",
        ]
    }
    tickers = [
        {"symbol": "BTCUSDT", "quoteVolume": "900.5"},
        {"symbol": "LUNAUSDT", "quoteVolume": "99999"},
        {"symbol": "ETHUSDT", "quoteVolume": "700"},
        {"symbol": "SOLUSDT", "quoteVolume": "700"},  # a tie: by name
        {"symbol": "XRPUSDT", "quoteVolume": "NaN"},  # no usable volume: skipped
        {"symbol": "DOGEUSDT", "quoteVolume": "5"},  # not in exchangeInfo
        {"symbol": "ADAUSDT", "quoteVolume": 12.0},  # a number, not Binance's string
        ["junk"],
    ]
    trading = cli.trading_symbols(info, "binance-usdm")
    assert trading == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"}
    with caplog.at_level(logging.WARNING, logger="ingest.binance"):
        ranked = cli.rank_by_quote_volume(trading, tickers, "binance-usdm")
    assert ranked == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert "3 ticker/24hr item(s) without a usable quoteVolume skipped" in caplog.text


@pytest.mark.parametrize("answer", [{"code": -1121}, "<html>", None, 5])
def test_top_n_refuses_answers_that_are_no_listing(answer):
    with pytest.raises(FeedError, match="binance-spot answered ticker/24hr with"):
        cli.rank_by_quote_volume({"BTCUSDT"}, answer, "binance-spot")
    with pytest.raises(FeedError, match="binance-spot answered exchangeInfo with"):
        cli.trading_symbols(answer if answer != {"code": -1121} else {"symbols": 3}, "binance-spot")


def test_top_n_that_cannot_be_picked_is_a_feed_error_naming_the_market():
    server = BinanceServer(["BTCUSDT"]).start()
    server.info_failures = [400]  # exchangeInfo refused, as a proxy in the way would
    try:
        entry = cli.MarketPlan("spot", top=3, rest_url=server.rest_url, rest_weight_per_min=600)
        with pytest.raises(FeedError, match=r"cannot pick spot:top:3: binance-spot at http://"):
            cli.top_symbols(entry, timeout=2)
    finally:
        server.stop()


# -- the key -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   "])
def test_no_api_key_when_unset_or_empty(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(cli.API_KEY_ENV, raising=False)
    else:
        monkeypatch.setenv(cli.API_KEY_ENV, value)
    assert cli.api_key_from_environment() is None


def test_the_api_key_is_read_from_the_environment_and_a_broken_one_never_shown(monkeypatch, caplog):
    monkeypatch.setenv(cli.API_KEY_ENV, " vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7 ")
    assert (
        cli.api_key_from_environment() == "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7"
    )
    monkeypatch.setenv(cli.API_KEY_ENV, "secret-part\nX-Injected: 1")
    with caplog.at_level(logging.ERROR, logger="ingest.binance"):
        assert cli.api_key_from_environment() is None
    assert "BINANCE_API_KEY is not printable ASCII without spaces: ignored" in caplog.text
    assert "secret-part" not in caplog.text


# -- streams per connection ------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 600, 1500, 5000])
def test_trade_and_mark_price_streams_stay_within_binance_limits_per_connection(count):
    """A USD-M feed with funding subscribes two streams per symbol: every connection
    keeps to 1,024 streams and to the URL limit, and every symbol is on one of them."""
    symbols = [f"S{i:04d}USDT" for i in range(count)]
    kinds = ("trade", "markPrice")  # what the feed subscribes once its funding is set
    for max_url in (ws.MAX_URL_CHARS, 10**9):  # the URL bound, then the stream bound alone
        groups = ws.plan_connections(
            "wss://fstream.binance.com", symbols, route=ws.USDM_ROUTE, kinds=kinds,
            max_url=max_url,
        )  # fmt: skip
        assert [s for group in groups for s in group] == symbols
        for group in groups:
            streams = ws.symbol_streams(group, kinds)
            assert len(streams) <= ws.MAX_STREAMS_PER_CONNECTION
            url = ws.stream_url("wss://fstream.binance.com", streams, ws.USDM_ROUTE)
            assert len(url) <= max_url
        if max_url > ws.MAX_URL_CHARS:
            assert len(groups) == -(-count // 512)  # 512 symbols fill 1,024 streams
