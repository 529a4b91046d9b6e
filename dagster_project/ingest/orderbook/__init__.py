"""A Binance local order book kept in sync with the diff-depth stream, and sampled to snapshots.

A live collector (``ingest/collector``) and the recorded-stream replay (``replay.py``) feed the
same classes, all pure logic without IO except the replay's file reading:

- ``book.py``: ``OrderBook``, price → quantity per side, the best levels kept sorted;
- ``messages.py``: ``DepthEvent``, ``DepthSnapshot``, ``BookTicker`` parsed from Binance's JSON;
- ``sync.py``: ``BookSynchronizer``, the rules below as a state machine;
- ``sampling.py``: ``BookSampler`` (``raw/depth_snapshots`` rows) and ``DepthUpdateRecorder``
  (``raw/depth_updates``), observers of the synchronizer;
- ``ticker_check.py``: ``BookTickerCheck``, the book against Binance's ``@bookTicker``;
- ``recorder.py``: ``BookRecorder``, one symbol's synchronizer with those observers attached;
- ``replay.py``: recorded streams replayed through ``BookRecorder``.

Binance's rules, spot (``/api/v3``) with USD-M futures (``/fapi/v1``) where they
differ, as Binance's "How to manage a local order book correctly" pages state them:

1. buffer ``<symbol>@depth@100ms`` events (``U`` first update id, ``u`` final update id; futures
   also ``pu``, the previous event's ``u``) until a REST ``/depth`` snapshot (``lastUpdateId``)
   arrives;
2. drop buffered events with ``u <= lastUpdateId`` (futures: ``u < lastUpdateId``);
3. the first applied event must bridge the snapshot: ``U <= lastUpdateId + 1 <= u`` (futures:
   ``U <= lastUpdateId <= u``);
4. every later event must continue the previous one: ``U == previous u + 1`` (futures:
   ``pu == previous u``); an event with ``u <= previous u`` is a duplicate and is dropped;
5. quantities are absolute, not deltas; quantity 0 removes the level (removing a level the book
   does not hold is normal).

Anything else (a sequence break, a crossed book (best bid >= best ask), a depth stream silent for
longer than ``stale_after_s`` while connected) means the book is out of sync: it is logged, counted
by reason, the book is discarded and ``needs_snapshot`` asks the caller for a new snapshot. Events
keep being buffered meanwhile. Nothing is ever silently patched up.

``BookSampler`` turns the applied events into ``raw/depth_snapshots`` rows on the exchange clock
with no look-ahead: the row at ``ts = k * cadence`` holds the book as of the last event with
``event_time <= ts``, and rows exist only while the book is in sync (a resync gap shows as missing
rows). ``DepthUpdateRecorder`` keeps every applied event for ``raw/depth_updates``.
``BookRecorder`` wires one symbol's synchronizer, sampler, recorder and bookTicker check together.
"""
