-- Chosen indicators of one series over the charted span, long (one row per indicator and bar),
-- at each bar's decision_time (its close: when the value is known). NULLs (warm-up) are left out.
-- params: $symbol, $interval: the series; $first_day, $last_day: UTC days to read, inclusive;
--   $start, $end: the charted span, decision_time in (start, end]; $names: indicator columns
-- grain: decision_time, indicator
with chosen as (
    select
        decision_time,
        columns(lambda c: list_contains($names, c))
    from indicators
    where
        symbol = $symbol
        and interval = $interval
        and date between $first_day and $last_day
        and decision_time > $start
        and decision_time <= $end
)

unpivot chosen on columns(* exclude (decision_time)) into name indicator value value
order by indicator, decision_time
