{#-
    Private helpers shared by the privacy macros. They validate macro arguments at compile time
    so a typo fails the build instead of producing SQL that silently does something else.
    Messages name the argument, never a row value (macros never see row values).
-#}

{#- Render a Python string as a SQL string literal, doubling single quotes. -#}
{% macro _privacy_string_literal(value) -%}
    '{{ value | string | replace("'", "''") }}'
{%- endmacro %}

{#- Fail unless value is an int (not a bool) >= minimum; returns the value. -#}
{% macro _privacy_require_integer(macro_name, argument, value, minimum=0) -%}
    {%- if value is boolean or value is not integer or value < minimum -%}
        {{ exceptions.raise_compiler_error(
            macro_name ~ ": argument '" ~ argument ~ "' must be an integer >= " ~ minimum
            ~ ", got " ~ (value | string)) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}

{#- Fail unless value is a number (int or float, not a bool); returns it. -#}
{% macro _privacy_require_number(macro_name, argument, value) -%}
    {%- if value is boolean or value is not number -%}
        {{ exceptions.raise_compiler_error(
            macro_name ~ ": argument '" ~ argument ~ "' must be a number, got "
            ~ (value | string)) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}

{#- Fail unless value is a plain lower-case SQL identifier; returns it. -#}
{% macro _privacy_require_identifier(macro_name, argument, value) -%}
    {%- if value is not string or not modules.re.fullmatch('[a-z_][a-z0-9_]*', value) -%}
        {{ exceptions.raise_compiler_error(
            macro_name ~ ": argument '" ~ argument
            ~ "' must be a lower-case identifier ([a-z_][a-z0-9_]*), got " ~ (value | string)) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}

{#- Fail for a dispatch target that has no portable SQL. -#}
{% macro _privacy_not_portable(macro_name) -%}
    {{ exceptions.raise_compiler_error(
        macro_name ~ " has no portable SQL implementation for adapter '" ~ adapter.type()
        ~ "'; add a " ~ adapter.type() ~ "__" ~ macro_name ~ " macro") }}
{%- endmacro %}
