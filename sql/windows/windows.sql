-- Sliding windows of candles ending at decision_time, for named datasets, with the random
-- candle-drop mask of the irregular datasets. A window of w candles ending at candle t holds
-- candles t-w+1 .. t and is kept only if they are all present (the candle w-1 rows earlier opens
-- exactly w-1 bars earlier; incomplete curated bars count as missing). Every candidate is
-- returned; excluded_reason says why one is unusable ('gap': the window crosses a gap in the
-- klines, 'history': the files start inside the window), so the caller can count them.
-- Masks: position 0 is the oldest candle; true = dropped. A dataset with drop fraction p drops
-- round(p * w) candles, at most w - 1: the last candle (candle t) is never dropped. Which ones is
-- decided by ranking md5($seed | dataset | $symbol | window_size | decision_time | position), so
-- it is reproducible across runs, machines and DuckDB versions.
-- Split and fold are assigned later (by the split step); label values are joined later on
-- (decision_time, label).
-- params:
--   $kline_files     curated/klines Parquet files: the days kept plus the previous day(s)
--   $bar_us          bar length in microseconds (60000000 for 1m)
--   $start, $end     windows kept: $start <= decision_time < $end
--   $symbol          the symbol (it seeds the masks)
--   $seed            mask seed (text)
--   $window_sizes    window lengths in candles, e.g. [5, 15, 30]
--   $datasets        dataset names, e.g. ['regular', 'fullimage', 'irregular_60', ...]
--   $drop_fractions  share of candles dropped per dataset, same order, e.g. [0, 0, 0.6, ...]
--   $labels          the label each dataset is paired with, same order; '{w}' is replaced by
--                    the window size (e.g. 'window_up_{w}' for fullimage)
-- grain: dataset, window_size, decision_time
with bars as (
    select
        row_number() over (order by open_time) as rn,
        open_time,
        open_time + to_microseconds($bar_us::bigint) as decision_time
    from read_parquet($kline_files)
    where is_complete
),

datasets as (
    select
        unnest($datasets) as dataset,
        unnest($drop_fractions) as drop_fraction,
        unnest($labels) as label_template
),

candidates as (
    select
        t.decision_time,
        w.window_size,
        s.open_time as first_open_time,
        case
            when t.rn - (w.window_size - 1) < 1 then 'history'
            when s.open_time != t.open_time - to_microseconds((w.window_size - 1) * $bar_us::bigint)
                then 'gap'
        end as excluded_reason
    from bars as t
    cross join (select unnest($window_sizes) as window_size) as w
    left join bars as s on s.rn = t.rn - (w.window_size - 1)
    where t.decision_time >= $start and t.decision_time < $end
),

windows as (
    select
        d.dataset,
        c.window_size,
        c.decision_time,
        c.decision_time - to_microseconds(c.window_size * $bar_us::bigint) as start_time,
        replace(d.label_template, '{w}', c.window_size::varchar) as label,
        least(c.window_size - 1, round(d.drop_fraction * c.window_size))::integer as n_dropped,
        c.excluded_reason
    from candidates as c
    cross join datasets as d
),

drawn as (
    -- one seeded draw per position but the last (which is never dropped)
    select
        dataset,
        window_size,
        decision_time,
        n_dropped,
        list_transform(range(window_size - 1), lambda p: md5(prefix || p::varchar)) as draws
    from (
        select
            *,
            concat_ws('|', $seed, dataset, $symbol, window_size, epoch_us(decision_time), '')
                as prefix  -- md5 of '<seed>|<dataset>|<symbol>|<w>|<decision µs>|<position>'
        from windows
        where n_dropped > 0 and excluded_reason is null
    )
),

masks as (
    -- the n_dropped positions with the smallest draws are dropped; per window with list
    -- functions (a window function over every position cost 10x more)
    select
        dataset,
        window_size,
        decision_time,
        list_transform(
            range(window_size),
            lambda p: p < window_size - 1 and draws[p + 1] <= threshold
        ) as dropped_mask
    from (select *, list_sort(draws)[n_dropped] as threshold from drawn)
)

select
    w.dataset,
    w.window_size,
    w.decision_time,
    w.start_time,
    w.label,
    coalesce(m.dropped_mask, list_transform(range(w.window_size), lambda x: false)) as dropped_mask,
    w.n_dropped,
    w.excluded_reason
from windows as w
left join masks as m using (dataset, window_size, decision_time)
order by w.dataset, w.window_size, w.decision_time
