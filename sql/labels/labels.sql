-- Labels for one symbol and interval in long format: one row per (decision_time, label).
-- Candle t closes at decision_time = open_time_t + $bar_us; a label is knowable when the last
-- candle it reads closes (known_at). Labels need an unbroken run of candles: a horizon is usable
-- only if the candle h rows later opens exactly h bars later (consecutive open_times differ by one
-- bar; incomplete curated bars count as missing). Labels whose future is not in $kline_files, or
-- whose span crosses a gap, are absent, never guessed. tb_h needs a volatility, which
-- labels.ewm_volatility gives only after its warm-up (labels.volatility_warmup: 848 one-bar
-- returns at span 60): no tb label exists until that much history is in $kline_files.
-- Partition exactness: with labels.history_bars() candles before $start (the warm-up, the longest
-- window) and labels.lookahead_bars() after $end (the longest horizon) in $kline_files, every row
-- equals the same row computed over the whole series (datasets.label_kline_files picks the days).
-- params:
--   $kline_files     curated/klines Parquet files: the days kept, the days after them for forward
--                    horizons and the days before for the volatility warm-up and leaky windows
--   $bar_us          bar length in microseconds (60000000 for 1m)
--   $start, $end     decision rows kept: $start <= decision_time < $end
--   $next_up_h       horizons of next_up_h and fwd_logret_h (bars), e.g. [1, 5, 15]
--   $window_up_w     widths of window_up_w and leaky_window_up_w (bars), e.g. [5, 15, 30]
--   $tb_h            vertical barriers of tb_h (bars), e.g. [5, 15, 30]
--   $tb_k            barrier width in volatilities (profit-take and stop-loss at +-k * vol)
--   $vol_open_times  open_time of candles with a volatility (from labels.ewm_volatility)
--   $vol_values      the EWM volatility of log returns known at the close of that candle
-- grain: decision_time, label
with bars as (
    select
        row_number() over (order by open_time) as rn,
        open_time,
        open_time + to_microseconds($bar_us::bigint) as decision_time,
        open,
        high,
        low,
        close,
        lead(open) over (order by open_time) as next_open  -- open_{t+1}: the next complete bar
    from read_parquet($kline_files)
    where is_complete
),

volatility as (
    select
        unnest($vol_open_times) as open_time,
        unnest($vol_values) as vol
),

horizon_pairs as (
    -- candle t with candle t+h, only where the h bars between them are all present
    select
        t.decision_time,
        t.close,
        h.horizon,
        f.rn as f_rn,
        f.close as f_close,
        f.decision_time as f_close_time
    from bars as t
    cross join (select unnest($next_up_h) as horizon) as h
    inner join bars as f
        on
            f.rn = t.rn + h.horizon
            and f.open_time = t.open_time + to_microseconds(h.horizon * $bar_us::bigint)
),

next_up as (
    select
        decision_time,
        'next_up_' || horizon as label,
        (f_close > close)::double as value,
        f_close_time as known_at,
        false as is_leaky
    from horizon_pairs
),

fwd_logret as (
    select
        decision_time,
        'fwd_logret_' || horizon as label,
        ln(f_close / close) as value,
        f_close_time as known_at,
        false as is_leaky
    from horizon_pairs
),

window_up as (
    -- the next w candles as one: close_{t+w} > open_{t+1}
    select
        t.decision_time,
        'window_up_' || w.width as label,
        (f.close > t.next_open)::double as value,
        f.decision_time as known_at,
        false as is_leaky
    from bars as t
    cross join (select unnest($window_up_w) as width) as w
    -- one join on bar numbers: with a second one DuckDB planned a cross product (quadratic);
    -- next_open is bar t+1's open, consecutive because t+w is exactly w bars later
    inner join bars as f
        on
            f.rn = t.rn + w.width
            and f.open_time = t.open_time + to_microseconds(w.width * $bar_us::bigint)
),

barriers as (
    select
        t.rn,
        t.open_time,
        t.decision_time,
        b.horizon,
        t.close * exp($tb_k * v.vol) as upper,
        t.close * exp(-$tb_k * v.vol) as lower
    from bars as t
    inner join volatility as v on v.open_time = t.open_time
    cross join (select unnest($tb_h) as horizon) as b
    where v.vol is not null and v.vol > 0
),

barrier_spans as (
    -- barriers whose whole vertical span t+1 .. t+h is present
    select
        b.*,
        f.decision_time as vertical_close
    from barriers as b
    inner join bars as f
        on
            f.rn = b.rn + b.horizon
            and f.open_time = b.open_time + to_microseconds(b.horizon * $bar_us::bigint)
),

touches as (
    -- the first bar in t+1 .. t+h whose range reaches a barrier; a bar reaching both counts as
    -- a stop-loss (its intrabar order is unknown, so the pessimistic outcome is taken)
    select
        s.decision_time,
        s.horizon,
        s.vertical_close,
        min(j.rn) filter (where j.high >= s.upper or j.low <= s.lower) as touch_rn,
        arg_min(
            case when j.low <= s.lower then -1.0 else 1.0 end, j.rn
        ) filter (where j.high >= s.upper or j.low <= s.lower) as touch_value,
        arg_min(j.decision_time, j.rn) filter (
            where j.high >= s.upper or j.low <= s.lower
        ) as touch_close
    from barrier_spans as s
    -- bars t+1 .. t+h as an equi-join on rn (a band join here is quadratic in the bars)
    cross join unnest(range(1, s.horizon + 1)) as k(step)
    inner join bars as j on j.rn = s.rn + k.step
    group by all
),

triple_barrier as (
    select
        decision_time,
        'tb_' || horizon as label,
        coalesce(touch_value, 0.0) as value,
        coalesce(touch_close, vertical_close) as known_at,
        false as is_leaky
    from touches
),

leaky_last_candle_up as (
    -- leakage control: the last candle of the window the model sees, close_t > open_t
    select
        decision_time,
        'leaky_last_candle_up' as label,
        (close > open)::double as value,
        decision_time as known_at,
        true as is_leaky
    from bars
),

leaky_window_up as (
    -- leakage control: the window the model sees, close_t > open_{t-w+1}
    select
        t.decision_time,
        'leaky_window_up_' || w.width as label,
        (t.close > s.open)::double as value,
        t.decision_time as known_at,
        true as is_leaky
    from bars as t
    cross join (select unnest($window_up_w) as width) as w
    inner join bars as s
        on
            s.rn = t.rn - (w.width - 1)
            and s.open_time = t.open_time - to_microseconds((w.width - 1) * $bar_us::bigint)
),

all_labels as (
    select * from next_up
    union all select * from fwd_logret
    union all select * from window_up
    union all select * from triple_barrier
    union all select * from leaky_last_candle_up
    union all select * from leaky_window_up
)

select
    decision_time,
    label,
    value,
    known_at,
    is_leaky
from all_labels
where decision_time >= $start and decision_time < $end
order by decision_time, label
