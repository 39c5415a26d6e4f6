{#- Keeps erased subjects out: a replay of old landing files must not bring them back. The
    tombstone token uses its own salt ('tombstone'), never rotated, so tombstones outlive
    rotations of the other salts. -#}
{% macro not_erased(customer_id_expr) -%}
    {{ salted_hash(customer_id_expr, 'tombstone') }} not in (select tombstone_token from {{ source('control', 'erasure_tombstones') }})
{%- endmacro %}
