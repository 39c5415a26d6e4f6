{{ config(incremental_strategy='append', cluster_by='subject_token') }}
-- Support cases. The free-text note is kept only as ciphertext under the customer's key and as
-- a redacted copy (patterns and the customer's own names replaced by placeholders).
with

landing as (
    -- raw_record is for the quarantine only: not building it saves a JSON document per row
    select * exclude (raw_record) from {{ ref('base_support__cases') }}
    where
        reject_reason is null
        and {{ not_erased('customer_id') }}
        and {{ not_yet_ingested('support', 'cases') }}
),

subjects as (
    select
        landing.*,
        {{ salted_hash('landing.customer_id', 'subject') }} as subject_token
    from landing
),

-- The names to redact come from bronze customers (decrypted for the audited purpose
-- 'redaction'), not from landing: landing customer files may have been purged since their
-- rows were ingested, and a case must not keep a name because its customer's file is gone.
-- Every spelling the customer ever had counts (a note may use an old surname).
-- Materialized: filtered in the scan, the rows reached pl_decrypt about 100 at a time, and
-- each call writes an audit entry (fsync); whole chunks need a tenth of the calls (bench/README).
matched_customers as materialized (
    select
        customers.subject_token,
        customers.first_name_enc,
        customers.last_name_enc
    from {{ ref('raw_core_banking__customers') }} as customers
    where customers.subject_token in (select subjects.subject_token from subjects)
),

names as (
    select
        customers.subject_token,
        list_distinct(list(nullif(
            {{ decrypt_for_subject('customers.first_name_enc', 'redaction', 'customers.subject_token') }}, ''
        ))) as first_names,
        list_distinct(list(nullif(
            {{ decrypt_for_subject('customers.last_name_enc', 'redaction', 'customers.subject_token') }}, ''
        ))) as last_names
    from matched_customers as customers
    group by customers.subject_token
),

-- Longest first, so that a name inside a longer one (Ann in Anna) leaves no remnant.
names_to_redact as (
    select
        subject_token,
        list_transform(
            list_sort(list_transform(
                list_concat(first_names, last_names),
                name -> struct_pack(width := -length(name), name := name)
            )),
            entry -> entry.name
        ) as longest_first
    from names
),

-- Every new subject's data key made in one key-store transaction before anything is encrypted
-- (the join waits for it), instead of one commit per 2048-row chunk.
subject_keys as (
    select {{ ensure_subject_keys('subject_token') }} as keys_ready
    from subjects
)

select
    ingest_key,
    record_hash,
    source_file,
    {{ ingest_metadata() }},
    subject_token,
    case_id,
    opened_at,
    channel,
    category,
    case_status,
    {{ encrypt_for_subject('note', 'subject_token') }} as note_enc,
    {{ redact_free_text(
        "list_reduce(list_prepend(note, names.longest_first), "
        ~ "(text, name) -> replace(text, name, '[NAME]'))"
    ) }} as note_redacted
from subjects
inner join subject_keys on subject_keys.keys_ready
left join names_to_redact as names using (subject_token)
