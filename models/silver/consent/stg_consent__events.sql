{{ config(cluster_by='subject_token') }}
-- Consent events: typed and deduplicated by event id.
with

source as (
    select * from {{ ref('raw_consent__events') }}
)

select
    event_id,
    subject_token,
    purpose,
    consent_action,
    strptime(event_ts, '%Y-%m-%d %H:%M:%S') as event_ts,
    lower(channel) as channel
from source
qualify row_number() over (partition by event_id order by ingested_at, source_file, ingest_key) = 1
