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

{#- Fail unless value is a non-empty list of SQL expressions (strings), without repeats. -#}
{% macro _privacy_require_expression_list(macro_name, value) -%}
    {%- if value is string or value is mapping or value is not iterable or (value | length) == 0
        or (value | reject('string') | list | length) > 0 -%}
        {{ exceptions.raise_compiler_error(
            macro_name ~ ": argument 'exprs' must be a non-empty list of SQL expressions, got "
            ~ (value | string)) }}
    {%- endif -%}
    {%- if (value | unique(case_sensitive=true) | list | length) != (value | length) -%}
        {{ exceptions.raise_compiler_error(
            macro_name ~ ": argument 'exprs' lists an expression twice: " ~ (value | join(', '))) }}
    {%- endif -%}
    {{ return(value) }}
{%- endmacro %}

{#- Fail for a dispatch target that has no portable SQL. -#}
{% macro _privacy_not_portable(macro_name) -%}
    {{ exceptions.raise_compiler_error(
        macro_name ~ " has no portable SQL implementation for adapter '" ~ adapter.type()
        ~ "'; add a " ~ adapter.type() ~ "__" ~ macro_name ~ " macro") }}
{%- endmacro %}

{#-
    Whether the privacy treatments apply. Always, except in the benchmark's privacy-off run,
    which measures what privacy costs: `--vars '{privacy_treatments: off}'` is honoured ONLY
    on the dedicated `bench` target AND with PRIVACY_LAKEHOUSE_BENCH_PRIVACY_OFF=1 in the
    environment. Anywhere else the build fails here, so privacy is never dropped silently.
    When off, salted_hash / pseudonymize / encrypt_for_subject emit the plain value as varchar,
    and so do privacy_select's tokenize and encrypt treatments, which call them. Generalizations
    stay on: they change a column's type, which contracts and downstream models rely on, and
    cost little (see bench/README.md).
-#}
{% macro _privacy_treatments_enabled() -%}
    {%- set setting = var('privacy_treatments', 'on') | string | lower -%}
    {#- YAML reads an unquoted on/off as a boolean, so True/False count as on/off. -#}
    {%- if setting in ['on', 'true'] -%}
        {{ return(true) }}
    {%- endif -%}
    {%- if setting not in ['off', 'false'] -%}
        {{ exceptions.raise_compiler_error(
            "var 'privacy_treatments' must be on or off, got " ~ setting) }}
    {%- endif -%}
    {%- set switch_env = 'PRIVACY_LAKEHOUSE_BENCH_PRIVACY_OFF' -%}
    {%- if target.name != 'bench' or env_var(switch_env, '') != '1' -%}
        {{ exceptions.raise_compiler_error(
            "privacy_treatments=off is refused: it is a benchmark switch, honoured only with "
            ~ "--target bench and " ~ switch_env ~ "=1 (target is '" ~ target.name ~ "'"
            ~ (", " ~ switch_env ~ " is not 1" if env_var(switch_env, '') != '1' else "")
            ~ "). Remove the var to build with privacy treatments.") }}
    {%- endif -%}
    {{ return(false) }}
{%- endmacro %}
