{#-
  The relation a table landing source is read from: its source(), except that a Parquet file
  whose footer cannot be read (truncated or not Parquet) is left out with a warning naming the
  file. Without this one such file failed the read of every file of the source, and with it the
  quarantine of every source. The file stays in landing (the landing purge never deletes a file
  it cannot read) until it is replaced; its rows are then ingested by the next build. A file
  whose footer reads but whose pages are corrupt still fails the build, naming the file.
  pl_landing_file_readable is registered by the project's plugin (privacy_lakehouse.landing).
-#}
{% macro landing_readable_relation(source_name, table_name) -%}
    {%- set relation = source(source_name, table_name) -%}
    {%- if not execute -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- set node = graph.sources.get('source.' ~ project_name ~ '.' ~ source_name ~ '.' ~ table_name) -%}
    {%- set location = node.config.external_location or '' -%}
    {%- set glob = landing_source_glob(source_name, table_name) -%}
    {%- set prefix = "read_parquet(" ~ _privacy_string_literal(glob) -%}
    {%- if not location.startswith(prefix) -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- set files = run_query(
        "select file, pl_landing_file_readable(file) from glob(" ~ _privacy_string_literal(glob) ~ ") order by file"
    ) -%}
    {%- set readable, unreadable = [], [] -%}
    {%- for row in files.rows -%}
        {%- do (readable if row[1] else unreadable).append(row[0]) -%}
    {%- endfor -%}
    {%- if not unreadable -%}
        {{ return(relation) }}
    {%- endif -%}
    {%- for file in unreadable -%}
        {%- do exceptions.warn(
            "landing source " ~ source_name ~ "." ~ table_name ~ ": file " ~ modules.re.search('[^/]+$', file).group(0)
            ~ " is not a readable Parquet file; skipped and kept in landing until it is replaced"
        ) -%}
    {%- endfor -%}
    {%- if not readable -%}
        {{ return("(select cast(null as varchar) as filename where false)") }}
    {%- endif -%}
    {%- set listed = [] -%}
    {%- for file in readable -%}
        {%- do listed.append(_privacy_string_literal(file) | trim) -%}
    {%- endfor -%}
    {{ return("read_parquet([" ~ listed | join(", ") ~ "]" ~ location[prefix | length:]) }}
{%- endmacro %}
