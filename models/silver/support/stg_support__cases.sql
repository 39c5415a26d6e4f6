{{ config(cluster_by='subject_token') }}
-- Support cases: typed, deduplicated; only the redacted note is carried.
with

source as (
    select * from {{ ref('raw_support__cases') }}
)

select
    case_id,
    subject_token,
    strptime(opened_at, '%Y-%m-%d %H:%M:%S') as opened_at,
    lower(channel) as channel,
    lower(category) as category,
    lower(case_status) as case_status,
    note_redacted
from source
qualify row_number() over (partition by case_id order by ingested_at desc, source_file desc, ingest_key) = 1
