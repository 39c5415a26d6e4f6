{#-
    The project's models, snapshots, seeds and sources with their columns' meta, as JSON, for
    the policy validation in Python (pl_policy_violations). Tests, analyses and hooks carry no
    columns of their own and are skipped. Metadata only: no row ever goes into this payload.
-#}
{% macro privacy_policy_nodes_json() %}
    {{ return(adapter.dispatch('privacy_policy_nodes_json', 'privacy_lakehouse')()) }}
{% endmacro %}

{% macro default__privacy_policy_nodes_json() %}
    {%- set nodes = [] -%}
    {%- set candidates = graph.nodes.values() | list + graph.sources.values() | list -%}
    {%- for node in candidates
        if node.resource_type in ['model', 'snapshot', 'seed', 'source'] -%}
        {%- set columns = {} -%}
        {%- for column_name, column in (node.columns or {}).items() -%}
            {#- config.meta (dbt 1.10+) wins over the older top-level meta. -#}
            {%- set meta = {} -%}
            {%- do meta.update(column.get('meta') or {}) -%}
            {%- do meta.update((column.get('config') or {}).get('meta') or {}) -%}
            {%- do columns.update({column.get('name') or column_name: {'meta': meta}}) -%}
        {%- endfor -%}
        {%- do nodes.append({
            'unique_id': node.unique_id,
            'name': node.name,
            'resource_type': node.resource_type,
            'fqn': node.fqn,
            'source_name': node.get('source_name'),
            'columns': columns,
        }) -%}
    {%- endfor -%}
    {{ return(tojson({'nodes': nodes})) }}
{% endmacro %}
