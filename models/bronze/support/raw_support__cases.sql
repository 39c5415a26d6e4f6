{{ config(incremental_strategy='append', cluster_by='subject_token') }}
-- Support cases. The free-text note is kept only as ciphertext under the customer's key and as
-- a redacted copy (patterns and the customer's own name replaced by placeholders).
with

landing as (
    -- raw_record is for the quarantine only: not building it saves a JSON document per row
    select * exclude (raw_record) from {{ ref('base_support__cases') }}
    where
        reject_reason is null
        and {{ not_erased('customer_id') }}
        and {{ not_yet_ingested('support', 'cases') }}
),

names as (
    select
        customer_id,
        max(first_name) as first_name,
        max(last_name) as last_name
    from {{ ref('base_core_banking__customers') }}
    where reject_reason is null
    group by customer_id
),

subjects as (
    select
        landing.*,
        names.first_name,
        names.last_name,
        {{ salted_hash('landing.customer_id', 'subject') }} as subject_token
    from landing
    left join names on landing.customer_id = names.customer_id
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
        "replace(replace(note, coalesce(nullif(first_name, ''), chr(0)), '[NAME]'), "
        ~ "coalesce(nullif(last_name, ''), chr(0)), '[NAME]')"
    ) }} as note_redacted
from subjects
inner join subject_keys on subject_keys.keys_ready
