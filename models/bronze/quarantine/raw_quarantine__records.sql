{%- set csv_sources = [('core_banking', 'customers'), ('core_banking', 'accounts')] %}
{{ config(
    incremental_strategy='append',
    cluster_by='subject_token',
    pre_hook=["{{ stage_landing_rejects('core_banking', 'customers') }}", "{{ stage_landing_rejects('core_banking', 'accounts') }}"],
    post_hook=["{{ release_landing_rejects('core_banking', 'customers') }}", "{{ release_landing_rejects('core_banking', 'accounts') }}", "{{ warn_quarantined_rows() }}"]
) }}
-- Every landing row that broke its source contract, with a reason code. Never dropped: landing
-- rows = bronze rows + quarantined rows. The row itself is kept only as ciphertext, under the
-- customer's key when the row names one (so erasure reaches it), else under a per-file key.
with

rejected as (
    {%- set sources = [
        ('core_banking', 'customers', 'base_core_banking__customers', 'table'),
        ('core_banking', 'accounts', 'base_core_banking__accounts', 'table'),
        ('cards', 'transactions', 'base_cards__transactions', 'table'),
        ('consent', 'events', 'base_consent__events', 'jsonl'),
        ('support', 'cases', 'base_support__cases', 'jsonl'),
    ] %}
    {%- for source_name, table_name, model_name, format in sources %}
    -- Hashed here, after the filter: hashing every landing row only to keep the rejects is the
    -- cost DuckDB would otherwise pay (it does not push this filter below the base model's hash).
    select
        '{{ source_name }}.{{ table_name }}' as source_name,
        source_file,
        {{ landing_record_hash(source_name, table_name, 'raw_record', format, whole_row_when="reject_reason = 'undeclared_column'") }} as record_hash,
        reject_reason,
        customer_id,
        {{ landing_record_text('raw_record', format) }} as raw_record
    from {{ ref(model_name) }}
    where
        reject_reason is not null
        and (customer_id is null or {{ not_erased('customer_id') }})
        and {{ not_yet_ingested(source_name, table_name, where="source_name = '" ~ source_name ~ "." ~ table_name ~ "'") }}
    union all
    {%- endfor %}
    {%- for source_name, table_name in csv_sources %}
    -- Rows the CSV reader skipped (ragged or unparseable), staged by the pre-hook; no customer
    -- is parsed from them, so they are encrypted under the per-file key (erasure finds them by
    -- content, as every quarantined row that names no customer).
    select
        '{{ source_name }}.{{ table_name }}' as source_name,
        source_file,
        record_hash,
        reject_reason,
        cast(null as varchar) as customer_id,
        raw_record
    from (
        select
            *,
            {{ landing_ingest_key('source_file', 'record_hash') }} as ingest_key
        from (
            select
                *,
                {{ landing_record_hash(source_name, table_name, 'raw_record', 'jsonl') }} as record_hash
            from {{ landing_rejects_table(source_name, table_name) }}
        ) as hashed
    ) as skipped
    where {{ not_yet_ingested(source_name, table_name, where="source_name = '" ~ source_name ~ "." ~ table_name ~ "'") }}
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

new_rows as (
    select
        *,
        {{ landing_ingest_key('source_file', 'record_hash') }} as ingest_key,
        {{ salted_hash("coalesce(customer_id, 'quarantine:' || source_name || ':' || source_file)", 'subject') }} as subject_token
    from rejected
    -- rows without a customer number that an erasure found by content are tombstoned by record
    where {{ not_erased("'record:' || record_hash") }}
),

-- Every new subject's data key made in one key-store transaction before anything is encrypted
-- (the join waits for it), instead of one commit per 2048-row chunk.
subject_keys as (
    select {{ ensure_subject_keys('subject_token') }} as keys_ready
    from new_rows
)

select
    ingest_key,
    record_hash,
    source_name,
    source_file,
    {{ ingest_metadata() }},
    reject_reason,
    subject_token,
    customer_id is not null as has_subject,
    {{ encrypt_for_subject('raw_record', 'subject_token') }} as record_enc
from new_rows
inner join subject_keys on subject_keys.keys_ready
