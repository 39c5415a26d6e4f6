{#-
    encrypt_values_for_subject(exprs, subject_token_expr='subject_token'): the ciphertexts of
    several values of one subject as one list, in the order of `exprs` (a list of SQL
    expressions): pl_encrypt_values(<subject token>, [cast(e as varchar), ...]). Each element is
    what encrypt_for_subject(e) gives; the subject's key is looked up once per row instead of
    once per column, which is cheaper for a row with many identifiers. Alias the list in a CTE
    and take each ciphertext out with ciphertext_of:

        {%- set sealed = ['first_name', 'email'] %}
        ... {{ encrypt_values_for_subject(sealed) }} as ciphertexts ...
        select {{ ciphertext_of('ciphertexts', sealed, 'email') }} as email_enc ...
-#}
{% macro encrypt_values_for_subject(exprs, subject_token_expr='subject_token') -%}
    {{ return(adapter.dispatch('encrypt_values_for_subject', 'privacy_lakehouse')(exprs, subject_token_expr)) }}
{%- endmacro %}

{% macro default__encrypt_values_for_subject(exprs, subject_token_expr) -%}
    {{ privacy_lakehouse._privacy_not_portable('encrypt_values_for_subject') }}
{%- endmacro %}

{% macro duckdb__encrypt_values_for_subject(exprs, subject_token_expr) -%}
    {%- do privacy_lakehouse._privacy_require_expression_list('encrypt_values_for_subject', exprs) -%}
    {%- set values -%}
        [{% for expr in exprs %}cast({{ expr }} as varchar){{ ", " if not loop.last }}{% endfor %}]
    {%- endset -%}
    {%- if not privacy_lakehouse._privacy_treatments_enabled() -%}
        {{ return(values) }}
    {%- endif -%}
    pl_encrypt_values(cast({{ subject_token_expr }} as varchar), {{ values }})
{%- endmacro %}
