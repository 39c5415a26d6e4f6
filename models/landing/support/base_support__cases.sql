-- Parses and checks support cases (JSON lines). Ephemeral: plaintext never persists past this CTE.
with

records as (
    {{ landing_records('support', 'cases', format='jsonl', fields=['case_id', 'customer_id', 'opened_at', 'channel', 'category', 'status', 'note']) }}
),

parsed as (
    select
        source_file,
        record_hash,
        ingest_key,
        raw_record,
        doc is not null as is_parseable,
        coalesce(doc_wrong_type, false) as has_wrong_type,
        nullif(trim(doc.case_id), '') as case_id,
        -- a JSON array or object here is no customer number: NULL, and the row quarantined
        nullif(trim({{ landing_json_field('customer_id') }}), '') as customer_id,
        doc.opened_at as opened_at,
        doc.channel as channel,
        doc.category as category,
        doc.status as case_status,
        doc.note as note
    from records
)

select
    *,
    case
        when not is_parseable then 'unparseable_line'
        when has_wrong_type then 'wrong_type'
        when case_id is null or customer_id is null then 'missing_key'
        when channel not in ('phone', 'email', 'chat', 'branch') or channel is null then 'unknown_enum'
        when case_status not in ('open', 'pending', 'resolved', 'closed') or case_status is null
            then 'unknown_enum'
        when not {{ is_valid_timestamp('opened_at') }} then 'malformed_date'
    end as reject_reason
from parsed
