{#-
    age_band(birth_date_expr, as_of_expr='current_date', band_width=10, top_code=80): the age
    in whole years on as_of (birthday reached or not), as a text band: '30-39', and
    '<top_code>+' from top_code on ('80+'). A band that would cross top_code ends below it
    (top_code 85: '80-84', '85+'). band_width 1 gives the age itself ('37'). top_code none
    disables top coding. NULL birth date, NULL as_of or a birth date after as_of -> NULL.
    Pass a fixed as_of_expr for reproducible builds: current_date changes every day.
-#}
{% macro age_band(birth_date_expr, as_of_expr='current_date', band_width=10, top_code=80) -%}
    {{ return(adapter.dispatch('age_band', 'privacy_lakehouse')(
        birth_date_expr, as_of_expr, band_width, top_code)) }}
{%- endmacro %}

{#- Whole years between two dates: year difference, minus one before the birthday (a 29 February
    birthday counts from 1 March in other years). Both implementations follow the same rule. -#}
{% macro default__age_band(birth_date_expr, as_of_expr, band_width, top_code) -%}
    {%- set born = 'cast(' ~ birth_date_expr ~ ' as date)' -%}
    {%- set as_of = 'cast(' ~ as_of_expr ~ ' as date)' -%}
    {%- set age -%}
        (extract(year from {{ as_of }}) - extract(year from {{ born }})
            - case
                when extract(month from {{ as_of }}) * 100 + extract(day from {{ as_of }})
                    < extract(month from {{ born }}) * 100 + extract(day from {{ born }})
                    then 1
                else 0
            end)
    {%- endset -%}
    {{ return(privacy_lakehouse._privacy_age_band_case(born, as_of, age, band_width, top_code)) }}
{%- endmacro %}

{% macro duckdb__age_band(birth_date_expr, as_of_expr, band_width, top_code) -%}
    {%- set born = 'cast(' ~ birth_date_expr ~ ' as date)' -%}
    {%- set as_of = 'cast(' ~ as_of_expr ~ ' as date)' -%}
    {%- set age -%}
        (year({{ as_of }}) - year({{ born }})
            - cast(month({{ as_of }}) * 100 + day({{ as_of }}) < month({{ born }}) * 100 + day({{ born }}) as integer))
    {%- endset -%}
    {{ return(privacy_lakehouse._privacy_age_band_case(born, as_of, age, band_width, top_code)) }}
{%- endmacro %}

{#- The band label from an age expression in whole years; validates the band arguments. -#}
{% macro _privacy_age_band_case(born, as_of, age, band_width, top_code) -%}
    {%- do privacy_lakehouse._privacy_require_integer('age_band', 'band_width', band_width, 1) -%}
    {%- if top_code is not none -%}
        {%- do privacy_lakehouse._privacy_require_integer('age_band', 'top_code', top_code, 1) -%}
    {%- endif -%}
    {%- set band_start = '(' ~ age ~ ' - mod(' ~ age ~ ', ' ~ band_width ~ '))' -%}
    {%- if top_code is none -%}
        {%- set band_end = band_start ~ ' + ' ~ (band_width - 1) -%}
    {%- else -%}
        {%- set band_end = 'least(' ~ band_start ~ ' + ' ~ (band_width - 1) ~ ', ' ~ (top_code - 1) ~ ')' -%}
    {%- endif -%}
    case
        when {{ born }} is null or {{ as_of }} is null then null
        when {{ age }} < 0 then null
        {%- if top_code is not none %}
        when {{ age }} >= {{ top_code }} then '{{ top_code }}+'
        {%- endif %}
        {%- if band_width == 1 %}
        else cast(cast({{ age }} as integer) as {{ dbt.type_string() | lower }})
        {%- else %}
        else cast(cast({{ band_start }} as integer) as {{ dbt.type_string() | lower }})
            || '-' || cast(cast({{ band_end }} as integer) as {{ dbt.type_string() | lower }})
        {%- endif %}
    end
{%- endmacro %}
