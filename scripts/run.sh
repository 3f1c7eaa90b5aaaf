#!/usr/bin/env bash
# Started by `make run`: the ingest daemon in the background, the page in the foreground.
# Ctrl-C stops the page; the daemon then gets SIGTERM and we wait for its final flush, so
# nothing it had queued is lost.
set -u
: "${BIN:=.venv/bin}" "${DB:=data/ticks.db}" "${SYMBOLS:=btcusdt ethusdt}"
: "${SOURCE:=auto}" "${PORT:=8501}"
mkdir -p "$(dirname "$DB")"
log="$(dirname "$DB")/ingest.log"

# The daemon writes its own log, rotated by size (10 MB, 5 old files kept); anything else it
# prints (a crash's traceback) still reaches this terminal.
# shellcheck disable=SC2086  # SYMBOLS is a list of words
echo "starting the ingest daemon: --source $SOURCE, symbols $SYMBOLS, database $DB"
"$BIN/python" ingest.py --source "$SOURCE" --symbols $SYMBOLS --db "$DB" --log-file "$log" &
ingest_pid=$!
echo "ingest daemon started (pid $ingest_pid, --source $SOURCE, log: $log)"

stop_ingest() {
    if kill -0 "$ingest_pid" 2>/dev/null; then
        echo "stopping the ingest daemon (pid $ingest_pid)..."
        kill -TERM "$ingest_pid" 2>/dev/null
    fi
    wait "$ingest_pid"
    echo "ingest daemon exited with status $?"
}
trap stop_ingest EXIT
trap 'exit 130' INT TERM
# Closing the terminal sends SIGHUP to all of us: the daemon flushes and exits 0 on it, and
# this script still waits for that (through the EXIT trap) instead of dying at once.
trap 'exit 129' HUP

# The page's server settings (localhost only, no garbage collection after each run, no
# source watching) are in .streamlit/config.toml, read by any `streamlit run app.py` from
# the repository root; the flags below repeat the ones that matter if it is started
# elsewhere.
echo "starting the page (the first start imports pandas, statsmodels and Plotly: a few seconds)"
echo "dashboard: http://localhost:$PORT"
"$BIN/streamlit" run app.py \
    --server.address 127.0.0.1 \
    --server.headless true \
    --server.port "$PORT" \
    --browser.gatherUsageStats false \
    --runner.postScriptGC false \
    --server.fileWatcherType none \
    -- --db "$DB"
