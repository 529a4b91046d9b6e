-- Windowed technical indicators of one symbol and interval, one row per bar of the partition.
-- Every window counts bars (rows), like the `ta` library; a row at open_time t uses only bars with
-- open_time <= t, all known at the close of candle t: its decision_time = open_time + $bar_us, the
-- key to join labels and windows on (joining on open_time would pair candle t's features with the
-- label decided at the close of candle t - 1). An indicator is NULL until its full window
-- exists in the input (warm-up), so the input must hold enough bars before $start (see
-- dagster_project/transform/indicators.py: WARMUP_BARS) for the partition to equal the whole
-- series.
-- Definitions (equal to `ta` 0.11 after warm-up unless noted):
--   sma_n          mean close over n bars
--   bb_*_20        Bollinger 20/2: middle = sma_20, upper/lower = middle +/- 2 * population std,
--                  width = (upper - lower) / middle * 100, pct_b = (close - lower) / (upper - lower)
--   roc_12         100 * (close / close 12 bars earlier - 1);  mom_10 = close - close 10 bars earlier
--   stoch_k_14     100 * (close - min low 14) / (max high 14 - min low 14); stoch_d_3 = sma 3 of %K
--   cmf_20         sum(mfv, 20) / sum(volume, 20), mfv = ((c - l) - (h - c)) / (h - l) * volume (0 if h = l)
--   mfi_14         100 - 100 / (1 + positive flow / negative flow) over the last 14 typical-price
--                  changes. Textbook: the first value needs 14 changes (15 bars); `ta` already emits
--                  one bar earlier counting bar 0 as a zero flow, so row 14 of the input is ours.
--   obv_20, vpt_20 OBV and VPT are cumulative sums whose level depends on where the data begins, so
--                  they could never be partition-exact; these are their 20-bar changes
--                  (obv.diff(20), `ta` vpt.diff(20)): signed volume and pct_change * volume summed
--                  over the last 20 bars. OBV is Granville's (as StockCharts): +volume when close
--                  rises, -volume when it falls, 0 when unchanged (`ta` adds +volume on an
--                  unchanged close)
--   ret_1, logret_1, volume_change_1   1-bar simple return, log return, relative volume change
--   hl2 = (h + l) / 2;  typical_price = (h + l + c) / 3
--   rv_20          realised volatility: sample std (ddof 1) of the last 20 1-bar log returns, per
--                  bar, not annualised
--   keltner_*_20   `ta` KeltnerChannel default (original_version = true, window 20): middle = sma 20
--                  of typical price, upper = sma 20 of (4h - 2l + c) / 3, lower = sma 20 of
--                  (-2h + 4l + c) / 3 (`ta` fills the bands from bar 0; here they wait for 20 bars)
--   donchian_*_20  max high / min low over 20 bars and their midpoint
-- params:
--   $kline_files  curated/klines Parquet file(s) of one symbol and interval: the partition plus
--                 earlier bars for warm-up
--   $bar_us       bar length of the interval in microseconds (60000000 for 1m)
--   $start        first open_time of the partition (inclusive, UTC)
--   $end          end of the partition (exclusive, UTC)
-- grain: open_time (one-to-one with decision_time)
with klines as (
    select open_time, high, low, close, volume
    from read_parquet($kline_files)
),

-- Every lag in one pass (lags are cheap; each window aggregate below costs a segment tree).
history as (
    select
        *,
        row_number() over bars as bar,
        lag(close) over bars as prev_close,
        lag(high) over bars as prev_high,
        lag(low) over bars as prev_low,
        lag(volume) over bars as prev_volume,
        lag(close, 2) over bars as close_2_ago,
        lag(close, 10) over bars as close_10_ago,
        lag(close, 12) over bars as close_12_ago,
        lag(high, 14) over bars as high_14_ago,
        lag(low, 14) over bars as low_14_ago,
        lag(high, 15) over bars as high_15_ago,
        lag(low, 15) over bars as low_15_ago
    from klines
    window bars as (order by open_time)
),

flows as (
    select
        *,
        (high + low + close) / 3 as typical_price,
        (prev_high + prev_low + prev_close) / 3 as prev_typical_price,
        case when high > low then ((close - low) - (high - close)) / (high - low) else 0 end
        * volume as money_flow_volume,
        case
            when close > prev_close then volume when close < prev_close then -volume else 0
        end as signed_volume,
        (close / prev_close - 1) * volume as price_volume,
        ln(close / prev_close) as logret_1
    from history
),

