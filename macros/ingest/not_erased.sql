{#- Keeps erased subjects out: a replay of old landing files must not bring them back. The
    tombstone token uses its own salt ('tombstone'), never rotated, so tombstones outlive
    rotations of the other salts. While no subject has been erased the check is the constant
    true, so a build does not tokenize every landing row only to compare with an empty set. -#}
{% macro not_erased(customer_id_expr) -%}
    {%- if execute and not erasure_tombstones_exist() -%}
        {{ return('true') }}
    {%- endif -%}
    {{ salted_hash(customer_id_expr, 'tombstone') }} not in (select tombstone_token from {{ source('control', 'erasure_tombstones') }})
{%- endmacro %}

{#- True when the lake's erasure tombstone table holds a row (asked once per compiled model). -#}
{% macro erasure_tombstones_exist() -%}
    {%- set result = run_query("select exists (select 1 from " ~ source('control', 'erasure_tombstones') ~ ")") -%}
    {{ return(result.columns[0].values()[0]) }}
{%- endmacro %}
