-- The honest leaderboard: each model's pooled test score in an honest cell that is no control
-- (no leaky label, no shuffled labels, training known_at before the test block), ranked by AUROC
-- within its series and training, with its CI, train AUROC, every baseline's and the shuffled
-- control's score on the same rows, and the suspicious flag.
-- params: none (a catalog view over the `scoreboard` view)
-- grain: cell
select * exclude (why)
from scoreboard
where why is null
order by symbol, interval, dataset, window_size, label, protocol, training, rank, cell
