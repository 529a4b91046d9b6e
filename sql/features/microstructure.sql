-- Microstructure features of one symbol-day, one row per 1-minute bucket aligned to kline open_time.
-- A row at open_time t uses only book snapshots and trades with timestamps in [t, t + 1 minute):
-- all of it is known at the close of candle t, the row's decision_time = t + 1 minute (the end of
-- the bucket), the key to join labels and windows on. Book features are those of the last
-- snapshot in the bucket (the book at the close); the spine is the day's 1m klines, so a minute
-- without snapshots or trades still has a row, with NULL book features and 0 trades. Sums and
-- means of doubles add in time order (`order by ts`), so reruns give identical bits whatever the
-- number of threads.
-- params:
--   $kline_files     curated/klines 1m Parquet file(s) of the symbol-day
--   $snapshot_files  raw/depth_snapshots Parquet file(s) of the symbol-day
--   $trade_files     raw/agg_trades Parquet file(s) of the symbol-day
--   $top_n           levels per side summed by imbalance_top_n
-- grain: open_time (one-to-one with decision_time)
with klines as (
    select open_time, close
    from read_parquet($kline_files)
),

snapshots as (
    select
        time_bucket(interval 1 minute, ts) as open_time,
        ts,
        bid_prices,
        bid_sizes,
        ask_prices,
        ask_sizes,
        (bid_prices[1] + ask_prices[1]) / 2 as mid
    from read_parquet($snapshot_files)
    where len(bid_prices) > 0 and len(ask_prices) > 0
),

snapshot_features as (
    select
        open_time,
        ts,
        mid,
        (ask_prices[1] - bid_prices[1]) / mid * 1e4 as spread_bps,
        (bid_prices[1] * ask_sizes[1] + ask_prices[1] * bid_sizes[1])
            / (bid_sizes[1] + ask_sizes[1]) as microprice,
        (list_sum(bid_sizes[1:$top_n]) - list_sum(ask_sizes[1:$top_n]))
            / (list_sum(bid_sizes[1:$top_n]) + list_sum(ask_sizes[1:$top_n])) as imbalance_top_n,
        list_sum(list_transform(range(1, len(bid_prices) + 1),
            lambda i: if(bid_prices[i] >= mid * (1 - 10e-4), bid_sizes[i], 0.0))) as bid_depth_10bps,
        list_sum(list_transform(range(1, len(ask_prices) + 1),
            lambda i: if(ask_prices[i] <= mid * (1 + 10e-4), ask_sizes[i], 0.0))) as ask_depth_10bps,
        list_sum(list_transform(range(1, len(bid_prices) + 1),
            lambda i: if(bid_prices[i] >= mid * (1 - 50e-4), bid_sizes[i], 0.0))) as bid_depth_50bps,
        list_sum(list_transform(range(1, len(ask_prices) + 1),
            lambda i: if(ask_prices[i] <= mid * (1 + 50e-4), ask_sizes[i], 0.0))) as ask_depth_50bps
    from snapshots
),

book_by_minute as (
    select
        open_time,
        arg_max(mid, ts) as mid,
        arg_max(spread_bps, ts) as spread_bps,
        avg(spread_bps order by ts) as spread_bps_mean,
        arg_max(microprice, ts) as microprice,
        arg_max(imbalance_top_n, ts) as imbalance_top_n,
        arg_max(bid_depth_10bps, ts) as bid_depth_10bps,
        arg_max(ask_depth_10bps, ts) as ask_depth_10bps,
        arg_max(bid_depth_50bps, ts) as bid_depth_50bps,
        arg_max(ask_depth_50bps, ts) as ask_depth_50bps,
        count(*) as snapshots
    from snapshot_features
    group by open_time
),

trades_by_minute as (
    select
        time_bucket(interval 1 minute, ts) as open_time,
        count(*) as trade_count,
        sum(qty order by ts, agg_trade_id) as trade_volume,
        -- is_buyer_maker: the buyer rested, so the taker sold
        sum(qty order by ts, agg_trade_id) filter (where not is_buyer_maker) as taker_buy_qty,
        sum(qty order by ts, agg_trade_id) filter (where is_buyer_maker) as taker_sell_qty,
        sum(price * qty order by ts, agg_trade_id) / sum(qty order by ts, agg_trade_id) as vwap
    from read_parquet($trade_files)
    group by open_time
)

select
    k.open_time,
    k.open_time + interval 1 minute as decision_time,
    b.mid,
    b.spread_bps,
    b.spread_bps_mean,
    b.microprice,
    b.imbalance_top_n,
    b.bid_depth_10bps,
    b.ask_depth_10bps,
    b.bid_depth_50bps,
    b.ask_depth_50bps,
    coalesce(b.snapshots, 0) as snapshots,
    coalesce(t.trade_count, 0) as trade_count,
    coalesce(t.trade_volume, 0.0) as trade_volume,
    coalesce(t.taker_buy_qty, 0.0) as taker_buy_qty,
    coalesce(t.taker_sell_qty, 0.0) as taker_sell_qty,
    (coalesce(t.taker_buy_qty, 0.0) - coalesce(t.taker_sell_qty, 0.0)) / t.trade_volume
        as trade_flow_imbalance,
    t.vwap,
    (k.close - t.vwap) / t.vwap * 1e4 as vwap_dev_bps
from klines as k
left join book_by_minute as b using (open_time)
left join trades_by_minute as t using (open_time)
order by k.open_time
