"""Helpers the tests import: the local Binance server, the daemon runner, page databases."""
