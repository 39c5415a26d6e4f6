{#-
  The relation a table landing source is read from: its source(), except that a file that
  cannot be read at all is left out with a warning naming the file: a Parquet file whose footer
  cannot be read (truncated or not Parquet), or a CSV file whose header and dialect DuckDB's
  reader cannot make out (a quote left open). Without this one such file failed the read of
  every file of its source, and with it the quarantine of every source. The file stays in
  landing (the landing purge never deletes a file it cannot read) until it is replaced; its
  rows are then ingested by the next build. A Parquet file whose footer reads but whose pages
  are corrupt still fails the build, naming the file.
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
    {%- set reader = location.split('(', 1)[0] -%}
    {%- set prefix = reader ~ "(" ~ _privacy_string_literal(glob) -%}
    {%- if reader not in ('read_parquet', 'read_csv') or not location.startswith(prefix) -%}
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
            ~ " cannot be read (" ~ ('not a readable Parquet file' if reader == 'read_parquet' else 'no CSV header and dialect DuckDB can read, e.g. a quote left open')
            ~ "); skipped and kept in landing until it is replaced"
        ) -%}
    {%- endfor -%}
    {%- if not readable -%}
        {{ return("(select cast(null as varchar) as filename where false)") }}
    {%- endif -%}
    {%- set listed = [] -%}
    {%- for file in readable -%}
        {%- do listed.append(_privacy_string_literal(file) | trim) -%}
    {%- endfor -%}
    {{ return(reader ~ "([" ~ listed | join(", ") ~ "]" ~ location[prefix | length:]) }}
{%- endmacro %}
