"""The live order-book collector: Binance's diff-depth and bookTicker streams, landed in the lake.

``collect_depth(lake, CollectorConfig(symbols=("BTCUSDT", "ETHUSDT")))`` runs until SIGINT/SIGTERM
(or a configured stop) and returns a ``CollectorSummary``. ``DepthCollector(lake, config).run()`` is
the same as a coroutine, for callers that own an event loop. ``polling.poll_depth`` is the
fallback without a stream: REST ``/depth`` polled at a fixed cadence.

- ``config.py``: ``CollectorConfig`` (what, from where, how often);
- ``depth_collector.py``: ``DepthCollector`` and ``collect_depth``, the event loop;
- ``symbol.py``: ``SymbolRecorder``, one symbol's book and the rows it hands over at each flush;
- ``parts.py``: rows split by table, symbol and UTC date, written as immutable parts;
- ``summary.py``: ``CollectorSummary``, ``SymbolSummary``, ``FlushReport``;
- ``polling.py``: ``poll_depth``, REST snapshot polling.

How it works (one asyncio event loop, two worker threads):

- **One connection** to the combined stream ``<ws base>/stream?streams=<sym>@depth@100ms/
  <sym>@bookTicker/...`` for every symbol (spot and USD-M futures alike; Binance allows 1024
  streams a connection). Each depth event goes through the symbol's ``BookSynchronizer`` (Binance's
  buffering, bridging and sequence rules, see ``ingest/orderbook``), which feeds the ``BookSampler``
  (``raw/depth_snapshots`` rows on the exchange clock) and the ``DepthUpdateRecorder``
  (``raw/depth_updates``); each bookTicker goes to the ``BookTickerCheck``.
- **Snapshots.** Whenever a symbol's synchronizer ``needs_snapshot`` and it has buffered at least
  one event from the current connection (Binance: open the stream, buffer, then fetch), a REST
  ``/depth?limit=snapshot_limit`` snapshot is fetched in the REST worker thread, so the loop keeps
  reading and buffering meanwhile. A failed fetch (after the REST client's own retries) is counted
  and retried with backoff, and so is a snapshot that the buffered events do not bridge. A
  snapshot fetched for a connection that has since dropped is discarded.
- **Stale books.** ``check_stale`` runs every ``stale_check_every_s`` while connected.
- **Reconnects.** On a disconnect or any websocket error every book is resynced (reason
  ``reconnect``: continuity is lost), then the collector reconnects with exponential backoff and
  jitter; a connection that stayed up ``reconnect_max_s`` resets the backoff.
- **Flushes** every ``flush_every_s``, at each UTC midnight (the first event of a new UTC day on
  the exchange clock, or the wall clock's midnight, plus ``midnight_grace_s`` for the other
  symbols' first events) and at stop. A flush drains the new rows of every symbol, splits them by
  UTC date (``ts`` / ``event_time``) and adds one immutable part per ``(table, symbol, date)`` with
  ``Lake.append_part``, label ``c<first ms>-<last ms>`` (13-digit zero-padded, so names sort by
  time). Writes run in the IO worker thread. Rows leave the collector only after their part is
  written: a failed write keeps them for the next flush (and the final flush is tried
  ``final_flush_attempts`` times; what still fails is reported as ``rows_unwritten``).
- **Stop.** SIGINT/SIGTERM (handlers installed by ``run`` in the main thread), ``stop()`` on the
  loop, ``request_stop()`` from any thread, ``stop_after_s`` or ``stop_after_messages``: the
  collector stops reading, closes the socket, flushes everything it holds and returns the summary.

Why not ``BookRecorder``: it keeps every row for its lifetime and has no way to hand rows over, so
a collector running for days would grow without bound and re-pack all rows at every flush.
``SymbolRecorder`` wires the same parts (synchronizer, sampler, updates recorder, bookTicker
check) through the synchronizer's public observer API and swaps in a fresh sampler and recorder at
each flush, continuing the sampler's grid exactly (see ``SymbolRecorder.take``).

Rows are never written twice: a resync that replays updates already taken (a REST snapshot older
than the last applied event) would repeat ``final_update_id`` values and sample times; those rows
are dropped (counted in ``duplicates_dropped``) so the grain of both tables holds.
"""
