-- The controls, kept off the leaderboard: leaky-label controls, shuffled-label controls and
-- seed_replica rows (and any cell whose training known_at reaches its test block), in the
-- leaderboard's shape with `why` each is here.
-- params: none (a catalog view over the `scoreboard` view)
-- grain: cell
select *
from scoreboard
where why is not null
order by symbol, interval, dataset, window_size, label, protocol, training, rank, cell
