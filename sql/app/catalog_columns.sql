-- Every view of the catalog with its columns and their types, for the SQL console's schema list.
-- params: none
-- grain: view_name, column_name
select
    table_name as view_name,
    column_name,
    data_type
from duckdb_columns()
where database_name = current_database() and schema_name = 'main' and not internal
    and table_name in (select view_name from duckdb_views() where not internal)
order by view_name, column_index
