{{ config(incremental_strategy='append', cluster_by='subject_token') }}
-- Consent grants and revocations as delivered; the customer only as a token.
with

landing as (
    -- raw_record is for the quarantine only: not building it saves a JSON document per row
    select * exclude (raw_record) from {{ ref('base_consent__events') }}
    where
        reject_reason is null
        and {{ not_erased('customer_id') }}
        and {{ not_yet_ingested('consent', 'events') }}
)

select
    ingest_key,
    record_hash,
    source_file,
    {{ ingest_metadata() }},
    {{ salted_hash('customer_id', 'subject') }} as subject_token,
    event_id,
    purpose,
    consent_action,
    event_ts,
    channel
from landing
