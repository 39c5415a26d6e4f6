{#-
    pseudonymize(expr, salt_name='subject'): the same keyed token as salted_hash, under the
    name privacy officers use. Kept as its own macro so both names stay documented and dispatchable.
-#}
{% macro pseudonymize(expr, salt_name='subject') -%}
    {{ return(adapter.dispatch('pseudonymize', 'privacy_lakehouse')(expr, salt_name)) }}
{%- endmacro %}

{% macro default__pseudonymize(expr, salt_name) -%}
    {{ return(privacy_lakehouse.salted_hash(expr, salt_name)) }}
{%- endmacro %}

{% macro duckdb__pseudonymize(expr, salt_name) -%}
    {{ return(privacy_lakehouse.salted_hash(expr, salt_name)) }}
{%- endmacro %}
