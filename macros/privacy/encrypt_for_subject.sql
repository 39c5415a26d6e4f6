{#-
    encrypt_for_subject(expr, subject_token_expr='subject_token'): authenticated ciphertext of
    the value under the data subject's own key, pl_encrypt(<subject token>, cast(expr as varchar)).
    Destroying that subject's key makes every copy unreadable (crypto-shredding).
    subject_token_expr is a SQL expression for the subject token, for example the name of a
    column (in DuckDB also an alias defined earlier in the same select list).
    pl_encrypt is registered by the project's dbt-duckdb plugin; no key appears in SQL.
-#}
{% macro encrypt_for_subject(expr, subject_token_expr='subject_token') -%}
    {{ return(adapter.dispatch('encrypt_for_subject', 'privacy_lakehouse')(expr, subject_token_expr)) }}
{%- endmacro %}

{#- pl_encrypt exists only where the project's plugin registers it (DuckDB). -#}
{% macro default__encrypt_for_subject(expr, subject_token_expr) -%}
    {{ privacy_lakehouse._privacy_not_portable('encrypt_for_subject') }}
{%- endmacro %}

{% macro duckdb__encrypt_for_subject(expr, subject_token_expr) -%}
    {%- if not privacy_lakehouse._privacy_treatments_enabled() -%}
        {{ return('cast(' ~ expr ~ ' as varchar)') }}
    {%- endif -%}
    pl_encrypt(cast({{ subject_token_expr }} as varchar), cast({{ expr }} as varchar))
{%- endmacro %}
