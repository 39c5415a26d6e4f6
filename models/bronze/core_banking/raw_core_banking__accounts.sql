{{ config(incremental_strategy='append', cluster_by='subject_token') }}
-- Accounts as delivered; account number and IBAN only as tokens and ciphertext.
with

landing as (
    -- raw_record is for the quarantine only: not building it saves a JSON document per row
    select * exclude (raw_record) from {{ ref('base_core_banking__accounts') }}
    where
        reject_reason is null
        and {{ not_erased('customer_id') }}
        and {{ not_yet_ingested('core_banking', 'accounts') }}
),

subjects as (
    select
        *,
        {{ salted_hash('customer_id', 'subject') }} as subject_token
    from landing
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
    {{ salted_hash('account_id', 'account') }} as account_token,
    {{ salted_hash("upper(replace(iban, ' ', ''))", 'iban') }} as iban_token,
    {{ encrypt_for_subject('iban', 'subject_token') }} as iban_enc,
    account_type,
    currency,
    opened_at,
    status,
    balance
from subjects
inner join subject_keys on subject_keys.keys_ready
