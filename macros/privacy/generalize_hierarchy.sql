{#-
    generalize_hierarchy(expr, hierarchy_relation, level, unmatched=none): the value's ancestor
    at `level` in a generalization hierarchy, looked up without a join (a scalar subquery), so
    it fits in any select list. The hierarchy is a relation, usually a seed, with columns
    value, level_1, level_2, ... (level_1 the finest); one row per value: a duplicated value
    fails the query rather than picking an arbitrary ancestor. Values are compared as text.
    level is a number (2 -> level_2) or a column name. A value missing from the hierarchy
    becomes `unmatched` (default NULL): never the raw value. NULL stays NULL.
    Pass ref('<seed>') as hierarchy_relation; when the call sits inside privacy_select, add
    `-- depends_on: {{ ref('<seed>') }}` to the model so dbt orders the build.
-#}
{% macro generalize_hierarchy(expr, hierarchy_relation, level, unmatched=none) -%}
    {{ return(adapter.dispatch('generalize_hierarchy', 'privacy_lakehouse')(
        expr, hierarchy_relation, level, unmatched)) }}
{%- endmacro %}

{% macro default__generalize_hierarchy(expr, hierarchy_relation, level, unmatched) -%}
    {%- if level is integer and level is not boolean and level >= 1 -%}
        {%- set level_column = 'level_' ~ level -%}
    {%- else -%}
        {%- set level_column = privacy_lakehouse._privacy_require_identifier(
            'generalize_hierarchy', 'level', level) -%}
    {%- endif -%}
    {#- Renamed inside a derived table: hierarchy column names cannot capture the outer expr's columns. -#}
    {%- set lookup -%}
        (select pl_hierarchy.pl_hierarchy_ancestor
        from (
            select
                cast(value as {{ dbt.type_string() | lower }}) as pl_hierarchy_value,
                cast({{ level_column }} as {{ dbt.type_string() | lower }}) as pl_hierarchy_ancestor
            from {{ hierarchy_relation }}
        ) as pl_hierarchy
        where pl_hierarchy.pl_hierarchy_value = cast({{ expr }} as {{ dbt.type_string() | lower }}))
    {%- endset -%}
    case
        when {{ expr }} is null then null
        {%- if unmatched is none %}
        else {{ lookup }}
        {%- else %}
        else coalesce({{ lookup }}, {{ privacy_lakehouse._privacy_string_literal(unmatched) }})
        {%- endif %}
    end
{%- endmacro %}

{% macro duckdb__generalize_hierarchy(expr, hierarchy_relation, level, unmatched) -%}
    {{ return(privacy_lakehouse.default__generalize_hierarchy(expr, hierarchy_relation, level, unmatched)) }}
{%- endmacro %}