windowed as (
    select
        *,
        avg(close) over (order by open_time rows 9 preceding) as mean_10,
        avg(close) over w20 as mean_20,
        avg(close) over (order by open_time rows 49 preceding) as mean_50,
        avg(close) over (order by open_time rows 99 preceding) as mean_100,
        avg(close) over (order by open_time rows 199 preceding) as mean_200,
        stddev_pop(close) over w20 as std_20,
        stddev_samp(logret_1) over w20 as logret_std_20,
        -- bars t-13 .. t-2: the part shared by the 14-bar windows of %K at t, t-1 and t-2
        min(low) over shared_14 as shared_low_14,
        max(high) over shared_14 as shared_high_14,
        min(low) over w20 as low_20,
        max(high) over w20 as high_20,
        sum(money_flow_volume) over w20 / sum(volume) over w20 as cmf,
        sum(
            case when typical_price > prev_typical_price then typical_price * volume else 0 end
        ) over w14 as positive_flow,
        sum(
            case when typical_price < prev_typical_price then typical_price * volume else 0 end
        ) over w14 as negative_flow,
        sum(signed_volume) over w20 as obv_change,
        sum(price_volume) over w20 as vpt_change,
        avg(high) over w20 as mean_high_20,
        avg(low) over w20 as mean_low_20
    from flows
    window
        shared_14 as (order by open_time rows between 13 preceding and 2 preceding),
        w14 as (order by open_time rows 13 preceding),
        w20 as (order by open_time rows 19 preceding)
),

stochastic as (
    select
        *,
        100 * (close - least(shared_low_14, prev_low, low))
        / nullif(
            greatest(shared_high_14, prev_high, high) - least(shared_low_14, prev_low, low), 0
        ) as stoch_k,
        100 * (prev_close - least(shared_low_14, low_14_ago, prev_low))
        / nullif(
            greatest(shared_high_14, high_14_ago, prev_high)
            - least(shared_low_14, low_14_ago, prev_low),
            0
        ) as prev_stoch_k,
        100 * (close_2_ago - least(shared_low_14, low_15_ago, low_14_ago))
        / nullif(
            greatest(shared_high_14, high_15_ago, high_14_ago)
            - least(shared_low_14, low_15_ago, low_14_ago),
            0
        ) as stoch_k_2_ago
    from windowed
),

indicators as (
    select
        open_time,
        open_time + to_microseconds($bar_us::bigint) as decision_time,
        case when bar >= 10 then mean_10 end as sma_10,
        case when bar >= 20 then mean_20 end as sma_20,
        case when bar >= 50 then mean_50 end as sma_50,
        case when bar >= 100 then mean_100 end as sma_100,
        case when bar >= 200 then mean_200 end as sma_200,
        case when bar >= 20 then mean_20 + 2 * std_20 end as bb_upper_20,
        case when bar >= 20 then mean_20 end as bb_middle_20,
        case when bar >= 20 then mean_20 - 2 * std_20 end as bb_lower_20,
        case when bar >= 20 then 4 * std_20 / mean_20 * 100 end as bb_width_20,
        case
            when bar >= 20 then (close - (mean_20 - 2 * std_20)) / nullif(4 * std_20, 0)
        end as bb_pct_b_20,
        100 * (close / close_12_ago - 1) as roc_12,
        close - close_10_ago as mom_10,
        case when bar >= 14 then stoch_k end as stoch_k_14,
        case when bar >= 16 then (stoch_k + prev_stoch_k + stoch_k_2_ago) / 3 end as stoch_d_3,
        case when bar >= 20 then cmf end as cmf_20,
        case
            when bar >= 15 then 100 - 100 / (1 + positive_flow / negative_flow)
        end as mfi_14,
        case when bar >= 21 then obv_change end as obv_20,
        case when bar >= 21 then vpt_change end as vpt_20,
        close / prev_close - 1 as ret_1,
        logret_1,
        volume / nullif(prev_volume, 0) - 1 as volume_change_1,
        (high + low) / 2 as hl2,
        typical_price,
        case when bar >= 21 then logret_std_20 end as rv_20,
        case when bar >= 20 then (4 * mean_high_20 - 2 * mean_low_20 + mean_20) / 3 end
            as keltner_upper_20,
        case when bar >= 20 then (mean_high_20 + mean_low_20 + mean_20) / 3 end
            as keltner_middle_20,
        case when bar >= 20 then (-2 * mean_high_20 + 4 * mean_low_20 + mean_20) / 3 end
            as keltner_lower_20,
        case when bar >= 20 then high_20 end as donchian_upper_20,
        case when bar >= 20 then (high_20 + low_20) / 2 end as donchian_middle_20,
        case when bar >= 20 then low_20 end as donchian_lower_20
    from stochastic
)

select *
from indicators
where open_time >= $start and open_time < $end
order by open_time
