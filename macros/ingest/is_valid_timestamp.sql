{#- True when a landing text value parses with the source contract's format (or is null and
    nulls are allowed). Used to route rows to quarantine with a reason code. -#}
{% macro is_valid_timestamp(expr, format='%Y-%m-%d %H:%M:%S', nullable=false) -%}
    ({% if nullable %}{{ expr }} is null or {% endif %}try_strptime({{ expr }}, '{{ format }}') is not null)
{%- endmacro %}
