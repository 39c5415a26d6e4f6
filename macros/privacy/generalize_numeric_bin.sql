{#-
    generalize_numeric_bin(expr, bin_width, lower=none, upper=none): the lower bound of the
    value's bin, a number of the value's own type: bins are [k * bin_width, (k + 1) * bin_width),
    so with bin_width 100: 150 -> 100, 199 -> 100, -1 -> -100, -100 -> -100 (floor, also below 0).
    With lower and/or upper the value is first bottom/top coded (clipped) to them, so the bin of
    upper means "upper or more" and the bin of lower means "lower or less". NULL stays NULL.
    Integer and decimal inputs are exact; for double inputs with a fractional bin_width the
    usual floating-point rounding applies (prefer integer widths in scaled units).
-#}
{% macro generalize_numeric_bin(expr, bin_width, lower=none, upper=none) -%}
    {{ return(adapter.dispatch('generalize_numeric_bin', 'privacy_lakehouse')(
        expr, bin_width, lower, upper)) }}
{%- endmacro %}

{#- The value clipped to [lower, upper] (either bound optional); validates the arguments. -#}
{% macro _privacy_clipped(macro_name, expr, lower, upper) -%}
    {%- if lower is not none -%}
        {%- do privacy_lakehouse._privacy_require_number(macro_name, 'lower', lower) -%}
    {%- endif -%}
    {%- if upper is not none -%}
        {%- do privacy_lakehouse._privacy_require_number(macro_name, 'upper', upper) -%}
    {%- endif -%}
    {%- if lower is not none and upper is not none and lower > upper -%}
        {{ exceptions.raise_compiler_error(
            macro_name ~ ": argument 'lower' (" ~ lower ~ ") is greater than 'upper' (" ~ upper ~ ")") }}
    {%- endif -%}
    {%- if lower is none and upper is none -%}
        ({{ expr }})
    {%- else -%}
        case
            {%- if lower is not none %}
            when ({{ expr }}) < {{ lower }} then {{ lower }}
            {%- endif -%}
            {%- if upper is not none %}
            when ({{ expr }}) > {{ upper }} then {{ upper }}
            {%- endif %}
            else ({{ expr }})
        end
    {%- endif -%}
{%- endmacro %}

{#- Floor modulo ((x mod w) + w) mod w keeps negative values in the bin below zero. -#}
{% macro default__generalize_numeric_bin(expr, bin_width, lower, upper) -%}
    {%- do privacy_lakehouse._privacy_require_number('generalize_numeric_bin', 'bin_width', bin_width) -%}
    {%- if bin_width <= 0 -%}
        {{ exceptions.raise_compiler_error("generalize_numeric_bin: argument 'bin_width' must be > 0") }}
    {%- endif -%}
    {%- set value = privacy_lakehouse._privacy_clipped('generalize_numeric_bin', expr, lower, upper) -%}
    ({{ value }} - mod(mod({{ value }}, {{ bin_width }}) + {{ bin_width }}, {{ bin_width }}))
{%- endmacro %}

{% macro duckdb__generalize_numeric_bin(expr, bin_width, lower, upper) -%}
    {%- do privacy_lakehouse._privacy_require_number('generalize_numeric_bin', 'bin_width', bin_width) -%}
    {%- if bin_width <= 0 -%}
        {{ exceptions.raise_compiler_error("generalize_numeric_bin: argument 'bin_width' must be > 0") }}
    {%- endif -%}
    {%- set value = privacy_lakehouse._privacy_clipped('generalize_numeric_bin', expr, lower, upper) -%}
    ({{ value }} - ((({{ value }} % {{ bin_width }}) + {{ bin_width }}) % {{ bin_width }}))
{%- endmacro %}
