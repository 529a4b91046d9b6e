-- Lake health: the number of rows of one catalog view, counted by DuckDB (from the Parquet
-- footers where it can), never by loading the table.
-- params: $view: the name of a catalog view (query_table binds it as a name, never as SQL text)
-- grain: one row
select count(*) as rows
from query_table($view)
