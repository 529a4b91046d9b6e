-- The honest leaderboard for the explorer: every column of the `leaderboard` view (one row per
-- cell: the model's pooled test score, its CI, the baselines and shuffled control beside it).
-- params: $limit: the most rows returned
-- grain: cell
select *
from leaderboard
limit $limit
