"""Producers of trades: the live Binance feeds, REST backfill, the simulator and replay.

Each producer parses and hands rows to the one ``writer.TradeWriter``; none writes SQL.
"""
