{#-
    salted_hash(expr, salt_name='subject'): a keyed, versioned token of the value,
    pl_token(cast(expr as varchar), '<salt_name>'). pl_token is registered in DuckDB by the
    project's dbt-duckdb plugin, which holds the secret salt; only the salt's *name* appears in
    SQL, so compiled SQL, logs and the manifest never carry the secret. NULL stays NULL.
    Equal values with the same salt name give equal tokens, so tokens join across models.
-#}
{% macro salted_hash(expr, salt_name='subject') -%}
    {{ return(adapter.dispatch('salted_hash', 'privacy_lakehouse')(expr, salt_name)) }}
{%- endmacro %}

{#- pl_token exists only where the project's plugin registers it (DuckDB). -#}
{% macro default__salted_hash(expr, salt_name) -%}
    {{ privacy_lakehouse._privacy_not_portable('salted_hash') }}
{%- endmacro %}

{% macro duckdb__salted_hash(expr, salt_name) -%}
    {%- do privacy_lakehouse._privacy_require_identifier('salted_hash', 'salt_name', salt_name) -%}
    {%- if not privacy_lakehouse._privacy_treatments_enabled() -%}
        {{ return('cast(' ~ expr ~ ' as varchar)') }}
    {%- endif -%}
    pl_token(cast({{ expr }} as varchar), {{ privacy_lakehouse._privacy_string_literal(salt_name) }})
{%- endmacro %}
