-- Lake health: the catalog's views with the query that defines each; the page reads the lake
-- table a view is over from its read_parquet glob (derived views have none and are left out).
-- params: none
-- grain: view_name
select view_name, sql
from duckdb_views()
where database_name = current_database()
  and not internal
order by view_name
