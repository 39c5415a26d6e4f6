{#-
    privacy_select(layer=none, relation_alias=none, exclude=[]): the select list of the calling
    model, written from its own columns' meta (see the column meta schema in the README):

        select {{ privacy_select() }} from {{ ref('stg_crm__customers') }}

    For each column declared in the model's YAML, in YAML order, it reads meta.treatment[layer]
    (layer defaults to the model's folder under models/: bronze, silver or gold) and applies the
    matching macro to the upstream column (meta.source_column, default the column's own name,
    prefixed with relation_alias when given), then aliases it to the column's name. Arguments
    come from meta.treatment_args. `none` keeps the column, `drop` leaves it out. A treatment
    equal to the one declared for the previous layer (e.g. {bronze: tokenize, silver: tokenize})
    was applied upstream, so the value is carried as is.
    Fails closed: an unclassified column, a personal-data column (privacy_role other than none)
    without a treatment for the layer, an unknown treatment or an unknown treatment argument
    stops compilation with a message naming the model and the column.
    Columns listed in exclude are skipped, so the model can add computed columns itself.
    The `hierarchy` treatment reads ref(<seed>): add `-- depends_on: {{ ref('<seed>') }}` to
    the model, because dbt learns a model's refs before it has read the model's YAML.
-#}
{% macro privacy_select(layer=none, relation_alias=none, exclude=[]) -%}
    {{ return(adapter.dispatch('privacy_select', 'privacy_lakehouse')(layer, relation_alias, exclude)) }}
{%- endmacro %}

{#- Treatment name -> the treatment_args it accepts. -#}
{% macro _privacy_treatment_arguments() -%}
    {{ return({
        'none': [],
        'drop': [],
        'tokenize': ['salt'],
        'encrypt': ['subject_token'],
        'nullify': [],
        'default_value': ['data_type'],
        'mask_email': [],
        'keep_first_last': ['keep_first', 'keep_last', 'mask_char'],
        'year_only': [],
        'redact_free_text': [],
        'age_band': ['as_of', 'band_width', 'top_code'],
        'numeric_bin': ['bin_width', 'lower', 'upper'],
        'date_trunc': ['grain'],
        'postcode_prefix': ['prefix_length'],
        'hierarchy': ['hierarchy', 'level', 'unmatched'],
        'suppress_small_groups': ['min_count', 'remainder', 'partition_by', 'subject'],
        'top_bottom_code': ['lower', 'upper'],
    }) }}
{%- endmacro %}

{#- A column's meta: config.meta (dbt >= 1.10) over the legacy top-level meta. -#}
{% macro _privacy_column_meta(column) -%}
    {%- set meta = {} -%}
    {%- do meta.update(column.get('meta') or {}) -%}
    {%- set column_config = column.get('config') or {} -%}
    {%- do meta.update(column_config.get('meta') or {}) -%}
    {{ return(meta) }}
{%- endmacro %}

{% macro _privacy_fail(column_name, problem) -%}
    {{ exceptions.raise_compiler_error(
        "privacy_select: model '" ~ model.name ~ "' (" ~ model.original_file_path ~ "), column '"
        ~ column_name ~ "': " ~ problem) }}
{%- endmacro %}

{#- The SQL expression for one column under a treatment, or none for `drop`. -#}
{% macro _privacy_treatment_expression(column_name, column, treatment, source, args) -%}
    {%- set fail = privacy_lakehouse._privacy_fail -%}
    {%- if treatment == 'none' -%}
        {{ return(source) }}
    {%- elif treatment == 'drop' -%}
        {{ return(none) }}
    {%- elif treatment == 'tokenize' -%}
        {{ return(privacy_lakehouse.salted_hash(source, args.get('salt', 'subject'))) }}
    {%- elif treatment == 'encrypt' -%}
        {{ return(privacy_lakehouse.encrypt_for_subject(source, args.get('subject_token', 'subject_token'))) }}
    {%- elif treatment == 'nullify' -%}
        {{ return(privacy_lakehouse.mask_nullify(source)) }}
    {%- elif treatment == 'default_value' -%}
        {%- set data_type = args.get('data_type') or column.get('data_type') -%}
        {%- if not data_type -%}
            {{ fail(column_name, "treatment 'default_value' needs the column's data_type or treatment_args.data_type") }}
        {%- endif -%}
        {{ return(privacy_lakehouse.mask_default(source, data_type)) }}
    {%- elif treatment == 'mask_email' -%}
        {{ return(privacy_lakehouse.mask_email(source)) }}
    {%- elif treatment == 'keep_first_last' -%}
        {{ return(privacy_lakehouse.mask_keep_first_last(
            source, args.get('keep_first', 0), args.get('keep_last', 4), args.get('mask_char', '*'))) }}
    {%- elif treatment == 'year_only' -%}
        {{ return(privacy_lakehouse.mask_year_only(source)) }}
    {%- elif treatment == 'redact_free_text' -%}
        {{ return(privacy_lakehouse.redact_free_text(source)) }}
    {%- elif treatment == 'age_band' -%}
        {%- set as_of = args.get('as_of', 'current_date') -%}
        {#- A YAML date (as_of: 2024-06-15) means that date, not the arithmetic 2024 - 6 - 15. -#}
        {%- if as_of is not string or modules.re.fullmatch('[0-9]{4}-[0-9]{2}-[0-9]{2}', as_of) -%}
            {%- set as_of = "cast('" ~ as_of ~ "' as date)" -%}
        {%- endif -%}
        {{ return(privacy_lakehouse.age_band(
            source, as_of, args.get('band_width', 10), args.get('top_code', 80))) }}
    {%- elif treatment == 'numeric_bin' -%}
        {%- if args.get('bin_width') is none -%}
            {{ fail(column_name, "treatment 'numeric_bin' needs treatment_args.bin_width") }}
        {%- endif -%}
        {{ return(privacy_lakehouse.generalize_numeric_bin(
            source, args.bin_width, args.get('lower'), args.get('upper'))) }}
    {%- elif treatment == 'date_trunc' -%}
        {%- if args.get('grain') is none -%}
            {{ fail(column_name, "treatment 'date_trunc' needs treatment_args.grain") }}
        {%- endif -%}
        {{ return(privacy_lakehouse.generalize_date(source, args.grain)) }}
    {%- elif treatment == 'postcode_prefix' -%}
        {{ return(privacy_lakehouse.postcode_prefix(source, args.get('prefix_length', 2))) }}
    {%- elif treatment == 'hierarchy' -%}
        {%- if args.get('hierarchy') is none or args.get('level') is none -%}
            {{ fail(column_name, "treatment 'hierarchy' needs treatment_args.hierarchy (a seed name) and treatment_args.level") }}
        {%- endif -%}
        {{ return(privacy_lakehouse.generalize_hierarchy(
            source, ref(args.hierarchy), args.level, args.get('unmatched'))) }}
    {%- elif treatment == 'suppress_small_groups' -%}
        {{ return(privacy_lakehouse.suppress_small_groups(
            source, args.get('partition_by'), args.get('min_count', 5),
            args.get('remainder', 'Other'), args.get('subject'))) }}
    {%- elif treatment == 'top_bottom_code' -%}
        {{ return(privacy_lakehouse.top_bottom_code(source, args.get('lower'), args.get('upper'))) }}
    {%- endif -%}
    {{ fail(column_name, "treatment '" ~ treatment ~ "' has no macro") }}
{%- endmacro %}

{% macro default__privacy_select(layer, relation_alias, exclude) -%}
    {%- set fail = privacy_lakehouse._privacy_fail -%}
    {%- set layer = layer if layer is not none else model.fqn[1] -%}
    {%- set layers = ['bronze', 'silver', 'gold'] -%}
    {%- set known_arguments = privacy_lakehouse._privacy_treatment_arguments() -%}
    {%- set columns = model.columns or {} -%}
    {%- set exclude = [exclude] if exclude is string else (exclude or []) -%}
    {%- if layer not in layers -%}
        {{ exceptions.raise_compiler_error(
            "privacy_select: model '" ~ model.name ~ "' is in layer '" ~ layer ~ "', expected one of "
            ~ (layers | join(', ')) ~ "; put the model under models/<layer>/ or pass layer=") }}
    {%- endif -%}
    {#- dbt renders each model once while parsing, before its YAML is attached: nothing to check yet. -#}
    {%- if columns | length == 0 -%}
        {%- if execute -%}
            {{ exceptions.raise_compiler_error(
                "privacy_select: model '" ~ model.name ~ "' (" ~ model.original_file_path
                ~ ") declares no columns in its YAML; privacy_select writes the select list from them") }}
        {%- endif -%}
        {{ return('*') }}
    {%- endif -%}
    {%- for name in exclude if name not in columns -%}
        {{ fail(name, "listed in exclude but not declared in the model's YAML") }}
    {%- endfor -%}

    {%- set select_items = [] -%}
    {%- for column_name, column in columns.items() if column_name not in exclude -%}
        {%- set meta = privacy_lakehouse._privacy_column_meta(column) -%}
        {%- for required in ['sensitivity', 'privacy_role'] if meta.get(required) is none -%}
            {{ fail(column_name, "unclassified: meta." ~ required ~ " is missing") }}
        {%- endfor -%}
        {%- set treatments = meta.get('treatment') or {} -%}
        {%- if treatments is not mapping -%}
            {{ fail(column_name, "meta.treatment must map layers to treatments, e.g. {" ~ layer ~ ": tokenize}") }}
        {%- endif -%}
        {%- set treatment = treatments.get(layer) -%}
        {%- if treatment is none -%}
            {%- if meta.privacy_role != 'none' -%}
                {{ fail(column_name, "privacy_role '" ~ meta.privacy_role ~ "' needs meta.treatment."
                    ~ layer ~ " (fail closed: personal data is never passed through by default)") }}
            {%- endif -%}
            {%- set treatment = 'none' -%}
        {%- endif -%}
        {%- if treatment not in known_arguments -%}
            {%- if treatment == 'tokenize_and_encrypt' -%}
                {{ fail(column_name, "treatment 'tokenize_and_encrypt' yields two values; declare two columns "
                    ~ "with the same source_column, one with treatment 'tokenize' and one with 'encrypt'") }}
            {%- endif -%}
            {{ fail(column_name, "unknown treatment '" ~ treatment ~ "' for layer '" ~ layer
                ~ "'; known: " ~ (known_arguments.keys() | sort | join(', '))) }}
        {%- endif -%}
        {%- set args = meta.get('treatment_args') or {} -%}
        {%- if args is not mapping -%}
            {{ fail(column_name, "meta.treatment_args must be a mapping of argument names to values") }}
        {%- endif -%}
        {%- for argument in args if argument not in known_arguments[treatment] -%}
            {{ fail(column_name, "unknown treatment_args '" ~ argument ~ "' for treatment '" ~ treatment
                ~ "'; accepted: " ~ (known_arguments[treatment] | join(', ') or 'none')) }}
        {%- endfor -%}

        {%- set quoting = column.get('quote') -%}
        {%- set target_name = adapter.quote(column_name) if quoting else column_name -%}
        {%- set source_name = meta.get('source_column') or column_name -%}
        {%- set source = adapter.quote(source_name) if quoting else source_name -%}
        {%- if relation_alias -%}
            {%- set source = relation_alias ~ '.' ~ source -%}
        {%- endif -%}
        {#- meta.treatment lists the column's state in each layer it passes through. A treatment
            equal to the one of the previous declared layer was applied upstream: carry the value
            (tokenizing a token again would break joins). -#}
        {%- set previous = namespace(treatment=none) -%}
        {%- for earlier in layers[:layers.index(layer)] if treatments.get(earlier) is not none -%}
            {%- set previous.treatment = treatments.get(earlier) -%}
        {%- endfor -%}
        {%- if previous.treatment == treatment and treatment != 'drop' -%}
            {%- set expression = source -%}
        {%- else -%}
            {%- set expression = privacy_lakehouse._privacy_treatment_expression(
                column_name, column, treatment, source, args) -%}
        {%- endif -%}
        {%- if expression is not none -%}
            {%- if treatment == 'none' and source_name == column_name -%}
                {%- do select_items.append(source) -%}
            {%- else -%}
                {%- do select_items.append(expression | trim ~ ' as ' ~ target_name) -%}
            {%- endif -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if select_items | length == 0 -%}
        {{ exceptions.raise_compiler_error(
            "privacy_select: model '" ~ model.name ~ "' (" ~ model.original_file_path
            ~ ") has no column left to select in layer '" ~ layer ~ "'") }}
    {%- endif -%}
    {{ return(select_items | join(',\n    ')) }}
{%- endmacro %}

{% macro duckdb__privacy_select(layer, relation_alias, exclude) -%}
    {{ return(privacy_lakehouse.default__privacy_select(layer, relation_alias, exclude)) }}
{%- endmacro %}
