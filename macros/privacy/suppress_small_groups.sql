{#-
    suppress_small_groups(expr, partition_expr=none, min_count=5, remainder='Other',
    subject_expr=none): the value where its group is large enough, else the remainder label.
    The group is every row with the same value (and the same partition_expr, when given:
    count within each region, say); its size is count(*) over that window, or the number of
    distinct subject_expr values when given (count people, not rows). The result is text
    (the value cast to varchar) unless remainder is none, when small groups become NULL and the
    value keeps its type. NULL values stay NULL. A window function: use it in a select list,
    and note it counts the rows of its own select (after where, before limit).
-#}
{% macro suppress_small_groups(expr, partition_expr=none, min_count=5, remainder='Other', subject_expr=none) -%}
    {{ return(adapter.dispatch('suppress_small_groups', 'privacy_lakehouse')(
        expr, partition_expr, min_count, remainder, subject_expr)) }}
{%- endmacro %}

{% macro default__suppress_small_groups(expr, partition_expr, min_count, remainder, subject_expr) -%}
    {%- do privacy_lakehouse._privacy_require_integer('suppress_small_groups', 'min_count', min_count, 1) -%}
    {%- set partitions = [expr] -%}
    {%- if partition_expr is string -%}
        {%- do partitions.append(partition_expr) -%}
    {%- elif partition_expr is not none -%}
        {%- do partitions.extend(partition_expr) -%}
    {%- endif -%}
    {%- if subject_expr is none -%}
        {%- set group_size = 'count(*)' -%}
    {%- else -%}
        {%- set group_size = 'count(distinct ' ~ subject_expr ~ ')' -%}
    {%- endif -%}
    case
        when {{ expr }} is null then null
        when {{ group_size }} over (partition by {{ partitions | join(', ') }}) >= {{ min_count }}
            {%- if remainder is none %}
            then {{ expr }}
        else null
            {%- else %}
            then cast({{ expr }} as {{ dbt.type_string() | lower }})
        else {{ privacy_lakehouse._privacy_string_literal(remainder) }}
            {%- endif %}
    end
{%- endmacro %}

{% macro duckdb__suppress_small_groups(expr, partition_expr, min_count, remainder, subject_expr) -%}
    {{ return(privacy_lakehouse.default__suppress_small_groups(
        expr, partition_expr, min_count, remainder, subject_expr)) }}
{%- endmacro %}
