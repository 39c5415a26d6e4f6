{#-
  The `delta` materialization: the model is staged as a temporary view on the model's own
  cursor, the project's dbt-duckdb plugin streams it into a Delta table with delta-rs, and a
  view over delta_scan('<absolute path>') takes the model's name so downstream refs and BI
  tools read the Delta table.

  Configs: incremental_strategy (none = rebuild the table; 'append'; 'merge' with unique_key),
  partition_by, on_schema_change (ignore | fail | append_new_columns | sync_all_columns),
  delta_properties (extra Delta table properties), cluster_by (columns to sort rows by before
  writing, e.g. subject_token, so an erasure rewrites few files), target_file_size (bytes per
  file; 16 MiB by default for clustered tables) and stage_rows_before_sort (true: the rows go
  into a temporary table first and are sorted from there, two queries where one ran out of
  memory under a memory limit).
-#}
{% materialization delta, adapter='duckdb' %}
  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set strategy = config.get('incremental_strategy') -%}
  {%- set incremental = delta_is_incremental() -%}
  {%- set mode = strategy if incremental else 'overwrite' -%}
  {%- if strategy not in [none, 'append', 'merge'] -%}
    {{ exceptions.raise_compiler_error("model " ~ model.name ~ ": delta supports incremental_strategy 'append' or 'merge', not '" ~ strategy ~ "'") }}
  {%- endif -%}
  {%- if strategy == 'merge' and not config.get('unique_key') -%}
    {{ exceptions.raise_compiler_error("model " ~ model.name ~ ": incremental_strategy='merge' needs a unique_key") }}
  {%- endif -%}
  {%- set location = delta_location() -%}
  {%- set stage_name = model.name ~ '__pl_stage' -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {%- if config.get('contract').enforced -%}
    {{ get_assert_columns_equivalent(sql) }}
  {%- endif -%}

  {% call statement('stage') -%}
    create or replace temp view {{ adapter.quote(stage_name) }} as (
      {{ sql }}
    )
  {%- endcall %}

  {%- set spec = {
      'stage': adapter.quote(stage_name),
      'location': location,
      'mode': mode,
      'unique_key': config.get('unique_key'),
      'partition_by': config.get('partition_by'),
      'on_schema_change': config.get('on_schema_change') or 'ignore',
      'stats_columns': delta_stats_columns(),
      'properties': config.get('delta_properties') or {},
      'empty': delta_is_empty_run(),
      'model': model.name,
      'cluster_by': config.get('cluster_by'),
      'target_file_size': config.get('target_file_size'),
      'stage_rows_before_sort': config.get('stage_rows_before_sort') or false,
  } -%}
  {% do adapter.store_relation('delta_writer', target_relation, [], location, 'delta', spec) %}
  {%- set result = fromjson(run_query("select pl_delta_write_result(" ~ delta_sql_string(location) ~ ")").columns[0].values()[0]) -%}

  {% call statement('view') -%}
    {%- if result['version'] is none -%}
    {#- --empty on a table that does not exist yet: a typed, empty view so downstream compiles. -#}
    create or replace view {{ target_relation }} as select * from (
      {{ sql }}
    ) where false
    {%- else -%}
    create or replace view {{ target_relation }} as select * from delta_scan({{ delta_sql_string(location) }})
    {%- endif -%}
  {%- endcall %}
  {% call statement('drop_stage') -%}
    drop view if exists {{ adapter.quote(stage_name) }}
  {%- endcall %}

  {%- set message = (result['skipped'] or ((mode | upper) ~ ' ' ~ result['rows_written'] ~ ' rows, delta v' ~ result['version'])) -%}
  {%- call noop_statement('main', message, 'DELTA', result['rows_written']) -%}{%- endcall -%}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {% do persist_docs(target_relation, model) %}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
