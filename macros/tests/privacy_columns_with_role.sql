{#-
    The names of a relation's columns whose meta declares the given privacy_role, read from the
    graph (config.meta over meta). The relation is matched to its model, snapshot, seed or
    source by database, schema and identifier.
-#}
{% macro privacy_columns_with_role(relation, role) %}
    {{ return(adapter.dispatch('privacy_columns_with_role', 'privacy_lakehouse')(relation, role)) }}
{% endmacro %}

{% macro default__privacy_columns_with_role(relation, role) %}
    {%- set node = privacy_lakehouse.privacy_node_for_relation(relation) -%}
    {%- set names = [] -%}
    {%- for column_name, column in (node.columns or {}).items() -%}
        {%- set meta = {} -%}
        {%- do meta.update(column.get('meta') or {}) -%}
        {%- do meta.update((column.get('config') or {}).get('meta') or {}) -%}
        {%- if meta.get('privacy_role') == role -%}
            {%- do names.append(column.get('name') or column_name) -%}
        {%- endif -%}
    {%- endfor -%}
    {{ return(names) }}
{% endmacro %}
