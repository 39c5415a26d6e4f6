{#-
  on-run-end: hands the build to the project's Python hooks (ingestion ledger, retention, serving
  files, build evidence) through pl_after_build, a DuckDB function the plugin registers. Only
  metadata is passed: model names, layers, locations, configs, column meta, node statuses, the
  build's start time and whether it is an --empty run.
-#}
{% macro after_build(results) -%}
  {%- if not execute or flags.WHICH not in ['build', 'run'] or not var('after_build_hooks', true) -%}
    {{ return('') }}
  {%- endif -%}
  {%- set models = [] -%}
  {%- for node in graph.nodes.values() if node.resource_type == 'model' and node.config.materialized == 'delta' -%}
    {%- set columns = {} -%}
    {%- for name, column in node.columns.items() -%}
      {%- do columns.update({name: (column.config.meta if column.config is defined and column.config.meta else column.meta) or {}}) -%}
    {%- endfor -%}
    {%- do models.append({
        'unique_id': node.unique_id,
        'name': node.name,
        'schema': node.schema,
        'layer': node.fqn[1],
        'location': node.config.get('location') or (node.fqn[1] ~ '/' ~ node.name),
        'meta': node.config.get('meta') or {},
        'retention': node.config.get('retention'),
        'columns': columns,
    }) -%}
  {%- endfor -%}
  {%- set statuses = [] -%}
  {%- for result in results -%}
    {%- do statuses.append({'unique_id': result.node.unique_id, 'status': result.status | string}) -%}
  {%- endfor -%}
  {%- set payload = tojson({
      'invocation_id': invocation_id,
      'command': flags.WHICH,
      'target_name': target.name,
      'models': models,
      'results': statuses,
      'empty': delta_is_empty_run(),
      'run_started_at': run_started_at.isoformat(),
  }) -%}
  {{ return("select pl_after_build(" ~ delta_sql_string(payload) ~ ")") }}
{%- endmacro %}
