{#-
    mask_default(expr, data_type): replace every value (NULLs included, so not even missingness
    leaks) by a fixed default of the given type:
      text types -> '*****', numeric types -> 0, date -> 1900-01-01,
      timestamp types -> 1900-01-01 00:00:00, time -> 00:00:00, boolean -> false,
      uuid -> 00000000-0000-0000-0000-000000000000, blob -> empty blob.
    The default is cast to data_type itself, so decimal(10, 2) stays decimal(10, 2).
    An unknown type fails compilation.
-#}
{% macro mask_default(expr, data_type) -%}
    {{ return(adapter.dispatch('mask_default', 'privacy_lakehouse')(expr, data_type)) }}
{%- endmacro %}

{#- The type family of a SQL type name, or none when the name is not recognised. -#}
{% macro _privacy_type_family(data_type) -%}
    {%- set families = {
        'text': ['varchar', 'char', 'character', 'character varying', 'text', 'string',
                 'bpchar', 'nvarchar', 'nchar'],
        'number': ['tinyint', 'smallint', 'integer', 'int', 'int1', 'int2', 'int4', 'int8',
                   'bigint', 'hugeint', 'utinyint', 'usmallint', 'uinteger', 'ubigint',
                   'uhugeint', 'decimal', 'numeric', 'real', 'float', 'float4', 'float8',
                   'double', 'double precision'],
        'date': ['date'],
        'timestamp': ['timestamp', 'datetime', 'timestamptz', 'timestamp with time zone',
                      'timestamp without time zone', 'timestamp_s', 'timestamp_ms',
                      'timestamp_ns'],
        'time': ['time', 'time without time zone'],
        'boolean': ['boolean', 'bool', 'logical'],
        'uuid': ['uuid'],
        'blob': ['blob', 'bytea', 'binary', 'varbinary'],
    } -%}
    {%- set base = modules.re.sub('\\s+', ' ', data_type.split('(')[0]) | trim | lower -%}
    {%- for family, names in families.items() -%}
        {%- if base in names -%}{{ return(family) }}{%- endif -%}
    {%- endfor -%}
    {{ return(none) }}
{%- endmacro %}

{% macro default__mask_default(expr, data_type) -%}
    {%- if data_type is not string
        or not modules.re.fullmatch('[A-Za-z][A-Za-z0-9_ ]*(\\([0-9, ]*\\))?', data_type) -%}
        {{ exceptions.raise_compiler_error(
            "mask_default: argument 'data_type' must be a SQL type name such as varchar, "
            ~ "integer, decimal(10, 2) or date, got " ~ (data_type | string)) }}
    {%- endif -%}
    {%- set family = privacy_lakehouse._privacy_type_family(data_type) -%}
    {%- set literals = {
        'text': "'*****'",
        'number': "0",
        'date': "'1900-01-01'",
        'timestamp': "'1900-01-01 00:00:00'",
        'time': "'00:00:00'",
        'boolean': "false",
        'uuid': "'00000000-0000-0000-0000-000000000000'",
        'blob': "''",
    } -%}
    {%- if family is none -%}
        {{ exceptions.raise_compiler_error(
            "mask_default: no default value is defined for data_type '" ~ data_type
            ~ "'; supported: text, numeric, date, timestamp, time, boolean, uuid and blob types") }}
    {%- endif -%}
    cast({{ literals[family] }} as {{ data_type }})
{%- endmacro %}

{% macro duckdb__mask_default(expr, data_type) -%}
    {{ return(privacy_lakehouse.default__mask_default(expr, data_type)) }}
{%- endmacro %}
